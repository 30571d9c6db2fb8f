"""Keys, CSRs and the two token types, bytes in and bytes out."""

from __future__ import annotations

import base64
import json

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from certfleet.shared import agent_token, jws, pki, wire
from certfleet.shared.workorder import OrderKind, WorkOrderRefused, sign_work_order, verify_work_order

NOW = 1_800_000_000


@pytest.mark.parametrize("key_type", list(pki.KeyType))
def test_generated_keys_round_trip_through_pem_and_csr(key_type):
    key = pki.generate_private_key(key_type)
    assert pki.key_type_of(pki.load_private_key(pki.private_key_pem(key)).public_key()) == key_type
    parsed = pki.parse_csr(pki.build_csr(key, ["App.Example.TEST.", "10.0.0.1", "::0:1"]))
    assert parsed.key_type == key_type
    assert parsed.names == {"app.example.test", "10.0.0.1", "::1"}


@pytest.mark.parametrize("key", [rsa.generate_private_key(65537, 1024), ec.generate_private_key(ec.SECP521R1())],
                         ids=["rsa-1024", "p-521"])
def test_unsupported_keys_are_refused(key):
    with pytest.raises(ValueError):
        pki.key_type_of(key.public_key())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "a.example.test")]))
           .sign(key, hashes.SHA256())).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(pki.CsrError):
        pki.parse_csr(csr)


@pytest.mark.parametrize("name", ["", "a" * 254, "-lead.example", "trail-.example", "a..b", "*.com", "a.*.b.c",
                                  "sp ace.example", "under_score.example", "spiffe://UPPER/x", "spiffe://td/x/"])
def test_invalid_names_are_refused(name):
    with pytest.raises(pki.NameError_):
        pki.normalize_name(name)


def test_wildcards_only_leftmost_and_spiffe_ids_accepted():
    assert pki.normalize_name("*.Example.Test") == "*.example.test"
    assert pki.normalize_name("spiffe://example.org/ns/a/sa/b") == "spiffe://example.org/ns/a/sa/b"


def _csr_with(builder_fn) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return builder_fn(x509.CertificateSigningRequestBuilder()).sign(key, hashes.SHA256()).public_bytes(
        serialization.Encoding.PEM)


def test_csr_refusals():
    with pytest.raises(pki.CsrError, match="not a valid PEM"):
        pki.parse_csr(b"garbage")
    with pytest.raises(pki.CsrError, match="larger"):
        pki.parse_csr(b"x" * 70000)
    with pytest.raises(pki.CsrError, match="names no subject"):
        pki.parse_csr(_csr_with(lambda b: b.subject_name(x509.Name([]))))
    with pytest.raises(pki.CsrError, match="unsupported name type"):
        pki.parse_csr(_csr_with(lambda b: b.subject_name(x509.Name([])).add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name("a@example.test")]), critical=False)))
    cn = x509.NameAttribute(x509.NameOID.COMMON_NAME, "a.example.test")
    with pytest.raises(pki.CsrError, match="more than one CN"):
        pki.parse_csr(_csr_with(lambda b: b.subject_name(x509.Name([cn, cn]))))


def test_a_csr_with_a_broken_signature_is_refused():
    der = x509.load_pem_x509_csr(pki.build_csr(pki.generate_private_key(pki.KeyType.EC_P256), ["a.example.test"])
                                 ).public_bytes(serialization.Encoding.DER)
    broken = der[:-3] + bytes([der[-3] ^ 0x01]) + der[-2:]
    pem = b"-----BEGIN CERTIFICATE REQUEST-----\n" + base64.encodebytes(broken) + b"-----END CERTIFICATE REQUEST-----\n"
    with pytest.raises(pki.CsrError):
        pki.parse_csr(pem)


VALID_CSR = pki.build_csr(pki.generate_private_key(pki.KeyType.EC_P256), ["fuzz.example.test"])


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=2048),
                 st.tuples(st.integers(0, len(VALID_CSR) - 1), st.integers(0, 255)).map(
                     lambda p: VALID_CSR[:p[0]] + bytes([p[1]]) + VALID_CSR[p[0] + 1:])))
def test_parse_csr_raises_only_csr_error(data):
    try:
        pki.parse_csr(data)
    except pki.CsrError:
        pass


# --- work orders and agent tokens -------------------------------------------------------

ORDER_KEY = ed25519.Ed25519PrivateKey.generate()
KEYS = {jws.key_id(ORDER_KEY.public_key()): ORDER_KEY.public_key()}
PAYLOAD = wire.IssueOrder(certificate_id="crt_1", names=["a.example.test"], key_type=pki.KeyType.EC_P256,
                          target=wire.FileTarget(directory="/etc/ssl/a"))


def _order(**overrides) -> str:
    arguments = dict(key=ORDER_KEY, order_id="ord_1", agent_id="agt_1", kind=OrderKind.ISSUE, payload=PAYLOAD,
                     now=NOW, ttl=3600)
    arguments.update(overrides)
    return sign_work_order(**arguments)


def _refusal(token: str, *, agent_id="agt_1", now=NOW) -> str:
    with pytest.raises(WorkOrderRefused) as refused:
        verify_work_order(token, keys=KEYS, agent_id=agent_id, now=now)
    return refused.value.reason


def test_a_valid_order_verifies():
    order = verify_work_order(_order(), keys=KEYS, agent_id="agt_1", now=NOW + 10)
    assert (order.id, order.kind, order.payload) == ("ord_1", OrderKind.ISSUE, PAYLOAD)


def test_orders_are_refused_for_each_reason():
    assert _refusal(_order(), agent_id="agt_2") == "audience"
    assert _refusal(_order(), now=NOW + 3600 + 61) == "expired"
    assert _refusal(_order(), now=NOW - 120) == "not-yet-valid"
    other = ed25519.Ed25519PrivateKey.generate()
    assert _refusal(_order(key=other)) == "unknown-key"
    forged = _order(key=other).split(".")
    header = json.loads(base64.urlsafe_b64decode(forged[0] + "=="))
    header["kid"] = next(iter(KEYS))
    forged[0] = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    assert _refusal(".".join(forged)) == "signature"
    request_token = agent_token.sign_request_token(ORDER_KEY, agent_id="agt_1", method="GET", path="/x", now=NOW)
    assert _refusal(request_token) == "type"
    unsigned = jwt.encode({"aud": "agt_1", "exp": NOW + 60, "iat": NOW, "jti": "x"}, None, algorithm="none",
                          headers={"typ": "certfleet-order+jwt", "kid": next(iter(KEYS))})
    assert _refusal(unsigned) == "malformed"
    hmac_token = jwt.encode({"aud": "agt_1", "exp": NOW + 60, "iat": NOW, "jti": "x"}, "k" * 32, algorithm="HS256",
                            headers={"typ": "certfleet-order+jwt", "kid": next(iter(KEYS))})
    assert _refusal(hmac_token) == "malformed"
    relative = wire.IssueOrder(certificate_id="c", names=["a.example.test"], key_type=pki.KeyType.EC_P256,
                               target=wire.FileTarget(directory="etc/ssl"))
    assert _refusal(_order(payload=relative)) == "payload"


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0), st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))
def test_any_single_character_change_is_refused(position, replacement):
    token = _order()
    position %= len(token)
    if token[position] in (".", replacement):
        return
    changed = token[:position] + replacement + token[position + 1:]
    try:
        verify_work_order(changed, keys=KEYS, agent_id="agt_1", now=NOW)
    except WorkOrderRefused:
        return
    # base64url's last character may carry unused bits: the decoded bytes, and so
    # the signed content, can be identical. Anything else must have been refused.
    assert _decoded(changed) == _decoded(token)


def _decoded(token: str) -> list[bytes]:
    return [base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)) for part in token.split(".")]


def test_agent_request_tokens_are_bound_to_method_path_and_lifetime():
    key = ed25519.Ed25519PrivateKey.generate()
    lookup = {"agt_1": key.public_key()}.get
    token = agent_token.sign_request_token(key, agent_id="agt_1", method="get", path="/api/v1/agent/work", now=NOW)
    claims = agent_token.verify_request_token(token, key_for=lookup, method="GET", path="/api/v1/agent/work", now=NOW)
    assert claims["sub"] == "agt_1"
    for method, path in (("POST", "/api/v1/agent/work"), ("GET", "/api/v1/agent/reports")):
        with pytest.raises(jws.TokenError, match="another request"):
            agent_token.verify_request_token(token, key_for=lookup, method=method, path=path, now=NOW)
    long_lived = jws.sign({"iss": "agt_1", "sub": "agt_1", "aud": agent_token.AUDIENCE, "htm": "GET", "htu": "/p",
                           "iat": NOW, "exp": NOW + 600, "jti": "j"}, key, typ=agent_token.TOKEN_TYPE, kid="agt_1")
    with pytest.raises(jws.TokenError) as refused:
        agent_token.verify_request_token(long_lived, key_for=lookup, method="GET", path="/p", now=NOW)
    assert refused.value.reason == "lifetime"
    impostor = jws.sign({"iss": "agt_2", "sub": "agt_2", "aud": agent_token.AUDIENCE, "htm": "GET", "htu": "/p",
                         "iat": NOW, "exp": NOW + 60, "jti": "j"}, key, typ=agent_token.TOKEN_TYPE, kid="agt_1")
    with pytest.raises(jws.TokenError, match="signing agent"):
        agent_token.verify_request_token(impostor, key_for=lookup, method="GET", path="/p", now=NOW)


def test_wire_messages_refuse_unknown_fields_and_unsafe_targets():
    import msgspec

    for data in (b'{"token": "t", "extra": 1}',):
        with pytest.raises(msgspec.ValidationError, match="unknown field"):
            wire.decode(data, wire.BootstrapRequest)
    for target in ({"directory": "relative"}, {"directory": "/a/../b"}, {"directory": "/a", "key_mode": 0o640},
                   {"directory": "/a", "reload_command": []}, {"directory": "/a", "reload_command": [""]},
                   {"directory": "/a", "owner": "bad name"}):
        with pytest.raises(msgspec.ValidationError):
            wire.decode(json.dumps(target).encode(), wire.FileTarget)


def test_exported_members_exist():
    import importlib

    for name in ("agent_token", "api", "jws", "paths", "pki", "wire", "workorder"):
        module = importlib.import_module(f"certfleet.shared.{name}")
        assert [m for m in module.__all__ if not hasattr(module, m)] == []
