"""Slack incoming webhook: a Block Kit message with the summary and the details as fields.

The webhook URL is itself the credential, so it lives in secrets and never appears in
an error. Block Kit limits shape the message: a header holds 150 characters, a section
at most 10 fields of 2,000 characters each, a message at most 50 blocks.

settings: none. secrets: ``webhook_url`` (https).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from certfleet.coordinator.notify.channels import Event, HttpRequest, check_url, post, require_str

__all__ = ["SECRETS", "SETTINGS", "build_request", "deliver", "validate"]

KIND = "slack"
SETTINGS = frozenset()
SECRETS = frozenset({"webhook_url"})
MAX_HEADER = 150
MAX_FIELD = 2000
FIELDS_PER_SECTION = 10
MAX_DETAIL_FIELDS = 40
_ICONS = {"info": ":information_source:", "warning": ":warning:", "critical": ":rotating_light:"}


def validate(settings: Mapping[str, Any], secrets: Mapping[str, str]) -> None:
    """Raise ValueError unless ``secrets['webhook_url']`` is a usable URL."""
    check_url(KIND, "secrets['webhook_url']", require_str(KIND, "secrets", secrets, "webhook_url"))


def _escape(text: str) -> str:
    """Slack mrkdwn treats &, < and > as control characters (links, mentions)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def build_payload(event: Event) -> dict[str, Any]:
    """The message body for ``event``: fallback ``text`` plus ``blocks``."""
    when = datetime.fromtimestamp(event.occurred_at, UTC).isoformat()
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _clip(_one_line(event.summary), MAX_HEADER)},
        },
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*Severity*\n{_ICONS[event.severity]} {event.severity}"},
                {"type": "mrkdwn", "text": f"*Event*\n`{_escape(event.kind)}`"},
                {"type": "mrkdwn", "text": _clip(f"*Subject*\n{_escape(event.subject)}", MAX_FIELD)},
                {"type": "mrkdwn", "text": f"*Occurred*\n{when}"},
            ],
        },
    ]
    items = list(event.details.items())
    fields = [
        {"type": "mrkdwn", "text": _clip(f"*{_escape(key)}*\n{_escape(_render(value))}", MAX_FIELD)}
        for key, value in items[:MAX_DETAIL_FIELDS]
    ]
    for start in range(0, len(fields), FIELDS_PER_SECTION):
        blocks.append({"type": "section", "fields": fields[start : start + FIELDS_PER_SECTION]})
    more = len(items) - MAX_DETAIL_FIELDS
    context = f"certfleet · dedup `{_escape(event.dedup_key)}`"
    if more > 0:
        context += f" · {more} more details not shown"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    text = f"[{event.severity}] {_one_line(event.summary)}"
    return {"text": _escape(text), "blocks": blocks}


def _render(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def build_request(settings: Mapping[str, Any], secrets: Mapping[str, str], event: Event) -> HttpRequest:
    body = json.dumps(build_payload(event), allow_nan=False).encode()
    return HttpRequest(url=secrets["webhook_url"], body=body)


async def deliver(
    settings: Mapping[str, Any],
    secrets: Mapping[str, str],
    event: Event,
    *,
    client: httpx.AsyncClient,
    timeout: float,
) -> None:
    """POST the message; raises DeliveryError (status only, never the URL) unless 2xx."""
    await post(KIND, build_request(settings, secrets, event), client=client, timeout=timeout)
