"""Notification channels deliver to real receivers on 127.0.0.1: an ASGI app served by
hypercorn for the HTTP channels, aiosmtpd (in its own thread) for email."""

from __future__ import annotations

import contextlib
import datetime
import email
import email.policy
import hashlib
import hmac
import io
import ipaddress
import json
import logging
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
import trio
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypercorn.config import Config
from hypercorn.trio import serve

import certfleet.coordinator.notify as notify
from certfleet.coordinator.notify import DeliveryError, Event, deliver, validate
from certfleet.coordinator.notify.webhook import build_request, sign

WEBHOOK_SECRET = "whsec-0123456789abcdef"
ROUTING_KEY = "R0UT1NGKEYR0UT1NGKEYR0UT1NGKEY00"
GENIE_KEY = "eb243592-faa2-4ba2-a551q-1afdf565c889"


def _event(**overrides) -> Event:
    fields = {
        "kind": "certificate.expiring",
        "severity": "warning",
        "summary": "api.example.com expires in 5 days",
        "subject": "certificate:crt_01HX",
        "occurred_at": 1_700_000_000,
        "details": {"common_name": "api.example.com", "days_left": 5, "auto_renew": True, "issuer": None},
        "dedup_key": "certificate.expiring:crt_01HX",
    }
    return Event(**{**fields, **overrides})


# --- an HTTP receiver ---------------------------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class Receiver:
    """Records every request and answers with ``status``."""

    status: int = 200
    url: str = ""
    requests: list[Recorded] = field(default_factory=list)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {name.decode().lower(): value.decode() for name, value in scope["headers"]}
        self.requests.append(Recorded(scope["method"], scope["path"], headers, body))
        response_headers = [(b"content-type", b"application/json")]
        if 300 <= self.status < 400:
            response_headers.append((b"location", b"https://elsewhere.example/"))
        await send({"type": "http.response.start", "status": self.status, "headers": response_headers})
        await send({"type": "http.response.body", "body": b"{}"})

    @property
    def only(self) -> Recorded:
        assert len(self.requests) == 1, self.requests
        return self.requests[0]


@pytest.fixture
async def receiver(nursery) -> Receiver:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    app = Receiver()
    (url,) = await nursery.start(serve, app, config)
    app.url = url
    return app


@pytest.fixture
async def client():
    async with httpx.AsyncClient() as client:
        yield client


def _http_config(kind: str, url: str) -> tuple[dict, dict]:
    """(settings, secrets) pointing channel ``kind`` at ``url``."""
    return {
        "webhook": ({"url": f"{url}/hooks/certfleet"}, {"secret": WEBHOOK_SECRET}),
        "slack": ({}, {"webhook_url": f"{url}/services/T000/B000/slacksecrettoken"}),
        "teams": ({}, {"webhook_url": f"{url}/webhookb2/teamssecrettoken"}),
        "pagerduty": ({"url": f"{url}/v2/enqueue"}, {"routing_key": ROUTING_KEY}),
        "opsgenie": ({"api_url": url}, {"api_key": GENIE_KEY}),
    }[kind]


HTTP_KINDS = ["webhook", "slack", "teams", "pagerduty", "opsgenie"]


# --- payload shapes -------------------------------------------------------------------


async def test_webhook_posts_the_event_signed_over_timestamp_and_body(receiver, client):
    settings, secrets = _http_config("webhook", receiver.url)
    event = _event()
    await deliver("webhook", settings, secrets, event, client=client)

    request = receiver.only
    assert (request.method, request.path) == ("POST", "/hooks/certfleet")
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {
        "kind": "certificate.expiring",
        "severity": "warning",
        "summary": "api.example.com expires in 5 days",
        "subject": "certificate:crt_01HX",
        "occurred_at": 1_700_000_000,
        "details": {"common_name": "api.example.com", "days_left": 5, "auto_renew": True, "issuer": None},
        "dedup_key": "certificate.expiring:crt_01HX",
    }
    timestamp = request.headers["x-certfleet-timestamp"]
    assert abs(int(timestamp) - time.time()) < 300
    expected = hmac.new(WEBHOOK_SECRET.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256)
    assert hmac.compare_digest(request.headers["x-certfleet-signature"], "sha256=" + expected.hexdigest())


def test_webhook_signature_changes_with_the_timestamp():
    settings = {"url": "https://hooks.example.com/in"}
    first = build_request(settings, {"secret": WEBHOOK_SECRET}, _event(), now=1_700_000_000)
    later = build_request(settings, {"secret": WEBHOOK_SECRET}, _event(), now=1_700_000_301)
    assert first.body == later.body
    assert first.headers["X-Certfleet-Signature"] != later.headers["X-Certfleet-Signature"]
    assert first.headers["X-Certfleet-Signature"] == sign(WEBHOOK_SECRET, 1_700_000_000, first.body)


async def test_slack_message_has_fallback_text_and_detail_fields(receiver, client):
    settings, secrets = _http_config("slack", receiver.url)
    await deliver("slack", settings, secrets, _event(summary="a <b> & c"), client=client)

    request = receiver.only
    assert request.path == "/services/T000/B000/slacksecrettoken"
    body = request.json()
    assert body["text"] == "[warning] a &lt;b&gt; &amp; c"
    blocks = body["blocks"]
    assert blocks[0] == {"type": "header", "text": {"type": "plain_text", "text": "a <b> & c"}}
    fields = [f["text"] for block in blocks if block["type"] == "section" for f in block["fields"]]
    assert "*common_name*\napi.example.com" in fields
    assert "*days_left*\n5" in fields
    assert any("certificate:crt_01HX" in text for text in fields)
    assert blocks[-1]["type"] == "context"


def test_slack_splits_many_details_into_sections_of_ten():
    from certfleet.coordinator.notify.slack import build_payload

    details = {f"k{i:02}": i for i in range(45)}
    blocks = build_payload(_event(details=details))["blocks"]
    sections = [b for b in blocks if b["type"] == "section"]
    assert all(len(s["fields"]) <= 10 for s in sections)
    assert sum(len(s["fields"]) for s in sections[1:]) == 40
    assert "5 more details not shown" in blocks[-1]["elements"][0]["text"]


async def test_teams_message_carries_one_adaptive_card(receiver, client):
    settings, secrets = _http_config("teams", receiver.url)
    await deliver("teams", settings, secrets, _event(severity="critical"), client=client)

    body = receiver.only.json()
    assert body["type"] == "message"
    (attachment,) = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    headline, factset = card["body"][:2]
    assert headline["text"] == "api.example.com expires in 5 days"
    assert headline["color"] == "Attention"
    facts = {fact["title"]: fact["value"] for fact in factset["facts"]}
    assert facts["Subject"] == "certificate:crt_01HX"
    assert facts["days_left"] == "5" and facts["auto_renew"] == "yes"


@pytest.mark.parametrize("severity", ["info", "warning", "critical"])
async def test_pagerduty_triggers_an_events_v2_alert(receiver, client, severity):
    receiver.status = 202
    settings, secrets = _http_config("pagerduty", receiver.url)
    await deliver("pagerduty", settings, secrets, _event(severity=severity), client=client)

    request = receiver.only
    assert request.path == "/v2/enqueue"
    body = request.json()
    assert body["routing_key"] == ROUTING_KEY
    assert body["event_action"] == "trigger"
    assert body["dedup_key"] == "certificate.expiring:crt_01HX"
    payload = body["payload"]
    assert payload["summary"] == "api.example.com expires in 5 days"
    assert payload["source"] == "certfleet"
    assert payload["severity"] == severity
    assert datetime.datetime.fromisoformat(payload["timestamp"]).timestamp() == 1_700_000_000
    assert payload["custom_details"]["days_left"] == 5


@pytest.mark.parametrize(("severity", "priority"), [("info", "P5"), ("warning", "P3"), ("critical", "P1")])
async def test_opsgenie_creates_an_alert_aliased_by_dedup_key(receiver, client, severity, priority):
    receiver.status = 202
    settings, secrets = _http_config("opsgenie", receiver.url)
    await deliver("opsgenie", settings, secrets, _event(severity=severity, summary="x" * 200), client=client)

    request = receiver.only
    assert request.path == "/v2/alerts"
    assert request.headers["authorization"] == f"GenieKey {GENIE_KEY}"
    body = request.json()
    assert len(body["message"]) == 130
    assert body["alias"] == "certificate.expiring:crt_01HX"
    assert body["priority"] == priority
    assert body["source"] == "certfleet"
    assert body["details"]["days_left"] == "5"
    assert "x" * 200 in body["description"]


# --- failures -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", HTTP_KINDS)
@pytest.mark.parametrize(("status", "retryable"), [(500, True), (503, True), (429, True), (400, False), (404, False)])
async def test_http_status_decides_whether_a_failure_is_retryable(receiver, client, kind, status, retryable):
    receiver.status = status
    settings, secrets = _http_config(kind, receiver.url)
    with pytest.raises(DeliveryError) as caught:
        await deliver(kind, settings, secrets, _event(), client=client)
    assert caught.value.retryable is retryable
    assert caught.value.status_code == status
    assert str(caught.value) == f"{kind}: HTTP {status}"


@pytest.mark.parametrize("kind", HTTP_KINDS)
async def test_a_redirect_is_not_followed(receiver, client, kind):
    receiver.status = 307
    settings, secrets = _http_config(kind, receiver.url)
    with pytest.raises(DeliveryError) as caught:
        await deliver(kind, settings, secrets, _event(), client=client)
    assert not caught.value.retryable
    assert len(receiver.requests) == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("kind", HTTP_KINDS)
async def test_a_receiver_that_is_down_is_retryable_and_the_error_hides_secrets(client, kind):
    settings, secrets = _http_config(kind, f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(DeliveryError) as caught:
        await deliver(kind, settings, secrets, _event(), client=client)
    assert caught.value.retryable
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    message = str(caught.value)
    for secret in (WEBHOOK_SECRET, ROUTING_KEY, GENIE_KEY, "slacksecrettoken", "teamssecrettoken", "127.0.0.1"):
        assert secret not in message


async def test_invalid_configuration_fails_delivery_without_a_request(receiver, client):
    with pytest.raises(DeliveryError) as caught:
        await deliver("slack", {}, {"webhook_url": "http://hooks.example.com/x"}, _event(), client=client)
    assert not caught.value.retryable
    assert "https" in str(caught.value) and "hooks.example.com" not in str(caught.value)
    assert receiver.requests == []


# --- email ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca_file: str
    server_context: ssl.SSLContext


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    """A throwaway CA and a server certificate for 127.0.0.1, made with cryptography."""
    directory = tmp_path_factory.mktemp("smtp-pki")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "certfleet notify test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    chain = directory / "server.pem"
    chain.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        + leaf.public_bytes(serialization.Encoding.PEM)
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain)
    return Pki(ca_file=str(ca_file), server_context=context)


@dataclass
class Mailbox:
    """aiosmtpd handler: records each message and whether it arrived over TLS."""

    reply: str = "250 OK"
    messages: list[tuple[str, list[str], email.message.EmailMessage, bool]] = field(default_factory=list)
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), message, session.ssl is not None))
        return self.reply

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        self.logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == b"s3cret-pass", handled=False)


class _Controller(Controller):
    """aiosmtpd's Controller bound to port 0: it learns its port before the readiness probe."""

    def _trigger_server(self):
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@contextlib.contextmanager
def _smtp_server(mailbox: Mailbox, tls_context: ssl.SSLContext | None) -> Iterator[_Controller]:
    """An aiosmtpd server in its own thread for the length of the ``with``.

    Its logger does not pass its records to the root logger: the server's thread logs
    while it stops (each cut connection), after the handlers the test run installed
    may have lost their streams, and those "Logging error" tracebacks buried real
    failures. (A NullHandler also keeps Python's last-resort stderr handler quiet.)"""
    server_log = logging.getLogger("mail.log")
    silent = logging.NullHandler()
    server_log.addHandler(silent)
    server_log.propagate = False
    kwargs = {"tls_context": tls_context, "require_starttls": True} if tls_context else {}
    controller = _Controller(
        mailbox, hostname="127.0.0.1", port=0, authenticator=mailbox.authenticate, auth_require_tls=True, **kwargs
    )
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()
        server_log.removeHandler(silent)
        server_log.propagate = True


@pytest.fixture
def mailbox():
    return Mailbox()


@pytest.fixture
def smtp_tls(mailbox, pki):
    with _smtp_server(mailbox, pki.server_context) as controller:
        yield controller


@pytest.fixture
def smtp_plain(mailbox):
    with _smtp_server(mailbox, None) as controller:
        yield controller


def test_the_smtp_server_does_not_log_into_the_test_runs_handlers(mailbox, capsys):
    """A root handler whose stream is gone, as one a finished test left behind; a
    connection cut by the server's stop makes the server log."""
    stream = io.StringIO()
    left_behind = logging.StreamHandler(stream)
    stream.close()
    root = logging.getLogger()  # tests/conftest.py puts its handlers and level back afterwards
    root.addHandler(left_behind)
    root.setLevel(logging.INFO)  # as the coordinator's and the agent's CLIs set it
    with _smtp_server(mailbox, None) as controller, socket.create_connection(("127.0.0.1", controller.port)) as idle:
        assert idle.recv(1024).startswith(b"220")
    assert "Logging error" not in capsys.readouterr().err


def _email_settings(port: int, **extra) -> dict:
    return {"host": "127.0.0.1", "port": port, "from": "certfleet@example.com",
            "to": ["ops@example.com", "pki@example.org"], **extra}


async def test_email_is_sent_over_starttls_with_auth(smtp_tls, mailbox, pki, client):
    settings = _email_settings(smtp_tls.port, ca_file=pki.ca_file)
    secrets = {"username": "notifier", "password": "s3cret-pass"}
    await deliver("email", settings, secrets, _event(severity="critical"), client=client)

    ((sender, recipients, message, over_tls),) = mailbox.messages
    assert over_tls
    assert mailbox.logins == [(b"notifier", b"s3cret-pass")]
    assert sender == "certfleet@example.com"
    assert recipients == ["ops@example.com", "pki@example.org"]
    assert message["Subject"] == "[certfleet] critical: api.example.com expires in 5 days"
    assert message["From"] == "certfleet@example.com"
    assert message["To"] == "ops@example.com, pki@example.org"
    assert message["X-Certfleet-Dedup-Key"] == "certificate.expiring:crt_01HX"
    assert message.get_content_type() == "text/plain"
    body = message.get_content()
    assert "certificate:crt_01HX" in body and "days_left: 5" in body


async def test_email_refuses_a_server_certificate_it_does_not_trust(smtp_tls, mailbox, client):
    with pytest.raises(DeliveryError) as caught:
        await deliver("email", _email_settings(smtp_tls.port), {}, _event(), client=client)
    assert not caught.value.retryable
    assert mailbox.messages == []


async def test_email_refuses_a_server_without_starttls(smtp_plain, mailbox, client):
    with pytest.raises(DeliveryError) as caught:
        await deliver("email", _email_settings(smtp_plain.port), {}, _event(), client=client)
    assert not caught.value.retryable
    assert "STARTTLS" in str(caught.value)
    assert mailbox.messages == []


async def test_email_to_a_local_relay_without_starttls_when_told_so(smtp_plain, mailbox, client):
    await deliver("email", _email_settings(smtp_plain.port, starttls=False), {}, _event(), client=client)
    ((_, _, message, over_tls),) = mailbox.messages
    assert not over_tls
    assert message["Subject"] == "[certfleet] warning: api.example.com expires in 5 days"


@pytest.mark.parametrize(("reply", "retryable"), [("451 4.3.0 try again later", True), ("554 5.6.0 rejected", False)])
async def test_email_smtp_reply_decides_whether_a_failure_is_retryable(smtp_tls, mailbox, pki, client, reply, retryable):
    mailbox.reply = reply
    settings = _email_settings(smtp_tls.port, ca_file=pki.ca_file)
    with pytest.raises(DeliveryError) as caught:
        await deliver("email", settings, {}, _event(), client=client)
    assert caught.value.retryable is retryable


async def test_email_bad_password_is_not_retryable_and_not_echoed(smtp_tls, pki, client):
    settings = _email_settings(smtp_tls.port, ca_file=pki.ca_file)
    with pytest.raises(DeliveryError) as caught:
        await deliver("email", settings, {"username": "notifier", "password": "wrong-pass"}, _event(), client=client)
    assert not caught.value.retryable
    assert "wrong-pass" not in str(caught.value)


async def test_email_server_that_is_down_is_retryable(client):
    with pytest.raises(DeliveryError) as caught:
        await deliver("email", _email_settings(_closed_port()), {}, _event(), client=client, timeout=5)
    assert caught.value.retryable


# --- validation -----------------------------------------------------------------------

GOOD_EMAIL = {"host": "smtp.example.com", "from": "certfleet@example.com", "to": "ops@example.com"}


@pytest.mark.parametrize(
    ("kind", "settings", "secrets"),
    [
        ("webhook", {"url": "https://hooks.example.com/in"}, {"secret": WEBHOOK_SECRET}),
        ("webhook", {"url": "http://127.0.0.1:8080/in"}, {"secret": WEBHOOK_SECRET}),
        ("webhook", {"url": "http://localhost/in"}, {"secret": WEBHOOK_SECRET}),
        ("slack", {}, {"webhook_url": "https://hooks.slack.com/services/T/B/x"}),
        ("teams", {}, {"webhook_url": "https://example.webhook.office.com/webhookb2/x"}),
        ("pagerduty", {}, {"routing_key": ROUTING_KEY}),
        ("opsgenie", {"api_url": "https://api.eu.opsgenie.com"}, {"api_key": GENIE_KEY}),
        ("email", GOOD_EMAIL, {}),
        ("email", {**GOOD_EMAIL, "port": 25, "starttls": False}, {}),
        ("email", GOOD_EMAIL, {"username": "u", "password": "p"}),
    ],
)
def test_validate_accepts(kind, settings, secrets):
    validate(kind, settings, secrets)


@pytest.mark.parametrize(
    ("kind", "settings", "secrets", "complaint"),
    [
        ("sms", {}, {}, "unknown channel kind"),
        ("webhook", {}, {"secret": WEBHOOK_SECRET}, "settings['url'] is required"),
        ("webhook", {"url": "https://h.example/in"}, {}, "secrets['secret'] is required"),
        ("webhook", {"url": "https://h.example/in"}, {"secret": "short"}, "at least 16"),
        ("webhook", {"url": "http://hooks.example.com/in"}, {"secret": WEBHOOK_SECRET}, "must use https"),
        ("webhook", {"url": "http://127.0.0.2/in"}, {"secret": WEBHOOK_SECRET}, "must use https"),
        ("webhook", {"url": "ftp://hooks.example.com/in"}, {"secret": WEBHOOK_SECRET}, "must use https"),
        ("webhook", {"url": "https://u:p@h.example/in"}, {"secret": WEBHOOK_SECRET}, "credentials"),
        ("webhook", {"url": "https://h.example/in\r\nX: y"}, {"secret": WEBHOOK_SECRET}, "CR, LF"),
        ("slack", {}, {}, "secrets['webhook_url'] is required"),
        ("slack", {}, {"webhook_url": "http://hooks.slack.com/services/x"}, "must use https"),
        ("teams", {}, {"webhook_url": "/webhookb2/x"}, "absolute URL"),
        ("pagerduty", {}, {}, "routing_key"),
        ("pagerduty", {"url": "http://events.example.com"}, {"routing_key": ROUTING_KEY}, "must use https"),
        ("opsgenie", {}, {"api_key": "key\r\nX-Injected: 1"}, "CR, LF"),
        ("email", {**GOOD_EMAIL, "host": ""}, {}, "settings['host'] is required"),
        ("email", {**GOOD_EMAIL, "port": "587"}, {}, "port"),
        ("email", {**GOOD_EMAIL, "from": "certfleet@example.com\r\nBcc: x@evil.example"}, {}, "CR, LF"),
        ("email", {**GOOD_EMAIL, "to": ["ops@example.com", "a@b.example\nBcc: x@evil.example"]}, {}, "CR, LF"),
        ("email", {**GOOD_EMAIL, "to": "Ops <ops@example.com>"}, {}, "bare address"),
        ("email", {**GOOD_EMAIL, "to": []}, {}, "settings['to'] is required"),
        ("email", {**GOOD_EMAIL, "starttls": "no"}, {}, "true or false"),
        ("email", GOOD_EMAIL, {"password": "pw-value-1"}, "both"),
        ("email", {**GOOD_EMAIL, "starttls": False}, {"username": "user-1", "password": "pw-value-1"}, "plaintext"),
    ],
)
def test_validate_rejects(kind, settings, secrets, complaint):
    with pytest.raises(ValueError) as caught:
        validate(kind, settings, secrets)
    assert complaint in str(caught.value)
    for value in secrets.values():
        assert value not in str(caught.value)


# --- the event and the package surface ------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"severity": "error"},
        {"summary": ""},
        {"dedup_key": "k" * 256},
        {"details": {"ratio": float("nan")}},
        {"details": {"nested": {"a": 1}}},
    ],
)
def test_event_rejects_what_channels_cannot_render(overrides):
    with pytest.raises(ValueError):
        _event(**overrides)


def test_event_details_cannot_change_after_construction():
    details = {"days_left": 5}
    event = _event(details=details)
    details["days_left"] = 1
    assert event.details["days_left"] == 5
    with pytest.raises(TypeError):
        event.details["days_left"] = 0  # type: ignore[index]


def test_exported_names_exist():
    for name in notify.__all__:
        assert hasattr(notify, name), name
    assert notify.CHANNEL_KINDS == {"webhook", "slack", "teams", "pagerduty", "opsgenie", "email"}


async def test_http_wait_is_bounded_by_the_timeout(client, autojump_clock):
    # A listener that accepts and never answers: the delivery gives up at the deadline,
    # which the autojump clock reaches as soon as every task is waiting.
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    settings, secrets = _http_config("webhook", f"http://127.0.0.1:{port}")
    with listener, pytest.raises(DeliveryError) as caught:
        await deliver("webhook", settings, secrets, _event(), client=client, timeout=10)
    assert caught.value.retryable
