"""A private OpenSSH server for the ``ssh`` deployer's tests: the "device" a proxy agent
deploys to is this machine, reached through a real ``sshd`` (Debian's openssh-server)
on 127.0.0.1 and a free high port.

The server runs in the foreground (``sshd -D -e -f CONFIG``) from a configuration
written for the test: its own host keys (Ed25519 and ECDSA, made with ``ssh-keygen``),
its own ``AuthorizedKeysFile`` holding the client key the agent gets as a secret,
``UsePAM no``, ``StrictModes no`` (the files live under pytest's temp directory), the
built-in SFTP server (which offers ``posix-rename@openssh.com`` and
``fsync@openssh.com``) and a PID file in the temp directory. It logs to a file the
tests read. The system's own sshd service is never started or touched.

Login is as the user running the tests (root here: ``PermitRootLogin yes``). As root,
sshd needs its privilege separation directory ``/run/sshd`` (what the packaged service
creates at start); it is created if missing.

Password authentication needs a password that sshd checks against ``/etc/shadow``.
The system's file is not changed: when running as root with ``unshare`` available,
sshd starts in a private mount namespace where a copy of ``/etc/shadow`` with a test
password for this user is bind-mounted over the real one (this module's ``__main__``
does the mount, then becomes sshd). Elsewhere ``password`` is ``None`` and password
tests skip.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.deployers.mail_servers import STOP_TIMEOUT, free_port, wait_listening

SSHD = "/usr/sbin/sshd"
REPOSITORY = Path(__file__).resolve().parents[2]
TEST_PASSWORD = "correct-horse-battery-3141"
PORT_ATTEMPTS = 3


@dataclass
class SshServer:
    port: int
    user: str
    directory: Path
    log: Path
    ed25519_host_key: str
    """The public host key line, ``ssh-ed25519 AAAA…``."""
    ecdsa_host_key: str
    client_key: str
    """The client's private key (OpenSSH format), listed in the authorized keys."""
    password: str | None
    """The user's password inside sshd's namespace; ``None`` when that is not possible."""

    def fingerprint(self, key_line: str) -> str:
        """``SHA256:…`` of a public key line, as ``ssh-keygen -l`` prints it."""
        path = self.directory / "fingerprint.pub"
        path.write_text(key_line + "\n")
        completed = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(path)], capture_output=True,
                                   text=True, check=True)
        return completed.stdout.split()[1]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def ssh_keygen(path: Path, key_type: str) -> str:
    """A new key pair at ``path`` (no passphrase); returns the public key line."""
    subprocess.run(["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", "certfleet-test", "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


def _password_namespace_possible() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None and Path("/etc/shadow").exists()


def _shadow_with_password(directory: Path, user: str, password: str) -> Path:
    """A copy of ``/etc/shadow`` where ``user`` has ``password`` (SHA-512 crypt)."""
    hashed = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password, capture_output=True, text=True,
                            check=True).stdout.strip()
    lines = []
    for line in Path("/etc/shadow").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            fields[1] = hashed
        lines.append(":".join(fields))
    shadow = directory / "shadow"
    shadow.touch(mode=0o600)
    shadow.write_text("\n".join(lines) + "\n")
    return shadow


def _config(directory: Path, port: int, *, password: bool) -> Path:
    config = directory / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {directory / 'host_ed25519'}",
        f"HostKey {directory / 'host_ecdsa'}",
        f"PidFile {directory / 'sshd.pid'}",
        f"AuthorizedKeysFile {directory / 'authorized_keys'}",
        "UsePAM no",
        "StrictModes no",
        "PermitRootLogin yes",
        "PubkeyAuthentication yes",
        f"PasswordAuthentication {'yes' if password else 'no'}",
        "KbdInteractiveAuthentication no",
        "Subsystem sftp internal-sftp",
        "LogLevel VERBOSE",
        "",
    ]))
    return config


@contextmanager
def running_sshd(directory: Path) -> Iterator[SshServer]:
    """A private sshd on 127.0.0.1, stopped when the block ends."""
    directory.mkdir(parents=True, exist_ok=True)
    user = getpass.getuser()
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    ed25519 = ssh_keygen(directory / "host_ed25519", "ed25519")
    ecdsa = ssh_keygen(directory / "host_ecdsa", "ecdsa")
    client = ssh_keygen(directory / "client", "ed25519")
    (directory / "authorized_keys").write_text(client + "\n")
    password = TEST_PASSWORD if _password_namespace_possible() else None
    log = directory / "sshd.log"
    for _ in range(PORT_ATTEMPTS):  # a free port can be taken between the probe and sshd's bind
        port = free_port()
        argv = [SSHD, "-D", "-e", "-f", str(_config(directory, port, password=password is not None))]
        if password is not None:
            shadow = _shadow_with_password(directory, user, password)
            argv = ["unshare", "--mount", "--propagation", "private", "--", sys.executable, "-m", __name__,
                    str(shadow), *argv]
        with log.open("ab") as sink:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink, cwd=REPOSITORY)
        try:
            wait_listening(port, greeting=b"SSH-", alive=lambda started=process: started.poll() is None, log=log)
            break
        except RuntimeError:
            _stop(process)
            if "Address already in use" not in log.read_text(errors="replace"):
                raise
    else:
        raise RuntimeError(f"sshd found no free port in {PORT_ATTEMPTS} attempts")
    try:
        yield SshServer(port, user, directory, log, ed25519, ecdsa,
                        (directory / "client").read_text(), password)
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    """Stop the sshd this module started (by its own process, never by name)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


if __name__ == "__main__":
    # Inside the private mount namespace `unshare` made: put the test's shadow file
    # over /etc/shadow for this namespace alone, then become sshd.
    shadow_copy, *sshd_argv = sys.argv[1:]
    subprocess.run(["mount", "--bind", shadow_copy, "/etc/shadow"], check=True)
    os.execv(sshd_argv[0], sshd_argv)
