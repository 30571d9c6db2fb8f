"""When the operator CLI cannot reach the coordinator, it says so in one line: the
URL, what failed (DNS, refused, TLS verification, protocol, the CA bundle) and what
to do. The CLI runs as the installed command against a real coordinator."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import trio

from tests.pki_support import openssl_root

BIN = Path(sys.executable).parent
API_KEY = "cfk_" + "k" * 40


async def _certfleet(*args: str, ca_bundle: Path | str | None = None) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTFLEET_")}
    if ca_bundle is not None:
        env["CERTFLEET_CA_BUNDLE"] = str(ca_bundle)
    done = await trio.run_process([str(BIN / "certfleet"), "--api-key", API_KEY, *args], env=env,
                                  capture_stdout=True, capture_stderr=True, check=False)
    return done.returncode, done.stderr.decode()


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("certfleet: ") and len(lines[0]) > len("certfleet: ") + 20, stderr
    return lines[0]


async def test_a_coordinator_certificate_the_ca_bundle_does_not_trust(coordinator, tmp_path):
    other_ca, _ = openssl_root(tmp_path / "other")

    status, stderr = await _certfleet("--url", coordinator.url, "certificates", "list", ca_bundle=other_ca)

    line = _one_line(stderr)
    assert status == 1
    assert coordinator.url in line and "TLS certificate verification failed" in line and "--ca-bundle" in line


async def test_no_ca_bundle_and_a_private_coordinator_ca(coordinator):
    status, stderr = await _certfleet("--url", coordinator.url, "certificates", "list")

    line = _one_line(stderr)
    assert status == 1 and "verification failed" in line and "DATA_DIR/tls/ca.pem" in line


async def test_a_ca_bundle_that_does_not_exist_is_named(coordinator, tmp_path):
    missing = tmp_path / "nowhere" / "ca.pem"

    status, stderr = await _certfleet("--url", coordinator.url, "certificates", "list", ca_bundle=missing)

    line = _one_line(stderr)
    assert status == 1 and str(missing) in line and "does not exist" in line and "Errno" not in line


async def test_a_ca_bundle_that_is_not_pem(coordinator, tmp_path):
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")

    status, stderr = await _certfleet("--url", coordinator.url, "certificates", "list", ca_bundle=garbage)

    line = _one_line(stderr)
    assert status == 1 and str(garbage) in line and "no PEM certificate" in line


async def test_an_https_url_aimed_at_the_plain_http_port(coordinator):
    plain_port = coordinator.coordinator.pki_url.rsplit(":", 1)[1].rstrip("/")
    url = f"https://127.0.0.1:{plain_port}"

    status, stderr = await _certfleet("--url", url, "certificates", "list", ca_bundle=coordinator.ca_path)

    line = _one_line(stderr)
    assert status == 1 and url in line and "did not answer in TLS" in line and "https port" in line


async def test_a_refused_connection():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"https://127.0.0.1:{probe.getsockname()[1]}"
    # Bound, never listening, now closed: nothing accepts on that port.

    status, stderr = await _certfleet("--url", url, "certificates", "list")

    line = _one_line(stderr)
    assert status == 1 and url in line and "connection refused" in line and "running" in line


async def test_a_host_name_that_does_not_resolve():
    # .invalid never resolves (RFC 6761 §6.4).
    url = "https://coordinator.invalid:8443"

    status, stderr = await _certfleet("--url", url, "certificates", "list")

    line = _one_line(stderr)
    assert status == 1 and url in line and "DNS lookup of coordinator.invalid failed" in line
