"""``agents``, ``targets`` and ``discovery``: the machines, where they deploy, and the
certificates they found."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import msgspec
import trio

from certfleet.shared import wire
from certfleet.shared.pki import KeyType
from certfleet.shared.targets import KINDS

from ..client import ApiClient
from .arguments import duration, label, setting
from .certificates import CERTIFICATE_COLUMNS

__all__ = ["add_agents", "add_discovery", "add_targets", "run_agents", "run_discovery", "run_targets"]

DISCOVERY_COLUMNS = ["id", "status", "agent_id", "source", "path", "subject", "not_after"]


def _settings(text: str) -> dict[str, Any]:
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"cannot read {text[1:]}: {exc.strerror}") from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("settings must be a JSON object")
    return value


def add_agents(commands: argparse._SubParsersAction) -> None:
    agents = commands.add_parser("agents", help="agents and enrollment").add_subparsers(dest="action", required=True)
    token = agents.add_parser("enroll-token", help="mint an enrollment token")
    token.add_argument("--uses", type=int, default=1, help="how many agents may enroll with it (default: %(default)s)")
    token.add_argument("--ttl", type=duration, default=3600,
                       help="valid for this long, e.g. 1h, 7d (default: one hour)")
    token.add_argument("--label", type=label, action="append", default=[], metavar="KEY=VALUE",
                       help="a label every agent enrolled with it gets (repeatable; wins over the agent's own)")
    agents.add_parser("list", help="every agent, with liveness and when it was last seen")
    show_agent = agents.add_parser("show", help="one agent, with its labels")
    show_agent.add_argument("agent_id", help="the agent's id (see `certfleet agents list`)")
    retire_agent = agents.add_parser("retire", help="refuse the agent's identity from now on, cancel its work,"
                                                    " stop renewing its certificates; the agent stops itself")
    retire_agent.add_argument("agent_id", help="the agent's id")


async def run_agents(api: ApiClient, args: argparse.Namespace) -> Any:
    action = args.action
    if action == "enroll-token":
        result = await api.call("agents.enrollment-token.create", wire.EnrollmentTokenCreate(
            uses=args.uses, ttl_seconds=args.ttl, labels=dict(args.label)))
        return result, None, f"enrollment token (shown once; {result.uses_left} use(s)):\n{result.token}"
    if action == "list":
        return await api.call("agents.list"), ["id", "name", "liveness", "last_seen_at"], None
    if action == "retire":
        return (await api.call("agents.retire", agent_id=args.agent_id),
                ["id", "name", "liveness", "retired_at"], None)
    return (await api.call("agents.get", agent_id=args.agent_id),
            ["id", "name", "liveness", "labels", "created_at", "last_seen_at", "retired_at"], None)


def add_targets(commands: argparse._SubParsersAction) -> None:
    targets = commands.add_parser("targets", help="deployment targets").add_subparsers(dest="action", required=True)
    target_create = targets.add_parser("create", help="declare a target on an agent")
    target_create.add_argument("name", help="the target's name, unique on its agent")
    target_create.add_argument("--agent", required=True, help="id of the agent that deploys to it")
    target_create.add_argument("--kind", required=True, choices=KINDS, help="what the target is")
    target_create.add_argument("--settings", type=_settings, default={},
                               help="settings as a JSON object, or @FILE to read them from a file")
    target_create.add_argument("--set", type=setting, action="append", default=[], metavar="KEY=VALUE",
                               help="one setting (VALUE is parsed as JSON if it can be, e.g. 'verify={\"port\":443}')")
    targets.add_parser("list", help="every target, with its last deployment and check").add_argument(
        "--agent", help="only this agent's targets")
    targets.add_parser("show", help="one target, with its settings and counters").add_argument(
        "target", help="the target's id or name")
    target_test = targets.add_parser("test", help="the agent runs the config test and reads the served certificate")
    target_test.add_argument("target", help="the target's id or name")
    target_test.add_argument("--wait", type=duration, default=0, help="wait this long for the agent's answer")


async def run_targets(api: ApiClient, args: argparse.Namespace) -> Any:
    action = args.action
    columns = ["id", "name", "agent_id", "kind", "last_outcome", "last_check_status"]
    if action == "create":
        data = {**args.settings, **dict(args.set), "kind": args.kind}
        try:
            settings = wire.decode(json.dumps(data).encode(), wire.Target)
        except msgspec.ValidationError as exc:
            raise SystemExit(f"certfleet: invalid {args.kind} target settings: {exc}") from None
        return (await api.call("targets.create", wire.TargetCreate(name=args.name, agent_id=args.agent,
                                                                   settings=settings)), columns, None)
    if action == "list":
        query = {"agent_id": args.agent} if args.agent else None
        return await api.call("targets.list", query=query), columns, None
    detail = columns + ["last_detail", "last_check_detail", "certificates", "counters", "settings"]
    if action == "show":
        return await api.call("targets.get", target_id=args.target), detail, None
    info = await api.call("targets.test", target_id=args.target)
    deadline = time.monotonic() + args.wait
    while info.last_check_status == "queued" and time.monotonic() < deadline:
        await trio.sleep(1)
        info = await api.call("targets.get", target_id=args.target)
    return info, ["name", "last_check_status", "last_check_detail"], None


def add_discovery(commands: argparse._SubParsersAction) -> None:
    discovery = commands.add_parser("discovery", help="certificates the agents found").add_subparsers(
        dest="action", required=True)
    found = discovery.add_parser("list", help="the inventory (finds still in place, unless --include-removed)")
    found.add_argument("--status", choices=["unmanaged", "managed", "dismissed"], help="only finds in this state")
    found.add_argument("--agent", help="only this agent's finds")
    found.add_argument("--source", choices=["filesystem", "network"], help="only finds from files or from probes")
    found.add_argument("--issuer", help="part of the issuer's name, any case")
    found.add_argument("--expires-within", type=int, metavar="DAYS", help="only those expiring in DAYS days")
    found.add_argument("--expires-before", type=int, metavar="UNIX_TIME",
                       help="only those expiring before this time (seconds since 1970, UTC)")
    found.add_argument("--include-removed", action="store_true", help="also finds the agents reported gone")
    found.add_argument("--after", type=int, default=0, help="the last id of the previous page")
    found.add_argument("--limit", type=int, default=100, help="at most this many (default: %(default)s)")
    discovery.add_parser("show", help="one find, with issuer, names and serial").add_argument(
        "discovery_id", help="the find's id")
    dismiss = discovery.add_parser("dismiss", help="the find needs no management; say why")
    dismiss.add_argument("discovery_id", help="the find's id")
    dismiss.add_argument("--reason", required=True, help="why it needs no management (kept in the audit trail)")
    claim = discovery.add_parser("claim", help="manage the find: renewed (and deployed back) from now on")
    claim.add_argument("discovery_id", help="the find's id")
    claim.add_argument("--profile", default="default", help="profile of the managed certificate"
                                                            " (default: %(default)s)")
    claim.add_argument("--renewal-policy", help="a renewal policy name or id (default: two thirds, new key)")
    claim.add_argument("--lifetime", type=duration, help="of renewed certificates (default: the found one's)")
    claim.add_argument("--key-type", choices=[k.value for k in KeyType], help="default: like the found key")
    claim.add_argument("--tag", action="append", default=[], help="a tag for the managed certificate (repeatable)")
    claim_target = claim.add_mutually_exclusive_group()
    claim_target.add_argument("--target", help="an existing target of the agent (required for network finds)")
    claim_target.add_argument("--kind", choices=KINDS, help="make a new target of this kind from --settings/--set")
    claim.add_argument("--settings", type=_settings, default={}, help="the new target's settings (JSON or @FILE)")
    claim.add_argument("--set", type=setting, action="append", default=[], metavar="KEY=VALUE",
                       help="one setting of the new target (VALUE is parsed as JSON if it can be)")
    claim.add_argument("--target-name", help="name of the target the claim makes (default: discovered-ID)")
    claim.add_argument("--key-path", help="where a file claimed in place gets its key (default: beside it)")
    scan = discovery.add_parser("scan", help="ask an agent to scan its files now")
    scan.add_argument("agent_id", help="the agent's id")
    scan.add_argument("--root", action="append", default=[], help="only this directory (inside the agent's roots)")
    probe = discovery.add_parser("probe", help="ask an agent to probe address ranges for TLS servers")
    probe.add_argument("agent_id", help="the agent's id")
    probe.add_argument("--range", action="append", required=True, dest="ranges", metavar="CIDR",
                       help="repeatable; must lie inside the ranges the agent's operator allowed")
    probe.add_argument("--port", action="append", type=int, required=True, dest="ports", help="repeatable")
    probe.add_argument("--server-name", action="append", default=[], dest="server_names",
                       help="also handshake with this SNI name (repeatable)")
    probe.add_argument("--timeout", type=float, default=3.0, help="seconds per connection attempt")
    probe.add_argument("--concurrency", type=int, default=64,
                       help="connection attempts at once (default: %(default)s)")
    scans = discovery.add_parser("scans", help="recent scan and probe orders and how they went")
    scans.add_argument("--agent", help="only this agent's orders")


async def run_discovery(api: ApiClient, args: argparse.Namespace) -> Any:
    action = args.action
    if action == "list":
        query = {"status": args.status, "agent_id": args.agent, "source": args.source, "issuer": args.issuer,
                 "expires_within_days": args.expires_within, "expires_before": args.expires_before,
                 "include_removed": 1 if args.include_removed else None, "after": args.after, "limit": args.limit}
        page = await api.call("discovery.list", query={k: v for k, v in query.items() if v is not None})
        return page.certificates, DISCOVERY_COLUMNS, None
    detail = DISCOVERY_COLUMNS + ["fingerprint_sha256", "issuer", "sans", "serial", "present", "first_seen",
                                  "last_seen", "dismiss_reason", "managed_certificate_id", "claimed_certificate_id"]
    if action == "show":
        return await api.call("discovery.get", discovery_id=args.discovery_id), detail, None
    scan_columns = ["order_id", "agent_id", "kind", "status", "detail"]
    if action == "scan":
        return (await api.call("discovery.scan", wire.DiscoveryScanRequest(agent_id=args.agent_id, roots=args.root)),
                scan_columns, None)
    if action == "probe":
        return (await api.call("discovery.probe", wire.DiscoveryProbeRequest(
            agent_id=args.agent_id, ranges=args.ranges, ports=args.ports, server_names=args.server_names,
            timeout_seconds=args.timeout, concurrency=args.concurrency)), scan_columns, None)
    if action == "scans":
        return (await api.call("discovery.scans", query={"agent_id": args.agent} if args.agent else {}),
                scan_columns, None)
    if action == "dismiss":
        return (await api.call("discovery.dismiss", wire.DiscoveryDismiss(reason=args.reason),
                               discovery_id=args.discovery_id), detail, None)
    target = None
    if args.kind:
        data = {**args.settings, **dict(args.set), "kind": args.kind}
        try:
            target = wire.decode(json.dumps(data).encode(), wire.Target)
        except msgspec.ValidationError as exc:
            raise SystemExit(f"certfleet: invalid {args.kind} target settings: {exc}") from None
    elif args.settings or args.set:
        raise SystemExit("certfleet: --settings and --set describe a new target: give its --kind")
    body = wire.DiscoveryClaim(profile=args.profile, renewal_policy=args.renewal_policy,
                               lifetime_seconds=args.lifetime, key_type=KeyType(args.key_type) if args.key_type else None,
                               tags=args.tag, target_id=args.target, target=target, target_name=args.target_name,
                               key_path=args.key_path)
    return (await api.call("discovery.claim", body, discovery_id=args.discovery_id),
            CERTIFICATE_COLUMNS + ["target_id", "renew_at"], None)
