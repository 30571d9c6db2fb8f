"""Private Postfix, Dovecot and Caddy instances for deployer tests, and the certificates
and client checks they need.

Each server runs from its own configuration on 127.0.0.1 and a free high port, next to
the system's own (unconfigured) instance, and is stopped when its ``with`` block ends:

* Postfix: ``postfix -c DIR start`` with its own ``main.cf`` and ``master.cf`` (an
  ``smtpd`` listener offering STARTTLS), ``postfix -c DIR check`` as the config test and
  ``postfix -c DIR reload`` as the reload;
* Dovecot: ``dovecot -F -c CONF`` with an IMAPS listener and a STARTTLS IMAP listener
  (``ssl = required``), ``doveconf -c CONF -n`` and ``doveadm -c CONF reload``;
* Caddy: ``caddy run`` on a Caddyfile with ``tls cert.pem key.pem``, its admin API on
  its own port, ``caddy validate`` and ``caddy reload``.

Configuration, certificate and key files live under the test's ``tmp_path``. Postfix's
queue and data directories and Dovecot's base and state directories do not: the
daemons reach them as the ``postfix`` and ``dovecot`` users, who cannot traverse
pytest's ``/tmp/pytest-of-root`` (mode 0700, and pytest resets any wider mode at the
start of every run, so widening it would race other runs). Those go to a fresh
directory under the system temp directory, removed at teardown.

What a server serves is read by an independent client, ``openssl s_client``.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certfleet.agent.deployers import Bundle

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
CLIENT_TIMEOUT = 10.0

_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


# --- certificates ---------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class Issuer:
    """A throwaway intermediate that signs leaf bundles (leaf + this intermediate + key)."""

    def __init__(self, name: str = "Certfleet Test Intermediate") -> None:
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self.key, hashes.SHA256()))

    def issue(self, *names: str) -> Bundle:
        """A new key and leaf for ``names`` (the first is also the common name)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        leaf = (
            x509.CertificateBuilder().subject_name(_name(names[0])).issuer_name(self.certificate.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(self.key, hashes.SHA256()))
        return Bundle(
            certificate=leaf.public_bytes(serialization.Encoding.PEM),
            chain=self.certificate.public_bytes(serialization.Encoding.PEM),
            private_key=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()),
            fingerprint_sha256=leaf.fingerprint(hashes.SHA256()).hex())


def install_bundle(bundle: Bundle, certificate: Path, key: Path) -> None:
    """Put a certificate in place the way an administrator would before certfleet."""
    certificate.parent.mkdir(parents=True, exist_ok=True)
    certificate.write_bytes(bundle.certificate + bundle.chain)
    key.touch(mode=0o600)
    key.write_bytes(bundle.private_key)


async def serve_stale_leaf(nursery: trio.Nursery, bundle: Bundle, directory: Path) -> int:
    """A TLS server on 127.0.0.1 that keeps serving ``bundle`` whatever gets deployed
    (a device that did not pick up the new certificate); returns its port."""
    install_bundle(bundle, directory / "stale.pem", directory / "stale.key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / "stale.pem", directory / "stale.key")

    async def handshake_then_close(stream: trio.SSLStream) -> None:
        try:
            await stream.do_handshake()
            await stream.aclose()
        except (trio.BrokenResourceError, ssl.SSLError):
            pass

    listeners = await nursery.start(functools.partial(trio.serve_ssl_over_tcp, handshake_then_close, 0, context,
                                                      host="127.0.0.1"))
    return listeners[0].transport_listener.socket.getsockname()[1]


# --- ports, processes, scripts --------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(port: int, greeting: bytes | None) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
            return greeting is None or connection.recv(512).startswith(greeting)
    except OSError:
        return False


def wait_listening(port: int, *, greeting: bytes | None = None, alive=lambda: True, log: Path | None = None) -> None:
    """Poll until something accepts on 127.0.0.1:``port`` (and sends ``greeting``, when
    given: proof that the worker behind the socket has started, not only its master);
    fail early if ``alive()`` turns false, with the server's log in the message."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if _answers(port, greeting):
            return
        if not alive() or time.monotonic() > deadline:
            text = log.read_text(errors="replace") if log and log.exists() else "(no log)"
            raise RuntimeError(f"nothing is listening on 127.0.0.1:{port}; log:\n{text[-4000:]}")
        time.sleep(0.05)


def _stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _pid_running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def write_script(path: Path, body: str) -> list[str]:
    """An executable ``/bin/sh`` script; its path is the argv a target can name (the
    character rule for commands leaves no room for anything more complex inline)."""
    path.write_text("#!/bin/sh\nset -e\n" + body)
    path.chmod(0o755)
    return [str(path)]


def counting_reload(path: Path, count_file: Path, reload: list[str]) -> list[str]:
    """A reload that appends a line to ``count_file`` and then runs the real one."""
    return write_script(path, f"echo reload >> {shlex.quote(str(count_file))}\nexec {shlex.join(reload)}\n")


def reload_failing_once(path: Path, reload: list[str]) -> list[str]:
    """A reload that really reloads but reports failure the first time it runs (the new
    files are live when the pipeline hears of the failure); later runs just reload."""
    marker = shlex.quote(str(path.with_suffix(".failed-once")))
    return write_script(path, (
        f"if [ ! -e {marker} ]; then\n"
        f"  : > {marker}\n"
        f"  {shlex.join(reload)}\n"
        f"  echo 'reload reported a failure' >&2\n"
        f"  exit 3\n"
        f"fi\n"
        f"exec {shlex.join(reload)}\n"))


def reload_count(count_file: Path) -> int:
    return len(count_file.read_text().splitlines()) if count_file.exists() else 0


# --- the independent client -----------------------------------------------------------


async def openssl_served(port: int, *, starttls: str | None = None, server_name: str | None = None) -> str | None:
    """The SHA-256 (hex) of the leaf ``openssl s_client`` is shown on 127.0.0.1:``port``,
    ``None`` if it printed no certificate."""
    argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}"]
    if starttls:
        argv += ["-starttls", starttls]
    if server_name:
        argv += ["-servername", server_name]
    with trio.fail_after(CLIENT_TIMEOUT):
        completed = await trio.run_process(argv, stdin=subprocess.DEVNULL, capture_stdout=True,
                                           capture_stderr=True, check=False)
    found = _PEM_CERTIFICATE.search(completed.stdout)
    if found is None:
        return None
    der = x509.load_pem_x509_certificate(found.group()).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


async def wait_served(port: int, expected: str, **options) -> str | None:
    """Poll ``openssl_served`` until it sees ``expected`` (a server finishing a graceful
    reload may hand one more connection to an old worker); return the last leaf seen."""
    deadline = trio.current_time() + CLIENT_TIMEOUT
    while True:
        seen = await openssl_served(port, **options)
        if seen == expected or trio.current_time() > deadline:
            return seen
        await trio.sleep(0.1)


# --- Postfix --------------------------------------------------------------------------

_POSTFIX_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


@dataclass
class PostfixServer:
    config_dir: Path
    runtime: Path
    certificate: Path
    key: Path
    port: int

    @property
    def log(self) -> Path:
        return self.runtime / "postfix.log"

    def command(self, *words: str) -> list[str]:
        """``postfix -c CONFIG_DIR words...``: the kind's commands, aimed at this instance."""
        return ["postfix", "-c", str(self.config_dir), *words]

    @property
    def test_command(self) -> list[str]:
        return self.command("check")

    @property
    def reload_command(self) -> list[str]:
        return self.command("reload")

    def break_config(self) -> None:
        """A ``master.cf`` service with a type ``postfix check`` rejects. Not ``main.cf``:
        every Postfix daemon re-reads that when it starts, so a broken ``main.cf`` stops
        the running server answering whatever certfleet does; ``master.cf`` is read only
        at start and reload."""
        with (self.config_dir / "master.cf").open("a") as master_cf:
            master_cf.write(f"127.0.0.1:{free_port()} bogus n - n - - smtpd\n")

    def write_config(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "main.cf").write_text("\n".join([
            "compatibility_level = 3.6",
            f"queue_directory = {self.runtime / 'queue'}",
            f"data_directory = {self.runtime / 'data'}",
            "mail_owner = postfix",
            "setgid_group = postdrop",
            "inet_interfaces = 127.0.0.1",
            "inet_protocols = ipv4",
            "myhostname = mail.certfleet.test",
            "mydestination =",
            "alias_maps =",
            "alias_database =",
            f"maillog_file = {self.log}",
            f"maillog_file_prefixes = {self.runtime}",
            "smtpd_tls_security_level = may",
            f"smtpd_tls_cert_file = {self.certificate}",
            f"smtpd_tls_key_file = {self.key}",
        ]) + "\n")
        (self.config_dir / "master.cf").write_text(
            f"127.0.0.1:{self.port} inet n - n - - smtpd\n" + _POSTFIX_SERVICES)

    def start(self) -> None:
        (self.runtime / "queue").mkdir(parents=True, exist_ok=True)
        completed = subprocess.run(self.command("start"), stdin=subprocess.DEVNULL, capture_output=True,
                                   timeout=START_TIMEOUT, check=False)
        if completed.returncode != 0:
            text = self.log.read_text(errors="replace") if self.log.exists() else completed.stderr.decode()
            raise RuntimeError(f"postfix did not start; log:\n{text[-4000:]}")
        # Wait for the banner: smtpd reads the certificate when it starts, and the
        # master accepts connections before any smtpd runs.
        wait_listening(self.port, greeting=b"220 ", log=self.log)

    def stop(self) -> None:
        """SIGTERM to the master daemon named in its pid file (it stops its children),
        then wait; this works even when a test left ``main.cf`` broken."""
        pid_file = self.runtime / "queue" / "pid" / "master.pid"
        try:
            pid = int(pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return
        if not _pid_running(pid):
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while _pid_running(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.05)


def _serving(server, bundle: Bundle) -> Iterator:
    """Install ``bundle`` where ``server`` reads it, configure and start it; stop it
    however the caller's block ends."""
    try:
        install_bundle(bundle, server.certificate, server.key)
        server.write_config()
        server.start()
        yield server
    finally:
        server.stop()


@contextmanager
def running_postfix(directory: Path, bundle: Bundle) -> Iterator[PostfixServer]:
    """A private Postfix serving ``bundle`` on STARTTLS; files under ``directory``."""
    runtime = Path(tempfile.mkdtemp(prefix="certfleet-postfix-"))
    runtime.chmod(0o755)
    server = PostfixServer(config_dir=directory / "postfix", runtime=runtime,
                           certificate=directory / "tls" / "postfix.pem", key=directory / "tls" / "postfix.key",
                           port=free_port())
    try:
        yield from _serving(server, bundle)
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


# --- Dovecot --------------------------------------------------------------------------


@dataclass
class DovecotServer:
    config: Path
    runtime: Path
    certificate: Path
    key: Path
    imaps_port: int
    imap_port: int
    process: subprocess.Popen | None = None

    @property
    def log(self) -> Path:
        return self.runtime / "dovecot.log"

    @property
    def test_command(self) -> list[str]:
        return ["doveconf", "-c", str(self.config), "-n"]

    @property
    def reload_command(self) -> list[str]:
        return ["doveadm", "-c", str(self.config), "reload"]

    def break_config(self) -> None:
        """A setting ``doveconf`` does not know."""
        with self.config.open("a") as config:
            config.write(f"ssl_certificate_file = <{self.certificate}\n")

    def write_config(self) -> None:
        self.config.parent.mkdir(parents=True, exist_ok=True)
        self.config.write_text(f"""\
base_dir = {self.runtime / 'run'}
state_dir = {self.runtime / 'state'}
log_path = {self.log}
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{self.certificate}
ssl_key = <{self.key}
default_login_user = dovenull
default_internal_user = dovecot
passdb {{
  driver = static
  args = password=not-used-by-these-tests
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home=/nonexistent
}}
service imap-login {{
  inet_listener imap {{
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = {self.imaps_port}
    ssl = yes
  }}
}}
""")

    def start(self) -> None:
        with open(self.runtime / "dovecot.stderr", "wb") as output:
            self.process = subprocess.Popen(["dovecot", "-F", "-c", str(self.config)], stdin=subprocess.DEVNULL,
                                            stdout=output, stderr=subprocess.STDOUT)
        for port in (self.imaps_port, self.imap_port):
            wait_listening(port, alive=lambda: self.process.poll() is None, log=self.log)

    def stop(self) -> None:
        if self.process is not None:
            _stop_process(self.process)


@contextmanager
def running_dovecot(directory: Path, bundle: Bundle) -> Iterator[DovecotServer]:
    """A private Dovecot serving ``bundle`` on IMAPS and IMAP+STARTTLS; files under ``directory``."""
    runtime = Path(tempfile.mkdtemp(prefix="certfleet-dovecot-"))
    runtime.chmod(0o755)
    server = DovecotServer(config=directory / "dovecot" / "dovecot.conf", runtime=runtime,
                           certificate=directory / "tls" / "dovecot.pem", key=directory / "tls" / "dovecot.key",
                           imaps_port=free_port(), imap_port=free_port())
    try:
        yield from _serving(server, bundle)
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


# --- Caddy ----------------------------------------------------------------------------


@dataclass
class CaddyServer:
    directory: Path
    certificate: Path
    key: Path
    site: str
    port: int
    admin_port: int
    process: subprocess.Popen | None = None

    @property
    def caddyfile(self) -> Path:
        """Named ``Caddyfile`` so every ``caddy`` command picks the Caddyfile adapter itself."""
        return self.directory / "Caddyfile"

    @property
    def log(self) -> Path:
        return self.directory / "caddy.log"

    @property
    def admin(self) -> str:
        return f"127.0.0.1:{self.admin_port}"

    def write_config(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.caddyfile.write_text(f"""\
{{
\tadmin {self.admin}
\tstorage file_system {self.directory / 'storage'}
\tauto_https off
}}

https://{self.site}:{self.port} {{
\tbind 127.0.0.1
\ttls {self.certificate} {self.key}
\trespond "certfleet test site"
}}
""")

    def start(self) -> None:
        # Caddy keeps its autosaved configuration and data under these; keep them here.
        environment = {**os.environ, "HOME": str(self.directory), "XDG_CONFIG_HOME": str(self.directory / "config"),
                       "XDG_DATA_HOME": str(self.directory / "data")}
        with open(self.log, "wb") as output:
            self.process = subprocess.Popen(
                ["caddy", "run", "--config", str(self.caddyfile), "--adapter", "caddyfile"],
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, env=environment,
                cwd=self.directory)
        for port in (self.admin_port, self.port):
            wait_listening(port, alive=lambda: self.process.poll() is None, log=self.log)

    def stop(self) -> None:
        if self.process is not None:
            _stop_process(self.process)


@contextmanager
def running_caddy(directory: Path, bundle: Bundle, site: str) -> Iterator[CaddyServer]:
    """A private Caddy serving ``bundle`` for ``site`` over HTTPS; files under ``directory``."""
    server = CaddyServer(directory=directory / "caddy", certificate=directory / "tls" / "caddy.pem",
                         key=directory / "tls" / "caddy.key", site=site, port=free_port(), admin_port=free_port())
    yield from _serving(server, bundle)
