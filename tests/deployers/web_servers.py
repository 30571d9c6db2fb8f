"""Private nginx, Apache httpd and HAProxy instances for deployer tests.

Each server runs as a daemon from its own configuration under the test's ``tmp_path``,
listens with TLS on 127.0.0.1 and a free high port, and is stopped when its ``with``
block ends (SIGTERM to the master, whose pid it wrote at start, so a test that left the
configuration broken still stops it):

* nginx: ``nginx -e LOG -c CONF -p PREFIX/`` (pid, error log and temp paths in the
  prefix), ``nginx -t`` as the config test and ``nginx -s reload`` as the reload;
* Apache httpd: ``apache2 -f CONF -k start`` with a minimal configuration loading
  ``mod_mpm_event``, ``mod_authz_core`` and ``mod_ssl`` from the system's module
  directory (pid file, error log, runtime directory and mutexes in the prefix),
  ``apache2 -t -f CONF`` and ``apache2 -f CONF -k graceful``;
* HAProxy: master-worker mode, ``haproxy -W -D -S MASTER_SOCKET -p PID -f CONF_DIR``,
  ``haproxy -c -f CONF_DIR`` as the config test and ``reload`` on the master socket.

Every configuration leaves room for a broken addition (nginx ``include`` and Apache
``IncludeOptional`` of ``conf.d/*.conf``; HAProxy reads every ``*.cfg`` of its
configuration directory), so a test can break the config test without touching the
files certfleet manages. Each server also says how often it has been reloaded, from its
own evidence: its error log (nginx, Apache) or its master CLI (HAProxy).

Certificates, free ports and the independent ``openssl s_client`` check come from
:mod:`tests.deployers.mail_servers`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

from certfleet.agent.deployers import Bundle
from certfleet.shared.targets import ApacheTarget, HaproxyTarget, NginxTarget, Target, TlsCheck
from tests.deployers.mail_servers import free_port, wait_listening

KINDS = ("nginx", "apache", "haproxy")
SERVER_NAME = "www.example.test"
APACHE_MODULES = Path("/usr/lib/apache2/modules")
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0

# Files certfleet finds in place before its first deployment carry an owner and modes
# that are not the agent's defaults, so a test can see that they are kept.
PREVIOUS_OWNER = (4242, 4243)
CERTIFICATE_MODE = 0o640
KEY_MODE = 0o600


def program(name: str) -> str:
    """The absolute path of a server program; skips the test when it is not installed
    (``scripts/ensure-system-packages.sh`` installs them in CI)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        pytest.skip(f"{name} is not installed")
    return found


def _pid_alive(pid: int) -> bool:
    """Running and not a zombie (an init that never reaps leaves stopped daemons as zombies)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def _owns(pid: int, marker: str) -> bool:
    """Whether ``pid`` is still the daemon started with ``marker`` on its command line,
    not an unrelated process that reused the number."""
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return False


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None


def wait_pid(pid_file: Path) -> int:
    """The daemon's pid, once it has written its pid file."""
    deadline = time.monotonic() + START_TIMEOUT
    while (pid := read_pid(pid_file)) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{pid_file} was not written")
        time.sleep(0.01)
    return pid


def stop_daemon(pid: int, marker: str) -> None:
    """SIGTERM to the daemon ``pid`` (it stops its own workers), then wait for it; on
    timeout SIGKILL its process group (a daemon leads its own session)."""
    if not _pid_alive(pid) or not _owns(pid, marker):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            with suppress(ProcessLookupError):  # it may exit just now
                if os.getpgid(pid) == pid:
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.02)


@dataclass
class WebServer:
    """One private server: where its certificate lives, how to start, test, reload,
    break and stop it, and a target aimed at it."""

    kind: str
    directory: Path
    port: int
    certificate: Path
    key: Path | None
    """``None`` for HAProxy, which reads one combined PEM."""
    pid: int | None = None
    """The master's pid, read once at start: it stays the same across reloads, while
    the pid file does not always exist (HAProxy's master rewrites it as it re-executes)."""

    # --- what each kind provides ---------------------------------------------------------

    @property
    def config(self) -> Path:
        raise NotImplementedError

    @property
    def pid_file(self) -> Path:
        return self.directory / f"{self.kind}.pid"

    @property
    def log(self) -> Path:
        return self.directory / "error.log"

    @property
    def test_command(self) -> list[str]:
        raise NotImplementedError

    def start_command(self) -> list[str]:
        raise NotImplementedError

    def write_config(self) -> None:
        raise NotImplementedError

    def break_config(self) -> None:
        """Add a configuration file the config test rejects."""
        raise NotImplementedError

    def reloads(self) -> int:
        """How many times the running server has reloaded, by its own account."""
        raise NotImplementedError

    def target(self, *, reload_command: list[str] | None = None, attempts: int = 5) -> Target:
        """A target for this server's files, test and reload (or ``reload_command``),
        checked on its port with ``attempts`` tries."""
        raise NotImplementedError

    # --- shared ------------------------------------------------------------------------

    def check(self, attempts: int) -> TlsCheck:
        return TlsCheck(port=self.port, attempts=attempts)

    @property
    def files(self) -> tuple[Path, ...]:
        return (self.certificate,) if self.key is None else (self.certificate, self.key)

    def contents(self) -> dict[Path, bytes]:
        return {path: path.read_bytes() for path in self.files}

    def ownership(self) -> dict[Path, tuple[int, int, int]]:
        """Mode, owner and group of each file."""
        return {path: (path.stat().st_mode & 0o7777, path.stat().st_uid, path.stat().st_gid) for path in self.files}

    def identity(self) -> dict[Path, tuple[int, int]]:
        """Inode and modification time of each file: both change when a file is rewritten."""
        return {path: (path.stat().st_ino, path.stat().st_mtime_ns) for path in self.files}

    def install(self, bundle: Bundle) -> None:
        """Put a certificate in place the way an administrator would before certfleet."""
        self.certificate.parent.mkdir(parents=True, exist_ok=True)
        if self.key is None:
            placed = {self.certificate: (bundle.certificate + bundle.chain + bundle.private_key, KEY_MODE)}
        else:
            placed = {self.certificate: (bundle.certificate + bundle.chain, CERTIFICATE_MODE),
                      self.key: (bundle.private_key, KEY_MODE)}
        for path, (content, mode) in placed.items():
            path.touch(mode=0o600)
            path.write_bytes(content)
            path.chmod(mode)
            if os.geteuid() == 0:
                os.chown(path, *PREVIOUS_OWNER)

    def start(self) -> None:
        # Output goes to a file: a daemon may keep the descriptors it inherited, and a
        # pipe nobody reads would block it or keep this call waiting for end of file.
        output_path = self.directory / "start.out"
        with output_path.open("wb") as output:
            completed = subprocess.run(self.start_command(), stdin=subprocess.DEVNULL, stdout=output,
                                       stderr=subprocess.STDOUT, timeout=START_TIMEOUT, check=False)
        if completed.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"{self.kind} did not start ({completed.returncode}):\n"
                               f"{output_path.read_text(errors='replace')}\n{log[-4000:]}")
        self.pid = wait_pid(self.pid_file)
        wait_listening(self.port, log=self.log)

    def stop(self) -> None:
        pid = self.pid or read_pid(self.pid_file)
        if pid is not None:
            stop_daemon(pid, str(self.config))


class NginxServer(WebServer):
    @property
    def config(self) -> Path:
        return self.directory / "nginx.conf"

    def _options(self) -> list[str]:
        return ["-e", str(self.log), "-c", str(self.config), "-p", f"{self.directory}/"]

    @property
    def test_command(self) -> list[str]:
        return [program("nginx"), "-t", "-q", *self._options()]

    @property
    def reload_command(self) -> list[str]:
        return [program("nginx"), "-s", "reload", *self._options()]

    def start_command(self) -> list[str]:
        return [program("nginx"), *self._options()]

    def write_config(self) -> None:
        temp = self.directory / "tmp"
        (self.directory / "conf.d").mkdir(parents=True, exist_ok=True)
        temp.mkdir(exist_ok=True)
        self.config.write_text(f"""\
daemon on;
pid {self.pid_file};
error_log {self.log} notice;
worker_processes 1;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {temp}; proxy_temp_path {temp}; fastcgi_temp_path {temp};
    uwsgi_temp_path {temp}; scgi_temp_path {temp};
    include {self.directory}/conf.d/*.conf;
    server {{
        listen 127.0.0.1:{self.port} ssl;
        server_name {SERVER_NAME};
        ssl_certificate {self.certificate};
        ssl_certificate_key {self.key};
        return 200 "certfleet test site\\n";
    }}
}}
""")

    def break_config(self) -> None:
        (self.directory / "conf.d" / "broken.conf").write_text("certfleet_no_such_directive on;\n")

    def _count(self, text: str) -> int:
        return self.log.read_text(errors="replace").count(text)

    def reloads(self) -> int:
        """The master logs each signal from its signal handler, at notice level. It
        blocks signals for a moment after starting new workers, so a reload signalled
        just then is logged late: first send SIGUSR1 (reopen the logs, harmless) and
        wait for its line. Linux delivers the lower-numbered SIGHUP first, so once the
        SIGUSR1 line is there, every reload signalled before it has been logged."""
        marker = "(SIGUSR1) received"
        before = self._count(marker)
        assert self.pid is not None
        os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + STOP_TIMEOUT
        while self._count(marker) == before:
            if time.monotonic() > deadline:
                raise AssertionError("nginx did not log SIGUSR1")
            time.sleep(0.01)
        return self._count("signal 1 (SIGHUP) received")

    def target(self, *, reload_command: list[str] | None = None, attempts: int = 5) -> NginxTarget:
        return NginxTarget(certificate_path=str(self.certificate), key_path=str(self.key),
                           test_command=self.test_command, reload_command=reload_command or self.reload_command,
                           verify=self.check(attempts))


class ApacheServer(WebServer):
    @property
    def config(self) -> Path:
        return self.directory / "httpd.conf"

    @property
    def test_command(self) -> list[str]:
        return [program("apache2"), "-t", "-f", str(self.config)]

    @property
    def reload_command(self) -> list[str]:
        return [program("apache2"), "-f", str(self.config), "-k", "graceful"]

    def start_command(self) -> list[str]:
        return [program("apache2"), "-f", str(self.config), "-k", "start"]

    def write_config(self) -> None:
        run = self.directory / "run"
        (self.directory / "conf.d").mkdir(parents=True, exist_ok=True)
        run.mkdir(exist_ok=True)
        modules = "\n".join(f"LoadModule {name}_module {APACHE_MODULES / f'mod_{name}.so'}"
                            for name in ("mpm_event", "authz_core", "ssl"))
        # As root, Apache's children switch to an unprivileged user; the parent reads
        # the certificate and key before they start.
        user = "User nobody\nGroup nogroup\n" if os.geteuid() == 0 else ""
        self.config.write_text(f"""\
ServerRoot {self.directory}
{modules}
ServerName {SERVER_NAME}
{user}PidFile {self.pid_file}
ErrorLog {self.log}
DefaultRuntimeDir {run}
Mutex file:{run} default
DocumentRoot {self.directory}
StartServers 1
ServerLimit 2
ThreadsPerChild 4
MaxRequestWorkers 8
MinSpareThreads 1
MaxSpareThreads 8
Listen 127.0.0.1:{self.port}
<VirtualHost 127.0.0.1:{self.port}>
    ServerName {SERVER_NAME}
    SSLEngine on
    SSLCertificateFile {self.certificate}
    SSLCertificateKeyFile {self.key}
</VirtualHost>
IncludeOptional {self.directory}/conf.d/*.conf
""")

    def break_config(self) -> None:
        (self.directory / "conf.d" / "broken.conf").write_text("CertfleetNoSuchDirective on\n")

    def reloads(self) -> int:
        # AH00493, logged by the parent's main loop as soon as SIGUSR1 interrupts its
        # wait, before it re-reads the configuration and starts new children.
        return self.log.read_text(errors="replace").count("Doing graceful restart")

    def target(self, *, reload_command: list[str] | None = None, attempts: int = 5) -> ApacheTarget:
        return ApacheTarget(certificate_path=str(self.certificate), key_path=str(self.key),
                            test_command=self.test_command, reload_command=reload_command or self.reload_command,
                            verify=self.check(attempts))


class HaproxyServer(WebServer):
    @property
    def config(self) -> Path:
        """A directory: HAProxy reads its ``*.cfg`` files in name order."""
        return self.directory / "conf"

    @property
    def master_socket(self) -> Path:
        return self.directory / "master.sock"

    @property
    def test_command(self) -> list[str]:
        return [program("haproxy"), "-c", "-q", "-f", str(self.config)]

    def start_command(self) -> list[str]:
        return [program("haproxy"), "-W", "-D", "-S", str(self.master_socket), "-p", str(self.pid_file),
                "-f", str(self.config)]

    def write_config(self) -> None:
        self.config.mkdir(parents=True, exist_ok=True)
        (self.config / "00-main.cfg").write_text(f"""\
defaults
    mode http
    timeout connect 5s
    timeout client 5s
    timeout server 5s

frontend tls
    bind 127.0.0.1:{self.port} ssl crt {self.certificate}
    http-request return status 200
""")

    def break_config(self) -> None:
        (self.config / "zz-broken.cfg").write_text("frontend broken\n    certfleet-no-such-keyword\n")

    def master_cli(self, command: str) -> str:
        """One command on the master CLI; the master answers and closes once we stop
        writing. Right after a reload the master is still re-executing itself and
        refuses or drops connections for a moment."""
        deadline = time.monotonic() + STOP_TIMEOUT
        while True:
            connection = socket.socket(socket.AF_UNIX)
            try:
                connection.settimeout(STOP_TIMEOUT)
                connection.connect(str(self.master_socket))
                connection.sendall(command.encode() + b"\n")
                connection.shutdown(socket.SHUT_WR)
                answer = b""
                while chunk := connection.recv(4096):
                    answer += chunk
                return answer.decode(errors="replace")
            except (ConnectionRefusedError, ConnectionResetError, FileNotFoundError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
            finally:
                connection.close()

    def reloads(self) -> int:
        # ``show proc``: "<pid> master <reloads> [failed: N] <uptime> <version>".
        for line in self.master_cli("show proc").splitlines():
            fields = line.split()
            if len(fields) > 2 and fields[1] == "master":
                return int(fields[2])
        raise AssertionError("the HAProxy master CLI did not list the master")

    def target(self, *, reload_command: list[str] | None = None, attempts: int = 5) -> HaproxyTarget:
        reload = {"reload_command": reload_command} if reload_command else {"master_socket": str(self.master_socket)}
        return HaproxyTarget(certificate_path=str(self.certificate), test_command=self.test_command,
                             verify=self.check(attempts), **reload)


_SERVERS: dict[str, type[WebServer]] = {"nginx": NginxServer, "apache": ApacheServer, "haproxy": HaproxyServer}


@contextmanager
def running_web_server(kind: str, directory: Path, bundle: Bundle) -> Iterator[WebServer]:
    """A private ``kind`` server serving ``bundle`` on a free port; files under ``directory``."""
    tls = directory / "tls"
    server = _SERVERS[kind](kind=kind, directory=directory / kind, port=free_port(),
                            certificate=tls / f"{kind}.pem", key=None if kind == "haproxy" else tls / f"{kind}.key")
    server.directory.mkdir(parents=True, exist_ok=True)
    try:
        server.install(bundle)
        server.write_config()
        server.start()
        yield server
    finally:
        server.stop()
