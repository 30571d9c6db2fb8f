"""What this host lets targets do, whatever the coordinator signs.

Target settings come from the coordinator inside signed work orders, and the agent
often runs as root. Two optional files in the agent's directory narrow that, so that
neither a compromised coordinator nor an operator allowed to declare targets can turn
a deployment into arbitrary code or arbitrary file writes on the host:

* ``commands.allow``: the commands targets may run (config tests, reloads, hooks),
  whole: one command per line as its words, the program by absolute path or by a name
  looked up on ``PATH``; a last word ``*`` admits any further arguments. Programs are
  compared as they will be run, not through a symlink to another program (``reboot``
  may be a link to ``systemctl``, and ``systemctl reload nginx`` must not admit it),
  though symlinked directories are resolved (``/bin`` → ``/usr/bin``); and arguments
  matter (an allowed program with a file of the attacker's choosing as its config
  would read that file and print its lines as errors);
* ``paths.allow``: the directories targets may write into or use (certificates,
  keys, keystores, dynamic configs, the HAProxy master socket, a kubeconfig),
  compared after resolving symlinks, subdirectories included.

One entry per line, ``#`` starts a comment. Without a file, that kind of action is
unrestricted, and the agent says so once at start. A file that group or others can
write is refused: whoever can edit it can widen it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["HostPolicy", "PolicyRefused"]

MAX_BYTES = 1 << 20


class PolicyRefused(Exception):
    pass


def _entries(path: Path) -> list[str] | None:
    """The entries of an allow file, ``None`` if it does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PolicyRefused(f"cannot read {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "r", encoding="utf-8", errors="strict") as handle:
        if os.fstat(handle.fileno()).st_mode & 0o022:
            raise PolicyRefused(f"{path} is writable by group or others: chmod go-w it")
        lines = handle.read(MAX_BYTES).splitlines()
    return [entry for line in lines if (entry := line.split("#", 1)[0].strip())]


def _program(program: str) -> str | None:
    """The program as it will be run: absolute, found on ``PATH`` if given by name,
    its directory resolved (``/bin`` is ``/usr/bin`` on merged-/usr systems) but not
    the program itself (a link to another program is not that program)."""
    found = program if os.path.isabs(program) else shutil.which(program)
    if not found or not os.path.exists(found):
        return None
    return os.path.join(os.path.realpath(os.path.dirname(found)), os.path.basename(found))


def _allows(entry: list[str], argv: list[str]) -> bool:
    if entry and entry[-1] == "*":
        fixed = entry[:-1]
        return len(argv) >= len(fixed) and argv[1:len(fixed)] == fixed[1:]
    return argv[1:] == entry[1:] and len(argv) == len(entry)


def _host_port(host: str, port: int) -> str:
    host = host.lower().strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def device_address(kind: str, target) -> str:
    """How a proxy device is named in ``proxy_targets``: ``host:port`` (SSH) or the
    URL's ``host:port`` (F5, port 443 unless the URL says otherwise); IPv6 in brackets."""
    if kind == "ssh":
        return _host_port(target.host, target.port)
    parts = urlsplit(target.url)
    return _host_port(parts.hostname or "", parts.port or 443)


def normalized_address(kind: str, address: str) -> str:
    """``proxy_targets`` addresses as written by an operator: ``host``, ``host:port``,
    ``[v6]:port``, a bare IPv6 address, or (for F5) the device's URL."""
    default_port = 22 if kind == "ssh" else 443
    if "://" in address:
        parts = urlsplit(address)
        return _host_port(parts.hostname or "", parts.port or default_port)
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return _host_port(host, int(rest.lstrip(":") or default_port))
    if address.count(":") == 1:
        host, _, port = address.partition(":")
        return _host_port(host, int(port) if port.isdigit() else default_port)
    return _host_port(address, default_port)


class HostPolicy:
    def __init__(self, commands_file: Path, paths_file: Path, devices: Iterable = ()) -> None:
        """``devices``: the ``proxy_targets`` of the agent's settings, the only devices
        an ``ssh`` or ``f5`` target may reach."""
        self.commands_file = commands_file
        self.paths_file = paths_file
        self.devices = tuple(devices)

    def check_device(self, kind: str, target) -> None:
        """A proxy target sends a credential from this host's secrets file to a device:
        only to a device the host's operator listed, whatever the coordinator signs (a
        target pointing at another host, its key pinned, would otherwise receive the
        password)."""
        address = device_address(kind, target)
        listed = {normalized_address(kind, d.address) for d in self.devices if d.kind == kind}
        if address not in listed:
            raise PolicyRefused(f"the {kind} device {address} is not among the proxy_targets of this agent's"
                                " settings (agent.toml); add it there to let targets reach it")

    def unrestricted(self) -> list[str]:
        """What is not narrowed on this host, for the warning at start."""
        return [f"{what} ({file} is absent)" for what, file in
                (("programs", self.commands_file), ("paths", self.paths_file)) if not file.exists()]

    def check_commands(self, *argvs: Iterable[str] | None) -> None:
        entries = _entries(self.commands_file)
        if entries is None:
            return
        allowed = [[_program(words[0]) or words[0], *words[1:]] for words in (e.split() for e in entries)]
        for argv in argvs:
            argv = list(argv or ())
            if not argv:
                continue
            program = _program(argv[0])
            if program is None:
                raise PolicyRefused(f"program {argv[0]!r} not found on PATH")
            if not any(entry[0] == program and _allows(entry, argv) for entry in allowed):
                shown = " ".join([program, *argv[1:]])
                raise PolicyRefused(f"the command `{shown}` is not listed in {self.commands_file}; add it there"
                                    " to let targets run it")

    def check_paths(self, *paths: Path) -> None:
        entries = _entries(self.paths_file)
        if entries is None:
            return
        allowed = [os.path.realpath(entry) for entry in entries if os.path.isabs(entry)]
        for path in paths:
            # The file itself may not exist yet; its directory decides where it lands.
            where = os.path.join(os.path.realpath(path.parent), path.name)
            if not any(os.path.commonpath([root, where]) == root for root in allowed):
                raise PolicyRefused(f"{path} is outside the directories listed in {self.paths_file}")
