"""The agent one-liner: ``/install/agent.sh`` and the agent's wheels.

On a new host an operator runs::

    curl -fsSL --cacert ca.pem https://COORD:8443/install/agent.sh | sudo sh -s -- --token T

The script is ``installers/install-agent.sh`` with this coordinator's URL and its root
CA's SHA-256 fingerprint filled in. It pins that CA, then downloads
``certfleet-shared`` and ``certfleet-agent`` from ``/install/wheels/`` (their
dependencies come from the host's package index). Nothing served here is secret, so
nothing here authenticates; these routes sit outside the operation catalogue because
they are files for ``curl`` and ``pip``, not API operations.

Where the files come from:

* A coordinator running from a checkout (installed editable): the checkout's
  ``installers/install-agent.sh``, and wheels built from the checkout's ``shared/`` and
  ``agent/`` trees with ``pip wheel --no-deps``, once per process, on first request,
  so they are the code that is running.
* Otherwise, what was shipped into ``DATA_DIR/installer/``: ``install-agent.sh`` and
  ``wheels/certfleet_shared-VERSION-py3-none-any.whl`` and
  ``wheels/certfleet_agent-VERSION-py3-none-any.whl`` for this coordinator's version.
"""

from __future__ import annotations

import hashlib
import html
import importlib.metadata
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import trio

from . import errors
from .core import RawResponse

__all__ = ["AgentInstaller", "Wheel", "checkout_root"]

log = logging.getLogger("certfleet.installer")

AGENT_DISTRIBUTIONS = {"certfleet_shared": "shared", "certfleet_agent": "agent"}
"""Wheel name prefix → the checkout directory holding that distribution's source."""
WHEEL_NAME = re.compile(r"^(certfleet_shared|certfleet_agent)-([0-9A-Za-z.+!_]{1,64})-py3-none-any\.whl$")
URL_PLACEHOLDER = "@CERTFLEET_COORDINATOR_URL@"
FINGERPRINT_PLACEHOLDER = "@CERTFLEET_CA_FINGERPRINT@"
SAFE_URL = re.compile(r"^https://([A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$")
"""What may be embedded in the script: the script checks the same shape, and nothing
in it can end a shell string."""
BUILD_TIMEOUT = 600


@dataclass(frozen=True)
class Wheel:
    name: str
    path: Path
    sha256: str


def _editable_source(distribution: str) -> Path | None:
    """The source tree of an editable install (PEP 610 ``direct_url.json``)."""
    try:
        text = importlib.metadata.distribution(distribution).read_text("direct_url.json")
    except importlib.metadata.PackageNotFoundError:
        return None
    if not text:
        return None
    info = json.loads(text)
    url = urlsplit(info.get("url", ""))
    if not info.get("dir_info", {}).get("editable") or url.scheme != "file":
        return None
    return Path(url2pathname(url.path))


def _project_name(tree: Path) -> str | None:
    try:
        return tomllib.loads((tree / "pyproject.toml").read_text())["project"]["name"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return None


def checkout_root() -> Path | None:
    """The checkout this coordinator runs from, if it runs from one: the directory
    holding ``coordinator/``, ``shared/``, ``agent/`` and ``installers/``."""
    coordinator_tree = _editable_source("certfleet-coordinator")
    if coordinator_tree is None:
        return None
    root = coordinator_tree.parent
    if _project_name(root / "shared") != "certfleet-shared" or _project_name(root / "agent") != "certfleet-agent":
        return None
    return root


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def _build_wheels(checkout: Path, destination: Path) -> None:
    """Build the agent's two wheels from ``checkout`` into ``destination``.

    The trees are copied first: an in-tree build would leave ``build/`` and
    ``*.egg-info`` in the checkout, and a stale ``build/`` can put deleted modules
    into the next wheel.
    """
    destination.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tempfile.TemporaryDirectory(prefix="build-", dir=destination.parent) as work:
        sources, output = Path(work) / "src", Path(work) / "out"
        ignore = shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", ".*")
        trees = [shutil.copytree(checkout / tree, sources / tree, ignore=ignore)
                 for tree in AGENT_DISTRIBUTIONS.values()]
        argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-input", "--quiet",
                "--disable-pip-version-check", "--wheel-dir", str(output), *map(str, trees)]
        try:
            subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=True,
                           timeout=BUILD_TIMEOUT)
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"pip wheel failed ({exc.returncode}): {exc.stderr.strip()[-2000:]}") from None
        built = [path for path in output.iterdir() if WHEEL_NAME.match(path.name)]
        if {WHEEL_NAME.match(path.name).group(1) for path in built} != set(AGENT_DISTRIBUTIONS):  # type: ignore[union-attr]
            raise RuntimeError(f"pip wheel built {sorted(p.name for p in output.iterdir())}")
        for stale in destination.glob("*.whl"):
            stale.unlink()
        for path in built:
            os.replace(path, destination / path.name)


def _find_wheels(directory: Path, version: str | None) -> dict[str, Wheel]:
    """The agent's wheels for ``version`` (any, for a fresh build) in ``directory``;
    empty unless both distributions are there."""
    found: dict[str, Wheel] = {}
    if directory.is_dir():
        for path in sorted(directory.iterdir()):
            match = WHEEL_NAME.match(path.name)
            if match and version in (None, match.group(2)) and path.is_file():
                found[path.name] = Wheel(path.name, path, _sha256(path))
    kinds = {WHEEL_NAME.match(name).group(1) for name in found}  # type: ignore[union-attr]
    return found if kinds == set(AGENT_DISTRIBUTIONS) else {}


class AgentInstaller:
    """Serves the install script and the agent's wheels for one coordinator."""

    def __init__(self, data_dir: Path, *, ca_fingerprint: str, checkout: Path | None,
                 public_url: str | None = None) -> None:
        """``checkout`` is the checkout to serve from (:func:`checkout_root`), or
        ``None`` to serve what was shipped into ``data_dir/installer``.
        ``public_url`` is the configured address (``CERTFLEET_PUBLIC_URL``); without it
        the script carries the address the client used to fetch it."""
        self.directory = data_dir / "installer"
        self.ca_fingerprint = ca_fingerprint
        self.public_url = public_url
        self.checkout = checkout
        self.version = importlib.metadata.version("certfleet-coordinator")
        self._lock = trio.Lock()
        self._wheels: dict[str, Wheel] | None = None

    # --- the script ----------------------------------------------------------------------

    def _script_path(self) -> Path:
        if self.checkout is not None:
            return self.checkout / "installers" / "install-agent.sh"
        return self.directory / "install-agent.sh"

    async def script(self, request_origin: str) -> RawResponse:
        """The install script with this coordinator's URL and CA fingerprint filled in.

        ``request_origin`` (``https://host:port`` as the client asked) is used when no
        public URL is configured. Raises :class:`errors.BadRequest` for an origin that
        is not a plain host and port, :class:`errors.NotFound` when there is no script.
        """
        url = (self.public_url or request_origin).rstrip("/")
        if not SAFE_URL.match(url):
            if self.public_url:
                log.error("CERTFLEET_PUBLIC_URL cannot be embedded in the install script: use https://HOST[:PORT]")
                raise errors.CertfleetError()
            raise errors.BadRequest("the Host header must be a host name or address, with an optional port")
        path = self._script_path()
        try:
            text = await trio.Path(path).read_text()
        except FileNotFoundError:
            log.warning("no agent install script at %s", path)
            raise errors.NotFound("this coordinator has no agent install script to serve") from None
        if URL_PLACEHOLDER not in text or FINGERPRINT_PLACEHOLDER not in text:
            log.error("%s lacks the %s and %s placeholders", path, URL_PLACEHOLDER, FINGERPRINT_PLACEHOLDER)
            raise errors.CertfleetError()
        body = text.replace(URL_PLACEHOLDER, url).replace(FINGERPRINT_PLACEHOLDER, self.ca_fingerprint)
        return RawResponse(body.encode(), "text/x-shellscript; charset=utf-8")

    # --- the wheels ----------------------------------------------------------------------

    async def wheels(self) -> dict[str, Wheel]:
        """The wheels to serve by file name: built once from the checkout, or shipped.

        Raises :class:`errors.NotFound` when there are none, and a bare
        :class:`errors.CertfleetError` (500, reason logged) when a build fails; a later
        request tries again.
        """
        async with self._lock:
            if self._wheels is None:
                # Shielded: a build can outlast the request that started it (the response
                # timeout), and its result must still be kept for the requests after it.
                with trio.CancelScope(shield=True):
                    found = await self._collect_wheels(self.directory / "wheels")
                if not found:
                    log.warning("no agent wheels for version %s in %s: put certfleet_shared and certfleet_agent"
                                " wheels there", self.version, self.directory / "wheels")
                    raise errors.NotFound("this coordinator has no agent wheels to serve")
                self._wheels = found
            return self._wheels

    async def _collect_wheels(self, destination: Path) -> dict[str, Wheel]:
        if self.checkout is None:
            return await trio.to_thread.run_sync(_find_wheels, destination, self.version)
        log.info("building the agent's wheels from %s", self.checkout)
        try:
            await trio.to_thread.run_sync(_build_wheels, self.checkout, destination)
        except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
            log.error("could not build the agent's wheels: %s", exc)
            raise errors.CertfleetError() from None
        return await trio.to_thread.run_sync(_find_wheels, destination, None)

    async def wheel_index(self) -> RawResponse:
        """A simple index (PEP 503 style, so ``pip --find-links`` reads it too): one
        link per wheel, with its SHA-256 in the fragment."""
        links = "\n".join(f'<a href="{html.escape(w.name)}#sha256={w.sha256}">{html.escape(w.name)}</a><br>'
                          for w in (await self.wheels()).values())
        page = ("<!DOCTYPE html>\n<html><head><title>certfleet agent wheels</title></head><body>\n"
                f"{links}\n</body></html>\n")
        return RawResponse(page.encode(), "text/html; charset=utf-8")

    async def wheel(self, name: str) -> RawResponse:
        """One wheel by its exact file name; anything else, a path included, is 404."""
        found = (await self.wheels()).get(name) if WHEEL_NAME.match(name) else None
        if found is None:
            raise errors.NotFound("no such wheel")
        body = await trio.Path(found.path).read_bytes()
        return RawResponse(body, "application/octet-stream")
