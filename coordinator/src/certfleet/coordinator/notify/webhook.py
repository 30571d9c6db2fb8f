"""Generic signed webhook: the event as JSON, signed the way Stripe signs its webhooks.

The receiver recomputes ``HMAC-SHA256(secret, "<timestamp>.<raw body>")`` and compares
it with ``X-Certfleet-Signature: sha256=<hex>`` in constant time. Binding the timestamp
into the MAC lets the receiver reject old deliveries, so a captured request cannot be
replayed later.

settings: ``url`` (https). secrets: ``secret`` (at least 16 characters).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

import httpx

from certfleet.coordinator.notify.channels import Event, HttpRequest, check_url, post, require_str

__all__ = ["SECRETS", "SETTINGS", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "build_request", "deliver", "sign", "validate"]

KIND = "webhook"
SETTINGS = frozenset({"url"})
SECRETS = frozenset({"secret"})
TIMESTAMP_HEADER = "X-Certfleet-Timestamp"
SIGNATURE_HEADER = "X-Certfleet-Signature"
MIN_SECRET_LENGTH = 16


def validate(settings: Mapping[str, Any], secrets: Mapping[str, str]) -> None:
    """Raise ValueError unless ``url`` is usable and ``secret`` is long enough."""
    check_url(KIND, "settings['url']", require_str(KIND, "settings", settings, "url"))
    secret = require_str(KIND, "secrets", secrets, "secret")
    if len(secret) < MIN_SECRET_LENGTH:
        raise ValueError(f"{KIND}: secrets['secret'] must be at least {MIN_SECRET_LENGTH} characters")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Certfleet-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def build_request(settings: Mapping[str, Any], secrets: Mapping[str, str], event: Event, *, now: int) -> HttpRequest:
    """The signed POST for ``event``; ``now`` is the signing time in unix seconds."""
    body = json.dumps(event.as_json(), separators=(",", ":"), sort_keys=True, allow_nan=False).encode()
    headers = {TIMESTAMP_HEADER: str(now), SIGNATURE_HEADER: sign(secrets["secret"], now, body)}
    return HttpRequest(url=settings["url"], body=body, headers=headers)


async def deliver(
    settings: Mapping[str, Any],
    secrets: Mapping[str, str],
    event: Event,
    *,
    client: httpx.AsyncClient,
    timeout: float,
) -> None:
    """POST ``event``; raises DeliveryError unless the receiver answers 2xx."""
    request = build_request(settings, secrets, event, now=int(time.time()))
    await post(KIND, request, client=client, timeout=timeout)
