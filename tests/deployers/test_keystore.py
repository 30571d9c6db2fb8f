"""Keystore targets, checked with Java 17's keytool: what it lists is what a Java
server would load."""

from __future__ import annotations

import datetime
import json
import os
import stat
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certfleet.agent.deployers import Bundle, DeployError, Deployers
from certfleet.agent.deployers.keystore import jks_private_key_entries
from certfleet.agent.secrets import Secrets
from certfleet.agent.state import AgentState
from certfleet.shared.targets import KeystoreTarget

PASSWORD = "Correct-Horse-7731"
STORE_TYPES = {"pkcs12": "PKCS12", "jks": "JKS"}


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: str, key, issuer: str, issuer_key, *, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(issuer_key, hashes.SHA256()))


@pytest.fixture(scope="module")
def intermediate():
    key = ec.generate_private_key(ec.SECP256R1())
    return key, _certificate("Test Intermediate", key, "Test Intermediate", key, ca=True)


@pytest.fixture
def issue(intermediate):
    def issue(common_name: str = "app.example.test") -> Bundle:
        issuer_key, issuer = intermediate
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = _certificate(common_name, key, "Test Intermediate", issuer_key, ca=False)
        return Bundle(certificate=leaf.public_bytes(serialization.Encoding.PEM),
                      chain=issuer.public_bytes(serialization.Encoding.PEM),
                      private_key=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()),
                      fingerprint_sha256=leaf.fingerprint(hashes.SHA256()).hex())
    return issue


def write_secrets(path: Path, values: dict[str, str], mode: int = 0o600) -> Path:
    path.write_text(json.dumps(values))
    path.chmod(mode)
    return path


@pytest.fixture
def deployers(tmp_path):
    secrets = write_secrets(tmp_path / "secrets.json", {"keystore": PASSWORD, "short": "Qz9#x",
                                                               "accented": "pässwörd-ünicode"})
    return Deployers(AgentState(tmp_path / "state" / "agent.db"), Secrets(secrets))


def target(tmp_path: Path, store_format: str, **settings) -> KeystoreTarget:
    return KeystoreTarget(path=str(tmp_path / "app" / f"keystore.{store_format}"), format=store_format,
                          alias=settings.pop("alias", "tomcat"), password_secret=settings.pop("secret", "keystore"),
                          **settings)


async def keytool_list(path: Path, store_format: str, password: str = PASSWORD) -> str:
    completed = await trio.run_process(
        ["keytool", "-list", "-v", "-keystore", str(path), "-storetype", STORE_TYPES[store_format],
         "-storepass:env", "TEST_STOREPASS"],
        capture_stdout=True, capture_stderr=True, check=False, env={**os.environ, "TEST_STOREPASS": password})
    assert completed.returncode == 0, completed.stderr.decode()
    return completed.stdout.decode()


def keytool_fingerprint(bundle: Bundle) -> str:
    return ":".join(f"{b:02X}" for b in bytes.fromhex(bundle.fingerprint_sha256))


@pytest.mark.parametrize("store_format", ["pkcs12", "jks"])
async def test_keystore_holds_key_and_chain_under_alias(tmp_path, deployers, issue, store_format):
    bundle, wanted = issue(), target(tmp_path, store_format)
    outcome = await deployers.deploy("order-1", wanted, bundle, server_name="app.example.test")
    assert outcome.changed == (wanted.path,) and not outcome.reloaded
    assert stat.S_IMODE(os.stat(wanted.path).st_mode) == 0o600
    listing = await keytool_list(Path(wanted.path), store_format)
    assert "Your keystore contains 1 entry" in listing
    assert "Alias name: tomcat" in listing
    assert "Entry type: PrivateKeyEntry" in listing
    assert "Certificate chain length: 2" in listing
    assert f"SHA256: {keytool_fingerprint(bundle)}" in listing


@pytest.mark.parametrize("store_format", ["pkcs12", "jks"])
async def test_same_bundle_again_is_skipped(tmp_path, deployers, issue, store_format):
    bundle, wanted = issue(), target(tmp_path, store_format)
    await deployers.deploy("order-1", wanted, bundle, server_name="app.example.test")
    before = os.stat(wanted.path)
    again = await deployers.deploy("order-2", wanted, bundle, server_name="app.example.test")
    after = os.stat(wanted.path)
    assert again.skipped
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


@pytest.mark.parametrize("store_format", ["pkcs12", "jks"])
async def test_new_certificate_replaces_the_entry(tmp_path, deployers, issue, store_format):
    first, second, wanted = issue(), issue(), target(tmp_path, store_format)
    await deployers.deploy("order-1", wanted, first, server_name="app.example.test")
    outcome = await deployers.deploy("order-2", wanted, second, server_name="app.example.test")
    assert outcome.changed == (wanted.path,)
    listing = await keytool_list(Path(wanted.path), store_format)
    assert "Your keystore contains 1 entry" in listing
    assert f"SHA256: {keytool_fingerprint(second)}" in listing
    assert keytool_fingerprint(first) not in listing


async def test_changed_password_rewrites_the_keystore(tmp_path, deployers, issue):
    bundle, wanted = issue(), target(tmp_path, "jks")
    await deployers.deploy("order-1", wanted, bundle, server_name="app.example.test")
    write_secrets(tmp_path / "secrets.json", {"keystore": "Rotated-Password-2"})
    outcome = await deployers.deploy("order-2", wanted, bundle, server_name="app.example.test")
    assert outcome.changed == (wanted.path,)
    assert "Entry type: PrivateKeyEntry" in await keytool_list(Path(wanted.path), "jks", "Rotated-Password-2")


@pytest.mark.parametrize(("secret", "message"), [
    ("absent", "no secret named 'absent'"),
    ("short", "shorter than 6 characters"),
    ("accented", "must be printable ASCII"),
])
@pytest.mark.parametrize("store_format", ["pkcs12", "jks"])
async def test_unusable_password_secret_writes_nothing(tmp_path, deployers, issue, store_format, secret, message):
    wanted = target(tmp_path, store_format, secret=secret)
    with pytest.raises(DeployError) as raised:
        await deployers.deploy("order-1", wanted, issue(), server_name="app.example.test")
    assert raised.value.step == "prepare" and not raised.value.rolled_back
    assert message in raised.value.detail
    assert "Qz9#x" not in raised.value.detail and "pässwörd" not in raised.value.detail
    assert not Path(wanted.path).exists()


async def test_secret_file_readable_by_others_is_refused(tmp_path, issue):
    secrets = write_secrets(tmp_path / "secrets.json", {"keystore": PASSWORD}, mode=0o644)
    deployers = Deployers(AgentState(tmp_path / "state" / "agent.db"), Secrets(secrets))
    wanted = target(tmp_path, "pkcs12")
    with pytest.raises(DeployError) as raised:
        await deployers.deploy("order-1", wanted, issue(), server_name="app.example.test")
    assert raised.value.step == "prepare"
    assert "readable by group or others" in raised.value.detail
    assert PASSWORD not in raised.value.detail
    assert not Path(wanted.path).exists()


async def test_keytool_failure_never_shows_the_password(tmp_path, deployers, issue, monkeypatch):
    """A keytool that fails and echoes its arguments and the password it was handed:
    the password was not among the arguments, and is masked in the error."""
    fake = tmp_path / "bin" / "keytool"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "$@" > "$(dirname "$0")/argv"\n'
                    'echo "keytool error: bad store password $CERTFLEET_KEYTOOL_SRCSTOREPASS" >&2\nexit 1\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    wanted = target(tmp_path, "jks")
    with pytest.raises(DeployError) as raised:
        await deployers.deploy("order-1", wanted, issue(), server_name="app.example.test")
    assert raised.value.step == "prepare"
    assert "keytool could not build the JKS keystore" in raised.value.detail
    assert "bad store password ********" in raised.value.detail
    assert PASSWORD not in raised.value.detail
    argv = (fake.parent / "argv").read_text()
    assert "-srcstorepass:env" in argv and PASSWORD not in argv
    assert not Path(wanted.path).exists()


async def test_jks_reader_refuses_a_wrong_password_or_a_modified_file(tmp_path, deployers, issue):
    wanted = target(tmp_path, "jks")
    await deployers.deploy("order-1", wanted, issue(), server_name="app.example.test")
    data = Path(wanted.path).read_bytes()
    assert list(jks_private_key_entries(data, PASSWORD)) == ["tomcat"]
    with pytest.raises(ValueError, match="integrity"):
        jks_private_key_entries(data, "Wrong-Password-1")
    modified = bytearray(data)
    modified[len(data) // 2] ^= 1
    with pytest.raises(ValueError, match="integrity"):
        jks_private_key_entries(bytes(modified), PASSWORD)
