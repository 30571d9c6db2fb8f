"""Each channel kind takes a known set of settings and secrets, and nothing else: a
secret typed into ``settings`` would be shown to everyone who may list channels."""

from __future__ import annotations

import pytest

from certfleet.coordinator import notify
from certfleet.coordinator.notify import email, opsgenie, pagerduty, slack, teams, webhook

GOOD = {
    "webhook": ({"url": "https://hooks.example.test/in"}, {"secret": "s" * 24}),
    "slack": ({}, {"webhook_url": "https://hooks.slack.test/services/T/B/x"}),
    "teams": ({}, {"webhook_url": "https://example.webhook.office.test/webhookb2/x"}),
    "pagerduty": ({"url": "https://events.pagerduty.test/v2/enqueue"}, {"routing_key": "r" * 32}),
    "opsgenie": ({"api_url": "https://api.eu.opsgenie.test"}, {"api_key": "k" * 36}),
    "email": ({"host": "smtp.example.test", "port": 587, "from": "a@example.test", "to": ["b@example.test"],
               "starttls": True, "ca_file": "/etc/ssl/ca.pem"}, {"username": "u", "password": "hunter2-hunter2"}),
}


def test_every_kind_declares_its_fields():
    modules = {"webhook": webhook, "slack": slack, "teams": teams, "pagerduty": pagerduty, "opsgenie": opsgenie,
               "email": email}
    assert set(modules) == notify.CHANNEL_KINDS
    for kind, module in modules.items():
        settings, secrets = GOOD[kind]
        assert (set(settings), set(secrets)) == (module.SETTINGS, module.SECRETS), kind
        assert not module.SETTINGS & module.SECRETS, kind


@pytest.mark.parametrize("kind", sorted(GOOD))
def test_every_field_a_kind_takes_is_accepted(kind):
    notify.validate(kind, *GOOD[kind])


@pytest.mark.parametrize("kind", sorted(GOOD))
@pytest.mark.parametrize("where", ["settings", "secrets"])
def test_an_unknown_field_is_refused_by_name_never_by_value(kind, where):
    settings, secrets = (dict(part) for part in GOOD[kind])
    (settings if where == "settings" else secrets)["passwd"] = "hunter2-hunter2"
    with pytest.raises(ValueError) as caught:
        notify.validate(kind, settings, secrets)
    message = str(caught.value)
    assert f"{where}['passwd'] is unknown" in message and kind in message
    assert "hunter2" not in message


def test_a_secret_typed_into_settings_is_refused_with_where_it_belongs():
    with pytest.raises(ValueError, match=r"settings\['webhook_url'\] is unknown.*secrets: webhook_url"):
        notify.validate("slack", {"webhook_url": "https://hooks.slack.test/services/T/B/x"}, {})


async def test_a_channel_stored_with_an_unknown_field_still_delivers(nursery):
    """Channels made before unknown fields were refused keep working; only their
    creation is checked strictly."""
    import httpx
    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve

    received: list[bytes] = []

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        received.append(body)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    binds = await nursery.start(serve, app, config)
    event = notify.Event(kind="test", severity="warning", summary="s", subject="x", occurred_at=1, details={},
                         dedup_key="k")
    async with httpx.AsyncClient() as client:
        with trio.fail_after(30):
            await notify.deliver("webhook", {"url": binds[0] + "/in", "colour": "red"}, {"secret": "s" * 24},
                                 event, client=client)
    assert len(received) == 1
