"""Notification channels and the notifications delivered through them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from .types import _PLAIN, INT64_MAX, Identifier, Message

Severity = Literal["info", "warning", "critical"]
ChannelField = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*\Z")]
_ChannelText = Annotated[str, msgspec.Meta(max_length=2048, pattern=_PLAIN)]
ChannelSetting = (_ChannelText | Annotated[int, msgspec.Meta(ge=-INT64_MAX, le=INT64_MAX)] | bool
                  | Annotated[list[_ChannelText], msgspec.Meta(max_length=100)])
"""A URL, host, address, port, flag or list of addresses."""


class ChannelCreate(Message):
    """A notification channel. ``settings`` may be shown; ``secrets`` (HMAC secret,
    Slack/Teams webhook URL, PagerDuty routing key, OpsGenie key, SMTP password)
    are sealed at rest and never returned."""

    name: Identifier
    kind: Literal["webhook", "slack", "teams", "pagerduty", "opsgenie", "email"]
    settings: Annotated[dict[ChannelField, ChannelSetting], msgspec.Meta(max_length=16)] = {}
    """Only the fields the kind takes: an unknown one is refused, since a secret typed
    into the wrong field would be shown."""
    secrets: Annotated[dict[ChannelField, Annotated[str, msgspec.Meta(max_length=4096)]],
                       msgspec.Meta(max_length=16)] = {}
    min_severity: Severity = "warning"
    """Events at this severity or above are routed to the channel."""


class ChannelInfo(Message):
    id: str
    name: str
    kind: str
    settings: dict[str, Any]
    secret_names: list[str]
    min_severity: str
    created_at: int


class NotificationInfo(Message):
    id: str
    channel_id: str
    kind: str
    severity: str
    summary: str
    subject: str
    status: Literal["pending", "delivered", "dead"]
    attempts: int
    created_at: int
    last_error: str | None = None
    delivered_at: int | None = None
