"""Bad input to the coordinator gets a clear problem+json 4xx and stores nothing.

Every case snapshots the coordinator's domain tables (full rows, not only counts)
before and after the refused request. Two things may legitimately change and are
checked separately instead:

* ``audit_events``: a refused request is itself recorded (who, from where, which
  problem). Each test checks that only refusal rows were appended, never a
  ``success``, and that no presented secret was written into them.
* ``agent_token_uses``: a verified agent token's ``jti`` is consumed before the body
  is read, so that a replay of the same request is refused.

Columns that record "last seen" times are not part of the snapshot.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time

import h11
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from certfleet.agent.config import load_identity
from certfleet.coordinator.http import MAX_BODY_BYTES
from certfleet.shared import jws, wire
from certfleet.shared.agent_token import AUDIENCE, AUTH_SCHEME, TOKEN_TYPE, sign_request_token
from certfleet.shared.pki import KeyType, build_csr, generate_private_key, private_key_pem
from certfleet.shared.workorder import TOKEN_TYPE as WORK_ORDER_TYPE
from tests.support import BOOTSTRAP_TOKEN, admin_client, enroll_agent, raw_client, tls_context

PROBLEM = "application/problem+json"

# table -> columns left out of the comparison (timestamps of "last used")
SNAPSHOT_TABLES: dict[str, tuple[str, ...]] = {
    "certificates": (),
    "certificate_versions": (),
    "work_orders": (),
    "agents": ("last_seen_at",),
    "api_keys": ("last_used_at",),
    "enrollment_tokens": (),
    "agent_events": (),
    "bootstrap_tokens": (),
    "grants": (),
    "roles": (),
    "profiles": (),
    "approvals": (),
    "signing_keys": (),
    "meta": (),
    "issuers": ("crl_number", "crl_dirty_since"),
}
REFUSAL_OUTCOMES = {"failed", "unauthenticated", "denied"}

NAMES = ["app.example.test", "www.example.test"]


# --- helpers ------------------------------------------------------------------------------


class Snapshot:
    def __init__(self, tables: dict[str, list[tuple]], last_audit_id: int) -> None:
        self.tables = tables
        self.last_audit_id = last_audit_id


async def snapshot(running) -> Snapshot:
    def read(tx) -> Snapshot:
        tables = {}
        for table, volatile in SNAPSHOT_TABLES.items():
            rows = tx.all(f"SELECT * FROM {table}")
            tables[table] = sorted(
                tuple(sorted((k, repr(v)) for k, v in row.items() if k not in volatile)) for row in rows)
        last = tx.one("SELECT MAX(id) AS n FROM audit_events")["n"] or 0
        return Snapshot(tables, last)

    return await running.coordinator.database.transact(read)


async def assert_stored_nothing(running, before: Snapshot, *, audited: int | None = None,
                                secrets_: tuple[str, ...] = ()) -> list[dict]:
    """No domain row was added, removed or changed; the audit trail only grew by
    refusals (exactly ``audited`` of them when given) that carry none of ``secrets_``."""
    after = await snapshot(running)
    for table in SNAPSHOT_TABLES:
        assert after.tables[table] == before.tables[table], f"{table} changed"
    events = await running.coordinator.database.transact(lambda tx: tx.all(
        "SELECT * FROM audit_events WHERE id > ? ORDER BY id", (before.last_audit_id,)))
    assert all(e["outcome"] in REFUSAL_OUTCOMES for e in events), events
    if audited is not None:
        assert len(events) == audited, events
    for secret in secrets_:
        assert secret not in json.dumps(events, default=str)
    return events


def assert_problem(response, status: int, slug: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0].strip() == PROBLEM, response.headers
    problem = response.json()
    assert set(problem) >= {"type", "title", "status", "detail"}, problem
    assert problem["status"] == status
    assert problem["type"].startswith("urn:certfleet:problem:"), problem
    assert isinstance(problem["title"], str) and problem["title"]
    assert isinstance(problem["detail"], str) and problem["detail"]
    if slug is not None:
        assert problem["type"] == f"urn:certfleet:problem:{slug}", problem
    return problem


def csr_pem(names, key_type: KeyType = KeyType.EC_P256) -> str:
    return build_csr(generate_private_key(key_type), names).decode()


def agent_token(agent, method: str, path: str, *, key=None, now: int | None = None) -> str:
    return sign_request_token(key or load_identity(agent.paths), agent_id=agent.config.agent_id,
                              method=method, path=path, now=int(time.time()) if now is None else now)


def agent_headers(agent, method: str, path: str, **kwargs) -> dict[str, str]:
    return {"Authorization": f"{AUTH_SCHEME} {agent_token(agent, method, path, **kwargs)}",
            "Content-Type": "application/json"}


def crafted_agent_token(agent, path: str, *, method: str = "POST", key=None, typ: str = TOKEN_TYPE,
                        kid: str | None = None, **claims) -> str:
    """A request token with chosen claims, signed with the agent's key unless ``key``."""
    agent_id = agent.config.agent_id
    now = int(time.time())
    body = {"iss": agent_id, "sub": agent_id, "aud": AUDIENCE, "htm": method, "htu": path, "iat": now,
            "exp": now + 60, "jti": f"jti-{time.monotonic_ns()}"}
    body.update(claims)
    return jws.sign(body, key or load_identity(agent.paths), typ=typ, kid=kid or agent_id)


async def raw_exchange(running, method: str, path: str, headers: list[tuple[str, str]],
                       body_parts: tuple[bytes, ...] = ()) -> tuple[int, dict[str, str], bytes]:
    """Send a request by hand over TLS 1.3 (possibly with an incomplete body) and read
    the answer the server gives without waiting for the rest."""
    host, port = running.url.removeprefix("https://").rsplit(":", 1)
    stream = await trio.open_ssl_over_tcp_stream(host, int(port), ssl_context=tls_context(running),
                                                 https_compatible=True)
    connection = h11.Connection(h11.CLIENT)
    data = connection.send(h11.Request(method=method, target=path, headers=[("Host", f"{host}:{port}"), *headers]))
    for part in body_parts:
        data += connection.send(h11.Data(data=part))
    status, response_headers, body = 0, {}, b""
    try:
        with trio.fail_after(30):
            await stream.send_all(data)
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    connection.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    response_headers = {k.decode().lower(): v.decode() for k, v in event.headers}
                elif isinstance(event, h11.Data):
                    body += bytes(event.data)
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
    finally:
        with trio.CancelScope(shield=True):
            try:
                await stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
    return status, response_headers, body


class RawAnswer:
    """Just enough of an httpx response for :func:`assert_problem`."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status_code, self.headers, self.content = status, headers, body
        self.text = body.decode(errors="replace")

    def json(self):
        return json.loads(self.content)


# --- fixtures -----------------------------------------------------------------------------


class Scene:
    def __init__(self, api, api_key, agent, certificate_id, order_id, target) -> None:
        self.api, self.api_key, self.agent = api, api_key, agent
        self.certificate_id, self.order_id, self.target = certificate_id, order_id, target

    @property
    def csr_path(self) -> str:
        return f"/api/v1/agent/orders/{self.order_id}/csr"

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"}

    def valid_create(self, **changes) -> dict:
        body = {"common_name": "new.example.test", "agent_id": self.agent.config.agent_id,
                "target": {"kind": "file", "directory": str(self.target)}}
        body.update(changes)
        return body


async def _order_for(running, certificate_id: str) -> str:
    row = await running.coordinator.database.transact(lambda tx: tx.one(
        "SELECT id FROM work_orders WHERE certificate_id = ?", (certificate_id,)))
    return row["id"]


@pytest.fixture
async def scene(coordinator, tmp_path):
    """An admin key, an enrolled agent, and a certificate for NAMES (ec-p256) whose
    issue order waits for the agent's CSR."""
    api, api_key = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / "agent")
    target = tmp_path / "target"
    created = await api.call("certificates.create", wire.CertificateCreate(
        common_name=NAMES[0], sans=NAMES[1:], agent_id=agent.config.agent_id,
        target=wire.FileTarget(directory=str(target))))
    assert created.key_type == "ec-p256"
    yield Scene(api, api_key, agent, created.id, await _order_for(coordinator, created.id), target)
    await api.__aexit__(None, None, None)


async def post_csr(running, scene: Scene, csr: str, **extra):
    async with raw_client(running) as http:
        return await http.post(scene.csr_path, json={"csr": csr, **extra},
                               headers=agent_headers(scene.agent, "POST", scene.csr_path))


# --- CSRs -----------------------------------------------------------------------------------


def _tampered_csr() -> str:
    """A well-formed CSR whose signature no longer matches its content."""
    der = bytearray(x509.load_pem_x509_csr(csr_pem(NAMES).encode()).public_bytes(serialization.Encoding.DER))
    index = der.find(b"app.example.test")
    der[index] = ord("b")  # "bpp.example.test" in the signed part, old signature kept
    return x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()


def _malformed_csrs() -> dict[str, str]:
    real = csr_pem(NAMES)
    key = generate_private_key(KeyType.EC_P256)
    builder = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(x509.Name([]))
               .public_key(key.public_key()).serial_number(1)
               .not_valid_before(dt.datetime(2024, 1, 1))
               .not_valid_after(dt.datetime(2034, 1, 1)))
    certificate = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()
    body_lines = real.strip().splitlines()
    return {
        "garbage text": "this is not a certificate signing request",
        "a PEM certificate": certificate,
        "a PEM private key": private_key_pem(key).decode(),
        "a truncated CSR": "\n".join(body_lines[:3] + body_lines[-1:]) + "\n",
        "a CSR label around random bytes": "-----BEGIN CERTIFICATE REQUEST-----\nAAAAAAAAAAAAAAAA\n"
                                          "-----END CERTIFICATE REQUEST-----\n",
        "a CSR whose signature does not verify": _tampered_csr(),
    }


MALFORMED_CSRS = _malformed_csrs()


@pytest.mark.parametrize("case", list(MALFORMED_CSRS))
async def test_malformed_csr_is_a_bad_request_and_issues_nothing(coordinator, scene, case):
    before = await snapshot(coordinator)
    response = await post_csr(coordinator, scene, MALFORMED_CSRS[case])
    problem = assert_problem(response, 400, "invalid-csr")
    assert "PRIVATE KEY" not in problem["detail"]
    await assert_stored_nothing(coordinator, before, audited=1)


@pytest.mark.parametrize(("names", "mentioned"), [
    pytest.param(NAMES + ["evil.example.test"], ["evil.example.test"], id="an extra host"),
    pytest.param(NAMES[:1], ["www.example.test"], id="a missing host"),
    pytest.param(["other.example.test", NAMES[1]], ["other.example.test", "app.example.test"],
                 id="a host swapped for another"),
])
async def test_csr_naming_other_hosts_than_the_order_is_refused(coordinator, scene, names, mentioned):
    before = await snapshot(coordinator)
    problem = assert_problem(await post_csr(coordinator, scene, csr_pem(names)), 422, "csr-names")
    for name in mentioned:
        assert name in problem["detail"], problem
    await assert_stored_nothing(coordinator, before, audited=1)


@pytest.mark.parametrize("key_type", [KeyType.RSA_2048, KeyType.EC_P384, KeyType.ED25519])
async def test_csr_with_another_key_type_than_the_order_is_refused(coordinator, scene, key_type):
    before = await snapshot(coordinator)
    problem = assert_problem(await post_csr(coordinator, scene, csr_pem(NAMES, key_type)), 422, "csr-key-type")
    assert str(key_type) in problem["detail"] and "ec-p256" in problem["detail"]
    await assert_stored_nothing(coordinator, before, audited=1)


async def test_refused_csrs_leave_the_order_open_for_a_correct_one(coordinator, scene):
    for bad in ("garbage", csr_pem(NAMES + ["evil.example.test"]), csr_pem(NAMES, KeyType.RSA_2048)):
        assert (await post_csr(coordinator, scene, bad)).status_code in (400, 422)
    response = await post_csr(coordinator, scene, csr_pem(list(reversed(NAMES))))
    assert response.status_code == 200, response.text
    assert response.json()["certificate"].startswith("-----BEGIN CERTIFICATE-----")
    versions = await coordinator.coordinator.database.transact(lambda tx: tx.all(
        "SELECT certificate_id FROM certificate_versions"))
    assert versions == [{"certificate_id": scene.certificate_id}]


async def test_csr_with_an_unknown_field_is_refused_and_issues_nothing(coordinator, scene):
    before = await snapshot(coordinator)
    response = await post_csr(coordinator, scene, csr_pem(NAMES), key_type="rsa-2048")
    problem = assert_problem(response, 400, "invalid-body")
    assert "key_type" in problem["detail"]
    await assert_stored_nothing(coordinator, before, audited=1)


async def test_agent_cannot_submit_a_csr_for_another_agents_order(coordinator, scene, tmp_path):
    other = await enroll_agent(scene.api, coordinator, tmp_path / "other", name="other-agent")
    before = await snapshot(coordinator)
    async with raw_client(coordinator) as http:
        response = await http.post(scene.csr_path, json={"csr": csr_pem(NAMES)},
                                   headers=agent_headers(other, "POST", scene.csr_path))
        missing_path = "/api/v1/agent/orders/wo_doesnotexist/csr"
        missing = await http.post(missing_path, json={"csr": csr_pem(NAMES)},
                                  headers=agent_headers(other, "POST", missing_path))
    problem = assert_problem(response, 404)
    # Indistinguishable from an order that does not exist: no existence leak.
    missing_problem = assert_problem(missing, 404)
    assert problem["type"] == missing_problem["type"] and problem["title"] == missing_problem["title"]
    assert problem["detail"].replace(scene.order_id, "ID") == missing_problem["detail"].replace(
        "wo_doesnotexist", "ID")
    await assert_stored_nothing(coordinator, before)


async def test_agent_probing_another_agents_order_is_audited(coordinator, scene, tmp_path):
    other = await enroll_agent(scene.api, coordinator, tmp_path / "other", name="other-agent")
    before = await snapshot(coordinator)
    async with raw_client(coordinator) as http:
        response = await http.post(scene.csr_path, json={"csr": csr_pem(NAMES)},
                                   headers=agent_headers(other, "POST", scene.csr_path))
    assert response.status_code == 404
    events = await assert_stored_nothing(coordinator, before)
    assert [(e["actor_id"], e["outcome"]) for e in events] == [(other.config.agent_id, "failed")]


# --- body size ------------------------------------------------------------------------------


async def test_body_over_one_mebibyte_with_content_length_is_refused_before_it_is_read(coordinator, scene):
    before = await snapshot(coordinator)
    # Only the headers are sent: the answer must come from the declared length alone.
    status, headers, body = await raw_exchange(coordinator, "POST", "/api/v1/certificates", [
        ("Authorization", f"Bearer {scene.api_key}"), ("Content-Type", "application/json"),
        ("Content-Length", str(MAX_BODY_BYTES + 1))])
    problem = assert_problem(RawAnswer(status, headers, body), 413, "payload-too-large")
    assert str(MAX_BODY_BYTES) in problem["detail"]
    assert headers.get("connection", "").lower() == "close"
    await assert_stored_nothing(coordinator, before, audited=1)
    async with raw_client(coordinator) as http:
        assert (await http.get("/health")).json() == {"status": "ok"}, "the server survives the refusal"


async def test_chunked_body_over_one_mebibyte_is_refused(coordinator, scene):
    before = await snapshot(coordinator)
    valid = json.dumps(scene.valid_create()).encode()
    # A valid body padded with whitespace: only its size is wrong.
    padded = valid + b" " * (MAX_BODY_BYTES + 1 - len(valid))
    parts = tuple(padded[i:i + 65536] for i in range(0, len(padded), 65536))
    status, headers, body = await raw_exchange(coordinator, "POST", "/api/v1/certificates", [
        ("Authorization", f"Bearer {scene.api_key}"), ("Content-Type", "application/json"),
        ("Transfer-Encoding", "chunked")], parts)
    assert_problem(RawAnswer(status, headers, body), 413, "payload-too-large")
    await assert_stored_nothing(coordinator, before, audited=1)


async def test_agent_csr_body_over_one_mebibyte_is_refused(coordinator, scene):
    before = await snapshot(coordinator)
    headers = agent_headers(scene.agent, "POST", scene.csr_path)
    status, response_headers, body = await raw_exchange(coordinator, "POST", scene.csr_path, [
        *headers.items(), ("Content-Length", str(MAX_BODY_BYTES + 1))])
    assert_problem(RawAnswer(status, response_headers, body), 413, "payload-too-large")
    await assert_stored_nothing(coordinator, before, audited=1)


async def test_body_of_exactly_one_mebibyte_is_accepted(coordinator, scene):
    valid = json.dumps(scene.valid_create()).encode()
    padded = valid + b" " * (MAX_BODY_BYTES - len(valid))
    assert len(padded) == MAX_BODY_BYTES
    async with raw_client(coordinator) as http:
        response = await http.post("/api/v1/certificates", content=padded, headers=scene.bearer)
    assert response.status_code == 201, response.text
    assert response.json()["names"] == ["new.example.test"]


# --- decoding -------------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "field"), [
    pytest.param({"colour": "red"}, "colour", id="top-level"),
    pytest.param({"target": {"kind": "file", "directory": "/tmp/x", "chmod": 777}}, "chmod", id="nested"),
])
async def test_certificate_create_with_an_unknown_field_is_refused(coordinator, scene, change, field):
    before = await snapshot(coordinator)
    async with raw_client(coordinator) as http:
        response = await http.post("/api/v1/certificates", json=scene.valid_create(**change), headers=scene.bearer)
    problem = assert_problem(response, 400, "invalid-body")
    assert field in problem["detail"]
    await assert_stored_nothing(coordinator, before, audited=1)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "application/jsonx", "multipart/form-data; boundary=x"])
async def test_body_in_another_media_type_is_refused(coordinator, scene, content_type):
    before = await snapshot(coordinator)
    headers = {"Authorization": f"Bearer {scene.api_key}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    async with raw_client(coordinator) as http:
        response = await http.post("/api/v1/certificates", content=json.dumps(scene.valid_create()),
                                   headers=headers)
    problem = assert_problem(response, 415, "unsupported-media-type")
    assert "application/json" in problem["detail"]
    await assert_stored_nothing(coordinator, before, audited=1)


INVALID_JSON = {
    "truncated": b'{"common_name": "x.example.test"',
    "not JSON": b"{not json",
    "empty": b"",
    "an array": b"[]",
    "null": b"null",
    "a wrong type": b'{"common_name": 42}',
    "a missing field": b'{"common_name": "x.example.test"}',
}


@pytest.mark.parametrize("case", list(INVALID_JSON))
async def test_invalid_json_is_a_bad_request(coordinator, scene, case):
    before = await snapshot(coordinator)
    async with raw_client(coordinator) as http:
        response = await http.post("/api/v1/certificates", content=INVALID_JSON[case], headers=scene.bearer)
    assert_problem(response, 400, "invalid-body")
    await assert_stored_nothing(coordinator, before, audited=1)


async def test_json_that_is_not_utf8_is_a_bad_request(coordinator, scene):
    before = await snapshot(coordinator)
    body = json.dumps(scene.valid_create()).encode().replace(b"new.example.test", b"new\xff.example.test")
    async with raw_client(coordinator) as http:
        response = await http.post("/api/v1/certificates", content=body, headers=scene.bearer)
    assert_problem(response, 400, "invalid-body")
    await assert_stored_nothing(coordinator, before, audited=1)


# --- API keys -------------------------------------------------------------------------------


async def test_missing_or_invalid_api_key_is_refused(coordinator, scene):
    wrong_secret = scene.api_key[:-4] + ("AAAA" if not scene.api_key.endswith("AAAA") else "BBBB")
    unknown = "cfk_" + "q" * 16 + "_" + "x" * 43
    cases = {
        "missing": {},
        "scheme without a key": {"Authorization": "Bearer"},
        "another scheme": {"Authorization": f"Basic {scene.api_key}"},
        "malformed": {"Authorization": "Bearer not-a-key"},
        "another kind of secret": {"Authorization": f"Bearer cfe_{'q' * 16}_{'x' * 43}"},
        "well-formed but unknown": {"Authorization": f"Bearer {unknown}"},
        "known id, wrong secret": {"Authorization": f"Bearer {wrong_secret}"},
    }
    before = await snapshot(coordinator)
    async with raw_client(coordinator) as http:
        for case, headers in cases.items():
            response = await http.post("/api/v1/certificates", json=scene.valid_create(),
                                       headers={**headers, "Content-Type": "application/json"})
            assert_problem(response, 401)
            assert "Bearer" in response.headers["www-authenticate"], case
    await assert_stored_nothing(coordinator, before, audited=len(cases), secrets_=(wrong_secret, unknown))


async def test_revoked_api_key_is_refused(coordinator, scene):
    created = await scene.api.call("auth.keys.create", wire.ApiKeyCreate(name="short-lived", roles=["operator"]))
    await scene.api.call("auth.keys.revoke", key_id=created.id)
    before = await snapshot(coordinator)
    async with raw_client(coordinator) as http:
        response = await http.post("/api/v1/certificates", json=scene.valid_create(),
                                   headers={"Authorization": f"Bearer {created.token}"})
    assert_problem(response, 401)
    await assert_stored_nothing(coordinator, before, audited=1, secrets_=(created.token,))


# --- agent tokens ---------------------------------------------------------------------------


def _bad_agent_tokens(scene: Scene, other_agent) -> dict[str, str | None]:
    """Authorization header values that must not authenticate ``scene.agent`` for a
    POST to its CSR path."""
    agent, path = scene.agent, scene.csr_path
    stranger = ed25519.Ed25519PrivateKey.generate()
    now = int(time.time())
    return {
        "missing": None,
        "scheme without a token": AUTH_SCHEME,
        "garbage": f"{AUTH_SCHEME} garbage.garbage.garbage",
        "token under the Bearer scheme": f"Bearer {agent_token(agent, 'POST', path)}",
        "signed by an unenrolled key": f"{AUTH_SCHEME} {agent_token(agent, 'POST', path, key=stranger)}",
        "signed by another agent in this agent's name":
            f"{AUTH_SCHEME} {agent_token(agent, 'POST', path, key=load_identity(other_agent.paths))}",
        "bound to another path": f"{AUTH_SCHEME} {agent_token(agent, 'POST', '/api/v1/agent/reports')}",
        "bound to another method": f"{AUTH_SCHEME} {agent_token(agent, 'GET', path)}",
        "expired": f"{AUTH_SCHEME} {agent_token(agent, 'POST', path, now=now - 600)}",
        "issued in the future": f"{AUTH_SCHEME} {agent_token(agent, 'POST', path, now=now + 600)}",
        "living longer than allowed": f"{AUTH_SCHEME} {crafted_agent_token(agent, path, exp=now + 3600)}",
        "a work-order token type": f"{AUTH_SCHEME} {crafted_agent_token(agent, path, typ=WORK_ORDER_TYPE)}",
        "for another audience": f"{AUTH_SCHEME} {crafted_agent_token(agent, path, aud='someone-else')}",
        "subject is not the signer": f"{AUTH_SCHEME} {crafted_agent_token(agent, path, sub='agt_other')}",
        "without a jti": f"{AUTH_SCHEME} {crafted_agent_token(agent, path, jti=None)}",
    }


async def test_missing_or_invalid_agent_token_is_refused(coordinator, scene, tmp_path):
    other = await enroll_agent(scene.api, coordinator, tmp_path / "other", name="other-agent")
    cases = _bad_agent_tokens(scene, other)
    before = await snapshot(coordinator)
    async with raw_client(coordinator) as http:
        for case, authorization in cases.items():
            headers = {"Content-Type": "application/json"}
            if authorization is not None:
                headers["Authorization"] = authorization
            response = await http.post(scene.csr_path, json={"csr": csr_pem(NAMES)}, headers=headers)
            problem = assert_problem(response, 401)
            assert AUTH_SCHEME in response.headers["www-authenticate"], case
            no_agent_token = ("missing", "scheme without a token", "token under the Bearer scheme")
            expected = "unauthorized" if case in no_agent_token else "invalid-agent-token"
            assert problem["type"].endswith(expected), (case, problem)
    await assert_stored_nothing(coordinator, before, audited=len(cases))
    uses = await coordinator.coordinator.database.transact(lambda tx: tx.all("SELECT * FROM agent_token_uses"))
    assert uses == [], "a refused token consumed a jti"


def _non_finite_time_tokens(scene: Scene) -> dict[str, str]:
    now = int(time.time())
    return {
        "exp NaN": crafted_agent_token(scene.agent, scene.csr_path, exp=math.nan),
        "iat NaN, exp in a year": crafted_agent_token(scene.agent, scene.csr_path, iat=math.nan,
                                                      exp=now + 365 * 86400),
    }


@pytest.mark.parametrize("case", ["exp NaN", "iat NaN, exp in a year"])
async def test_agent_token_with_non_finite_times_is_refused(coordinator, scene, case):
    token = _non_finite_time_tokens(scene)[case]
    before = await snapshot(coordinator)
    async with raw_client(coordinator) as http:
        response = await http.post(scene.csr_path, json={"csr": csr_pem(NAMES)},
                                   headers={"Authorization": f"{AUTH_SCHEME} {token}"})
    assert_problem(response, 401, "invalid-agent-token")
    await assert_stored_nothing(coordinator, before, audited=1)


async def test_replayed_agent_token_is_refused(coordinator, scene):
    path = "/api/v1/agent/work"
    headers = agent_headers(scene.agent, "GET", path)
    async with raw_client(coordinator) as http:
        first = await http.get(path, params={"wait": "0"}, headers=headers)
        assert first.status_code == 200, first.text
        # The upkeep forgets only ids long past their token's expiry, not this one.
        assert await coordinator.coordinator.prune_used_token_ids() == 0
        before = await snapshot(coordinator)
        replay = await http.get(path, params={"wait": "0"}, headers=headers)
    assert_problem(replay, 401, "agent-token-replayed")
    await assert_stored_nothing(coordinator, before, audited=1)


async def test_replayed_csr_request_issues_no_second_certificate(coordinator, scene):
    headers = agent_headers(scene.agent, "POST", scene.csr_path)
    body = {"csr": csr_pem(NAMES)}
    async with raw_client(coordinator) as http:
        assert (await http.post(scene.csr_path, json=body, headers=headers)).status_code == 200
        before = await snapshot(coordinator)
        replay = await http.post(scene.csr_path, json=body, headers=headers)
    assert_problem(replay, 401, "agent-token-replayed")
    await assert_stored_nothing(coordinator, before, audited=1)


async def test_api_key_is_refused_on_an_agent_endpoint(coordinator, scene):
    before = await snapshot(coordinator)
    async with raw_client(coordinator) as http:
        response = await http.post(scene.csr_path, json={"csr": csr_pem(NAMES)}, headers=scene.bearer)
        work = await http.get("/api/v1/agent/work", params={"wait": "0"}, headers=scene.bearer)
    for answer in (response, work):
        problem = assert_problem(answer, 401)
        assert AUTH_SCHEME in problem["detail"]
    await assert_stored_nothing(coordinator, before, audited=2, secrets_=(scene.api_key,))


async def test_agent_token_is_refused_on_an_operator_endpoint(coordinator, scene):
    before = await snapshot(coordinator)
    async with raw_client(coordinator) as http:
        create = await http.post("/api/v1/certificates", json=scene.valid_create(),
                                 headers=agent_headers(scene.agent, "POST", "/api/v1/certificates"))
        listing = await http.get("/api/v1/certificates",
                                 headers=agent_headers(scene.agent, "GET", "/api/v1/certificates"))
    for answer in (create, listing):
        problem = assert_problem(answer, 401)
        assert "Bearer" in problem["detail"]
    await assert_stored_nothing(coordinator, before, audited=2)


# --- bootstrap ------------------------------------------------------------------------------


async def test_bootstrap_token_works_once_and_only_when_right(coordinator):
    before = await snapshot(coordinator)
    async with raw_client(coordinator) as http:
        assert_problem(await http.post("/api/v1/auth/bootstrap", json={"token": "wrong"}), 401)
        assert_problem(await http.post("/api/v1/auth/bootstrap", json={"token": BOOTSTRAP_TOKEN, "role": "root"}),
                       400, "invalid-body")
        assert_problem(await http.post("/api/v1/auth/bootstrap", content=BOOTSTRAP_TOKEN,
                                       headers={"Content-Type": "text/plain"}), 415)
        await assert_stored_nothing(coordinator, before, audited=3, secrets_=(BOOTSTRAP_TOKEN,))

        first = await http.post("/api/v1/auth/bootstrap", json={"token": BOOTSTRAP_TOKEN})
        assert first.status_code == 201, first.text
        assert first.json()["role"] == "admin"
        after_first = await snapshot(coordinator)
        assert_problem(await http.post("/api/v1/auth/bootstrap", json={"token": BOOTSTRAP_TOKEN}), 410,
                       "bootstrap-used")
        await assert_stored_nothing(coordinator, after_first, audited=1, secrets_=(BOOTSTRAP_TOKEN,))
        me = await http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {first.json()['api_key']}"})
        assert me.status_code == 200
    keys = await coordinator.coordinator.database.transact(lambda tx: tx.all("SELECT id FROM api_keys"))
    assert [k["id"] for k in keys] == [first.json()["key_id"]]


# --- integers, text and settings: bounded and plain everywhere ---------------------------

BEYOND_INT64 = 2**63
CONTROL_TEXTS = {"NUL": "ops\x00key", "terminal escape": "ops\x1b[2J\x1b[31mkey", "newline": "ops\nkey",
                 "C1 control": "ops\x9bkey"}


async def _post(running, scene: Scene, path: str, body: dict):
    async with raw_client(running) as http:
        return await http.post(path, json=body, headers=scene.bearer)


@pytest.mark.parametrize(("path", "body"), [
    pytest.param("/api/v1/auth/keys", {"name": "huge", "expires_at": BEYOND_INT64}, id="key expires_at"),
    pytest.param("/api/v1/auth/grants", {"principal_type": "user", "principal_id": "bob", "role": "viewer",
                                         "expires_at": BEYOND_INT64}, id="grant expires_at"),
    pytest.param("/api/v1/renewal-policies", {"name": "late", "fraction": None, "lead_seconds": BEYOND_INT64},
                 id="lead_seconds"),
    pytest.param("/api/v1/renewal-policies", {"name": "late", "fraction": None, "lead_seconds": 10**30},
                 id="lead_seconds beyond 128 bits"),
])
async def test_integer_beyond_64_bits_is_refused_and_the_audit_export_completes(coordinator, scene, path, body):
    before = await snapshot(coordinator)
    problem = assert_problem(await _post(coordinator, scene, path, body), 400, "invalid-body")
    assert "<=" in problem["detail"], problem
    await assert_stored_nothing(coordinator, before, audited=1)
    async with raw_client(coordinator) as http:
        export = await http.get("/api/v1/audit/export", headers=scene.bearer)
    assert export.status_code == 200, export.text
    lines = export.text.splitlines()
    assert lines and all(json.loads(line)["id"] for line in lines)


async def test_profile_update_with_a_version_beyond_64_bits_is_refused(coordinator, scene):
    before = await snapshot(coordinator)
    async with raw_client(coordinator) as http:
        profile = (await http.get("/api/v1/profiles", headers=scene.bearer)).json()[0]
        response = await http.put(f"/api/v1/profiles/{profile['id']}", headers=scene.bearer,
                                  json={"policy": profile["policy"], "expected_version": BEYOND_INT64})
    assert_problem(response, 400, "invalid-body")
    await assert_stored_nothing(coordinator, before, audited=1)


@pytest.mark.parametrize(("path", "params"), [
    pytest.param("/api/v1/audit", {"after": str(BEYOND_INT64)}, id="audit after"),
    pytest.param("/api/v1/audit", {"since_ms": str(BEYOND_INT64)}, id="audit since_ms"),
    pytest.param("/api/v1/audit", {"after": "-1"}, id="negative"),
    pytest.param("/api/v1/audit/export", {"until_ms": str(10**40)}, id="export until_ms"),
    pytest.param("/api/v1/discovered-certificates", {"expires_before": str(BEYOND_INT64)}, id="discovery"),
    pytest.param("/api/v1/discovered-certificates", {"after": str(BEYOND_INT64)}, id="discovery after"),
    pytest.param("/api/v1/jobs", {"state": "pending\x00"}, id="NUL in a text parameter"),
    pytest.param("/api/v1/audit", {"actor_id": "a\x1b[2J"}, id="escape in a text parameter"),
    pytest.param("/api/v1/audit", {"action": "a" * 1025}, id="long text parameter"),
])
async def test_query_parameter_out_of_range_is_a_bad_request(coordinator, scene, path, params):
    async with raw_client(coordinator) as http:
        response = await http.get(path, params=params, headers=scene.bearer)
    problem = assert_problem(response, 400)
    assert next(iter(params)) in problem["detail"], problem


@pytest.mark.parametrize("text", list(CONTROL_TEXTS))
@pytest.mark.parametrize(("path", "body"), [
    pytest.param("/api/v1/auth/keys", lambda text: {"name": text}, id="key name"),
    pytest.param("/api/v1/auth/roles", lambda text: {"name": "reader", "permissions": ["cert.read"],
                                                     "description": text}, id="role description"),
    pytest.param("/api/v1/issuers/roots", lambda text: {"name": "other-root", "common_name": text},
                 id="CA common name"),
    pytest.param("/api/v1/certificates/revoke", lambda text: {"tag": text}, id="revoke tag"),
    pytest.param("/api/v1/agents/enrollment-tokens", lambda text: {"labels": {"site": text}},
                 id="enrollment token label"),
])
async def test_control_characters_in_names_are_refused(coordinator, scene, path, body, text):
    before = await snapshot(coordinator)
    problem = assert_problem(await _post(coordinator, scene, path, body(CONTROL_TEXTS[text])), 400, "invalid-body")
    assert "\x00" not in problem["detail"] and "\x1b" not in problem["detail"]
    await assert_stored_nothing(coordinator, before, audited=1)


@pytest.mark.parametrize("text", list(CONTROL_TEXTS))
async def test_control_characters_in_certificate_tags_are_refused(coordinator, scene, text):
    before = await snapshot(coordinator)
    body = scene.valid_create(tags=[CONTROL_TEXTS[text]])
    assert_problem(await _post(coordinator, scene, "/api/v1/certificates", body), 400, "invalid-body")
    await assert_stored_nothing(coordinator, before, audited=1)


@pytest.mark.parametrize("labels", [
    pytest.param({f"label-{i}": "x" for i in range(10_000)}, id="ten thousand labels"),
    pytest.param({"site": "x" * (1024 * 1000)}, id="a one-megabyte value"),
    pytest.param({"Not A Key": "x"}, id="a key agents cannot carry"),
])
async def test_enrollment_token_labels_are_bounded_like_an_agents_own(coordinator, scene, labels):
    before = await snapshot(coordinator)
    response = await _post(coordinator, scene, "/api/v1/agents/enrollment-tokens", {"labels": labels})
    assert_problem(response, 400, "invalid-body")
    await assert_stored_nothing(coordinator, before, audited=1)


async def test_grant_expiring_in_the_past_is_refused_like_a_key(coordinator, scene):
    before = await snapshot(coordinator)
    past = int(time.time()) - 60
    grant = await _post(coordinator, scene, "/api/v1/auth/grants", {
        "principal_type": "user", "principal_id": "bob", "role": "viewer", "expires_at": past})
    key = await _post(coordinator, scene, "/api/v1/auth/keys", {"name": "late", "expires_at": past})
    assert assert_problem(grant, 422, "invalid-expiry")["detail"] == assert_problem(key, 422, "invalid-expiry")["detail"]
    await assert_stored_nothing(coordinator, before, audited=2)


@pytest.mark.parametrize(("kind", "settings", "secrets", "unknown"), [
    pytest.param("webhook", {"url": "https://hooks.example.test/in", "password": "hunter2-hunter2"},
                 {"secret": "s" * 24}, "password", id="webhook password in settings"),
    pytest.param("slack", {"webhook_url": "https://hooks.slack.test/services/T/B/x"},
                 {"webhook_url": "https://hooks.slack.test/services/T/B/x"}, "webhook_url", id="slack url in settings"),
    pytest.param("email", {"host": "smtp.example.test", "from": "a@example.test", "to": "b@example.test",
                           "pasword": "hunter2-hunter2"}, {}, "pasword", id="email misspelt password"),
    pytest.param("pagerduty", {}, {"routing_key": "r" * 32, "routingkey": "r" * 32}, "routingkey",
                 id="pagerduty unknown secret"),
])
async def test_channel_settings_with_unknown_keys_are_refused(coordinator, scene, kind, settings, secrets, unknown):
    channels_before = await coordinator.coordinator.database.transact(
        lambda tx: tx.all("SELECT * FROM notification_channels"))
    response = await _post(coordinator, scene, "/api/v1/notification-channels", {
        "name": "ops", "kind": kind, "settings": settings, "secrets": secrets})
    problem = assert_problem(response, 422, "invalid-channel")
    assert unknown in problem["detail"] and "hunter2" not in problem["detail"]
    channels_after = await coordinator.coordinator.database.transact(
        lambda tx: tx.all("SELECT * FROM notification_channels"))
    assert channels_after == channels_before


async def test_channel_setting_values_are_bounded(coordinator, scene):
    for settings in ({"url": "https://hooks.example.test/" + "x" * 5000},
                     {"url": "https://hooks.example.test/in", "port": BEYOND_INT64}):
        response = await _post(coordinator, scene, "/api/v1/notification-channels", {
            "name": "ops", "kind": "webhook", "settings": settings, "secrets": {"secret": "s" * 24}})
        assert_problem(response, 400, "invalid-body")


# --- a request body that stalls --------------------------------------------------------------


async def test_stalled_request_body_is_a_request_timeout(coordinator, scene, nursery):
    """Hypercorn serves the same app with a short body timeout; the client sends the
    headers and half the body, then nothing: the answer is 408, not a 500."""
    from hypercorn.config import Config
    from hypercorn.trio import serve

    from certfleet.coordinator.http import create_app

    app = create_app(coordinator.coordinator)
    app.config["BODY_TIMEOUT"] = 0.2
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    binds = await nursery.start(serve, app, config)
    host, port = binds[0].removeprefix("http://").rsplit(":", 1)
    before = await snapshot(coordinator)
    body = json.dumps(scene.valid_create()).encode()
    stream = await trio.open_tcp_stream(host, int(port))
    connection = h11.Connection(h11.CLIENT)
    data = connection.send(h11.Request(method="POST", target="/api/v1/certificates", headers=[
        ("Host", f"{host}:{port}"), ("Authorization", f"Bearer {scene.api_key}"),
        ("Content-Type", "application/json"), ("Content-Length", str(len(body)))]))
    data += connection.send(h11.Data(data=body[:10]))
    status, headers, answer = 0, {}, b""
    async with stream:
        await stream.send_all(data)
        with trio.fail_after(30):
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    connection.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    status, headers = event.status_code, {k.decode().lower(): v.decode() for k, v in event.headers}
                elif isinstance(event, h11.Data):
                    answer += bytes(event.data)
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
    problem = assert_problem(RawAnswer(status, headers, answer), 408, "request-timeout")
    assert "seconds" in problem["detail"]
    assert headers.get("connection", "").lower() == "close"
    await assert_stored_nothing(coordinator, before, audited=1)


# --- what agents write is stored escaped, and a result is always delivered --------------------

HOSTILE_DETAIL = "reload failed: nginx: \x00\x1b[2J\x1b]0;pwned\x07 bad \x9b31m config\r\nline two"


def _plain(text: str | None) -> bool:
    return text is not None and not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text)


@pytest.mark.parametrize("status", ["failed", "succeeded"])
async def test_agent_result_with_nul_and_terminal_escapes_is_delivered(coordinator, scene, status):
    assert (await post_csr(coordinator, scene, csr_pem(NAMES))).status_code == 200
    result_path = f"/api/v1/agent/orders/{scene.order_id}/result"
    body = {"status": status, "detail": HOSTILE_DETAIL, "fingerprint_sha256": "\x00" * 64,
            "deployment": {"kind": "file", "failed_step": "reload" if status == "failed" else None}}
    async with raw_client(coordinator) as http:
        response = await http.post(result_path, json=body, headers=agent_headers(scene.agent, "POST", result_path))
        assert response.status_code == 200, response.text
        assert response.json() == {"accepted": True}
        certificate = (await http.get(f"/api/v1/certificates/{scene.certificate_id}", headers=scene.bearer)).json()
        jobs = (await http.get("/api/v1/jobs", params={"certificate_id": scene.certificate_id},
                               headers=scene.bearer)).json()
        targets = (await http.get("/api/v1/targets", headers=scene.bearer)).json()
    assert certificate["status"] == ("failed" if status == "failed" else "deployed")
    if status == "failed":
        assert _plain(certificate["last_error"]) and "\\x1b[2J" in certificate["last_error"]
        assert all(_plain(job["last_error"]) for job in jobs), jobs
    assert all(_plain(target["last_detail"]) for target in targets if target["last_detail"]), targets
    order = await coordinator.coordinator.database.transact(lambda tx: tx.one(
        "SELECT result_detail FROM work_orders WHERE id = ?", (scene.order_id,)))
    assert _plain(order["result_detail"]) and "\\x00" in order["result_detail"]


async def test_agent_report_with_nul_and_terminal_escapes_is_recorded(coordinator, scene):
    path = "/api/v1/agent/reports"
    body = {"event": "work-order-refused", "reason": "bad\x00\x1b[0m", "order_id": scene.order_id,
            "detail": HOSTILE_DETAIL}
    async with raw_client(coordinator) as http:
        response = await http.post(path, json=body, headers=agent_headers(scene.agent, "POST", path))
        assert response.status_code == 200, response.text
        certificate = (await http.get(f"/api/v1/certificates/{scene.certificate_id}", headers=scene.bearer)).json()
    assert certificate["status"] == "failed" and _plain(certificate["last_error"]), certificate
    events = await coordinator.coordinator.database.transact(lambda tx: tx.all("SELECT * FROM agent_events"))
    assert events and all(_plain(e["detail"]) and _plain(e["reason"]) for e in events), events


async def test_agent_report_naming_an_order_with_control_characters_is_recorded(coordinator, scene):
    path = "/api/v1/agent/reports"
    body = {"event": "work-order-refused", "reason": "bad-signature", "order_id": "wo_\x00\x1b[2J", "detail": ""}
    async with raw_client(coordinator) as http:
        response = await http.post(path, json=body, headers=agent_headers(scene.agent, "POST", path))
    assert response.status_code == 200, response.text
    events = await coordinator.coordinator.database.transact(lambda tx: tx.all("SELECT * FROM agent_events"))
    assert [_plain(e["order_id"]) for e in events] == [True]


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/v1/jobs/a%00b"), ("GET", "/api/v1/certificates/a%1B%5B2J"), ("GET", "/api/v1/agents/a%00b"),
    ("GET", "/api/v1/profiles/a%00b"), ("GET", "/api/v1/issuers/a%00b"), ("GET", "/api/v1/targets/a%00b"),
    ("GET", "/.well-known/pki/crl/a%00b"), ("GET", "/.well-known/pki/ca/a%00b"),
    ("POST", "/api/v1/jobs/a%00b/retry"), ("DELETE", "/api/v1/auth/keys/a%00b"),
])
async def test_path_naming_a_resource_with_control_characters_is_not_found(coordinator, scene, method, path):
    before = await snapshot(coordinator)
    async with raw_client(coordinator) as http:
        response = await http.request(method, path, headers=scene.bearer)
    problem = assert_problem(response, 404, "not-found")
    assert _plain(problem["detail"]), problem
    events = await assert_stored_nothing(coordinator, before, audited=0 if method == "GET" else 1)
    assert all(_plain(event["resource_id"]) for event in events), events
