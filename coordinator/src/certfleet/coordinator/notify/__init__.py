"""Deliver one notification event to one channel.

A channel is a kind plus its configuration: ``settings`` holds what may be shown
(URLs, addresses, SMTP host), ``secrets`` what may not (HMAC secrets, Slack and Teams
webhook URLs, PagerDuty routing keys, Opsgenie keys, SMTP passwords). Every failure
surfaces as :class:`DeliveryError`, whose message names the channel kind and the
status, never a secret.

One module per channel; :mod:`.channels` holds what they share.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Any

import httpx

from certfleet.coordinator.notify import email, opsgenie, pagerduty, slack, teams, webhook
from certfleet.coordinator.notify.channels import SEVERITIES, DeliveryError, Event

__all__ = ["CHANNEL_KINDS", "SEVERITIES", "DeliveryError", "Event", "deliver", "validate"]

_HTTP_CHANNELS: dict[str, ModuleType] = {
    "webhook": webhook,
    "slack": slack,
    "teams": teams,
    "pagerduty": pagerduty,
    "opsgenie": opsgenie,
}
_CHANNELS: dict[str, ModuleType] = {**_HTTP_CHANNELS, "email": email}
CHANNEL_KINDS = frozenset(_CHANNELS)


def validate(kind: str, settings: Mapping[str, Any], secrets: Mapping[str, str]) -> None:
    """Check a new channel's configuration without contacting it.

    Raises ValueError naming the first missing, unknown or invalid field (never its
    value): an unknown kind, a field the kind does not have (a password typed into
    ``settings`` would be shown to everyone who may list channels), a missing required
    field, a URL that is not https (plain http is allowed to 127.0.0.1 and localhost
    only), or CR/LF in a header value or email address.
    """
    module = _module(kind)
    for where, given, known in (("settings", settings, module.SETTINGS), ("secrets", secrets, module.SECRETS)):
        unknown = sorted(set(given) - known)
        if unknown:
            raise ValueError(f"{kind}: {where}[{unknown[0]!r}] is unknown; {kind} takes settings:"
                             f" {', '.join(sorted(module.SETTINGS)) or 'none'};"
                             f" secrets: {', '.join(sorted(module.SECRETS))}")
    module.validate(settings, secrets)


def _module(kind: str) -> ModuleType:
    if kind in _CHANNELS:
        return _CHANNELS[kind]
    raise ValueError(f"unknown channel kind {kind!r}; expected one of {', '.join(sorted(CHANNEL_KINDS))}")


async def deliver(
    kind: str,
    settings: Mapping[str, Any],
    secrets: Mapping[str, str],
    event: Event,
    *,
    client: httpx.AsyncClient,
    timeout: float = 10.0,
) -> None:
    """Send ``event`` to the channel; return once the channel has accepted it.

    ``client`` carries the HTTP channels' connection pool and trust store; email
    ignores it. ``timeout`` bounds the HTTP request, or each SMTP socket operation.

    Raises DeliveryError: ``retryable`` is True for network errors, timeouts, HTTP 5xx
    and 429 and SMTP 4xx; False for other HTTP 4xx, SMTP 5xx, a server without
    STARTTLS and invalid configuration.
    """
    try:
        # Not validate(): a channel stored before unknown fields were refused still
        # delivers; its extra fields are ignored, as they always were.
        module = _module(kind)
        module.validate(settings, secrets)
    except ValueError as exc:
        raise DeliveryError(kind, f"invalid configuration: {exc}", retryable=False) from None
    if module is email:
        await email.deliver(settings, secrets, event, timeout=timeout)
    else:
        await module.deliver(settings, secrets, event, client=client, timeout=timeout)
