"""TLS 1.3 only, checked with openssl; the coordinator refuses to start on an
unusable certificate or a master key that does not open its database."""

from __future__ import annotations

import base64
import functools
import os
import secrets

import pytest
import trio

from certfleet.coordinator.initialize import InitializationError
from certfleet.coordinator.server import run_coordinator
from certfleet.coordinator.settings import Settings

SQLITE_ONLY = pytest.mark.parametrize("database_url", [None])


async def _s_client(running, *flags: str) -> trio.CompletedProcess:
    host, port = running.url.removeprefix("https://").rsplit(":", 1)
    return await trio.run_process(
        ["openssl", "s_client", "-connect", f"{host}:{port}", "-servername", "localhost",
         "-CAfile", str(running.ca_path), "-verify_return_error", *flags],
        stdin=b"", capture_stdout=True, capture_stderr=True, check=False)


@SQLITE_ONLY
async def test_tls_1_2_is_refused_and_tls_1_3_verifies(coordinator):
    old = await _s_client(coordinator, "-tls1_2")
    assert old.returncode != 0
    assert b"no peer certificate available" in old.stdout and b"Cipher is (NONE)" in old.stdout
    new = await _s_client(coordinator, "-tls1_3")
    output = (new.stdout + new.stderr).decode()
    assert new.returncode == 0, output
    assert "TLSv1.3" in output and "Verify return code: 0 (ok)" in output


async def _start(tmp_path, **settings):
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(run_coordinator, Settings(
            data_dir=tmp_path / "data", listen="127.0.0.1:0", **settings), announce_token=False))
        nursery.cancel_scope.cancel()


async def test_refuses_to_start_on_an_unusable_certificate(tmp_path):
    await _start(tmp_path)
    tls = tmp_path / "data" / "tls"
    (tls / "cert.pem").write_text("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
    with pytest.RaisesGroup(pytest.RaisesExc(InitializationError, match="unusable TLS certificate"),
                            flatten_subgroups=True, allow_unwrapped=True):
        await _start(tmp_path)


async def test_refuses_to_start_when_the_key_does_not_match(tmp_path):
    await _start(tmp_path)
    other = tmp_path / "other"
    await _start(other)
    os.replace(other / "data" / "tls" / "key.pem", tmp_path / "data" / "tls" / "key.pem")
    with pytest.RaisesGroup(pytest.RaisesExc(InitializationError), flatten_subgroups=True,
                            allow_unwrapped=True):
        await _start(tmp_path)


async def test_refuses_to_start_with_another_master_key(tmp_path):
    await _start(tmp_path)
    key_file = tmp_path / "data" / "master.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    with pytest.RaisesGroup(pytest.RaisesExc(InitializationError, match="master key"),
                            flatten_subgroups=True, allow_unwrapped=True):
        await _start(tmp_path, master_key=base64.b64encode(secrets.token_bytes(32)).decode())
    key_file.chmod(0o644)
    with pytest.RaisesGroup(pytest.RaisesExc(InitializationError, match="chmod 600"),
                            flatten_subgroups=True, allow_unwrapped=True):
        await _start(tmp_path)


async def test_secrets_are_sealed_at_rest(tmp_path):
    await _start(tmp_path)
    database = (tmp_path / "data" / "certfleet.db").read_bytes()
    assert b"PRIVATE KEY" not in database
