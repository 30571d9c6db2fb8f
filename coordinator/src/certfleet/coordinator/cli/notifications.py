"""``channels`` and ``notifications``: where events are sent, and each delivery."""

from __future__ import annotations

import argparse
from typing import Any

from certfleet.shared import wire

from ..client import ApiClient
from .arguments import label, setting

__all__ = ["add_channels", "add_notifications", "run_channels", "run_notifications"]


def add_channels(commands: argparse._SubParsersAction) -> None:
    channels = commands.add_parser("channels", help="notification channels").add_subparsers(dest="action",
                                                                                            required=True)
    channels.add_parser("list", help="notification channels (never their secrets)")
    channel_create = channels.add_parser("create", help="a place notifications are sent")
    channel_create.add_argument("name", help="the channel's name")
    channel_create.add_argument("--kind", required=True,
                                choices=["webhook", "slack", "teams", "pagerduty", "opsgenie", "email"],
                                help="where it delivers")
    channel_create.add_argument("--setting", type=setting, action="append", default=[], metavar="KEY=VALUE",
                                help="VALUE is parsed as JSON when it can be (port=587, starttls=false, to=[\"a@x\"])")
    channel_create.add_argument("--secret", type=label, action="append", default=[],
                                help="key=value; sealed at rest, never shown again")
    channel_create.add_argument("--min-severity", choices=["info", "warning", "critical"], default="warning",
                                help="send only events at least this severe (default: %(default)s)")
    channels.add_parser("test", help="send a test event now").add_argument("channel", help="the channel's name or id")
    channels.add_parser("delete", help="delete a channel").add_argument("channel", help="the channel's name or id")


async def run_channels(api: ApiClient, args: argparse.Namespace) -> Any:
    action = args.action
    columns = ["id", "name", "kind", "min_severity", "secret_names"]
    if action == "list":
        return await api.call("channels.list"), columns, None
    if action == "create":
        body = wire.ChannelCreate(name=args.name, kind=args.kind, settings=dict(args.setting),
                                  secrets=dict(args.secret), min_severity=args.min_severity)
        return await api.call("channels.create", body), columns, None
    if action == "test":
        return (await api.call("channels.test", channel_id=args.channel),
                ["id", "status", "attempts", "last_error"], None)
    return await api.call("channels.delete", channel_id=args.channel), columns, None


def add_notifications(commands: argparse._SubParsersAction) -> None:
    notifications = commands.add_parser("notifications", help="deliveries").add_subparsers(dest="action",
                                                                                           required=True)
    notifications.add_parser("list", help="deliveries and how they went").add_argument(
        "--status", choices=["pending", "delivered", "dead"], help="only deliveries in this state")
    notifications.add_parser("requeue", help="send a dead-lettered delivery again").add_argument(
        "notification_id", help="the delivery's id")


async def run_notifications(api: ApiClient, args: argparse.Namespace) -> Any:
    columns = ["id", "channel_id", "kind", "severity", "status", "attempts", "last_error"]
    if args.action == "list":
        query = {"status": args.status} if args.status else None
        return await api.call("notifications.list", query=query), columns, None
    return await api.call("notifications.requeue", notification_id=args.notification_id), columns, None
