"""Signed work orders and agent request tokens: what verifies, and why everything
else is refused."""

from __future__ import annotations

import base64
import functools
import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from certfleet.shared import agent_token, jws, wire, workorder
from certfleet.shared.pki import KeyType

NOW = 1_700_000_000
TTL = 3600
AGENT = "agent-1"
ORDER = "order-1"
WORK_ORDER_LEEWAY = 60
REASONS = {"malformed", "type", "unknown-key", "signature", "audience", "issuer", "expired",
           "not-yet-valid", "lifetime", "kind", "payload"}
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@functools.cache
def _coordinator_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@functools.cache
def _agent_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def _kid(key: ed25519.Ed25519PrivateKey) -> str:
    return jws.key_id(key.public_key())


def _keys() -> dict[str, ed25519.Ed25519PublicKey]:
    return {_kid(_coordinator_key()): _coordinator_key().public_key()}


def _payload(directory: str = "/etc/tls/web") -> wire.IssueOrder:
    return wire.IssueOrder(certificate_id="cert-1", names=["www.example.com", "192.0.2.1"],
                           key_type=KeyType.EC_P256, target=wire.FileTarget(directory=directory))


def _order(**overrides) -> str:
    arguments = dict(key=_coordinator_key(), order_id=ORDER, agent_id=AGENT, kind=workorder.OrderKind.ISSUE,
                     payload=_payload(), now=NOW, ttl=TTL)
    arguments.update(overrides)
    return workorder.sign_work_order(**arguments)


_DROP = object()


def _order_builtins(directory: str = "/etc/tls/web") -> dict:
    return json.loads(wire.encode(_payload(directory)))


def _claims(**overrides) -> dict:
    claims = {"iss": workorder.ISSUER, "aud": AGENT, "jti": ORDER, "iat": NOW, "nbf": NOW, "exp": NOW + TTL,
              "kind": "issue", "order": _order_builtins()}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not _DROP}


def _signed(claims: dict, *, key=None, typ: str = workorder.TOKEN_TYPE, kid: str | None = None) -> str:
    key = key or _coordinator_key()
    return jws.sign(claims, key, typ=typ, kid=kid or _kid(_coordinator_key()))


def _verify(token: str, *, now: float = NOW, agent_id: str = AGENT, keys=None) -> workorder.VerifiedOrder:
    return workorder.verify_work_order(token, keys=_keys() if keys is None else keys, agent_id=agent_id, now=now)


def _refusal(token: str, **kwargs) -> workorder.WorkOrderRefused:
    with pytest.raises(workorder.WorkOrderRefused) as refused:
        _verify(token, **kwargs)
    return refused.value


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict, claims: dict, signature: bytes = b"") -> str:
    return ".".join([_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), _b64(signature)])


# --- work orders: what verifies --------------------------------------------------------


def test_signed_work_order_verifies_and_carries_its_payload():
    token = _order()
    verified = _verify(token)
    assert verified.id == ORDER and verified.agent_id == AGENT
    assert verified.kind is workorder.OrderKind.ISSUE
    assert verified.issued_at == NOW and verified.expires_at == NOW + TTL
    assert verified.payload == _payload()
    assert verified.token == token
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "EdDSA", "typ": workorder.TOKEN_TYPE, "kid": _kid(_coordinator_key())}


def test_work_order_verifies_against_any_pinned_key():
    other = ed25519.Ed25519PrivateKey.generate()
    keys = {**_keys(), _kid(other): other.public_key()}
    assert _verify(_order(key=other), keys=keys).id == ORDER


def test_work_order_is_valid_through_its_leeway_at_both_ends():
    assert _verify(_order(), now=NOW - WORK_ORDER_LEEWAY).id == ORDER
    assert _verify(_order(), now=NOW + TTL + WORK_ORDER_LEEWAY).id == ORDER


def test_unverified_order_id_reads_the_claimed_jti_only():
    assert workorder.unverified_order_id(_order()) == ORDER
    assert workorder.unverified_order_id("garbage") is None
    assert workorder.unverified_order_id(_signed(_claims(jti="x" * 500))) == "x" * 128
    assert workorder.unverified_order_id(_signed(_claims(jti=7))) is None


# --- work orders: refusals -----------------------------------------------------------


def test_work_order_for_another_agent_is_refused_as_audience():
    refused = _refusal(_order(), agent_id="agent-2")
    assert refused.reason == "audience"
    assert refused.order_id == ORDER  # kept for the refusal report


def test_expired_work_order_is_refused():
    assert _refusal(_order(), now=NOW + TTL + WORK_ORDER_LEEWAY + 1).reason == "expired"


def test_work_order_from_the_future_is_refused_as_not_yet_valid():
    assert _refusal(_order(), now=NOW - WORK_ORDER_LEEWAY - 1).reason == "not-yet-valid"


def test_work_order_signed_by_an_unpinned_key_is_refused_as_unknown_key():
    stranger = ed25519.Ed25519PrivateKey.generate()
    assert _refusal(_order(key=stranger)).reason == "unknown-key"
    assert _refusal(_order(), keys={}).reason == "unknown-key"


def test_work_order_signed_by_another_key_under_a_pinned_kid_is_refused_as_signature():
    stranger = ed25519.Ed25519PrivateKey.generate()
    token = _signed(_claims(), key=stranger, kid=_kid(_coordinator_key()))
    assert _refusal(token).reason == "signature"


def test_agent_request_token_presented_as_work_order_is_refused_as_type():
    token = agent_token.sign_request_token(_coordinator_key(), agent_id=_kid(_coordinator_key()),
                                           method="GET", path="/api/v1/agent/work", now=NOW)
    assert _refusal(token).reason == "type"


@pytest.mark.parametrize("typ", [None, "JWT", "certfleet-order+JWT", "certfleet-agent+jwt"])
def test_work_order_with_another_type_header_is_refused(typ):
    header = {"alg": "EdDSA", "kid": _kid(_coordinator_key())}
    if typ is not None:
        header["typ"] = typ
    token = jwt.encode(_claims(), _coordinator_key(), algorithm="EdDSA", headers=header)
    assert _refusal(token).reason == "type"


def test_unsigned_alg_none_work_order_is_refused():
    header = {"alg": "none", "typ": workorder.TOKEN_TYPE, "kid": _kid(_coordinator_key())}
    assert _refusal(_forge(header, _claims())).reason == "malformed"
    assert _refusal(_forge({**header, "alg": "None"}, _claims())).reason == "malformed"


def test_hmac_work_order_keyed_with_the_public_key_is_refused():
    public = _coordinator_key().public_key().public_bytes(serialization.Encoding.Raw,
                                                          serialization.PublicFormat.Raw)
    token = jwt.encode(_claims(), public, algorithm="HS256",
                       headers={"typ": workorder.TOKEN_TYPE, "kid": _kid(_coordinator_key())})
    assert _refusal(token).reason == "malformed"


def test_work_order_from_another_issuer_is_refused():
    assert _refusal(_signed(_claims(iss="someone-else"))).reason == "issuer"
    assert _refusal(_signed(_claims(iss=_DROP))).reason == "issuer"


@pytest.mark.parametrize("claim", ["exp", "iat", "jti"])
def test_work_order_missing_a_required_claim_is_refused_as_malformed(claim):
    assert _refusal(_signed(_claims(**{claim: _DROP}))).reason == "malformed"


@pytest.mark.parametrize(("claim", "value"), [("exp", "tomorrow"), ("exp", True), ("iat", None), ("jti", 42)])
def test_work_order_with_mistyped_claim_is_refused_as_malformed(claim, value):
    assert _refusal(_signed(_claims(**{claim: value}))).reason == "malformed"


def test_work_order_without_a_key_id_is_refused_as_malformed():
    token = jwt.encode(_claims(), _coordinator_key(), algorithm="EdDSA", headers={"typ": workorder.TOKEN_TYPE})
    assert _refusal(token).reason == "malformed"


@pytest.mark.parametrize("kind", ["explode", "", None, "ISSUE"])
def test_work_order_of_unknown_kind_is_refused(kind):
    refused = _refusal(_signed(_claims(kind=kind)))
    assert refused.reason == "kind"
    assert refused.order_id == ORDER


@pytest.mark.parametrize(
    "order",
    [
        _order_builtins("etc/tls"),  # a relative target directory
        _order_builtins("/etc/../root"),
        {**_order_builtins(), "surprise": True},
        {**_order_builtins(), "key_type": "rsa-1024"},
        {k: v for k, v in _order_builtins().items() if k != "names"},
        {**_order_builtins(), "target": {"kind": "ftp", "directory": "/x"}},
        {**_order_builtins(), "target": {"kind": "file", "directory": "/x", "key_mode": 0o640}},
        None,
        "issue",
    ],
)
def test_work_order_with_invalid_payload_is_refused_as_payload(order):
    refused = _refusal(_signed(_claims(order=order)))
    assert refused.reason == "payload"
    assert refused.order_id == ORDER


@pytest.mark.parametrize("token", ["", "a.b", "a.b.c", "....", "x" * 20000, "é.é.é"])
def test_malformed_work_order_is_refused(token):
    assert _refusal(token).reason == "malformed"


def test_non_string_work_order_is_refused():
    assert _refusal(b"not.a.string").reason == "malformed"  # type: ignore[arg-type]


def _mutations(token: str):
    """Every position, replaced by the next base64url character (dots by a letter)."""
    for position, char in enumerate(token):
        replacement = "A" if char == "." else B64URL[(B64URL.index(char) + 1) % len(B64URL)]
        yield token[:position] + replacement + token[position + 1:]


def test_every_single_character_change_in_a_work_order_is_refused():
    token = _order()
    for mutated in _mutations(token):
        with pytest.raises(workorder.WorkOrderRefused) as refused:
            _verify(mutated)
        assert refused.value.reason in REASONS - {"kind", "payload"}, mutated


def test_every_single_character_change_in_the_signature_is_refused_as_signature():
    token = _order()
    head, _, signature = token.rpartition(".")
    for position in range(len(signature)):
        for char in B64URL:
            if char == signature[position]:
                continue
            mutated = f"{head}.{signature[:position]}{char}{signature[position + 1:]}"
            with pytest.raises(workorder.WorkOrderRefused) as refused:
                _verify(mutated)
            assert refused.value.reason in {"signature", "malformed"}


@settings(derandomize=True, deadline=None, max_examples=500)
@given(position=st.integers(0, 10_000), char=st.characters(codec="utf-8"))
def test_any_single_character_change_in_a_work_order_is_refused(position, char):
    token = _order()
    position %= len(token)
    if char == token[position]:
        return
    mutated = token[:position] + char + token[position + 1:]
    with pytest.raises(workorder.WorkOrderRefused) as refused:
        _verify(mutated)
    assert refused.value.reason in REASONS


@settings(derandomize=True, deadline=None, max_examples=300)
@given(st.text(max_size=400) | st.binary(max_size=400).map(lambda b: base64.urlsafe_b64encode(b).decode()))
def test_arbitrary_text_is_refused_as_a_work_order(text):
    with pytest.raises(workorder.WorkOrderRefused) as refused:
        _verify(text)
    assert refused.value.reason in REASONS


# --- jws helpers ---------------------------------------------------------------------


def test_public_key_raw_round_trips_and_key_id_is_stable():
    public = _agent_key().public_key()
    raw = jws.public_key_raw(public)
    assert len(raw) == 43 and "=" not in raw
    assert jws.key_id(jws.public_key_from_raw(raw)) == jws.key_id(public)
    assert jws.key_id(public) != jws.key_id(_coordinator_key().public_key())


@pytest.mark.parametrize("value", ["", "AAAA", "A" * 44, "!!!!", _b64(b"\x00" * 31), _b64(b"\x00" * 33)])
def test_public_key_from_raw_refuses_malformed_keys(value):
    with pytest.raises(jws.TokenError) as refused:
        jws.public_key_from_raw(value)
    assert refused.value.reason == "malformed"


# --- agent request tokens --------------------------------------------------------------

PATH = "/api/v1/agent/work"


def _agent_keys(kid: str = AGENT):
    return {kid: _agent_key().public_key()}.get


def _request_token(**overrides) -> str:
    arguments = dict(agent_id=AGENT, method="GET", path=PATH, now=NOW)
    arguments.update(overrides)
    return agent_token.sign_request_token(_agent_key(), **arguments)


def _agent_claims(**overrides) -> dict:
    claims = {"iss": AGENT, "sub": AGENT, "aud": agent_token.AUDIENCE, "htm": "GET", "htu": PATH,
              "iat": NOW, "exp": NOW + 60, "jti": "jti-1"}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not _DROP}


def _signed_request(claims: dict, *, kid: str = AGENT) -> str:
    return jws.sign(claims, _agent_key(), typ=agent_token.TOKEN_TYPE, kid=kid)


def _verify_request(token: str, *, method: str = "GET", path: str = PATH, now: float = NOW, key_for=None):
    return agent_token.verify_request_token(token, key_for=key_for or _agent_keys(), method=method, path=path,
                                            now=now)


def _request_refusal(token: str, **kwargs) -> str:
    with pytest.raises(jws.TokenError) as refused:
        _verify_request(token, **kwargs)
    return refused.value.reason


def test_agent_request_token_verifies_for_its_request():
    claims = _verify_request(_request_token(method="get"))
    assert claims["sub"] == claims["iss"] == AGENT
    assert claims["htm"] == "GET" and claims["htu"] == PATH
    assert claims["exp"] - claims["iat"] <= agent_token.MAX_LIFETIME


def test_agent_request_tokens_carry_fresh_jtis():
    jtis = {_verify_request(_request_token())["jti"] for _ in range(20)}
    assert len(jtis) == 20


@pytest.mark.parametrize(("method", "path"), [("POST", PATH), ("GET", "/api/v1/agent/results"),
                                              ("GET", PATH + "/"), ("GET", PATH + "?wait=25")])
def test_agent_request_token_for_another_request_is_refused_as_binding(method, path):
    assert _request_refusal(_request_token(), method=method, path=path) == "binding"


def test_agent_request_token_living_longer_than_two_minutes_is_refused():
    assert _verify_request(_signed_request(_agent_claims(exp=NOW + agent_token.MAX_LIFETIME)))
    assert _request_refusal(_signed_request(_agent_claims(exp=NOW + agent_token.MAX_LIFETIME + 1))) == "lifetime"


@pytest.mark.parametrize("claims", [_agent_claims(sub="agent-2"), _agent_claims(iss="agent-2"),
                                    _agent_claims(sub=_DROP), _agent_claims(iss=_DROP)])
def test_agent_request_token_whose_subject_is_not_its_signer_is_refused(claims):
    assert _request_refusal(_signed_request(claims)) == "malformed"


def test_agent_request_token_signed_under_another_agents_kid_is_refused():
    token = _signed_request(_agent_claims(iss="agent-2", sub="agent-2"), kid="agent-2")
    other = ed25519.Ed25519PrivateKey.generate().public_key()
    assert _request_refusal(token, key_for={"agent-2": other}.get) == "signature"


def test_agent_request_token_of_an_unknown_agent_is_refused():
    assert _request_refusal(_request_token(), key_for={}.get) == "unknown-key"


def test_work_order_presented_as_agent_request_token_is_refused_as_type():
    assert _request_refusal(_order(), key_for=_keys().get) == "type"


def test_agent_request_token_for_another_audience_is_refused():
    assert _request_refusal(_signed_request(_agent_claims(aud="someone-else"))) == "audience"


def test_expired_agent_request_token_is_refused():
    token = _request_token()
    assert _verify_request(token, now=NOW + 60 + 30)
    assert _request_refusal(token, now=NOW + 60 + 31) == "expired"
    assert _request_refusal(token, now=NOW - 31) == "not-yet-valid"


def test_agent_request_token_with_an_overlong_jti_is_refused():
    assert _verify_request(_signed_request(_agent_claims(jti="j" * 128)))
    assert _request_refusal(_signed_request(_agent_claims(jti="j" * 129))) == "malformed"


def test_agent_request_token_usable_window_is_bounded_even_with_an_early_nbf():
    token = _signed_request(_agent_claims(nbf=NOW, iat=NOW + 86_400, exp=NOW + 86_460))
    assert _request_refusal(token) in {"lifetime", "not-yet-valid", "malformed"}


def test_agent_request_token_with_a_nan_expiry_is_refused():
    token = _signed_request(_agent_claims(exp=float("nan")))
    assert _request_refusal(token, now=NOW + 10 * 365 * 86_400) in {"malformed", "expired", "lifetime"}
