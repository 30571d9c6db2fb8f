"""One SSH connection (RFC 4251–4254) to a device, with its SFTP session
(draft-ietf-secsh-filexfer-02, as OpenSSH serves it): what the ``ssh`` deployer uses.

* The server must present the pinned host key: :class:`PinnedHostKey`, a
  :class:`paramiko.MissingHostKeyPolicy`, accepts that key and refuses every other;
  the client loads no ``known_hosts``, so paramiko asks the policy about every server,
  after the key exchange and before any authentication (a password is never sent to a
  server that is not the pinned one); the key is compared with the pin once more once
  connected. With a whole key pinned, only that key type is offered (RFC 4253 §7.1).
* Credentials are the agent's secret: a private key (OpenSSH or PEM) or a password,
  never logged nor put in an error or a ``repr``; no SSH agent, no ``~/.ssh`` keys.
* Files are written the atomic way: uploaded to a temp name beside the target, the
  final mode (and the replaced file's owner) set while still empty, synced with
  ``fsync@openssh.com`` where offered, then renamed over the old one with
  ``posix-rename@openssh.com`` — a server without it is refused rather than given a
  non-atomic replace.
* Commands are argv lists; SSH carries one command line (RFC 4254 §6.5), so the words
  are joined with :func:`shlex.join` and the remote POSIX shell sees exactly them.

paramiko is synchronous: every method here blocks, with its own time limits, and runs
in a worker thread.
"""

from __future__ import annotations

import io
import logging
import shlex
import socket
import stat
import time
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from secrets import token_hex

import paramiko
import trio
from paramiko.sftp import CMD_EXTENDED

from certfleet.shared.targets import SshTarget, parse_ssh_host_key

from ..commands import OUTPUT_LIMIT
from ..files import TEMP_MARKER
from ..secrets import SecretError, Secrets
from .base import DeployError
from .pipeline import MAX_FILE_BYTES

__all__ = ["COMMAND_TIMEOUT", "SESSION_ERRORS", "Credentials", "HostKeyRefused", "PinnedHostKey", "RemoteFile",
           "RemoteResult", "SshSession", "load_credentials", "where"]

log = logging.getLogger("certfleet.agent.deploy")

CONNECT_TIMEOUT = 20.0
"""Seconds for the TCP connection, the SSH banner, and authentication, each."""
IO_TIMEOUT = 30.0
"""Seconds an SFTP request may wait for its answer."""
COMMAND_TIMEOUT = 120.0
"""Seconds a remote config test or reload may run."""

_RSA_SIGNATURES = ("rsa-sha2-512", "rsa-sha2-256")
_HOST_KEY_ALGORITHMS = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                        *_RSA_SIGNATURES, "ssh-rsa")

SESSION_ERRORS = (paramiko.SSHException, OSError, EOFError)
"""What a failed SSH or SFTP call raises."""


def where(target: SshTarget) -> str:
    """``user@host:port``, for messages."""
    return f"{target.username}@{target.host}:{target.port}"


class HostKeyRefused(paramiko.SSHException):
    """The server's host key is not the pinned one."""

    def __init__(self, where: str, expected: str, seen: str, seen_type: str) -> None:
        super().__init__(f"refused {where}: its host key is {seen_type} {seen}, but the target pins {expected};"
                         " if the device's key really changed, update the target's host_key")
        self.expected, self.seen = expected, seen


class PinnedHostKey(paramiko.MissingHostKeyPolicy):
    """Accepts exactly the pinned key. The client is given no known hosts, so paramiko
    asks this policy about every server, after the key exchange has proved that the
    server holds the key (RFC 4253 §8) and before any authentication."""

    def __init__(self, where: str, pin_type: str | None, pin_fingerprint: str) -> None:
        self.where, self.pin_type, self.pin_fingerprint = where, pin_type, pin_fingerprint

    def check(self, key: paramiko.PKey) -> None:
        seen = key.fingerprint
        if seen != self.pin_fingerprint or (self.pin_type is not None and key.get_name() != self.pin_type):
            raise HostKeyRefused(self.where, self.pin_fingerprint, seen, key.get_name())

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        self.check(key)


@dataclass(frozen=True)
class Credentials:
    secret_name: str
    private_key: paramiko.PKey | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)


_KEY_CLASSES: tuple[type[paramiko.PKey], ...] = (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey)


def load_credentials(secrets: Secrets, name: str) -> Credentials:
    """A private key (OpenSSH or PEM; Ed25519, ECDSA or RSA) or else a password, from
    the agent's secret ``name``. Raises :class:`DeployError` (step ``prepare``) without
    quoting the secret."""
    try:
        value = secrets.get(name)
    except SecretError as exc:
        raise DeployError(str(exc), step="prepare") from None
    if not value.lstrip().startswith("-----BEGIN "):
        if not value:
            raise DeployError(f"the secret {name!r} is empty", step="prepare")
        return Credentials(name, password=value)
    for key_class in _KEY_CLASSES:
        try:
            return Credentials(name, private_key=key_class.from_private_key(io.StringIO(value.strip() + "\n")))
        except paramiko.PasswordRequiredException:
            raise DeployError(f"the private key in secret {name!r} is encrypted: store it without a passphrase"
                              " (the secret file, readable by the agent alone, is its protection)",
                              step="prepare") from None
        except (paramiko.SSHException, ValueError, IndexError):
            continue
    raise DeployError(f"the secret {name!r} looks like a private key, but not one that can be read"
                      " (OpenSSH or PEM format; Ed25519, ECDSA or RSA)", step="prepare")


@dataclass(frozen=True)
class RemoteFile:
    """A remote file as it is now."""

    content: bytes = field(repr=False)
    mode: int
    uid: int
    gid: int


@dataclass(frozen=True)
class RemoteResult:
    command: str
    where: str
    returncode: int | None
    """``None``: no answer in time; ``-1``: the server reported no exit status."""
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        status = "timed out" if self.returncode is None else f"exited {self.returncode}"
        text = f"`{self.command}` on {self.where} {status}"
        return text + (f"; output: {self.output.strip()}" if self.output.strip() else "")


# --- the session (blocking; each method runs in a worker thread) --------------------------

class SshSession:
    """One SSH connection with its SFTP session."""

    def __init__(self, target: SshTarget, credentials: Credentials) -> None:
        self.target, self.credentials = target, credentials
        self.where = where(target)
        pin_type, pin_fingerprint = parse_ssh_host_key(target.host_key)
        self.policy = PinnedHostKey(self.where, pin_type, pin_fingerprint)
        self.client = paramiko.SSHClient()
        self.sftp: paramiko.SFTPClient | None = None

    def _host_key_algorithms_to_disable(self) -> list[str]:
        """With a whole key pinned, offer only its type, so a server with several host
        keys presents that one (RFC 4253 §7.1); with a fingerprint, the usual order."""
        pinned = self.policy.pin_type
        if pinned is None:
            return []
        allowed = _RSA_SIGNATURES if pinned == "ssh-rsa" else (pinned,)
        return [name for name in _HOST_KEY_ALGORITHMS if name not in allowed]

    def connect(self) -> None:
        self.client.set_missing_host_key_policy(self.policy)
        self.client.connect(
            self.target.host, port=self.target.port, username=self.target.username,
            pkey=self.credentials.private_key, password=self.credentials.password,
            allow_agent=False, look_for_keys=False,  # only the secret the target names
            timeout=CONNECT_TIMEOUT, banner_timeout=CONNECT_TIMEOUT, auth_timeout=CONNECT_TIMEOUT,
            channel_timeout=CONNECT_TIMEOUT,
            disabled_algorithms={"keys": self._host_key_algorithms_to_disable()})
        transport = self.client.get_transport()
        if transport is None or not transport.is_authenticated():
            raise paramiko.SSHException("the connection closed during authentication")
        self.policy.check(transport.get_remote_server_key())  # the policy must not be the only check
        self.sftp = self.client.open_sftp()
        self.sftp.get_channel().settimeout(IO_TIMEOUT)

    def close(self) -> None:
        if self.sftp is not None:
            self.sftp.close()
        self.client.close()

    # --- files --------------------------------------------------------------------------

    def read(self, path: str) -> RemoteFile | None:
        """The file at ``path``, ``None`` if absent. Refuses a symbolic link (a rename
        would replace the link, not what it points to), anything but a regular file,
        and more than :data:`MAX_FILE_BYTES`."""
        assert self.sftp is not None
        try:
            info = self.sftp.lstat(path)
        except FileNotFoundError:
            return None
        mode = info.st_mode or 0
        if stat.S_ISLNK(mode):
            raise OSError(f"{path} on {self.where} is a symbolic link: name the file itself in the target")
        if not stat.S_ISREG(mode):
            raise OSError(f"{path} on {self.where} is not a regular file")
        if (info.st_size or 0) > MAX_FILE_BYTES:
            raise OSError(f"{path} on {self.where} is larger than {MAX_FILE_BYTES} bytes")
        with self.sftp.open(path, "rb") as handle:
            content = handle.read(MAX_FILE_BYTES + 1)
        return RemoteFile(content, stat.S_IMODE(mode), info.st_uid or 0, info.st_gid or 0)

    def remove_leftovers(self, paths: list[str]) -> None:
        """Temp files a crashed attempt left beside ``paths``."""
        assert self.sftp is not None
        by_directory: dict[str, set[str]] = {}
        for path in paths:
            remote = PurePosixPath(path)
            by_directory.setdefault(str(remote.parent), set()).add(remote.name)
        for directory, names in by_directory.items():
            try:
                entries = self.sftp.listdir(directory)
            except FileNotFoundError:
                raise OSError(f"the directory {directory} does not exist on {self.where}") from None
            for entry in entries:
                if any(entry.startswith(f"{TEMP_MARKER}{name}.") for name in names):
                    self.sftp.remove(f"{directory}/{entry}")

    def _fsync(self, handle: paramiko.SFTPFile) -> None:
        """``fsync@openssh.com`` (OpenSSH PROTOCOL §4.6), which paramiko does not wrap;
        a server without it just answers "unsupported", and the rename still makes the
        replacement atomic."""
        assert self.sftp is not None
        try:
            self.sftp._request(CMD_EXTENDED, "fsync@openssh.com", handle.handle)
        except OSError:
            log.debug("%s does not offer fsync@openssh.com", self.where)

    def stage(self, path: str, content: bytes, *, mode: int, owner: tuple[int, int] | None) -> str:
        """Upload ``content`` to a new temp file beside ``path``: created exclusively,
        its final mode (and the owner of the file it replaces) set while still empty,
        then written and fsynced. Returns the temp path."""
        assert self.sftp is not None
        remote = PurePosixPath(path)
        temp = str(remote.with_name(f"{TEMP_MARKER}{remote.name}.{token_hex(4)}"))
        with self.sftp.open(temp, "wbx") as handle:
            try:
                handle.chmod(mode)
                if owner is not None:
                    created = handle.stat()
                    if (created.st_uid, created.st_gid) != owner:
                        try:
                            handle.chown(*owner)
                        except OSError:
                            raise OSError(f"cannot give {path} on {self.where} the owner of the file it replaces"
                                          f" (uid {owner[0]}, gid {owner[1]}): log in as that user or root")\
                                from None
                handle.write(content)
                handle.flush()
                self._fsync(handle)
            except BaseException:
                handle.close()
                self._remove_quietly(temp)
                raise
        return temp

    def rename(self, temp: str, path: str) -> None:
        assert self.sftp is not None
        try:
            self.sftp.posix_rename(temp, path)
        except OSError as exc:
            self._remove_quietly(temp)
            if "unsupported" in str(exc).lower():
                raise OSError(f"the SFTP server on {self.where} does not offer posix-rename@openssh.com;"
                              " certfleet does not replace files without an atomic rename") from None
            raise

    def remove(self, path: str) -> None:
        assert self.sftp is not None
        try:
            self.sftp.remove(path)
        except FileNotFoundError:
            pass

    def _remove_quietly(self, path: str) -> None:
        try:
            self.remove(path)
        except OSError:
            log.warning("could not remove the temp file %s on %s", path, self.where)

    # --- commands -----------------------------------------------------------------------

    def run(self, argv: tuple[str, ...], timeout: float = COMMAND_TIMEOUT) -> RemoteResult:
        """Run ``argv`` on the device: one exec request (RFC 4254 §6.5), stdout and
        stderr merged so a chatty command cannot fill one stream while the other is
        read, output clipped to :data:`OUTPUT_LIMIT`. Cancelling the trio task that
        started this thread stops the wait within half a second (and closes the
        channel) instead of holding the agent until the command ends."""
        transport = self.client.get_transport()
        assert transport is not None
        command = shlex.join(argv)
        deadline = time.monotonic() + timeout
        channel = transport.open_session(timeout=CONNECT_TIMEOUT)
        try:
            channel.set_combine_stderr(True)
            channel.exec_command(command)
            output = bytearray()
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return RemoteResult(command, self.where, None, output.decode(errors="replace"))
                trio.from_thread.check_cancelled()
                channel.settimeout(min(remaining, 0.5))
                try:
                    chunk = channel.recv(4096)
                except socket.timeout:
                    continue
                if not chunk:
                    break
                output += chunk[: max(0, OUTPUT_LIMIT - len(output))]
            if not channel.status_event.wait(max(0.0, deadline - time.monotonic())):
                return RemoteResult(command, self.where, None, output.decode(errors="replace"))
            return RemoteResult(command, self.where, channel.recv_exit_status(), output.decode(errors="replace"))
        finally:
            channel.close()
