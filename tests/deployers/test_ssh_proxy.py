"""The ``ssh`` target against a real OpenSSH server (``ssh_server``): the "device" is a
directory on this machine reached only through sshd and SFTP; its config test and
reload are scripts that record each run."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

import msgspec
import pytest
import trio

from certfleet.agent.deployers import DeployError, Deployers
from certfleet.agent.deployers.ssh import SshDeployer
from certfleet.agent.files import TEMP_MARKER
from certfleet.agent.secrets import Secrets
from certfleet.agent.state import AgentState
from certfleet.shared.targets import SshTarget, TlsCheck, parse_ssh_host_key
from tests.deployers.mail_servers import install_bundle, reload_count, serve_stale_leaf, write_script
from tests.deployers.ssh_server import SshServer, running_sshd, ssh_keygen

SERVER_NAME = "device.example.test"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory) -> SshServer:
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture
def device(tmp_path) -> Path:
    """Where the "device" keeps its TLS files."""
    directory = tmp_path / "device" / "tls"
    directory.mkdir(parents=True)
    return directory


@pytest.fixture
def state(tmp_path) -> AgentState:
    return AgentState(tmp_path / "state" / "agent.db")


def write_secrets(tmp_path: Path, values: dict[str, str]) -> Secrets:
    path = tmp_path / "secrets.json"
    path.touch(mode=0o600)
    path.write_text(json.dumps(values))
    return Secrets(path)


@pytest.fixture
def deployers(tmp_path, sshd, state) -> Deployers:
    return Deployers(state, write_secrets(tmp_path, {"device-key": sshd.client_key}))


class Scripts:
    """The device's config test and reload: each appends a line to its log; the test
    fails while the certificate file holds the content of ``reject``."""

    def __init__(self, directory: Path, certificate: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.test_log, self.reload_log = directory / "tests.log", directory / "reloads.log"
        self.reject = directory / "reject.pem"
        self.test = write_script(directory / "config-test", (
            f'echo "test $*" >> {self.test_log}\n'
            f'if [ -e {self.reject} ] && cmp -s {certificate} {self.reject}; then\n'
            f'  echo "SSL_CTX_use_certificate: the test rejects this certificate" >&2\n'
            f'  exit 1\n'
            f'fi\n'))
        self.reload = write_script(directory / "reload", f'echo "reload $#: $*" >> {self.reload_log}\n')

    def reject_certificate(self, content: bytes) -> None:
        self.reject.write_bytes(content)


@pytest.fixture
def scripts(tmp_path, device) -> Scripts:
    return Scripts(tmp_path / "device" / "bin", device / "site.pem")


def make_target(sshd: SshServer, device: Path, scripts: Scripts, **settings) -> SshTarget:
    fields = dict(host="127.0.0.1", port=sshd.port, username=sshd.user, host_key=sshd.ed25519_host_key,
                  auth_secret="device-key", certificate_path=str(device / "site.pem"),
                  key_path=str(device / "site.key"), chain_path=str(device / "chain.pem"),
                  test_command=scripts.test, reload_command=[*scripts.reload, "one", "two=2", "x,y:z"])
    fields.update(settings)
    target = SshTarget(**fields)
    target.validate()
    return target


def snapshot(device: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(device.iterdir())}


def temp_files(device: Path) -> list[str]:
    return [path.name for path in device.iterdir() if path.name.startswith(TEMP_MARKER)]


async def deploy(deployers: Deployers, order_id: str, target: SshTarget, bundle):
    return await deployers.deploy(order_id, target, bundle, server_name=SERVER_NAME)


async def test_deploy_renames_new_files_into_place_and_runs_the_remote_reload(deployers, sshd, device, scripts,
                                                                               issuer, state, caplog):
    caplog.set_level(logging.DEBUG, logger="certfleet.agent.deploy")
    old = issuer.issue(SERVER_NAME)
    install_bundle(old, device / "site.pem", device / "site.key")
    (device / "site.pem").chmod(0o644)
    old_inode = (device / "site.pem").stat().st_ino
    (device / "site.key").unlink()  # a key file the deployment creates
    bundle = issuer.issue(SERVER_NAME)

    outcome = await deploy(deployers, "order-1", make_target(sshd, device, scripts), bundle)

    assert outcome.changed == (str(device / "site.pem"), str(device / "chain.pem"), str(device / "site.key"))
    assert outcome.reloaded and outcome.fingerprint_sha256 == bundle.fingerprint_sha256
    assert (device / "site.pem").read_bytes() == bundle.certificate + bundle.chain
    assert (device / "chain.pem").read_bytes() == bundle.chain
    assert (device / "site.key").read_bytes() == bundle.private_key
    # Replaced by a rename (a new inode), not rewritten in place; no temp file left.
    assert (device / "site.pem").stat().st_ino != old_inode
    assert temp_files(device) == []
    assert (device / "site.key").stat().st_mode & 0o777 == 0o600
    assert (device / "site.pem").stat().st_mode & 0o777 == 0o644
    assert "fsync@openssh.com" not in caplog.text  # OpenSSH's SFTP server synced each upload
    # The remote shell saw exactly the argv's words.
    assert scripts.reload_log.read_text().splitlines() == ["reload 3: one two=2 x,y:z"]
    assert reload_count(scripts.test_log) == 1
    saved = {s.name: s for s in state.snapshots("order-1")}
    where = f"ssh://{sshd.user}@127.0.0.1:{sshd.port}"
    assert saved[f"{where}{device}/site.pem"].content == old.certificate + old.chain
    assert not saved[f"{where}{device}/site.key"].existed


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
async def test_existing_files_keep_their_mode_and_owner(deployers, sshd, device, scripts, issuer):
    install_bundle(issuer.issue(SERVER_NAME), device / "site.pem", device / "site.key")
    for name, mode in (("site.pem", 0o640), ("site.key", 0o644)):
        os.chown(device / name, 65534, 65534)
        (device / name).chmod(mode)
    bundle = issuer.issue(SERVER_NAME)
    await deploy(deployers, "order-1", make_target(sshd, device, scripts, chain_path=None), bundle)
    certificate, key = (device / "site.pem").stat(), (device / "site.key").stat()
    assert (certificate.st_uid, certificate.st_gid, certificate.st_mode & 0o777) == (65534, 65534, 0o640)
    # A key never keeps access for others.
    assert (key.st_uid, key.st_gid, key.st_mode & 0o777) == (65534, 65534, 0o640)
    assert (device / "site.key").read_bytes() == bundle.private_key


async def test_same_certificate_again_writes_nothing_and_does_not_reload(deployers, sshd, device, scripts, issuer):
    bundle = issuer.issue(SERVER_NAME)
    target = make_target(sshd, device, scripts)
    await deploy(deployers, "order-1", target, bundle)
    before = {path.name: path.stat() for path in device.iterdir()}
    again = await deploy(deployers, "order-2", target, bundle)
    assert again.skipped and not again.reloaded
    assert reload_count(scripts.reload_log) == 1 and reload_count(scripts.test_log) == 1
    after = {path.name: path.stat() for path in device.iterdir()}
    assert {name: (s.st_ino, s.st_mtime_ns) for name, s in after.items()} == \
           {name: (s.st_ino, s.st_mtime_ns) for name, s in before.items()}


async def test_failed_remote_config_test_restores_the_files_and_reloads_them(deployers, sshd, device, scripts,
                                                                             issuer, caplog):
    caplog.set_level(logging.DEBUG)
    install_bundle(issuer.issue(SERVER_NAME), device / "site.pem", device / "site.key")
    before = snapshot(device)
    bundle = issuer.issue(SERVER_NAME)
    scripts.reject_certificate(bundle.certificate + bundle.chain)

    with pytest.raises(DeployError) as raised:
        await deploy(deployers, "order-1", make_target(sshd, device, scripts), bundle)

    error = raised.value
    assert error.step == "config-test" and error.rolled_back
    assert "config test failed" in error.detail and "the test rejects this certificate" in error.detail
    assert "previous files restored; reload with the previous files succeeded" in error.detail
    assert snapshot(device) == before  # byte for byte; chain.pem, which did not exist, is gone
    assert temp_files(device) == []
    assert reload_count(scripts.test_log) == 2  # the new files, then the restored ones
    assert reload_count(scripts.reload_log) == 1  # after the restore only
    for secret in (bundle.private_key.decode(), sshd.client_key):
        assert secret.strip() not in error.detail and secret.strip() not in caplog.text


async def test_failed_remote_reload_restores_and_reloads_again(deployers, sshd, device, scripts, issuer):
    install_bundle(issuer.issue(SERVER_NAME), device / "site.pem", device / "site.key")
    before = snapshot(device)
    failing = write_script(device.parent / "bin" / "reload-fails-once", (
        f'echo reload >> {scripts.reload_log}\n'
        f'if [ ! -e {device.parent}/failed-once ]; then : > {device.parent}/failed-once; exit 3; fi\n'))
    with pytest.raises(DeployError) as raised:
        await deploy(deployers, "order-1", make_target(sshd, device, scripts, reload_command=failing),
                     issuer.issue(SERVER_NAME))
    assert raised.value.step == "reload" and raised.value.rolled_back
    assert "exited 3" in raised.value.detail and "reload after restore succeeded" in raised.value.detail
    assert snapshot(device) == before
    assert reload_count(scripts.reload_log) == 2


async def test_agent_stopping_during_the_remote_reload_restores_the_files(deployers, sshd, device, scripts,
                                                                            issuer):
    """The deployment is cancelled (the agent stops past its deadline) while the remote
    reload runs: the previous files go back, and the device is reloaded with them."""
    install_bundle(issuer.issue(SERVER_NAME), device / "site.pem", device / "site.key")
    before = snapshot(device)
    marker = device.parent / "reload-started"
    hanging = write_script(device.parent / "bin" / "reload-hangs-once", (
        f'echo reload >> {scripts.reload_log}\n'
        f'if [ ! -e {marker} ]; then : > {marker}; exec sleep 600; fi\n'))
    target = make_target(sshd, device, scripts, reload_command=hanging)
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(deploy, deployers, "order-1", target, issuer.issue(SERVER_NAME))
            with trio.fail_after(60):
                while not marker.exists():
                    await trio.sleep(0.05)
            scope.cancel()
    assert scope.cancelled_caught
    assert snapshot(device) == before
    assert reload_count(scripts.reload_log) == 2  # the one cut short, then the one after the restore


async def test_verification_mismatch_restores_and_reloads_again(deployers, sshd, device, scripts, issuer, nursery,
                                                                 tmp_path):
    """The device keeps serving another certificate after the reload: roll back."""
    install_bundle(issuer.issue(SERVER_NAME), device / "site.pem", device / "site.key")
    before = snapshot(device)
    stale = issuer.issue(SERVER_NAME)
    port = await serve_stale_leaf(nursery, stale, tmp_path)
    target = make_target(sshd, device, scripts, verify=TlsCheck(port=port, attempts=1))

    with pytest.raises(DeployError) as raised:
        await deploy(deployers, "order-1", target, issuer.issue(SERVER_NAME))
    assert raised.value.step == "verify" and raised.value.rolled_back
    assert raised.value.served_fingerprint == stale.fingerprint_sha256
    assert "reload after restore succeeded" in raised.value.detail
    assert snapshot(device) == before
    assert reload_count(scripts.reload_log) == 2


async def test_host_key_that_is_not_the_pin_is_refused_before_authenticating(deployers, sshd, device, scripts,
                                                                              issuer, tmp_path):
    install_bundle(issuer.issue(SERVER_NAME), device / "site.pem", device / "site.key")
    before = snapshot(device)
    impostor = ssh_keygen(tmp_path / "impostor", "ed25519")
    log_before = len(sshd.log_text())

    with pytest.raises(DeployError) as raised:
        await deploy(deployers, "order-1", make_target(sshd, device, scripts, host_key=impostor),
                     issuer.issue(SERVER_NAME))

    error = raised.value
    assert error.step == "prepare" and not error.rolled_back
    assert sshd.fingerprint(impostor) in error.detail  # the expected key
    assert f"ssh-ed25519 {sshd.fingerprint(sshd.ed25519_host_key)}" in error.detail  # the key seen
    assert "nothing written" in error.detail
    assert snapshot(device) == before and temp_files(device) == []
    assert reload_count(scripts.test_log) == 0 and reload_count(scripts.reload_log) == 0
    new_log = sshd.log_text()[log_before:]
    assert "Accepted" not in new_log and "Failed" not in new_log  # no authentication was attempted


@pytest.mark.parametrize("pin", ["fingerprint", "ecdsa-key"])
async def test_other_forms_of_the_pin(deployers, sshd, device, scripts, issuer, pin):
    """A bare fingerprint (of the key the server offers first), or a whole ECDSA key:
    the agent then asks for that key type, though the server prefers Ed25519."""
    host_key = sshd.fingerprint(sshd.ed25519_host_key) if pin == "fingerprint" else sshd.ecdsa_host_key
    outcome = await deploy(deployers, "order-1", make_target(sshd, device, scripts, host_key=host_key),
                           issuer.issue(SERVER_NAME))
    assert outcome.changed


async def test_unknown_client_key_is_refused_without_quoting_the_secret(sshd, device, scripts, issuer, tmp_path,
                                                                        state, caplog):
    caplog.set_level(logging.DEBUG)
    ssh_keygen(tmp_path / "stranger", "ed25519")
    stranger = (tmp_path / "stranger").read_text()
    deployers = Deployers(state, write_secrets(tmp_path, {"device-key": stranger}))
    with pytest.raises(DeployError) as raised:
        await deploy(deployers, "order-1", make_target(sshd, device, scripts), issuer.issue(SERVER_NAME))
    assert raised.value.step == "prepare"
    assert "refused the credentials in the agent's secret 'device-key'" in raised.value.detail
    body = "".join(stranger.strip().splitlines()[1:-1])
    for line in stranger.strip().splitlines()[1:-1]:
        assert line not in raised.value.detail and line not in caplog.text
    assert body[:40] not in repr(raised.value)
    assert list(device.iterdir()) == []


async def test_password_authentication(sshd, device, scripts, issuer, tmp_path, state, caplog):
    if sshd.password is None:
        pytest.skip("password logins need root and unshare (sshd checks a private copy of /etc/shadow)")
    caplog.set_level(logging.DEBUG)
    deployers = Deployers(state, write_secrets(tmp_path, {"device-password": sshd.password,
                                                          "wrong-password": "not-the-password-2718"}))
    bundle = issuer.issue(SERVER_NAME)
    outcome = await deploy(deployers, "order-1", make_target(sshd, device, scripts, auth_secret="device-password"),
                           bundle)
    assert outcome.changed and (device / "site.key").read_bytes() == bundle.private_key

    with pytest.raises(DeployError) as raised:
        await deploy(deployers, "order-2", make_target(sshd, device, scripts, auth_secret="wrong-password"),
                     issuer.issue(SERVER_NAME))
    assert "refused the credentials in the agent's secret 'wrong-password'" in raised.value.detail
    for secret in (sshd.password, "not-the-password-2718"):
        assert secret not in raised.value.detail and secret not in caplog.text and secret not in repr(outcome)
    assert (device / "site.key").read_bytes() == bundle.private_key


async def test_missing_secret_and_encrypted_key_are_clear_errors(sshd, device, scripts, issuer, tmp_path, state):
    encrypted = tmp_path / "encrypted"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "a passphrase", "-f", str(encrypted)], check=True)
    deployers = Deployers(state, write_secrets(tmp_path, {"encrypted": encrypted.read_text()}))
    with pytest.raises(DeployError, match="no secret named 'device-key'"):
        await deploy(deployers, "order-1", make_target(sshd, device, scripts), issuer.issue(SERVER_NAME))
    with pytest.raises(DeployError, match="is encrypted: store it without a passphrase"):
        await deploy(deployers, "order-2", make_target(sshd, device, scripts, auth_secret="encrypted"),
                      issuer.issue(SERVER_NAME))
    assert list(device.iterdir()) == []


async def test_operator_rollback_puts_back_the_files_before_the_order(deployers, sshd, device, scripts, issuer,
                                                                      state):
    install_bundle(issuer.issue(SERVER_NAME), device / "site.pem", device / "site.key")
    before = snapshot(device)
    target = make_target(sshd, device, scripts)
    await deploy(deployers, "order-1", target, issuer.issue(SERVER_NAME))
    outcome = await SshDeployer(state, deployers.secrets).roll_back_order("order-1", target)
    assert outcome == "previous files restored; reload after restore succeeded"
    assert snapshot(device) == before


async def test_targets_test_runs_the_remote_config_test(deployers, sshd, device, scripts):
    found = await deployers.check(make_target(sshd, device, scripts), server_name=SERVER_NAME, expected=None)
    assert "connected to" in found and "config test passed" in found
    assert reload_count(scripts.test_log) == 1 and reload_count(scripts.reload_log) == 0


def test_describe_names_the_device_and_the_pin(sshd, device, scripts):
    lines = SshDeployer.describe(make_target(sshd, device, scripts))
    assert lines[0] == "kind: ssh"
    assert any(sshd.fingerprint(sshd.ed25519_host_key) in line for line in lines)
    assert any("private key material" in line for line in lines)


# --- settings -----------------------------------------------------------------------------

_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBZVVA15oeRyJ87qjTRmCTJVCGJbyDHLFZQ9ZxyXs2lv"  # ssh-keygen -t ed25519


def _settings(**changes) -> dict:
    return {"kind": "ssh", "host": "device.example.net", "username": "deploy", "host_key": _KEY,
            "auth_secret": "device-key", "certificate_path": "/etc/tls/site.pem", "key_path": "/etc/tls/site.key",
            **changes}


def test_host_key_pin_forms():
    key_type, fingerprint = parse_ssh_host_key(_KEY + " root@device")
    assert key_type == "ssh-ed25519" and fingerprint.startswith("SHA256:") and len(fingerprint) == 50
    assert parse_ssh_host_key(fingerprint) == (None, fingerprint)


@pytest.mark.parametrize(("changes", "message"), [
    ({"host_key": "SHA256:tooShort"}, "host_key must be"),
    ({"host_key": "ssh-dss AAAAB3NzaC1kc3MAAACBAP"}, "host_key must be"),
    ({"host_key": _KEY.replace("ssh-ed25519", "ecdsa-sha2-nistp256")}, "blob holds a ssh-ed25519 key"),
    ({"host": "device;reboot"}, "host is not a host name"),
    ({"key_mode": 0o640}, "key_mode must not grant"),
    ({"reload_command": ["systemctl reload nginx"]}, "characters certfleet refuses"),
    ({"key_path": "/etc/tls/site.pem"}, "must differ"),
    ({"certificate_path": "etc/tls/site.pem"}, "absolute path"),
])
def test_ssh_settings_that_are_refused(changes, message):
    target = msgspec.convert(_settings(**changes), SshTarget)
    with pytest.raises(msgspec.ValidationError, match=message):
        target.validate()
