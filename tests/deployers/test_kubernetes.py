"""Kubernetes Secret targets, against the fake Secrets API in ``fake_kubernetes``
(no cluster runs here): create, replace, idempotency, conflicts and failed writes with
their rollback, and each way of getting credentials."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import pytest
import yaml

from certfleet.agent.deployers import DeployError, Deployers, kubeconfig
from certfleet.agent.deployers import kubernetes as k8s
from certfleet.agent.secrets import Secrets
from certfleet.agent.state import AgentState
from certfleet.shared.targets import KubernetesSecretTarget

from .fake_kubernetes import Failure, FakeKubernetes, TestPki, start_fake

TOKEN = "fake-sa-token-3f9a8c"
NAMESPACE, NAME = "shop", "shop-tls"
ITEM = f"/api/v1/namespaces/{NAMESPACE}/secrets/{NAME}"


@pytest.fixture
def pki() -> TestPki:
    return TestPki()


@pytest.fixture
async def fake(nursery, tmp_path, pki) -> FakeKubernetes:
    return await start_fake(nursery, tmp_path / "fake", pki, token=TOKEN)


@pytest.fixture
def state(tmp_path) -> AgentState:
    return AgentState(tmp_path / "state" / "agent.db")


@pytest.fixture
def deployers(state, tmp_path) -> Deployers:
    return Deployers(state, Secrets(tmp_path / "secrets.json"))


def write_kubeconfig(path: Path, server: str, pki: TestPki, *, user: dict, context: str = "shop-admin") -> Path:
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": context,
        "clusters": [{"name": "fake", "cluster": {
            "server": server, "certificate-authority-data": base64.b64encode(pki.ca_pem).decode()}}],
        "users": [{"name": "agent", "user": user}],
        "contexts": [{"name": context, "context": {"cluster": "fake", "user": "agent"}}],
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@pytest.fixture
def target(tmp_path, fake, pki) -> KubernetesSecretTarget:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", fake.url, pki, user={"token": TOKEN})
    return KubernetesSecretTarget(namespace=NAMESPACE, name=NAME, kubeconfig=str(kubeconfig))


def stored(fake: FakeKubernetes) -> dict:
    return fake.secrets[(NAMESPACE, NAME)]


def stored_data(fake: FakeKubernetes) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in stored(fake)["data"].items()}


def old_secret(fake: FakeKubernetes) -> None:
    fake.put_secret(NAMESPACE, NAME, data={"tls.crt": b"old certificate", "tls.key": b"old key"},
                    labels={"team": "shop"})


async def deploy(deployers: Deployers, order_id: str, target, bundle):
    return await deployers.deploy(order_id, target, bundle, server_name="shop.example.test")


async def test_creates_a_tls_secret(deployers, fake, target, pki, state):
    bundle = pki.bundle()
    outcome = await deploy(deployers, "order-1", target, bundle)
    assert outcome.changed == (f"kubernetes-secret:{NAMESPACE}/{NAME}",) and not outcome.skipped
    assert fake.requests == [("GET", ITEM), ("POST", f"/api/v1/namespaces/{NAMESPACE}/secrets")]
    assert stored(fake)["type"] == "kubernetes.io/tls"
    assert stored(fake)["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "certfleet"}
    assert stored_data(fake) == {"tls.crt": bundle.certificate + bundle.chain, "tls.key": bundle.private_key}
    [snapshot] = state.snapshots("order-1")
    assert snapshot.name == f"kubernetes-secret:{NAMESPACE}/{NAME}" and not snapshot.existed


async def test_replaces_the_previous_data(deployers, fake, target, pki, state):
    old_secret(fake)
    version = stored(fake)["metadata"]["resourceVersion"]
    bundle = pki.bundle()
    outcome = await deploy(deployers, "order-1", target, bundle)
    assert outcome.changed
    assert fake.methods() == ["GET", "PUT"]
    assert stored_data(fake) == {"tls.crt": bundle.certificate + bundle.chain, "tls.key": bundle.private_key}
    assert stored(fake)["metadata"]["labels"] == {"team": "shop", "app.kubernetes.io/managed-by": "certfleet"}
    assert stored(fake)["metadata"]["resourceVersion"] != version
    [snapshot] = state.snapshots("order-1")
    assert snapshot.existed
    assert json.loads(snapshot.content)["data"] == {"tls.crt": base64.b64encode(b"old certificate").decode(),
                                                    "tls.key": base64.b64encode(b"old key").decode()}


async def test_keys_certfleet_does_not_write_are_kept(deployers, fake, target, pki):
    fake.put_secret(NAMESPACE, NAME, data={"tls.crt": b"old certificate", "tls.key": b"old key",
                                           "ca.crt": b"the cluster's CA"}, labels={})
    bundle = pki.bundle()
    await deploy(deployers, "order-1", target, bundle)
    assert stored_data(fake) == {"tls.crt": bundle.certificate + bundle.chain, "tls.key": bundle.private_key,
                                 "ca.crt": b"the cluster's CA"}
    fake.requests.clear()
    assert (await deploy(deployers, "order-2", target, bundle)).skipped
    assert fake.methods() == ["GET"]


async def test_same_certificate_again_is_skipped_without_a_write(deployers, fake, target, pki):
    bundle = pki.bundle()
    await deploy(deployers, "order-1", target, bundle)
    fake.requests.clear()
    again = await deploy(deployers, "order-2", target, bundle)
    assert again.skipped
    assert fake.methods() == ["GET"]


async def test_injected_conflict_fails_apply_and_leaves_the_previous_secret(deployers, fake, target, pki):
    old_secret(fake)
    fake.fail_next["PUT"] = Failure(409)
    with pytest.raises(DeployError) as raised:
        await deploy(deployers, "order-1", target, pki.bundle())
    assert raised.value.step == "apply" and raised.value.rolled_back
    assert "409" in raised.value.detail and "the previous Secret is unchanged" in raised.value.detail
    assert stored_data(fake) == {"tls.crt": b"old certificate", "tls.key": b"old key"}


async def test_concurrent_change_is_not_overwritten(deployers, fake, target, pki):
    """Another writer changes the Secret between our read and our write: the stale
    resourceVersion gets a 409, and their data stays."""
    old_secret(fake)
    fake.interfere_next["PUT"] = lambda secret: secret["data"].update(
        {"tls.crt": base64.b64encode(b"theirs").decode()})
    with pytest.raises(DeployError) as raised:
        await deploy(deployers, "order-1", target, pki.bundle())
    assert raised.value.step == "apply" and not raised.value.rolled_back
    assert "conflicted with a concurrent change (409)" in raised.value.detail
    assert "changed by someone else" in raised.value.detail
    assert stored_data(fake)["tls.crt"] == b"theirs"
    assert fake.methods() == ["GET", "PUT", "GET"]


async def test_server_error_after_the_write_restores_the_previous_data(deployers, fake, target, pki):
    old_secret(fake)
    fake.fail_next["PUT"] = Failure(500, apply=True)
    with pytest.raises(DeployError) as raised:
        await deploy(deployers, "order-1", target, pki.bundle())
    assert raised.value.step == "apply" and raised.value.rolled_back
    assert "HTTP 500" in raised.value.detail and "previous Secret data restored" in raised.value.detail
    assert stored_data(fake) == {"tls.crt": b"old certificate", "tls.key": b"old key"}
    assert stored(fake)["metadata"]["labels"] == {"team": "shop"}
    assert fake.methods() == ["GET", "PUT", "GET", "PUT"]


async def test_failed_create_deletes_the_new_secret(deployers, fake, target, pki):
    fake.fail_next["POST"] = Failure(500, apply=True)
    with pytest.raises(DeployError) as raised:
        await deploy(deployers, "order-1", target, pki.bundle())
    assert raised.value.step == "apply" and raised.value.rolled_back
    assert "did not exist before, was deleted" in raised.value.detail
    assert (NAMESPACE, NAME) not in fake.secrets
    assert fake.methods() == ["GET", "POST", "GET", "DELETE"]


async def test_wrong_token_is_a_clear_error(deployers, fake, tmp_path, pki, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "not-the-right-token-77"
    kubeconfig = write_kubeconfig(tmp_path / "wrong", fake.url, pki, user={"token": wrong})
    target = KubernetesSecretTarget(namespace=NAMESPACE, name=NAME, kubeconfig=str(kubeconfig))
    bundle = pki.bundle()
    with pytest.raises(DeployError) as raised:
        await deploy(deployers, "order-1", target, bundle)
    assert raised.value.step == "apply" and not raised.value.rolled_back
    assert "refused the credentials" in raised.value.detail and "401 Unauthorized" in raised.value.detail
    assert "nothing changed" in raised.value.detail
    assert wrong not in raised.value.detail and wrong not in caplog.text
    assert bundle.private_key.decode() not in caplog.text
    assert fake.methods() == ["GET"] and not fake.secrets


async def test_operator_rollback_restores_the_secret_before_the_order(deployers, fake, target, pki, state):
    old_secret(fake)
    await deploy(deployers, "order-1", target, pki.bundle())
    outcome = await k8s.KubernetesDeployer(state, deployers.secrets).roll_back_order("order-1", target)
    assert outcome == "the previous Secret data restored"
    assert stored_data(fake) == {"tls.crt": b"old certificate", "tls.key": b"old key"}


async def test_secret_of_another_type_is_refused(deployers, fake, target, pki):
    fake.put_secret(NAMESPACE, NAME, data={"password": b"hunter2"}, type_="Opaque")
    with pytest.raises(DeployError) as raised:
        await deploy(deployers, "order-1", target, pki.bundle())
    assert raised.value.step == "prepare" and "type 'Opaque'" in raised.value.detail
    assert fake.methods() == ["GET"]


async def test_in_cluster_service_account(deployers, fake, tmp_path, pki, monkeypatch):
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text(TOKEN + "\n")
    (account / "ca.crt").write_bytes(pki.ca_pem)
    host, port = fake.url.removeprefix("https://").rsplit(":", 1)
    monkeypatch.setattr(kubeconfig, "SERVICE_ACCOUNT_DIR", account)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    target = KubernetesSecretTarget(namespace=NAMESPACE, name=NAME)
    outcome = await deploy(deployers, "order-1", target, pki.bundle())
    assert outcome.changed and stored(fake)["type"] == "kubernetes.io/tls"


async def test_without_kubeconfig_outside_a_pod(deployers, pki, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(DeployError) as raised:
        await deploy(deployers, "order-1", KubernetesSecretTarget(namespace=NAMESPACE, name=NAME), pki.bundle())
    assert raised.value.step == "prepare" and "not running in a pod" in raised.value.detail


async def test_client_certificate_from_kubeconfig(deployers, nursery, tmp_path, pki):
    """The fake requires a client certificate at the TLS layer instead of a token."""
    fake = await start_fake(nursery, tmp_path / "mtls", pki, token=None)
    certificate, key = pki.client("system:serviceaccount:certfleet:agent")
    (tmp_path / "client.key").write_bytes(key)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", fake.url, pki, user={
        "client-certificate-data": base64.b64encode(certificate).decode(), "client-key": "client.key"})
    target = KubernetesSecretTarget(namespace=NAMESPACE, name=NAME, kubeconfig=str(kubeconfig))
    outcome = await deploy(deployers, "order-1", target, pki.bundle())
    assert outcome.changed and fake.methods() == ["GET", "POST"]


@pytest.mark.parametrize(("cluster", "user", "message"), [
    ({"insecure-skip-tls-verify": True}, {"token": TOKEN}, "insecure-skip-tls-verify is refused"),
    ({}, {"exec": {"command": "aws"}}, "the user setting exec is not supported"),
    ({}, {}, "no token, token file or client certificate"),
    ({}, {"client-certificate": "client.crt"}, "needs its key"),
    ({"server": "http://127.0.0.1:8080"}, {"token": TOKEN}, "must be an https:// URL"),
])
def test_kubeconfig_settings_that_are_refused(tmp_path, pki, cluster, user, message):
    path = write_kubeconfig(tmp_path / "kubeconfig", "https://127.0.0.1:6443", pki, user=user)
    config = yaml.safe_load(path.read_text())
    config["clusters"][0]["cluster"].update(cluster)
    path.write_text(yaml.safe_dump(config))
    (tmp_path / "client.crt").write_bytes(pki.ca_pem)
    with pytest.raises(kubeconfig.CredentialsError, match=message) as raised:
        kubeconfig.kubeconfig_credentials(path)
    assert TOKEN not in str(raised.value)


def test_kubeconfig_named_context_and_token_file(tmp_path, pki):
    (tmp_path / "token").write_text(TOKEN)
    path = write_kubeconfig(tmp_path / "kubeconfig", "https://127.0.0.1:6443/", pki, user={"tokenFile": "token"},
                            context="other")
    credentials = kubeconfig.kubeconfig_credentials(path, "other")
    assert credentials.server == "https://127.0.0.1:6443"
    assert credentials.headers() == {"Authorization": f"Bearer {TOKEN}"}
    assert TOKEN not in repr(credentials)
    with pytest.raises(kubeconfig.CredentialsError, match="no context named 'missing'"):
        kubeconfig.kubeconfig_credentials(path, "missing")


def test_describe_says_what_would_be_written():
    target = KubernetesSecretTarget(namespace=NAMESPACE, name=NAME, kubeconfig="/etc/certfleet/kubeconfig",
                                    context="prod")
    lines = k8s.KubernetesDeployer.describe(target)
    assert lines[0] == "kind: kubernetes-secret"
    assert "API credentials: kubeconfig /etc/certfleet/kubeconfig (context prod)" in lines
    assert any(f"Secret {NAMESPACE}/{NAME}" in line and "kubernetes.io/tls" in line for line in lines)
    in_cluster = k8s.KubernetesDeployer.describe(KubernetesSecretTarget(namespace=NAMESPACE, name=NAME))
    assert any("the pod's service account" in line for line in in_cluster)
