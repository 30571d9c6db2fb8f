"""No client of the coordinator sends a secret to a plain ``http://`` URL.

Each client is run as an operator runs it (the installed commands, the piped
installer) against a raw TCP listener on 127.0.0.1 that records every byte it
receives and answers any request with an empty HTTP 500. A client must refuse before
connecting: the listener sees no connection at all, so no API key (``cfk_``), no
enrollment token (``cfe_``) and no signed agent token.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
API_KEY = "cfk_" + "k" * 40
ENROLLMENT_TOKEN = "cfe_" + "t" * 40
FINGERPRINT = "ab" * 32


class RecordingListener:
    """A TCP listener that keeps what it receives; any request gets an empty 500."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self.port = self._socket.getsockname()[1]
        self.connections = 0
        self.received = bytearray()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            self.connections += 1
            with connection:
                connection.settimeout(5)
                try:
                    self.received += connection.recv(65536)
                    connection.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n"
                                       b"Connection: close\r\n\r\n")
                except OSError:
                    pass

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()
        self._socket.close()

    def assert_nothing_received(self) -> None:
        self._stopped.set()
        self._thread.join()
        # A connection still waiting in the backlog counts too.
        self._socket.setblocking(False)
        while True:
            try:
                connection, _ = self._socket.accept()
            except BlockingIOError:
                break
            self.connections += 1
            connection.close()
        assert b"cfk_" not in self.received and b"cfe_" not in self.received, bytes(self.received)
        assert self.connections == 0 and not self.received, bytes(self.received)


@pytest.fixture
def listener() -> Iterator[RecordingListener]:
    recording = RecordingListener()
    yield recording
    recording.stop()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTFLEET_")}
    return {**env, **extra}


def _run(argv: list[str], **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, env=_env(**extra_env), timeout=60)


def _assert_refused_in_one_line(result: subprocess.CompletedProcess, *, exit_status: int | None = None) -> None:
    assert result.returncode != 0, result.stdout + result.stderr
    if exit_status is not None:
        assert result.returncode == exit_status, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "https://" in lines[0], result.stderr


@pytest.mark.parametrize("how", ["option", "environment"])
def test_the_operator_cli_refuses_an_http_url_before_sending_the_api_key(listener, how):
    if how == "option":
        result = _run([str(BIN / "certfleet"), "--url", listener.url, "--api-key", API_KEY, "certificates", "list"])
    else:
        result = _run([str(BIN / "certfleet"), "certificates", "list"],
                      CERTFLEET_URL=listener.url, CERTFLEET_API_KEY=API_KEY)

    _assert_refused_in_one_line(result)
    assert "CERTFLEET_URL" in result.stderr
    listener.assert_nothing_received()


def test_enroll_refuses_an_http_coordinator_before_sending_the_token(listener, tmp_path):
    result = _run([str(BIN / "certfleet-agent"), "--agent-dir", str(tmp_path / "agent"), "enroll",
                   "--coordinator", listener.url, "--token", ENROLLMENT_TOKEN, "--ca-fingerprint", FINGERPRINT])

    _assert_refused_in_one_line(result, exit_status=2)
    listener.assert_nothing_received()
    assert not (tmp_path / "agent").exists()


def test_enroll_refuses_an_http_coordinator_from_the_environment(listener, tmp_path):
    result = _run([str(BIN / "certfleet-agent"), "--agent-dir", str(tmp_path / "agent"), "enroll"],
                  CERTFLEET_ENROLLMENT_TOKEN=ENROLLMENT_TOKEN, CERTFLEET_COORDINATOR_URL=listener.url,
                  CERTFLEET_CA_FINGERPRINT=FINGERPRINT)

    _assert_refused_in_one_line(result, exit_status=2)
    listener.assert_nothing_received()


def _enrolled_state(agent_dir: Path, coordinator: str) -> None:
    """What a finished enrollment leaves behind, recorded with ``coordinator``."""
    from certfleet.agent.config import AgentConfig, AgentPaths, save_identity
    from tests.pki_support import openssl_root

    paths = AgentPaths(agent_dir)
    agent_dir.mkdir(mode=0o700)
    ca_pem, _ = openssl_root(agent_dir.parent / "ca")
    paths.ca_bundle.write_bytes(ca_pem.read_bytes())
    save_identity(paths, ed25519.Ed25519PrivateKey.generate())
    AgentConfig(coordinator, "agent-1", {}).save(paths)


@pytest.mark.parametrize("where", ["enrollment", "option"])
def test_the_running_agent_refuses_an_http_coordinator_before_connecting(listener, tmp_path, where):
    agent_dir = tmp_path / "agent"
    _enrolled_state(agent_dir, listener.url if where == "enrollment" else "https://127.0.0.1:9")
    extra = ["--coordinator", listener.url] if where == "option" else []

    result = _run([str(BIN / "certfleet-agent"), "--agent-dir", str(agent_dir), "run", *extra])

    _assert_refused_in_one_line(result, exit_status=2)
    listener.assert_nothing_received()


def test_the_install_script_refuses_an_http_coordinator_before_connecting(listener, tmp_path):
    script = (ROOT / "installers" / "install-agent.sh").read_text()
    result = subprocess.run(["sh", "-s", "--", "--prefix", str(tmp_path / "root"), "--coordinator", listener.url,
                             "--ca-fingerprint", FINGERPRINT, "--token", ENROLLMENT_TOKEN],
                            input=script, capture_output=True, text=True, env=_env(), timeout=120)

    assert result.returncode != 0
    assert "must start with https://" in result.stderr, result.stderr
    listener.assert_nothing_received()
    assert not (tmp_path / "root").exists()
