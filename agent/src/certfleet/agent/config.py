"""Where the agent keeps its state, what enrollment gave it, and the operator's settings.

Two files with two owners:

* ``agent.json`` in the state directory is written by ``certfleet-agent enroll``: the
  enrolled identity (agent id, the coordinator it enrolled with, the pinned work-order
  keys). Operators do not edit it.
* ``agent.toml`` (default ``/etc/certfleet/agent.toml``, or ``--config``, or
  ``CERTFLEET_AGENT_CONFIG``) holds the operator's settings: coordinator URL, CA pin,
  state directory, discovery roots, proxy targets, secrets file, log level.

Precedence, highest first: the command line, the environment, ``agent.toml``, what
enrollment stored (the coordinator URL only), the built-in default. Every resolved
value remembers where it came from, so ``certfleet-agent config check`` can say.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519

from certfleet.shared import jws
from certfleet.shared.paths import state_dir
from certfleet.shared.pki import certificate_fingerprint, load_private_key, private_key_pem

from .files import write_atomic
from .policy import normalized_address

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_FILE",
    "AgentConfig",
    "AgentPaths",
    "AgentSettings",
    "ConfigError",
    "ProxyTarget",
    "check_enrolled_ca",
    "default_agent_dir",
    "load_settings",
]

DEFAULT_CONFIG_FILE = Path("/etc/certfleet/agent.toml")
CONFIG_ENV = "CERTFLEET_AGENT_CONFIG"
MAX_CONFIG_BYTES = 1 << 20
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
              "error": logging.ERROR}


class ConfigError(Exception):
    """The operator's settings are unusable. The message names the file or variable
    and the key, never a value (a misplaced secret must not end up in a log)."""


def default_agent_dir() -> Path:
    """``CERTFLEET_AGENT_DIR``; else ``/var/lib/certfleet-agent`` for root, else XDG."""
    return state_dir("CERTFLEET_AGENT_DIR", "certfleet-agent")


@dataclass(frozen=True)
class AgentPaths:
    root: Path
    secrets_file: Path | None = None
    """Where the operator keeps the secrets file, when not in the state directory."""

    @property
    def config(self) -> Path:
        return self.root / "agent.json"

    @property
    def identity_key(self) -> Path:
        return self.root / "identity.key"

    @property
    def ca_bundle(self) -> Path:
        return self.root / "coordinator-ca.pem"

    @property
    def state(self) -> Path:
        return self.root / "state.db"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def allowed_commands(self) -> Path:
        """Programs targets may run (one per line); absent: any."""
        return self.root / "commands.allow"

    @property
    def allowed_paths(self) -> Path:
        """Directories targets may write into (one per line); absent: any."""
        return self.root / "paths.allow"

    @property
    def secrets(self) -> Path:
        """Secrets that targets name (``password_secret``…): JSON, 0600, never sent."""
        return self.secrets_file or self.root / "secrets.json"


@dataclass(frozen=True)
class AgentConfig:
    coordinator: str
    agent_id: str
    work_order_keys: dict[str, str]
    """Pinned work-order public keys by kid (raw Ed25519, base64url)."""

    def pinned_keys(self) -> dict[str, ed25519.Ed25519PublicKey]:
        return {kid: jws.public_key_from_raw(raw) for kid, raw in self.work_order_keys.items()}

    @classmethod
    def load(cls, paths: AgentPaths) -> AgentConfig:
        if not paths.config.exists():
            raise FileNotFoundError(f"{paths.config} does not exist: run `certfleet-agent enroll` first")
        data = json.loads(paths.config.read_text())
        return cls(data["coordinator"], data["agent_id"], dict(data["work_order_keys"]))

    def save(self, paths: AgentPaths) -> None:
        data = {"coordinator": self.coordinator, "agent_id": self.agent_id,
                "work_order_keys": self.work_order_keys}
        write_atomic(paths.config, json.dumps(data, indent=2).encode() + b"\n", mode=0o600)


def load_identity(paths: AgentPaths) -> ed25519.Ed25519PrivateKey:
    key = load_private_key(paths.identity_key.read_bytes())
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError(f"{paths.identity_key} is not an Ed25519 key")
    return key


def save_identity(paths: AgentPaths, key: ed25519.Ed25519PrivateKey) -> None:
    write_atomic(paths.identity_key, private_key_pem(key), mode=0o600)


# --- operator settings (agent.toml) -----------------------------------------------------


@dataclass(frozen=True)
class ProxyTarget:
    """A device this agent reaches on behalf of the coordinator (stored; the proxy
    deployers use it)."""

    name: str
    kind: str
    address: str


@dataclass(frozen=True)
class AgentSettings:
    config_file: Path | None
    """The file that was read; ``None`` when the default file does not exist."""
    state_dir: Path
    coordinator_url: str | None = None
    """Overrides the URL stored at enrollment (the coordinator moved)."""
    ca_fingerprint: str | None = None
    """SHA-256 (lower-case hex) of the coordinator's root CA: what enrollment pins,
    and what the enrolled CA must match."""
    secrets_file: Path | None = None
    discovery_roots: tuple[Path, ...] = ()
    """Where scans look and the watcher watches; empty: the default roots."""
    probe_ranges: tuple[str, ...] = ()
    """The only networks a ``probe`` order may touch (CIDR); empty: probes are refused."""
    watch_changes: bool = True
    """Watch the discovery roots and the deployed files (drift) while running."""
    proxy_targets: tuple[ProxyTarget, ...] = ()
    log_level: str = "info"
    sources: Mapping[str, str] = field(default_factory=dict)
    """Where each setting came from: ``file``, ``env NAME``, ``command line``, ``default``."""

    def paths(self) -> AgentPaths:
        return AgentPaths(self.state_dir, secrets_file=self.secrets_file)

    @property
    def log_level_number(self) -> int:
        return LOG_LEVELS[self.log_level]

    def effective(self) -> dict[str, tuple[Any, str]]:
        """Every setting as ``(JSON-friendly value, source)``, for ``config check``."""
        paths = self.paths()
        values: dict[str, Any] = {
            "coordinator_url": self.coordinator_url,
            "ca_fingerprint": self.ca_fingerprint,
            "state_dir": str(self.state_dir),
            "secrets_file": str(paths.secrets),
            "discovery_roots": [str(root) for root in self.discovery_roots],
            "probe_ranges": list(self.probe_ranges),
            "watch_changes": self.watch_changes,
            "proxy_targets": [{"name": t.name, "kind": t.kind, "address": t.address}
                              for t in self.proxy_targets],
            "log_level": self.log_level,
        }
        return {key: (value, self.sources.get(key, "default")) for key, value in values.items()}


def _type_name(value: object) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
             list: "an array", dict: "a table"}
    return names.get(type(value), f"a {type(value).__name__}")


def _string(where: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, not {_type_name(value)}")
    if not value.strip():
        raise ConfigError(f"{where} must not be empty")
    return value.strip()


def _url(where: str, value: object) -> str:
    text = _string(where, value)
    parts = urlsplit(text)
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(f"{where} must be an https:// URL with a host")
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        raise ConfigError(f"{where} must not carry credentials, a query or a fragment")
    return text.rstrip("/")


def _fingerprint(where: str, value: object) -> str:
    text = _string(where, value).lower().removeprefix("sha256:").replace(":", "")
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise ConfigError(f"{where} must be a SHA-256 fingerprint (64 hex digits, colons allowed)")
    return text


def _absolute_path(where: str, value: object) -> Path:
    path = Path(_string(where, value))
    if not path.is_absolute():
        raise ConfigError(f"{where} must be an absolute path")
    return path


def _path_list(where: str, value: object) -> tuple[Path, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be an array of paths, not {_type_name(value)}")
    return tuple(_absolute_path(f"{where}[{index}]", item) for index, item in enumerate(value))


def _log_level(where: str, value: object) -> str:
    level = _string(where, value).lower()
    if level not in LOG_LEVELS:
        raise ConfigError(f"{where} must be one of {', '.join(LOG_LEVELS)}")
    return level


def _networks(where: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be an array of CIDR ranges, not {_type_name(value)}")
    ranges = []
    for index, item in enumerate(value):
        text = _string(f"{where}[{index}]", item)
        try:
            ranges.append(str(ipaddress.ip_network(text, strict=True)))
        except ValueError as exc:
            raise ConfigError(f"{where}[{index}]: {exc}") from None
    return tuple(ranges)


def _env_networks(where: str, value: str) -> tuple[str, ...]:
    return _networks(where, [item.strip() for item in value.split(",") if item.strip()])


def _boolean(where: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, not {_type_name(value)}")
    return value


def _env_boolean(where: str, value: str) -> bool:
    words = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
    if value.strip().lower() not in words:
        raise ConfigError(f"{where} must be true or false")
    return words[value.strip().lower()]


_PROXY_TARGET_KEYS = ("name", "kind", "address")


def _proxy_targets(where: str, value: object) -> tuple[ProxyTarget, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be an array of tables ([[proxy_targets]]), not {_type_name(value)}")
    targets = []
    for index, entry in enumerate(value):
        here = f"{where}[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{here} must be a table, not {_type_name(entry)}")
        for key in entry:
            if key not in _PROXY_TARGET_KEYS:
                raise ConfigError(f"{here}: unknown key {key!r} (known: {', '.join(_PROXY_TARGET_KEYS)})")
        missing = [key for key in _PROXY_TARGET_KEYS if key not in entry]
        if missing:
            raise ConfigError(f"{here}: missing {', '.join(missing)}")
        target = ProxyTarget(*(_string(f"{here}.{key}", entry[key]) for key in _PROXY_TARGET_KEYS))
        if target.kind not in ("ssh", "f5"):
            raise ConfigError(f"{here}.kind must be ssh or f5 (the kinds that reach a device)")
        try:
            normalized_address(target.kind, target.address)
        except ValueError:
            raise ConfigError(f"{here}.address must be host, host:port, [ipv6]:port or (f5) a URL") from None
        targets.append(target)
    names = [target.name for target in targets]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: names must be unique")
    return tuple(targets)


@dataclass(frozen=True)
class _Key:
    parse: Callable[[str, object], Any]
    env: str | None = None
    parse_env: Callable[[str, str], Any] | None = None
    """How to read the environment variable, when it differs from the file's value."""


def _env_path(where: str, value: str) -> Path:
    # A relative path in the environment (or on the command line) is relative to the
    # working directory, as it always was; the file must say what it means.
    return Path(value)


def _env_path_list(where: str, value: str) -> tuple[Path, ...]:
    return tuple(_absolute_path(where, item) for item in value.split(os.pathsep) if item)


KEYS: dict[str, _Key] = {
    "coordinator_url": _Key(_url, "CERTFLEET_COORDINATOR_URL"),
    "ca_fingerprint": _Key(_fingerprint, "CERTFLEET_CA_FINGERPRINT"),
    "state_dir": _Key(_absolute_path, "CERTFLEET_AGENT_DIR", _env_path),
    "secrets_file": _Key(_absolute_path, "CERTFLEET_AGENT_SECRETS", _env_path),
    "discovery_roots": _Key(_path_list, "CERTFLEET_DISCOVERY_ROOTS", _env_path_list),
    "probe_ranges": _Key(_networks, "CERTFLEET_PROBE_RANGES", _env_networks),
    "watch_changes": _Key(_boolean, "CERTFLEET_WATCH_CHANGES", _env_boolean),
    "proxy_targets": _Key(_proxy_targets),
    "log_level": _Key(_log_level, "CERTFLEET_LOG_LEVEL"),
}
"""Every key ``agent.toml`` may hold, and the variable that overrides it."""


def _default_state_dir(env: Mapping[str, str]) -> Path:
    """``/var/lib/certfleet-agent`` for root, the XDG data dir otherwise."""
    if os.geteuid() == 0:
        return Path("/var/lib/certfleet-agent")
    return Path(env.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "certfleet-agent"


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            info = os.fstat(handle.fileno())
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{path} is not a regular file")
    # The file decides which coordinator and CA the agent trusts: whoever can write it
    # can take the host over, so only its owner (root or the agent's user) may.
    if info.st_uid not in (0, os.geteuid()):
        raise ConfigError(f"{path} must belong to root or to the agent's user")
    if info.st_mode & 0o022:
        raise ConfigError(f"{path} is writable by group or others"
                          f" (mode {stat.S_IMODE(info.st_mode):o}): chmod go-w it")
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def load_settings(config_file: Path | None = None, *, agent_dir: Path | None = None,
                  environ: Mapping[str, str] | None = None) -> AgentSettings:
    """Resolve the agent's settings.

    ``config_file`` and ``agent_dir`` come from the command line (``--config``,
    ``--agent-dir``). Without ``config_file``, ``CERTFLEET_AGENT_CONFIG`` names the
    file; without either, ``/etc/certfleet/agent.toml`` is read if it exists. A file
    named explicitly must exist.

    Raises :class:`ConfigError` for a missing or unreadable file, invalid TOML, an
    unknown key, a value of the wrong type or form, or a bad environment variable.
    """
    env = os.environ if environ is None else environ
    if config_file is None and env.get(CONFIG_ENV):
        config_file = Path(env[CONFIG_ENV])
    elif config_file is None and DEFAULT_CONFIG_FILE.exists():
        config_file = DEFAULT_CONFIG_FILE
    raw = _read_config_file(config_file) if config_file is not None else {}

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, value in raw.items():
        spec = KEYS.get(key)
        if spec is None:
            raise ConfigError(f"{config_file}: unknown key {key!r} (known: {', '.join(KEYS)})")
        values[key] = spec.parse(f"{config_file}: {key}", value)
        sources[key] = "file"
    for key, spec in KEYS.items():
        if spec.env and (text := env.get(spec.env, "").strip()):
            values[key] = (spec.parse_env or spec.parse)(spec.env, text)
            sources[key] = f"env {spec.env}"
    if agent_dir is not None:
        values["state_dir"] = agent_dir
        sources["state_dir"] = "command line --agent-dir"
    if "state_dir" not in values:
        values["state_dir"] = _default_state_dir(env)
    return AgentSettings(config_file=config_file, sources=sources, **values)


def check_enrolled_ca(settings: AgentSettings, paths: AgentPaths) -> bool | None:
    """Whether the CA pinned at enrollment is the one ``ca_fingerprint`` names
    (``None``: nothing to compare, no pin or not enrolled).

    Raises :class:`ConfigError` when they differ: the agent would otherwise trust a
    coordinator the operator's settings do not.
    """
    if settings.ca_fingerprint is None or not paths.ca_bundle.exists():
        return None
    try:
        enrolled = x509.load_pem_x509_certificates(paths.ca_bundle.read_bytes())
    except ValueError:
        raise ConfigError(f"{paths.ca_bundle} is not a PEM certificate bundle") from None
    if any(certificate_fingerprint(certificate) == settings.ca_fingerprint for certificate in enrolled):
        return True
    raise ConfigError(f"the coordinator CA pinned at enrollment ({paths.ca_bundle}) does not match"
                      f" ca_fingerprint ({settings.sources.get('ca_fingerprint', 'default')});"
                      " fix the setting or enroll again")
