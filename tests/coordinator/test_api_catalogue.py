"""The operation catalogue is the one source of the API: every operation has a
permission, a mounted route behind its gate, and an entry in the OpenAPI document.
Plus the public basics: health, the CA bundle, and problem documents for routing
errors and internal errors (which never leak internals)."""

from __future__ import annotations

import functools
import hashlib
import re

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certfleet.coordinator import errors
from certfleet.coordinator.auth.rbac import ALL_PERMISSIONS, BUILTIN_ROLES
from certfleet.coordinator.http import create_app
from certfleet.coordinator.server import run_coordinator
from certfleet.coordinator.service import Coordinator, handler_name
from certfleet.coordinator.settings import Settings
from certfleet.shared.api import OPERATIONS, Auth
from tests.support import BOOTSTRAP_TOKEN, admin_client, ca_fingerprint, key_with_roles, raw_client

SQLITE_ONLY = pytest.mark.parametrize("database_url", [None])
PROBLEM = "application/problem+json"
PERMISSION = re.compile(r"[a-z][a-z-]*(\.[a-z][a-z-]*)+")

# Path parameters that name something real where a public operation needs it.
SAMPLE_PARAMS = {"issuer": "iss_issuing", "request": "MAMCAQA%3D/and/more"}


def sample_path(op) -> str:
    return op.url_path(**{name: SAMPLE_PARAMS.get(name, f"sample-{name}") for name in op.path_params})


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM
    problem = response.json()
    assert problem["status"] == status
    assert problem["type"].startswith("urn:certfleet:problem:") and problem["title"], problem
    return problem


# --- the catalogue itself -----------------------------------------------------------------


def test_every_operation_has_a_permission_a_handler_and_its_own_route():
    names = [op.name for op in OPERATIONS]
    assert len(names) == len(set(names)), "operation names must be unique"
    routes = [(op.method, op.path) for op in OPERATIONS]
    assert len(routes) == len(set(routes)), "two operations share a method and path"
    for op in OPERATIONS:
        assert PERMISSION.fullmatch(op.permission), f"{op.name}: {op.permission!r} is not namespace.verb"
        assert op.auth in (Auth.PUBLIC, Auth.API_KEY, Auth.AGENT)
        if op.auth is not Auth.PUBLIC:
            assert op.permission in ALL_PERMISSIONS, op.name
        if op.name != "openapi":
            assert callable(getattr(Coordinator, handler_name(op.name), None)), f"{op.name} has no handler"


def test_admin_role_holds_every_operator_and_agent_permission():
    admin = BUILTIN_ROLES["admin"][1]
    gated = {op.permission for op in OPERATIONS if op.auth is not Auth.PUBLIC}
    assert {op.permission for op in OPERATIONS if op.auth is Auth.API_KEY} <= admin
    assert gated <= admin
    assert BUILTIN_ROLES["agent"][1] == {op.permission for op in OPERATIONS if op.auth is Auth.AGENT}


@SQLITE_ONLY
async def test_bootstrap_admin_key_holds_every_operator_permission_globally(coordinator):
    api, _ = await admin_client(coordinator)
    async with api:
        me = await api.call("auth.me")
    for op in OPERATIONS:
        if op.auth is Auth.API_KEY:
            assert me.permissions.get(op.permission) == ["global"], op.name


# --- routes -------------------------------------------------------------------------------


@SQLITE_ONLY
async def test_every_operation_is_mounted_at_its_catalogue_path(coordinator):
    app = create_app(coordinator.coordinator)
    adapter = app.url_map.bind("localhost")
    for op in OPERATIONS:
        params = {name: f"value-of-{name}" for name in op.path_params}
        if "request" in params:
            params["request"] = "base64/with/slashes"
        endpoint, matched = adapter.match(op.url_path(**params), method=op.method)
        assert endpoint == op.name
        assert matched == params, op.name
    mounted = {rule.endpoint for rule in app.url_map.iter_rules()} - {"static"}
    assert mounted == {op.name for op in OPERATIONS}

    plain = create_app(coordinator.coordinator, plain_http=True)
    assert {rule.endpoint for rule in plain.url_map.iter_rules()} - {"static"} == {
        op.name for op in OPERATIONS if op.plain_http}


@SQLITE_ONLY
async def test_every_gated_operation_answers_through_its_permission_gate(coordinator):
    """A key without roles reaches every operator route and is refused by exactly the
    operation's permission; agent routes ask for an agent token; public routes answer
    from their handler (the request id is echoed only by a mounted operation)."""
    admin_api, _ = await admin_client(coordinator)
    async with admin_api:
        _, nobody = await key_with_roles(admin_api, coordinator, name="no roles")
    async with raw_client(coordinator) as http:
        for op in OPERATIONS:
            headers = {"X-Request-Id": f"probe-{op.name}"}
            content = None
            if op.auth is Auth.API_KEY:
                headers["Authorization"] = f"Bearer {nobody.token}"
            if op.input is bytes:
                headers["Content-Type"], content = op.request_content_type, b"not an OCSP request"
            elif op.input is not None:
                headers["Content-Type"], content = "application/json", b"{}"
            response = await http.request(op.method, sample_path(op), headers=headers, content=content)
            assert response.headers["x-request-id"] == f"probe-{op.name}", (op.name, response.status_code)
            if op.auth is Auth.API_KEY:
                problem = assert_problem(response, 403)
                assert op.permission in problem["detail"], (op.name, problem)
            elif op.auth is Auth.AGENT:
                assert_problem(response, 401)
            elif op.input is not None and op.input is not bytes:
                assert_problem(response, 400)
            else:
                assert response.status_code == 200, (op.name, response.text)
                assert response.headers["content-type"].split(";")[0] == op.content_type, op.name


@SQLITE_ONLY
async def test_plain_http_listener_serves_only_the_pki_objects(coordinator):
    pki_url = coordinator.coordinator.pki_url
    assert pki_url and pki_url.startswith("http://")
    async with httpx.AsyncClient(base_url=pki_url, timeout=30) as http:
        certificate = await http.get("/.well-known/pki/ca/iss_issuing")
        assert certificate.status_code == 200
        assert certificate.headers["content-type"] == "application/pkix-cert"
        for op in OPERATIONS:
            if op.plain_http:
                continue
            response = await http.request(op.method, sample_path(op), json={"token": BOOTSTRAP_TOKEN}
                                          if op.input is not None else None)
            assert_problem(response, 404)
    async with raw_client(coordinator) as https:
        # The bootstrap token was offered over plain HTTP above and must still be unspent.
        assert (await https.post("/api/v1/auth/bootstrap", json={"token": BOOTSTRAP_TOKEN})).status_code == 201


# --- OpenAPI ----------------------------------------------------------------------------


@SQLITE_ONLY
async def test_openapi_document_describes_every_operation(coordinator):
    async with raw_client(coordinator) as http:
        response = await http.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert document["openapi"].startswith("3.1")
    schemas = document["components"]["schemas"]
    assert set(schemas["Problem"]["required"]) == {"type", "title", "status"}

    documented = [(path, method, entry) for path, methods in document["paths"].items()
                  for method, entry in methods.items()]
    assert len(documented) == len(OPERATIONS)
    assert sorted(e["operationId"] for _, _, e in documented) == sorted(op.name for op in OPERATIONS)

    for op in OPERATIONS:
        path = re.sub(r"\{([a-z_]+):path\}", r"{\1}", op.path)
        entry = document["paths"][path][op.method.lower()]
        assert entry["operationId"] == op.name
        assert entry["x-permission"] == op.permission
        assert entry["summary"] == op.summary
        expected_security = {Auth.PUBLIC: [], Auth.API_KEY: [{"apiKey": []}], Auth.AGENT: [{"agentToken": []}]}
        assert entry["security"] == expected_security[op.auth], op.name
        assert str(op.status) in entry["responses"], op.name
        assert PROBLEM in entry["responses"]["default"]["content"]
        declared = {p["name"] for p in entry.get("parameters", []) if p["in"] == "path"}
        assert declared == set(op.path_params), op.name
        assert set(re.findall(r"\{([a-z_]+)\}", path)) == declared, op.name
        assert ("requestBody" in entry) == (op.input is not None), op.name
        if op.input is not None and op.input is not bytes:
            schema = entry["requestBody"]["content"]["application/json"]["schema"]
            name = schema["$ref"].rsplit("/", 1)[-1]
            # Unknown fields are refused, and the document says so.
            assert schemas[name].get("additionalProperties") is False, name

    for reference in re.findall(r'"\$ref":\s*"#/components/schemas/([^"]+)"', response.text):
        assert reference in schemas, reference


# --- public basics ----------------------------------------------------------------------


@SQLITE_ONLY
async def test_health_answers_ok(coordinator):
    async with raw_client(coordinator) as http:
        response = await http.get("/health")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "ok"}


@SQLITE_ONLY
async def test_ca_bundle_is_the_pinned_root(coordinator):
    async with raw_client(coordinator) as http:
        response = await http.get("/.well-known/certfleet/ca.pem")
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == "application/pem-certificate-chain"
    certificates = x509.load_pem_x509_certificates(response.content)
    assert len(certificates) == 1
    root = certificates[0]
    assert hashlib.sha256(root.public_bytes(serialization.Encoding.DER)).hexdigest() == ca_fingerprint(coordinator)
    assert root.subject == root.issuer
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert root.public_bytes(serialization.Encoding.PEM) == coordinator.ca_path.read_bytes()


@SQLITE_ONLY
@pytest.mark.parametrize("path", ["/nope", "/api/v1/nope", "/api/v2/certificates", "/api/v1/certificates/a/b/c"])
async def test_unknown_path_is_a_not_found_problem(coordinator, path):
    async with raw_client(coordinator) as http:
        response = await http.get(path)
    problem = assert_problem(response, 404)
    assert problem["type"] == "urn:certfleet:problem:not-found"


@SQLITE_ONLY
@pytest.mark.parametrize(("method", "path"), [("DELETE", "/health"), ("GET", "/api/v1/auth/bootstrap"),
                                              ("PUT", "/api/v1/certificates"), ("POST", "/api/v1/agent/work")])
async def test_wrong_method_is_a_method_not_allowed_problem(coordinator, method, path):
    async with raw_client(coordinator) as http:
        response = await http.request(method, path)
    problem = assert_problem(response, 405)
    assert problem["type"] == "urn:certfleet:problem:method-not-allowed"


@SQLITE_ONLY
async def test_routing_problems_carry_a_detail(coordinator):
    async with raw_client(coordinator) as http:
        not_found = await http.get("/api/v1/nope")
        wrong_method = await http.delete("/health")
    assert assert_problem(not_found, 404).get("detail")
    assert assert_problem(wrong_method, 405).get("detail")


@SQLITE_ONLY
async def test_wrong_method_answer_lists_the_allowed_methods(coordinator):
    async with raw_client(coordinator) as http:
        response = await http.delete("/health")
    assert response.status_code == 405
    assert {m.strip() for m in response.headers.get("allow", "").split(",")} == {"GET", "HEAD"}


# --- internal errors ----------------------------------------------------------------------


class Unavailable(errors.CertfleetError):
    status, slug, title = 503, "unavailable", "Unavailable"


async def _raise_runtime(self, call):
    raise RuntimeError("secret-internal: password=hunter2 at /var/lib/certfleet/master.key")


async def _raise_typed_5xx(self, call):
    raise Unavailable("secret-internal detail", dsn="postgresql://secret-internal@db/certfleet")


async def test_internal_errors_never_leak_detail(nursery, tmp_path, database_url, monkeypatch, caplog):
    monkeypatch.setattr(Coordinator, "health", _raise_runtime)
    monkeypatch.setattr(Coordinator, "agents_list", _raise_runtime)
    monkeypatch.setattr(Coordinator, "certificates_create", _raise_runtime)
    monkeypatch.setattr(Coordinator, "issuers_list", _raise_typed_5xx)
    settings = Settings(data_dir=tmp_path / "coordinator", database_url=database_url, listen="127.0.0.1:0",
                        bootstrap_token=BOOTSTRAP_TOKEN)
    running = await nursery.start(functools.partial(run_coordinator, settings, announce_token=False))
    api, api_key = await admin_client(running)
    await api.__aexit__(None, None, None)
    bearer = {"Authorization": f"Bearer {api_key}"}
    before = await running.coordinator.database.transact(
        lambda tx: tx.one("SELECT COUNT(*) AS n FROM certificates")["n"])
    async with raw_client(running) as http:
        answers = {
            "health": await http.get("/health"),
            "agents.list": await http.get("/api/v1/agents", headers=bearer),
            "certificates.create": await http.post("/api/v1/certificates", headers=bearer, json={
                "common_name": "x.example.test", "agent_id": "agt_x", "target": {"kind": "file", "directory": "/tmp/x"}}),
        }
        typed = await http.get("/api/v1/issuers", headers=bearer)
    for name, response in answers.items():
        assert response.status_code == 500, name
        assert response.headers["content-type"] == PROBLEM
        assert response.json() == {"type": "urn:certfleet:problem:internal", "title": "Internal error",
                                   "status": 500}, name
    assert typed.status_code == 503
    assert typed.json() == {"type": "urn:certfleet:problem:unavailable", "title": "Unavailable", "status": 503}
    for response in [*answers.values(), typed]:
        exposed = response.text + " ".join(f"{k}: {v}" for k, v in response.headers.items())
        assert "secret-internal" not in exposed and "hunter2" not in exposed
    assert await running.coordinator.database.transact(
        lambda tx: tx.one("SELECT COUNT(*) AS n FROM certificates")["n"]) == before
    # The operator still learns what happened: from the log, not from the answer.
    assert "secret-internal" in caplog.text
