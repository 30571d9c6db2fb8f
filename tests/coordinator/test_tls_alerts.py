"""A client the coordinator refuses during the TLS handshake is told why, with the
alert RFC 8446 §6.2 asks for, instead of seeing the connection just close. Checked
with the real ``openssl s_client``."""

from __future__ import annotations

import pytest
import trio

SQLITE_ONLY = pytest.mark.parametrize("database_url", [None])


async def s_client(running, *flags: str) -> str:
    host, port = running.url.removeprefix("https://").rsplit(":", 1)
    result = await trio.run_process(
        ["openssl", "s_client", "-connect", f"{host}:{port}", *flags],
        stdin=b"", capture_stdout=True, capture_stderr=True, check=False)
    return (result.stdout + result.stderr).decode(errors="replace")


@SQLITE_ONLY
async def test_a_tls_1_2_client_gets_a_protocol_version_alert(coordinator):
    output = await s_client(coordinator, "-tls1_2", "-CAfile", str(coordinator.ca_path))
    # OpenSSL reports a received alert as "tlsv1 alert protocol version … SSL alert number 70".
    assert "alert protocol version" in output, output
    assert "SSL alert number 70" in output, output


@SQLITE_ONLY
async def test_the_coordinator_still_serves_tls_1_3_after_refusing_tls_1_2(coordinator):
    await s_client(coordinator, "-tls1_2")
    output = await s_client(coordinator, "-tls1_3", "-CAfile", str(coordinator.ca_path), "-verify_return_error")
    assert "Verify return code: 0 (ok)" in output, output
