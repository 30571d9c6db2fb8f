"""TLS 1.3 only, checked from outside with the real ``openssl s_client``; and the
coordinator refuses to start on a serving certificate it cannot use or a master key
that is not the one its secrets were sealed with."""

from __future__ import annotations

import base64
import datetime as dt
import functools
import re
import secrets

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from certfleet.coordinator.initialize import InitializationError
from certfleet.coordinator.server import run_coordinator
from certfleet.coordinator.settings import Settings
from certfleet.shared.pki import KeyType, generate_private_key, private_key_pem

SQLITE_ONLY = pytest.mark.parametrize("database_url", [None])


async def s_client(running, *flags: str) -> tuple[int, str]:
    host, port = running.url.removeprefix("https://").rsplit(":", 1)
    result = await trio.run_process(
        ["openssl", "s_client", "-connect", f"{host}:{port}", *flags],
        stdin=b"", capture_stdout=True, capture_stderr=True, check=False)
    return result.returncode, (result.stdout + result.stderr).decode(errors="replace")


@SQLITE_ONLY
async def test_tls_1_2_handshake_is_refused(coordinator):
    code, output = await s_client(coordinator, "-tls1_2", "-CAfile", str(coordinator.ca_path))
    # s_client prints the attempted "Protocol : TLSv1.2" even for a failed handshake;
    # what proves the refusal is that no cipher was agreed and no certificate was sent.
    assert code != 0, output
    assert "Cipher is (NONE)" in output, output
    assert "no peer certificate available" in output and "Server certificate" not in output, output


@SQLITE_ONLY
async def test_tls_1_3_handshake_verifies_against_the_pinned_root(coordinator):
    code, output = await s_client(coordinator, "-tls1_3", "-CAfile", str(coordinator.ca_path),
                                  "-verify_return_error", "-verify_ip", "127.0.0.1")
    assert code == 0, output
    assert re.search(r"Protocol\s*:\s*TLSv1\.3", output) or "New, TLSv1.3" in output, output
    assert "Verify return code: 0 (ok)" in output, output
    # The certificate also names localhost, as the first-start defaults promise.
    code, output = await s_client(coordinator, "-tls1_3", "-CAfile", str(coordinator.ca_path),
                                  "-verify_return_error", "-servername", "localhost", "-verify_hostname", "localhost")
    assert code == 0 and "Verify return code: 0 (ok)" in output, output


@SQLITE_ONLY
async def test_tls_does_not_verify_without_the_pinned_root(coordinator):
    code, output = await s_client(coordinator, "-tls1_3", "-no-CAfile", "-no-CApath", "-no-CAstore")
    assert "Verify return code: 0 (ok)" not in output, output
    assert re.search(r"Verify return code: (19|20|21)", output), output


# --- refusing to start ------------------------------------------------------------------------


def settings_for(tmp_path, database_url=None, **overrides) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url, listen="127.0.0.1:0", **overrides)


async def start_and_stop(settings: Settings) -> None:
    async with trio.open_nursery() as nursery:
        running = await nursery.start(functools.partial(run_coordinator, settings, announce_token=False))
        assert running.url.startswith("https://")
        nursery.cancel_scope.cancel()


async def start_error(settings: Settings) -> Exception:
    """The exception that stops the coordinator's start (unwrapped from its groups)."""
    try:
        await start_and_stop(settings)
    except Exception as exc:  # noqa: BLE001 - inspected below
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        return exc
    pytest.fail("the coordinator started")


def tls_dir(tmp_path):
    return tmp_path / "data" / "tls"


async def test_refuses_to_start_on_a_garbage_certificate(tmp_path):
    await start_and_stop(settings_for(tmp_path))
    garbage = b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
    (tls_dir(tmp_path) / "cert.pem").write_bytes(garbage)
    error = await start_error(settings_for(tmp_path))
    assert isinstance(error, InitializationError), repr(error)
    assert "TLS certificate" in str(error) and str(tls_dir(tmp_path)) in str(error)
    assert (tls_dir(tmp_path) / "cert.pem").read_bytes() == garbage, "the operator's file must not be replaced"


async def test_refuses_to_start_when_the_key_does_not_match_the_certificate(tmp_path):
    await start_and_stop(settings_for(tmp_path))
    certificate = (tls_dir(tmp_path) / "cert.pem").read_bytes()
    (tls_dir(tmp_path) / "key.pem").write_bytes(private_key_pem(generate_private_key(KeyType.EC_P256)))
    error = await start_error(settings_for(tmp_path))
    assert isinstance(error, InitializationError), repr(error)
    assert "TLS certificate or key" in str(error)
    assert (tls_dir(tmp_path) / "cert.pem").read_bytes() == certificate


async def test_refuses_to_start_when_the_key_is_missing(tmp_path):
    await start_and_stop(settings_for(tmp_path))
    (tls_dir(tmp_path) / "key.pem").unlink()
    error = await start_error(settings_for(tmp_path))
    assert isinstance(error, InitializationError), repr(error)
    assert not (tls_dir(tmp_path) / "key.pem").exists(), "no key may be made up for an existing certificate"


async def test_refuses_to_start_on_an_expired_certificate(tmp_path):
    await start_and_stop(settings_for(tmp_path))
    key = generate_private_key(KeyType.EC_P256)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    expired = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
               .not_valid_after(dt.datetime(2021, 1, 1, tzinfo=dt.UTC))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
               .sign(key, hashes.SHA256()))
    (tls_dir(tmp_path) / "cert.pem").write_bytes(expired.public_bytes(serialization.Encoding.PEM))
    (tls_dir(tmp_path) / "key.pem").write_bytes(private_key_pem(key))
    error = await start_error(settings_for(tmp_path))
    assert isinstance(error, InitializationError), repr(error)
    assert "expired" in str(error)


async def test_refuses_to_start_when_the_master_key_file_was_replaced(tmp_path, database_url):
    settings = settings_for(tmp_path, database_url)
    await start_and_stop(settings)
    key_file = tmp_path / "data" / "master.key"
    original = key_file.read_bytes()
    key_file.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    key_file.chmod(0o600)
    error = await start_error(settings)
    assert isinstance(error, InitializationError), repr(error)
    assert "master key" in str(error)
    # Nothing was damaged: the right key starts it again.
    key_file.write_bytes(original)
    await start_and_stop(settings)


async def test_refuses_to_start_with_another_master_key_in_the_environment(tmp_path, database_url):
    await start_and_stop(settings_for(tmp_path, database_url))
    error = await start_error(settings_for(tmp_path, database_url,
                                           master_key=base64.b64encode(secrets.token_bytes(32)).decode()))
    assert isinstance(error, InitializationError), repr(error)
    assert "master key" in str(error)


@pytest.mark.parametrize(("content", "mentioned"), [
    pytest.param("not base64 at all!\n", "master.key", id="not base64"),
    pytest.param(base64.b64encode(b"short").decode() + "\n", "master key", id="too short"),
])
async def test_refuses_to_start_on_a_malformed_master_key_file(tmp_path, content, mentioned):
    await start_and_stop(settings_for(tmp_path))
    key_file = tmp_path / "data" / "master.key"
    key_file.write_text(content)
    error = await start_error(settings_for(tmp_path))
    assert isinstance(error, InitializationError), repr(error)
    assert mentioned in str(error)


async def test_refuses_to_start_when_the_master_key_file_is_readable_by_others(tmp_path):
    await start_and_stop(settings_for(tmp_path))
    key_file = tmp_path / "data" / "master.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    key_file.chmod(0o640)
    error = await start_error(settings_for(tmp_path))
    assert isinstance(error, InitializationError), repr(error)
    assert "chmod 600" in str(error)


async def test_private_keys_are_sealed_at_rest(tmp_path):
    await start_and_stop(settings_for(tmp_path))
    database = (tmp_path / "data" / "certfleet.db").read_bytes()
    assert b"PRIVATE KEY" not in database and b"-----BEGIN" in database  # certificates, yes; keys, no
