"""The coordinator's inventory of discovered certificates: agents report what they
found, operators list, dismiss and claim, and a claimed certificate's next renewal goes
through the real scheduler and agent back to where it was found."""

from __future__ import annotations

import datetime
import json
import time

import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certfleet.coordinator.client import ApiError
from certfleet.shared import wire
from certfleet.shared.agent_token import AUTH_SCHEME, sign_request_token
from certfleet.shared.pki import certificate_fingerprint, load_private_key, public_key_matches
from certfleet.shared.workorder import verify_work_order
from tests.pki_support import issue_through_agent
from tests.support import admin_client, enroll_agent, key_with_roles, raw_client

DAY = 86400


class SimulatedClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _utc(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _find(number: int = 1, **fields) -> wire.DiscoveredCertificate:
    """A find as the agent's scanner reports it; ``number`` makes it distinct."""
    now = time.time()
    values = dict(
        fingerprint_sha256=f"{number:064x}", subject=f"CN=host{number}.example.test,O=Example",
        sans=[f"DNS:host{number}.example.test"], issuer="CN=Legacy CA,O=Elsewhere", serial=f"{number:x}",
        not_before=_utc(now - 60 * DAY), not_after=_utc(now + 300 * DAY), key_algorithm="EC", key_size=256,
        is_ca=False, path=f"/etc/ssl/host{number}.pem", position=0, format="pem", has_private_key=True)
    values.update(fields)
    return wire.DiscoveredCertificate(**values)


def _report(*added: wire.DiscoveredCertificate, removed=(), source="filesystem", scan="scan-1", complete=False):
    return wire.DiscoveryReport(source=source, scan_id=scan, added=list(added), removed=list(removed),
                                complete=complete)


async def _scene(coordinator, tmp_path, *, clock=None):
    from certfleet.agent.daemon import Agent

    api, api_key = await admin_client(coordinator)
    enrolled = await enroll_agent(api, coordinator, tmp_path / "agent")
    agent = Agent(enrolled.paths, poll_wait=0, **({"clock": clock} if clock else {}))
    return api, api_key, agent


async def _listed(api, **query) -> list[wire.DiscoveredCertificateInfo]:
    return (await api.call("discovery.list", query=query or None)).certificates


async def _refused(status: int, slug: str, call) -> ApiError:
    with pytest.raises(ApiError) as caught:
        await call
    assert caught.value.status == status and caught.value.problem["type"].endswith(slug), caught.value
    return caught.value


async def _rows(coordinator) -> int:
    row = await coordinator.coordinator.database.transact(
        lambda tx: tx.one("SELECT COUNT(*) AS n FROM discovered_certificates"))
    return row["n"]


# --- reports ----------------------------------------------------------------------------


async def test_a_report_is_listed_with_the_fields_the_agent_gave(coordinator, tmp_path):
    api, _, agent = await _scene(coordinator, tmp_path)
    first, second = _find(1), _find(2, key_algorithm="RSA", key_size=2048, has_private_key=False, format="der",
                                    path="/etc/pki/legacy.der", serial="ABCDEF")
    receipt = await agent.client.call("agent.discoveries", _report(first, second))
    assert receipt == wire.DiscoveryReceipt(recorded=2, removed=0)

    listed = await _listed(api)
    assert [f.fingerprint_sha256 for f in listed] == [first.fingerprint_sha256, second.fingerprint_sha256]
    shown = await api.call("discovery.get", discovery_id=str(listed[1].id))
    assert shown == listed[1]
    not_before, not_after = second.validity()
    assert (shown.agent_id, shown.source, shown.status, shown.present) == \
        (agent.config.agent_id, "filesystem", "unmanaged", True)
    assert (shown.subject, shown.sans, shown.issuer, shown.serial) == \
        (second.subject, second.sans, second.issuer, "abcdef")
    assert (shown.not_before, shown.not_after) == (not_before, not_after)
    assert (shown.key_algorithm, shown.key_size, shown.is_ca, shown.has_private_key) == ("RSA", 2048, False, False)
    assert (shown.path, shown.position, shown.format, shown.scan_id) == ("/etc/pki/legacy.der", 0, "der", "scan-1")
    assert shown.first_seen == shown.last_seen and shown.removed_at is None
    assert shown.claimed_certificate_id is None and shown.managed_certificate_id is None
    await _refused(404, "not-found", api.call("discovery.get", discovery_id="999999"))
    await _refused(404, "not-found", api.call("discovery.get", discovery_id="not-a-number"))
    await _refused(404, "not-found", api.call("discovery.get", discovery_id="²"))


async def test_the_same_report_twice_stores_each_find_once_and_moves_last_seen(coordinator, tmp_path):
    clock = SimulatedClock()
    coordinator.coordinator._clock = clock
    api, _, agent = await _scene(coordinator, tmp_path, clock=clock)
    # The same certificate in two places is two finds; in one place, one.
    report = _report(_find(1), _find(1, path="/srv/app/tls.pem"), _find(1, position=1))
    await agent.client.call("agent.discoveries", report)
    before = await _listed(api)
    clock.now += 3600
    await agent.client.call("agent.discoveries", report)
    await agent.client.call("agent.discoveries", _report(_find(1), scan="scan-2"))
    after = await _listed(api)
    assert len(before) == len(after) == 3 and await _rows(coordinator) == 3
    assert [f.first_seen for f in after] == [f.first_seen for f in before]
    assert [f.last_seen - b.last_seen for f, b in zip(after, before, strict=True)] == [3600, 3600, 3600]
    assert after[0].scan_id == "scan-2"

    # An agent reporting only changes ends a full scan with "complete": what it did not
    # report removed is still there.
    clock.now += 3600
    await agent.client.call("agent.discoveries", _report(scan="scan-3", complete=True))
    assert [f.last_seen - b.last_seen for f, b in zip(await _listed(api), before, strict=True)] == [7200] * 3
    clock.now += 3600
    await agent.client.call("agent.discoveries", _report(source="network", scan="probe-1", complete=True))
    assert [f.last_seen - b.last_seen for f, b in zip(await _listed(api), before, strict=True)] == [7200] * 3


async def test_a_removed_find_keeps_its_history_but_is_no_longer_present(coordinator, tmp_path):
    api, _, agent = await _scene(coordinator, tmp_path)
    kept, gone = _find(1), _find(2)
    await agent.client.call("agent.discoveries", _report(kept, gone))
    removal = wire.DiscoveryRemoval(fingerprint_sha256=gone.fingerprint_sha256, path=gone.path, position=0)
    assert (await agent.client.call("agent.discoveries", _report(removed=[removal]))).removed == 1
    assert (await agent.client.call("agent.discoveries", _report(removed=[removal]))).removed == 0, "a replay"
    assert [f.path for f in await _listed(api)] == [kept.path]
    everything = await _listed(api, include_removed=1)
    assert [(f.path, f.present) for f in everything] == [(kept.path, True), (gone.path, False)]
    assert everything[1].removed_at is not None

    await agent.client.call("agent.discoveries", _report(gone))
    back = await api.call("discovery.get", discovery_id=str(everything[1].id))
    assert back.present and back.removed_at is None and await _rows(coordinator) == 2


async def test_the_inventory_filters_and_pages(coordinator, tmp_path):
    api, _, agent = await _scene(coordinator, tmp_path)
    other = await enroll_agent(api, coordinator, tmp_path / "other", name="other-agent")
    now = time.time()
    await agent.client.call("agent.discoveries", _report(
        _find(1, not_after=_utc(now + 10 * DAY), issuer="CN=Legacy 100% CA,O=Elsewhere"),
        _find(2, not_after=_utc(now + 45 * DAY), issuer="CN=Other_CA"),
        _find(3, not_after=_utc(now - DAY))))
    await agent.client.call("agent.discoveries", _report(
        _find(4, path="10.0.0.5:443", format="tls"), source="network"))
    await other.client.call("agent.discoveries", _report(_find(5, issuer="CN=OtherXCA")))
    listed = await _listed(api)
    await api.call("discovery.dismiss", wire.DiscoveryDismiss(reason="test fixture"), discovery_id=str(listed[2].id))

    def numbers(finds) -> list[int]:
        return [int(f.fingerprint_sha256, 16) for f in finds]

    assert numbers(await _listed(api)) == [1, 2, 3, 4, 5]
    assert numbers(await _listed(api, status="unmanaged")) == [1, 2, 4, 5]
    assert numbers(await _listed(api, status="dismissed")) == [3]
    assert numbers(await _listed(api, agent_id=other.config.agent_id)) == [5]
    assert numbers(await _listed(api, source="network")) == [4]
    assert numbers(await _listed(api, issuer="legacy 100%")) == [1]
    assert numbers(await _listed(api, issuer="r_ca")) == [2], "'_' is matched literally"
    assert numbers(await _listed(api, issuer="%")) == [1]
    assert numbers(await _listed(api, expires_within_days=30)) == [1, 3]
    assert numbers(await _listed(api, expires_before=int(now))) == [3]
    first = await api.call("discovery.list", query={"limit": 2})
    second = await api.call("discovery.list", query={"limit": 2, "after": first.next_after})
    third = await api.call("discovery.list", query={"limit": 2, "after": second.next_after})
    assert numbers(first.certificates + second.certificates + third.certificates) == [1, 2, 3, 4, 5]
    assert third.next_after is None
    await _refused(400, "bad-request", api.call("discovery.list", query={"status": "lost"}))
    await _refused(400, "bad-request", api.call("discovery.list", query={"expires_within_days": "soon"}))


async def test_a_certificate_certfleet_issued_is_managed_when_found(coordinator, tmp_path):
    api, _, agent = await _scene(coordinator, tmp_path)
    issued = await issue_through_agent(api, agent, ["own.example.test"], tmp_path / "own")
    await agent.client.call("agent.discoveries", _report(
        _find(1, fingerprint_sha256=issued.fingerprint_sha256, path=str(tmp_path / "own" / "cert.pem"))))
    (found,) = await _listed(api)
    assert found.status == "managed" and found.managed_certificate_id == issued.id
    await _refused(409, "not-unmanaged", api.call(
        "discovery.dismiss", wire.DiscoveryDismiss(reason="it is ours"), discovery_id=str(found.id)))
    await _refused(409, "already-managed", api.call("discovery.claim", wire.DiscoveryClaim(),
                                                     discovery_id=str(found.id)))


# --- hostile reports ------------------------------------------------------------------


def _valid_report() -> dict:
    return msgspec.to_builtins(_report(_find(1)))


def _with_find(**fields) -> dict:
    report = _valid_report()
    report["added"][0].update(fields)
    return report


HOSTILE = {
    "too-many-records": lambda: {**_valid_report(), "added": [
        msgspec.to_builtins(_find(n)) for n in range(1, wire.MAX_DISCOVERY_RECORDS + 2)]},
    "too-many-in-total": lambda: {**_valid_report(), "added": [
        msgspec.to_builtins(_find(n)) for n in range(1, 601)], "removed": [
        {"fingerprint_sha256": f"{n:064x}", "path": "/etc/ssl/x.pem", "position": 0} for n in range(1000, 1401)]},
    "uppercase-fingerprint": lambda: _with_find(fingerprint_sha256="AB" * 32),
    "short-fingerprint": lambda: _with_find(fingerprint_sha256="ab" * 31),
    "fingerprint-not-hex": lambda: _with_find(fingerprint_sha256="zz" * 32),
    "position-as-text": lambda: _with_find(position="0"),
    "negative-position": lambda: _with_find(position=-1),
    "sans-not-a-list": lambda: _with_find(sans="DNS:a.example"),
    "key-size-text": lambda: _with_find(key_size="2048"),
    "huge-subject": lambda: _with_find(subject="CN=" + "a" * 5000),
    "relative-path": lambda: _with_find(path="etc/ssl/a.pem"),
    "local-time": lambda: _with_find(not_after="2030-01-01T00:00:00+02:00"),
    "not-a-date": lambda: _with_find(not_after="2030-02-31T00:00:00Z"),
    "tls-format-for-a-file": lambda: _with_find(format="tls"),
    "unknown-format": lambda: _with_find(format="p7b"),
    "another-agents-id": lambda: {**_valid_report(), "agent_id": "agt_someone_else"},
    "unknown-field-in-a-find": lambda: _with_find(agent_id="agt_someone_else"),
    "added-and-removed": lambda: {**_valid_report(), "removed": [
        {"fingerprint_sha256": f"{1:064x}", "path": "/etc/ssl/host1.pem", "position": 0}]},
    "bad-scan-id": lambda: {**_valid_report(), "scan_id": "../../etc"},
    "newline-in-scan-id": lambda: {**_valid_report(), "scan_id": "scan-1\n"},
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_a_hostile_report_is_refused_and_stores_nothing(coordinator, tmp_path, name):
    from certfleet.agent.config import load_identity

    _, _, agent = await _scene(coordinator, tmp_path)
    path = "/api/v1/agent/discoveries"
    token = sign_request_token(load_identity(agent.paths), agent_id=agent.config.agent_id, method="POST",
                               path=path, now=int(time.time()))
    async with raw_client(coordinator) as http:
        response = await http.post(path, content=json.dumps(HOSTILE[name]()).encode(),
                                   headers={"Authorization": f"{AUTH_SCHEME} {token}",
                                            "Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    problem = response.json()
    assert problem["type"].endswith("invalid-body") and problem["detail"]
    assert await _rows(coordinator) == 0


async def test_control_characters_a_certificate_carries_are_stored_escaped(coordinator, tmp_path):
    """A hostile certificate (or file name) cannot rewrite an operator's screen, nor,
    by being refused, hide the other finds of its report."""
    api, _, agent = await _scene(coordinator, tmp_path)
    hostile = _find(1, subject="CN=\x1b[2Jevil\x9b", sans=["DNS:a\nb"], path="/etc/ssl/new\nline.pem")
    await agent.client.call("agent.discoveries", _report(hostile, _find(2), _find(3, path="/etc/ssl/tab\t.pem")))
    first, second, third = await _listed(api)
    assert (first.subject, first.sans, first.path) == \
        ("CN=\\x1b[2Jevil\\x9b", ["DNS:a\\x0ab"], "/etc/ssl/new\\x0aline.pem")
    assert (second.path, third.path) == ("/etc/ssl/host2.pem", "/etc/ssl/tab\\x09.pem")
    await _refused(422, "unsupported-names", api.call("discovery.claim", wire.DiscoveryClaim(),
                                                       discovery_id=str(first.id)))
    # Not a path certfleet writes to: no file target can be made from it.
    await _refused(422, "target-required", api.call("discovery.claim", wire.DiscoveryClaim(),
                                                     discovery_id=str(third.id)))
    removal = wire.DiscoveryRemoval(fingerprint_sha256=hostile.fingerprint_sha256, path=hostile.path, position=0)
    assert (await agent.client.call("agent.discoveries", _report(removed=[removal]))).removed == 1


async def test_an_oversized_report_is_refused_before_it_is_read(coordinator, tmp_path):
    from certfleet.agent.config import load_identity
    from certfleet.coordinator.http import MAX_BODY_BYTES
    from tests.coordinator.test_api_bad_input import raw_exchange

    _, _, agent = await _scene(coordinator, tmp_path)
    path = "/api/v1/agent/discoveries"
    token = sign_request_token(load_identity(agent.paths), agent_id=agent.config.agent_id, method="POST",
                               path=path, now=int(time.time()))
    # Only the headers go: the declared length alone is refused.
    status, _, body = await raw_exchange(coordinator, "POST", path, [
        ("Authorization", f"{AUTH_SCHEME} {token}"), ("Content-Type", "application/json"),
        ("Content-Length", str(MAX_BODY_BYTES + 1))])
    assert status == 413 and json.loads(body)["type"].endswith("payload-too-large")
    assert await _rows(coordinator) == 0


async def test_an_agent_cannot_touch_another_agents_finds(coordinator, tmp_path):
    api, _, agent = await _scene(coordinator, tmp_path)
    other = await enroll_agent(api, coordinator, tmp_path / "other", name="other-agent")
    mine = _find(1)
    await agent.client.call("agent.discoveries", _report(mine))
    removal = wire.DiscoveryRemoval(fingerprint_sha256=mine.fingerprint_sha256, path=mine.path, position=0)
    assert (await other.client.call("agent.discoveries", _report(removed=[removal]))).removed == 0
    (found,) = await _listed(api)
    assert found.present and found.agent_id == agent.config.agent_id
    # The same certificate reported by the other agent is the other agent's find.
    await other.client.call("agent.discoveries", _report(mine))
    assert sorted(f.agent_id for f in await _listed(api)) == sorted([agent.config.agent_id, other.config.agent_id])


async def test_an_operator_key_cannot_report_finds(coordinator, tmp_path):
    _, api_key, _ = await _scene(coordinator, tmp_path)
    async with raw_client(coordinator) as http:
        response = await http.post("/api/v1/agent/discoveries", content=wire.encode(_report(_find(1))),
                                   headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"})
    assert response.status_code == 401
    assert await _rows(coordinator) == 0


# --- triage ------------------------------------------------------------------------------


async def test_dismissing_needs_a_reason_and_is_audited(coordinator, tmp_path):
    api, _, agent = await _scene(coordinator, tmp_path)
    await agent.client.call("agent.discoveries", _report(_find(1)))
    (found,) = await _listed(api)
    target = {"discovery_id": str(found.id)}
    await _refused(400, "invalid-body", api.call("discovery.dismiss", wire.DiscoveryDismiss(reason=""), **target))
    await _refused(400, "invalid-body", api.call("discovery.dismiss", wire.DiscoveryDismiss(reason="   "), **target))
    assert (await api.call("discovery.get", **target)).status == "unmanaged"

    dismissed = await api.call("discovery.dismiss", wire.DiscoveryDismiss(reason="vendor appliance, renewed by"
                                                                                " the vendor"), **target)
    assert dismissed.status == "dismissed" and dismissed.dismiss_reason.startswith("vendor appliance")
    assert dismissed.triaged_by.startswith("api-key:") and dismissed.triaged_at is not None
    await _refused(409, "not-unmanaged", api.call("discovery.dismiss", wire.DiscoveryDismiss(reason="again"),
                                                  **target))
    await agent.client.call("agent.discoveries", _report(_find(1)))
    assert (await api.call("discovery.get", **target)).status == "dismissed", "a new scan keeps the triage"

    events = (await api.call("audit.list", query={"resource_type": "discovered-certificate"})).events
    (audited,) = [e for e in events if e.outcome == "success"]
    assert (audited.action, audited.resource_id) == ("discovery.dismiss", str(found.id))
    assert audited.details["reason"].startswith("vendor appliance")
    assert audited.details["fingerprint_sha256"] == found.fingerprint_sha256


async def test_claiming_a_file_makes_a_managed_certificate_and_a_file_target_on_its_agent(coordinator, tmp_path):
    api, _, agent = await _scene(coordinator, tmp_path)
    found = _find(1, subject="CN=legacy.example.test", sans=["DNS:www.legacy.example.test", "DNS:legacy.example.test",
                                                            "IP:192.0.2.10"],
                  path="/etc/nginx/tls/legacy.crt", key_algorithm="RSA", key_size=3072)
    await agent.client.call("agent.discoveries", _report(found))
    (listed,) = await _listed(api)
    claimed = await api.call("discovery.claim", wire.DiscoveryClaim(tags=["legacy"]), discovery_id=str(listed.id))

    certificate = await api.call("certificates.get", certificate_id=claimed.id)
    assert certificate == claimed
    assert certificate.names == ["legacy.example.test", "www.legacy.example.test", "192.0.2.10"]
    assert (certificate.agent_id, certificate.status, certificate.key_type) == \
        (agent.config.agent_id, "deployed", "rsa-3072")
    not_before, not_after = found.validity()
    assert certificate.lifetime_seconds == not_after - not_before and certificate.tags == ["legacy"]
    assert not_before < certificate.renew_at < not_after
    target = await api.call("targets.get", target_id=certificate.target_id)
    assert (target.name, target.kind, target.agent_id) == (f"discovered-{listed.id}", "file", agent.config.agent_id)
    assert target.settings == wire.FileTarget(certificate_path="/etc/nginx/tls/legacy.crt",
                                              key_path="/etc/nginx/tls/legacy.key")
    assert target.certificates == [claimed.id]

    shown = await api.call("discovery.get", discovery_id=str(listed.id))
    assert (shown.status, shown.claimed_certificate_id) == ("managed", claimed.id)
    # Nothing is issued until the renewal: the found key stays in use.
    orders = await coordinator.coordinator.database.transact(lambda tx: tx.one("SELECT COUNT(*) AS n FROM work_orders"))
    assert orders["n"] == 0
    events = (await api.call("audit.list", query={"action": "discovery.claim"})).events
    assert {(e.resource_type, e.details.get("certificate_id", e.resource_id)) for e in events} == \
        {("discovered-certificate", claimed.id), ("certificate", claimed.id)}
    await _refused(409, "already-managed", api.call("discovery.claim", wire.DiscoveryClaim(),
                                                     discovery_id=str(listed.id)))


def _legacy_certificate(directory, names: list[str], *, not_before: float, not_after: float):
    """A certificate someone else made, with its key beside it, as found on a host."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime.fromtimestamp(not_before, datetime.UTC))
        .not_valid_after(datetime.datetime.fromtimestamp(not_after, datetime.UTC))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256()))
    (directory / "server.crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "server.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return certificate


def _as_found(certificate: x509.Certificate, path: str) -> wire.DiscoveredCertificate:
    return wire.DiscoveredCertificate(
        fingerprint_sha256=certificate_fingerprint(certificate), subject=certificate.subject.rfc4514_string(),
        sans=[f"DNS:{n}" for n in certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)],
        issuer=certificate.issuer.rfc4514_string(), serial=f"{certificate.serial_number:x}",
        not_before=_utc(certificate.not_valid_before_utc.timestamp()),
        not_after=_utc(certificate.not_valid_after_utc.timestamp()), key_algorithm="EC", key_size=256,
        is_ca=False, path=path, position=0, format="pem", has_private_key=True)


async def test_claiming_a_discovered_certificate_creates_a_managed_certificate_whose_next_renewal_deploys_back_to_the_same_path(  # noqa: E501
        coordinator, tmp_path):
    clock = SimulatedClock()
    service = coordinator.coordinator
    service._clock = clock
    api, _, agent = await _scene(coordinator, tmp_path, clock=clock)
    site = tmp_path / "site"
    legacy = _legacy_certificate(site, ["legacy.example.test", "www.legacy.example.test"],
                                 not_before=clock.now - 60 * DAY, not_after=clock.now + 30 * DAY)
    found_at = str(site / "server.crt")
    await agent.client.call("agent.discoveries", _report(_as_found(legacy, found_at)))
    (listed,) = await _listed(api)
    claimed = await api.call("discovery.claim", wire.DiscoveryClaim(), discovery_id=str(listed.id))
    assert (site / "server.crt").read_bytes() == legacy.public_bytes(serialization.Encoding.PEM)

    # The renewal comes from the found certificate's validity, through the scheduler.
    clock.now = claimed.renew_at + 1
    assert await service.start_due_renewals() == [claimed.id]
    await agent.poll_once()
    await agent.flush_outbox()

    (order_row,) = await service.database.transact(lambda tx: tx.all(
        "SELECT token FROM work_orders WHERE certificate_id = ?", (claimed.id,)))
    token = order_row["token"]
    order = verify_work_order(token, keys=agent.config.pinned_keys(), agent_id=agent.config.agent_id, now=clock.now)
    assert order.payload.target == wire.FileTarget(certificate_path=found_at, key_path=str(site / "server.key"))

    renewed = await api.call("certificates.get", certificate_id=claimed.id)
    assert renewed.status == "deployed" and renewed.serial is not None
    deployed = x509.load_pem_x509_certificates((site / "server.crt").read_bytes())
    assert certificate_fingerprint(deployed[0]) == renewed.fingerprint_sha256 != certificate_fingerprint(legacy)
    assert len(deployed) == 2, "the leaf followed by the issuing CA"
    assert deployed[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == ["legacy.example.test", "www.legacy.example.test"]
    assert public_key_matches(deployed[0], load_private_key((site / "server.key").read_bytes()))
    assert renewed.renew_at is not None and renewed.renew_at > clock.now

    # The next scan finds certfleet's certificate in that place: managed on sight.
    gone = wire.DiscoveryRemoval(fingerprint_sha256=listed.fingerprint_sha256, path=found_at, position=0)
    await agent.client.call("agent.discoveries", _report(_as_found(deployed[0], found_at), removed=[gone],
                                                         scan="scan-2"))
    (now_there,) = await _listed(api)
    assert (now_there.status, now_there.managed_certificate_id) == ("managed", claimed.id)
    old = await api.call("discovery.get", discovery_id=str(listed.id))
    assert not old.present and old.claimed_certificate_id == claimed.id


async def test_a_network_find_is_claimed_onto_a_target_the_operator_names(coordinator, tmp_path):
    api, _, agent = await _scene(coordinator, tmp_path)
    await agent.client.call("agent.discoveries", _report(
        _find(1, path="192.0.2.7:443", format="tls"), source="network"))
    (found,) = await _listed(api)
    await _refused(422, "target-required", api.call("discovery.claim", wire.DiscoveryClaim(),
                                                     discovery_id=str(found.id)))
    await api.call("targets.create", wire.TargetCreate(
        name="appliance", agent_id=agent.config.agent_id,
        settings=wire.NginxTarget(certificate_path="/etc/nginx/a.pem", key_path="/etc/nginx/a.key")))
    claimed = await api.call("discovery.claim", wire.DiscoveryClaim(target_id="appliance"),
                             discovery_id=str(found.id))
    assert (await api.call("targets.get", target_id="appliance")).certificates == [claimed.id]


async def test_claims_that_cannot_work_are_refused_and_change_nothing(coordinator, tmp_path):
    api, _, agent = await _scene(coordinator, tmp_path)
    other = await enroll_agent(api, coordinator, tmp_path / "other", name="other-agent")
    await api.call("targets.create", wire.TargetCreate(
        name="elsewhere", agent_id=other.config.agent_id, settings=wire.FileTarget(directory="/srv/tls")))
    await agent.client.call("agent.discoveries", _report(
        _find(1, is_ca=True), _find(2, sans=["DNS:ok.example.test", "email:ops@example.test"]),
        _find(3), _find(4, position=1), _find(5, format="pkcs12", path="/etc/app/store.p12"),
        _find(6, sans=["DNS:under_score.example.test"])))
    await agent.client.call("agent.discoveries", _report(removed=[wire.DiscoveryRemoval(
        fingerprint_sha256=f"{3:064x}", path="/etc/ssl/host3.pem", position=0)]))
    ids = {int(f.fingerprint_sha256, 16): str(f.id) for f in await _listed(api, include_removed=1)}

    async def claim(number: int, status: int, slug: str, **fields):
        await _refused(status, slug, api.call("discovery.claim", wire.DiscoveryClaim(**fields),
                                              discovery_id=ids[number]))

    await claim(1, 422, "ca-certificate")
    await claim(2, 422, "unsupported-names")
    await claim(6, 422, "unsupported-names")
    await claim(3, 409, "find-removed")
    await claim(4, 422, "target-required")
    await claim(5, 422, "target-required")
    await claim(4, 422, "target-agent-mismatch", target_id="elsewhere")
    await claim(4, 422, "unknown-profile", target_id="elsewhere", profile="nope")
    await claim(4, 422, "unknown-renewal-policy", target=wire.FileTarget(directory="/srv/x"),
                renewal_policy="nope")
    await claim(4, 409, "target-exists", target=wire.FileTarget(directory="/srv/x"), target_name="elsewhere")
    await claim(4, 400, "invalid-body", target_id="elsewhere", key_path="/etc/ssl/x.key")
    await claim(4, 400, "invalid-body", target=wire.FileTarget(directory="relative"))
    assert await api.call("certificates.list") == []
    assert [t.name for t in await api.call("targets.list")] == ["elsewhere"]
    assert {f.status for f in await _listed(api, include_removed=1)} == {"unmanaged"}


# --- permissions ------------------------------------------------------------------------


async def test_viewers_and_auditors_read_the_inventory_but_only_operators_triage(coordinator, tmp_path):
    api, _, agent = await _scene(coordinator, tmp_path)
    await agent.client.call("agent.discoveries", _report(_find(1), _find(2)))
    first, second = (str(f.id) for f in await _listed(api))
    viewer, _ = await key_with_roles(api, coordinator, "viewer", name="viewer")
    auditor, _ = await key_with_roles(api, coordinator, "auditor", name="auditor")
    operator, _ = await key_with_roles(api, coordinator, "operator", name="operator")
    for reader in (viewer, auditor):
        assert len(await _listed(reader)) == 2
        await _refused(403, "forbidden", reader.call("discovery.claim", wire.DiscoveryClaim(), discovery_id=first))
        await _refused(403, "forbidden", reader.call("discovery.dismiss", wire.DiscoveryDismiss(reason="no"),
                                                     discovery_id=first))
    assert {f.status for f in await _listed(api)} == {"unmanaged"} and await api.call("certificates.list") == []

    # Held only on a profile, a discovery permission does not reach the finds.
    await api.call("auth.roles.create", wire.RoleCreate(name="triager", permissions=["discovery.read"]))
    scoped, created = await key_with_roles(api, coordinator, name="scoped")
    await api.call("auth.grants.create", wire.GrantCreate(principal_type="api-key", principal_id=created.id,
                                                          role="triager", scope_type="profile", scope_id="default"))
    await _refused(403, "scope-denied", scoped.call("discovery.list"))

    assert (await operator.call("discovery.claim", wire.DiscoveryClaim(), discovery_id=first)).status == "deployed"
    dismissed = await operator.call("discovery.dismiss", wire.DiscoveryDismiss(reason="test"), discovery_id=second)
    assert dismissed.status == "dismissed"


# --- alerts -------------------------------------------------------------------------------


async def test_unmanaged_finds_near_expiry_alert_once_per_threshold(coordinator, tmp_path):
    api, _, agent = await _scene(coordinator, tmp_path)
    service = coordinator.coordinator
    await api.call("channels.create", wire.ChannelCreate(
        name="ops", kind="webhook", settings={"url": "https://127.0.0.1:9/hook"}, secrets={"secret": "s" * 24},
        min_severity="warning"))
    now = time.time()
    expiring = _find(1, not_after=_utc(now + 40 * DAY))
    await agent.client.call("agent.discoveries", _report(
        expiring, _find(1, path="/srv/copy.pem", not_after=_utc(now + 40 * DAY)),
        _find(2, not_after=_utc(now + 20 * DAY)), _find(3, not_after=_utc(now + 200 * DAY))))
    listed = await _listed(api)
    await api.call("discovery.dismiss", wire.DiscoveryDismiss(reason="lab box"), discovery_id=str(listed[2].id))

    async def alerts() -> list[tuple[str, str]]:
        rows = await service.database.transact(lambda tx: tx.all("SELECT event FROM notifications ORDER BY id"))
        events = [json.loads(r["event"]) for r in rows]
        return sorted((e["details"]["fingerprint_sha256"][-1], e["severity"]) for e in events
                      if e["kind"] == "discovery.unmanaged-expiring")

    await service.scan_for_alerts()
    await service.scan_for_alerts()
    assert await alerts() == [], "20 days left, but dismissed; 40 days left is not near yet"
    service._clock = lambda: now + 15 * DAY
    await service.scan_for_alerts()
    await service.scan_for_alerts()
    assert await alerts() == [("1", "warning")], "one alert for one certificate found in two places"
    service._clock = lambda: now + 35 * DAY
    await service.scan_for_alerts()
    assert await alerts() == [("1", "critical"), ("1", "warning")]
    await service.scan_for_alerts()
    assert len(await alerts()) == 2


# --- the operator's commands ----------------------------------------------------------------


@pytest.mark.parametrize("database_url", [None])
async def test_the_discovery_commands(coordinator, tmp_path):
    import os
    import sys
    from pathlib import Path

    import trio

    api, api_key, agent = await _scene(coordinator, tmp_path)
    await agent.client.call("agent.discoveries", _report(_find(1), _find(2)))
    await agent.client.call("agent.discoveries", _report(_find(3, path="192.0.2.9:8443", format="tls"),
                                                         source="network"))
    env = {**os.environ, "CERTFLEET_URL": coordinator.url, "CERTFLEET_CA_BUNDLE": str(coordinator.ca_path),
           "CERTFLEET_API_KEY": api_key}

    async def certfleet(*args: str, ok: bool = True) -> trio.CompletedProcess:
        done = await trio.run_process([str(Path(sys.executable).parent / "certfleet"), *args], env=env,
                                      capture_stdout=True, capture_stderr=True, check=False)
        assert (done.returncode == 0) == ok, done.stderr
        return done

    async def as_json(*args: str):
        return json.loads((await certfleet("--json", *args)).stdout)

    table = (await certfleet("discovery", "list")).stdout.decode()
    assert table.splitlines()[0].split() == ["ID", "STATUS", "AGENT_ID", "SOURCE", "PATH", "SUBJECT", "NOT_AFTER"]
    assert "/etc/ssl/host1.pem" in table and "192.0.2.9:8443" in table
    first, second, network = (f["id"] for f in await as_json("discovery", "list", "--status", "unmanaged"))
    assert [f["id"] for f in await as_json("discovery", "list", "--source", "network")] == [network]
    assert (await as_json("discovery", "show", str(first)))["path"] == "/etc/ssl/host1.pem"

    dismissed = await as_json("discovery", "dismiss", str(second), "--reason", "a lab box")
    assert (dismissed["status"], dismissed["dismiss_reason"]) == ("dismissed", "a lab box")
    claimed = await as_json("discovery", "claim", str(first), "--key-path", "/etc/ssl/private/host1.key",
                            "--target-name", "legacy-host1", "--tag", "claimed")
    assert claimed["status"] == "deployed" and claimed["tags"] == ["claimed"]
    target = await api.call("targets.get", target_id="legacy-host1")
    assert claimed["target_id"] == target.id and target.settings == wire.FileTarget(
        certificate_path="/etc/ssl/host1.pem", key_path="/etc/ssl/private/host1.key")
    refused = await certfleet("discovery", "claim", str(network), ok=False)
    assert b"target-required" in refused.stderr
    onto = await as_json("discovery", "claim", str(network), "--kind", "nginx", "--set",
                         "certificate_path=/etc/nginx/edge.pem", "--set", "key_path=/etc/nginx/edge.key")
    assert onto["target"]["kind"] == "nginx"
    assert {c.id for c in await api.call("certificates.list")} == {claimed["id"], onto["id"]}
