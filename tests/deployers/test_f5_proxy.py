"""The ``f5`` target against ``fake_f5``, a FAKE BIG-IP implementing the documented
iControl REST calls the deployer makes (no real device or simulator runs here):
switching a client-ssl profile in a transaction, rollback after a failed commit or a
failed check, credentials, and the pin on the management interface's certificate."""

from __future__ import annotations

import json
import logging
from functools import partial

import msgspec
import pytest
import trio

from certfleet.agent.deployers import DeployError, Deployers, icontrol
from certfleet.agent.deployers import f5 as f5_deployer
from certfleet.agent.secrets import Secrets
from certfleet.agent.state import AgentState
from certfleet.shared.targets import F5Target, TlsCheck
from tests.deployers.fake_f5 import FakeBigIp, start_fake_f5
from tests.deployers.fake_kubernetes import TestPki
from tests.deployers.mail_servers import serve_stale_leaf

USERNAME, PASSWORD = "certfleet", "f5-admin-pass-8128"
PARTITION, PROFILE = "Common", "clientssl-shop"
SERVER_NAME = "shop.example.test"


@pytest.fixture
def pki() -> TestPki:
    return TestPki()


@pytest.fixture
async def fake(nursery, tmp_path, pki) -> FakeBigIp:
    fake = await start_fake_f5(nursery, tmp_path / "fake", pki, username=USERNAME, password=PASSWORD)
    old = pki.bundle(SERVER_NAME)
    certificate, key = fake.add_objects(PARTITION, "shop-2024", old.certificate, old.private_key)
    fake.add_profile(PARTITION, PROFILE, certificate=certificate, key=key)
    return fake


@pytest.fixture
def state(tmp_path) -> AgentState:
    return AgentState(tmp_path / "state" / "agent.db")


@pytest.fixture
def deployers(tmp_path, state) -> Deployers:
    path = tmp_path / "secrets.json"
    path.touch(mode=0o600)
    path.write_text(json.dumps({"bigip": f"{USERNAME}:{PASSWORD}", "bigip-wrong": f"{USERNAME}:not-it-4711",
                                "bigip-malformed": "no-colon-here"}))
    return Deployers(state, Secrets(path))


def make_target(fake: FakeBigIp, **settings) -> F5Target:
    fields = dict(url=fake.url, credentials_secret="bigip", partition=PARTITION, profile=PROFILE,
                  object_name="shop", server_fingerprint=fake.tls_fingerprint)
    fields.update(settings)
    target = F5Target(**fields)
    target.validate()
    return target


async def deploy(deployers: Deployers, order_id: str, target: F5Target, bundle):
    return await deployers.deploy(order_id, target, bundle, server_name=SERVER_NAME)


def new_names(bundle) -> tuple[str, str, str]:
    stem = f"/{PARTITION}/shop_{bundle.fingerprint_sha256[:16]}"
    return f"{stem}.crt", f"{stem}.key", f"{stem}_chain.crt"


async def test_deploy_points_the_profile_at_new_objects_in_a_transaction(deployers, fake, pki, state):
    before = fake.chain_of(PARTITION, PROFILE)[0]
    bundle = pki.bundle(SERVER_NAME)

    outcome = await deploy(deployers, "order-1", make_target(fake), bundle)

    certificate, key, chain = new_names(bundle)
    assert fake.chain_of(PARTITION, PROFILE) == [{"name": "default", "cert": certificate, "key": key,
                                                   "chain": chain}]
    assert fake.config.certificates[certificate] == bundle.certificate
    assert fake.config.keys[key] == bundle.private_key
    assert fake.config.certificates[chain] == bundle.chain
    assert before["cert"] in fake.config.certificates  # the objects in use before are left alone
    assert outcome.changed[-1] == f"/{PARTITION}/{PROFILE} (client-ssl profile)" and not outcome.reloaded
    assert fake.downloads == {}  # uploaded files, the key among them, removed once installed
    assert fake.tokens == set()  # logged out
    # The profile changed only inside the transaction, and the commit was sent outside it.
    patches = [(path, coordination) for method, path, coordination in fake.requests if method == "PATCH"]
    [transaction] = fake.transactions
    assert patches == [(f"/mgmt/tm/ltm/profile/client-ssl/~{PARTITION}~{PROFILE}", str(transaction)),
                       (f"/mgmt/tm/transaction/{transaction}", None)]
    assert fake.transactions[transaction]["state"] == "COMPLETED"
    [snapshot] = state.snapshots("order-1")
    assert json.loads(snapshot.content) == [before]


async def test_same_certificate_again_changes_nothing(deployers, fake, pki):
    bundle = pki.bundle(SERVER_NAME)
    target = make_target(fake)
    await deploy(deployers, "order-1", target, bundle)
    fake.requests.clear()
    again = await deploy(deployers, "order-2", target, bundle)
    assert again.skipped
    assert [method for method, _ in fake.paths()] == ["POST", "GET", "GET", "DELETE"]  # login, reads, logout


async def test_failed_commit_leaves_the_profile_and_deletes_the_new_objects(deployers, fake, pki):
    before = fake.chain_of(PARTITION, PROFILE)
    objects_before = (set(fake.config.certificates), set(fake.config.keys))
    fake.fail_next_commit = "01070734:3: Configuration error: injected by the test"
    bundle = pki.bundle(SERVER_NAME)

    with pytest.raises(DeployError) as raised:
        await deploy(deployers, "order-1", make_target(fake), bundle)

    error = raised.value
    assert error.step == "apply" and error.rolled_back
    assert "injected by the test" in error.detail
    assert "the profile still has its previous certKeyChain" in error.detail
    certificate, key, chain = new_names(bundle)
    assert f"new objects deleted: {certificate} (cert), {key} (key), {chain} (cert)" in error.detail
    assert fake.chain_of(PARTITION, PROFILE) == before
    assert (set(fake.config.certificates), set(fake.config.keys)) == objects_before
    assert fake.downloads == {} and fake.tokens == set()


async def test_key_that_does_not_match_is_refused_by_the_device_and_undone(deployers, fake, pki):
    """The device's own validation fails the commit (here: a key for another certificate)."""
    before = fake.chain_of(PARTITION, PROFILE)
    good, other = pki.bundle(SERVER_NAME), pki.bundle(SERVER_NAME)
    mismatched = type(good)(good.certificate, good.chain, other.private_key, good.fingerprint_sha256)
    with pytest.raises(DeployError) as raised:
        await deploy(deployers, "order-1", make_target(fake), mismatched)
    assert "key and certificate do not match" in raised.value.detail and raised.value.rolled_back
    assert fake.chain_of(PARTITION, PROFILE) == before
    assert not any(name.startswith(f"/{PARTITION}/shop_") for name in fake.config.certificates)


async def test_wrong_credentials_are_a_clear_error(deployers, fake, pki, caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DeployError) as raised:
        await deploy(deployers, "order-1", make_target(fake, credentials_secret="bigip-wrong"), pki.bundle())
    error = raised.value
    assert error.step == "prepare" and not error.rolled_back
    assert f"{fake.url} refused the credentials in the agent's secret 'bigip-wrong'" in error.detail
    assert "HTTP 401" in error.detail and "nothing changed" in error.detail
    for secret in ("not-it-4711", PASSWORD):
        assert secret not in error.detail and secret not in caplog.text
    assert fake.paths() == [("POST", "/mgmt/shared/authn/login")]

    with pytest.raises(DeployError, match="must hold username:password"):
        await deploy(deployers, "order-2", make_target(fake, credentials_secret="bigip-malformed"), pki.bundle())


async def test_device_certificate_not_matching_the_pin_is_refused_before_the_credentials(deployers, fake, pki,
                                                                                         caplog):
    caplog.set_level(logging.DEBUG)
    pinned = "ab" * 32
    with pytest.raises(DeployError) as raised:
        await deploy(deployers, "order-1", make_target(fake, server_fingerprint=":".join(["AB"] * 32)),
                     pki.bundle())
    error = raised.value
    assert error.step == "prepare" and "nothing sent" in error.detail
    assert pinned in error.detail and fake.tls_fingerprint in error.detail
    assert fake.requests == []  # not even the login request reached the device
    assert PASSWORD not in caplog.text


@pytest.mark.parametrize("pin", ["server_certificate", "ca_bundle"])
async def test_other_ways_to_authenticate_the_device(deployers, fake, pki, tmp_path, pin):
    if pin == "server_certificate":
        settings = {"server_fingerprint": None,
                    "server_certificate": (tmp_path / "fake" / "server.crt").read_text()}
    else:
        (tmp_path / "ca.pem").write_bytes(pki.ca_pem)
        settings = {"server_fingerprint": None, "ca_bundle": str(tmp_path / "ca.pem")}
    outcome = await deploy(deployers, "order-1", make_target(fake, **settings), pki.bundle(SERVER_NAME))
    assert outcome.changed


async def test_ca_bundle_that_does_not_vouch_for_the_device_is_refused(deployers, fake, tmp_path):
    (tmp_path / "other-ca.pem").write_bytes(TestPki().ca_pem)
    target = make_target(fake, server_fingerprint=None, ca_bundle=str(tmp_path / "other-ca.pem"))
    with pytest.raises(DeployError) as raised:
        await deploy(deployers, "order-1", target, TestPki().bundle())
    assert raised.value.step == "prepare" and "CERTIFICATE_VERIFY_FAILED" in raised.value.detail
    assert fake.requests == []


async def test_large_files_are_uploaded_in_ranges(deployers, fake, pki, monkeypatch):
    monkeypatch.setattr(icontrol, "UPLOAD_CHUNK", 100)
    bundle = pki.bundle(SERVER_NAME)
    await deploy(deployers, "order-1", make_target(fake), bundle)
    uploads = [path for method, path in fake.paths() if path.startswith("/mgmt/shared/file-transfer/")]
    assert len(uploads) > 3 * 3  # certificate, key and chain, each in several ranges
    assert fake.config.keys[new_names(bundle)[1]] == bundle.private_key


async def test_verification_mismatch_restores_the_profile_and_deletes_the_new_objects(deployers, fake, pki, nursery,
                                                                                      tmp_path):
    before = fake.chain_of(PARTITION, PROFILE)
    stale = pki.bundle(SERVER_NAME)
    port = await serve_stale_leaf(nursery, stale, tmp_path)
    bundle = pki.bundle(SERVER_NAME)
    with pytest.raises(DeployError) as raised:
        await deploy(deployers, "order-1", make_target(fake, verify=TlsCheck(port=port, attempts=1)), bundle)
    error = raised.value
    assert error.step == "verify" and error.rolled_back and error.served_fingerprint == stale.fingerprint_sha256
    assert "the profile's previous certKeyChain restored" in error.detail and "new objects deleted" in error.detail
    assert fake.chain_of(PARTITION, PROFILE) == before
    assert new_names(bundle)[0] not in fake.config.certificates


async def test_agent_stopping_during_the_check_puts_the_profile_back(deployers, fake, pki, nursery):
    """Cancelled (the agent stops past its deadline) after the commit, while the
    virtual server is still being checked: the profile goes back, the objects go."""
    before = fake.chain_of(PARTITION, PROFILE)
    # A listener that accepts and never answers the TLS handshake.
    listeners = await nursery.start(partial(trio.serve_tcp, lambda stream: trio.sleep_forever(), 0,
                                            host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    bundle = pki.bundle(SERVER_NAME)
    target = make_target(fake, verify=TlsCheck(port=port, attempts=1))
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as inner:
            inner.start_soon(deploy, deployers, "order-1", target, bundle)
            with trio.fail_after(30):
                while not any(t["state"] == "COMPLETED" for t in fake.transactions.values()):
                    await trio.sleep(0.01)
            scope.cancel()
    assert scope.cancelled_caught
    assert fake.chain_of(PARTITION, PROFILE) == before
    assert new_names(bundle)[0] not in fake.config.certificates and fake.tokens == set()


async def test_missing_profile_is_refused_before_anything_is_installed(deployers, fake, pki):
    with pytest.raises(DeployError) as raised:
        await deploy(deployers, "order-1", make_target(fake, profile="no-such-profile"), pki.bundle())
    assert raised.value.step == "prepare" and "there is no client-ssl profile" in raised.value.detail
    assert not any(method == "POST" and "crypto" in path for method, path in fake.paths())


async def test_operator_rollback_restores_the_certkeychain_before_the_order(deployers, fake, pki, state):
    before = fake.chain_of(PARTITION, PROFILE)
    target = make_target(fake)
    await deploy(deployers, "order-1", target, pki.bundle(SERVER_NAME))
    outcome = await f5_deployer.F5Deployer(state, deployers.secrets).roll_back_order("order-1", target)
    assert outcome == "the profile's previous certKeyChain restored"
    assert fake.chain_of(PARTITION, PROFILE) == before


async def test_targets_test_logs_in_and_reads_the_profile(deployers, fake):
    found = await deployers.check(make_target(fake), server_name=SERVER_NAME, expected=None)
    assert f"profile /{PARTITION}/{PROFILE} uses /{PARTITION}/shop-2024.crt" in found
    assert fake.tokens == set()


async def test_describe_says_what_would_change(fake):
    lines = f5_deployer.F5Deployer.describe(make_target(fake))
    assert lines[0] == "kind: f5" and any(fake.tls_fingerprint in line for line in lines)


# --- settings -----------------------------------------------------------------------------

def _settings(**changes) -> dict:
    return {"kind": "f5", "url": "https://bigip.example.net", "credentials_secret": "bigip", "profile": PROFILE,
            "object_name": "shop", "server_fingerprint": "ab" * 32, **changes}


@pytest.mark.parametrize(("changes", "message"), [
    ({"url": "http://bigip.example.net"}, "must be https://host"),
    ({"url": "https://bigip.example.net/mgmt"}, "nothing more"),
    ({"url": "https://admin:pw@bigip.example.net"}, "nothing more"),
    ({"server_fingerprint": None}, "exactly one of"),
    ({"ca_bundle": "/etc/ssl/bigip-ca.pem"}, "exactly one of"),
    ({"server_fingerprint": "zz" * 32}, "not a SHA-256 fingerprint"),
    ({"server_fingerprint": None, "server_certificate": "-----BEGIN CERTIFICATE-----\nAAAA\n"},
     "not a PEM certificate"),
])
def test_f5_settings_that_are_refused(changes, message):
    target = msgspec.convert(_settings(**changes), F5Target)
    with pytest.raises(msgspec.ValidationError, match=message):
        target.validate()


@pytest.mark.parametrize("name", ["shop/../x", "shop name", "~Common~x"])
def test_f5_object_names_are_plain(name):
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(_settings(object_name=name), F5Target)
