"""Email over SMTP submission with STARTTLS (RFC 3207), optional AUTH (RFC 4954).

STARTTLS is required: if the server does not offer it the message is not sent, since
a silent fall-back to plaintext is exactly what an attacker stripping the capability
wants. ``settings['starttls'] = False`` turns this off for a local relay, and then AUTH
is refused so a password never crosses a plaintext connection.

settings: ``host``, ``port`` (default 587), ``from``, ``to`` (an address or a list),
``starttls`` (default True), ``ca_file`` (PEM bundle to trust instead of the system
store). secrets: ``username`` and ``password``, both or neither.
"""

from __future__ import annotations

import re
import smtplib
import ssl
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import trio

from certfleet.coordinator.notify.channels import DeliveryError, Event, check_header_value, require_str

__all__ = ["SECRETS", "SETTINGS", "DEFAULT_PORT", "build_message", "deliver", "validate"]

KIND = "email"
SETTINGS = frozenset({"host", "port", "from", "to", "starttls", "ca_file"})
SECRETS = frozenset({"username", "password"})
DEFAULT_PORT = 587
# Deliberately plain: a bare addr-spec, no display names, comments or quoting.
_ADDRESS = re.compile(r"[^\s@<>()\[\]\\,;:\"]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


class _StartTLSUnavailable(Exception):
    pass


def _recipients(settings: Mapping[str, Any]) -> list[str]:
    to = settings.get("to")
    return [to] if isinstance(to, str) else list(to or [])


def _check_address(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{KIND}: {name} must be an email address")
    check_header_value(KIND, name, value)
    if not _ADDRESS.fullmatch(value):
        raise ValueError(f"{KIND}: {name} must be a bare address like ops@example.com")


def validate(settings: Mapping[str, Any], secrets: Mapping[str, str]) -> None:
    """Raise ValueError on a missing host, a bad port, a malformed or multi-line
    address, or AUTH credentials without STARTTLS."""
    check_header_value(KIND, "settings['host']", require_str(KIND, "settings", settings, "host"))
    port = settings.get("port", DEFAULT_PORT)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ValueError(f"{KIND}: settings['port'] must be an integer from 1 to 65535")
    _check_address("settings['from']", settings.get("from"))
    recipients = _recipients(settings)
    if not recipients:
        raise ValueError(f"{KIND}: settings['to'] is required")
    for address in recipients:
        _check_address("settings['to']", address)
    starttls = settings.get("starttls", True)
    if not isinstance(starttls, bool):
        raise ValueError(f"{KIND}: settings['starttls'] must be true or false")
    if "ca_file" in settings and not isinstance(settings["ca_file"], str):
        raise ValueError(f"{KIND}: settings['ca_file'] must be a path")
    if ("username" in secrets) != ("password" in secrets):
        raise ValueError(f"{KIND}: secrets need both 'username' and 'password', or neither")
    if "password" in secrets and not starttls:
        raise ValueError(f"{KIND}: AUTH needs STARTTLS; refusing to send a password in plaintext")


def build_message(settings: Mapping[str, Any], event: Event, *, now: float) -> EmailMessage:
    """The plain-text message for ``event``; ``now`` dates it (unix seconds)."""
    message = EmailMessage()
    sender: str = settings["from"]
    message["From"] = sender
    message["To"] = ", ".join(_recipients(settings))
    # Header values come from event text; collapsing whitespace keeps each on one line.
    message["Subject"] = f"[certfleet] {event.severity}: {' '.join(event.summary.split())}"
    message["Date"] = formatdate(now, usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2])
    message["X-Certfleet-Event"] = " ".join(event.kind.split())
    message["X-Certfleet-Dedup-Key"] = " ".join(event.dedup_key.split())
    when = datetime.fromtimestamp(event.occurred_at, UTC).isoformat()
    lines = [
        event.summary,
        "",
        f"Severity:  {event.severity}",
        f"Event:     {event.kind}",
        f"Subject:   {event.subject}",
        f"Occurred:  {when}",
        f"Dedup key: {event.dedup_key}",
    ]
    if event.details:
        lines += ["", "Details:"] + [f"  {key}: {value}" for key, value in event.details.items()]
    message.set_content("\n".join(lines) + "\n")
    return message


def _send_blocking(
    settings: Mapping[str, Any], secrets: Mapping[str, str], message: EmailMessage, timeout: float
) -> None:
    host, port = settings["host"], settings.get("port", DEFAULT_PORT)
    with smtplib.SMTP(host, port, timeout=timeout) as smtp:
        smtp.ehlo()
        if settings.get("starttls", True):
            if not smtp.has_extn("starttls"):
                raise _StartTLSUnavailable
            context = ssl.create_default_context(cafile=settings.get("ca_file"))
            smtp.starttls(context=context)
            smtp.ehlo()
        if "password" in secrets:
            smtp.login(secrets["username"], secrets["password"])
        smtp.send_message(message, from_addr=settings["from"], to_addrs=_recipients(settings))


async def deliver(settings: Mapping[str, Any], secrets: Mapping[str, str], event: Event, *, timeout: float) -> None:
    """Send the message; raises DeliveryError, retryable on network errors and SMTP 4xx."""
    message = build_message(settings, event, now=time.time())
    # smtplib applies ``timeout`` to every socket operation. The thread is not
    # abandoned on cancellation: a send that carried on after we gave up would turn
    # the caller's retry into a duplicate email.
    try:
        await trio.to_thread.run_sync(_send_blocking, settings, secrets, message, timeout)
    except _StartTLSUnavailable:
        raise DeliveryError(KIND, "server does not offer STARTTLS", retryable=False) from None
    except smtplib.SMTPRecipientsRefused as exc:
        codes = sorted({code for code, _ in exc.recipients.values()})
        retryable = all(400 <= code < 500 for code in codes)
        raise DeliveryError(KIND, f"recipients refused (SMTP {codes})", retryable=retryable) from None
    except smtplib.SMTPResponseException as exc:
        code = exc.smtp_code
        raise DeliveryError(KIND, f"SMTP {code}", retryable=400 <= code < 500, status_code=code) from None
    except smtplib.SMTPServerDisconnected:
        raise DeliveryError(KIND, "server disconnected", retryable=True) from None
    except smtplib.SMTPException as exc:
        # What is left is the server lacking a capability we need (AUTH mechanisms).
        raise DeliveryError(KIND, f"SMTP error ({type(exc).__name__})", retryable=False) from None
    except ssl.SSLCertVerificationError:
        raise DeliveryError(KIND, "server certificate did not verify", retryable=False) from None
    except FileNotFoundError:
        raise DeliveryError(KIND, "settings['ca_file'] could not be read", retryable=False) from None
    except OSError as exc:
        raise DeliveryError(KIND, f"network error ({type(exc).__name__})", retryable=True) from None
