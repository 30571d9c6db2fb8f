"""``status``: what needs attention now: expiring and failing certificates, offline
agents; ``version``: what this command and the coordinator run."""

from __future__ import annotations

import argparse
import time
from importlib import metadata
from typing import Any

from ..client import ApiClient
from ..tables import format_value, printable

__all__ = ["add_status", "add_version", "run_status", "run_version"]


def add_status(commands: argparse._SubParsersAction) -> None:
    commands.add_parser("status", help="what needs attention: expiring, failing, offline")


async def run_status(api: ApiClient, args: argparse.Namespace) -> Any:
    now = int(time.time())
    summary = await api.call("status")
    if args.json:
        return summary, [], None
    lines = [
        "certificates: " + (", ".join(f"{n} {s}" for s, n in sorted(summary.certificates.items())) or "none"),
        "agents:       " + (", ".join(f"{n} {s}" for s, n in sorted(summary.agents.items())) or "none"),
        f"approvals:    {summary.pending_approvals} pending",
    ]
    lines += [f"EXPIRING  {c.id}  {format_value('names', c.names, now=now)}  not after"
              f" {format_value('not_after', c.not_after, now=now)}" for c in summary.expiring_soon]
    lines += [f"FAILING   {c.id}  {format_value('names', c.names, now=now)}"
              f"  {format_value('last_error', c.last_error, now=now)}" for c in summary.failing]
    lines += [f"OFFLINE   {a.id}  {printable(a.name)}  last seen"
              f" {format_value('last_seen_at', a.last_seen_at, now=now)}" for a in summary.offline_agents]
    return summary, None, "\n".join(lines)


def add_version(commands: argparse._SubParsersAction) -> None:
    commands.add_parser("version", help="the version of this command and of the coordinator it talks to")


async def run_version(api: ApiClient, args: argparse.Namespace) -> Any:
    coordinator = await api.call("version")
    client = metadata.version("certfleet-coordinator")
    if args.json:
        return {"client": client, "coordinator": coordinator}, [], None
    return coordinator, None, (f"certfleet {client}\ncoordinator {printable(coordinator.version)} (API"
                               f" {printable(coordinator.api)}, schema {coordinator.schema_version},"
                               f" {printable(coordinator.database)})")
