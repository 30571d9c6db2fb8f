"""The ``certfleet`` command: serve, demo, and the operator's API commands.

One module per command group, each adding its commands to the parser and running them:

* ``service``: serve, demo, bootstrap (and ``bootstrap --reissue`` on the coordinator's host)
* ``fleet``: agents, targets, discovery
* ``certificates``: certificates, profiles, approvals, policies (renewal), jobs
* ``pki``: issuers
* ``access``: keys, roles, grants, me, permissions
* ``notifications``: channels, notifications
* ``status``: status, version
* ``audit``: audit list and export, and ``audit verify`` on the coordinator's host

This module assembles the parser, opens the API connection, and prints what a
command returns.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import msgspec
import trio

from certfleet.shared import logs

from ..client import ApiClient, ApiError, ConnectionFailure
from ..initialize import InitializationError
from ..storage import StorageError
from ..tables import printable, render
from . import access, audit, certificates, fleet, notifications, pki, service, status

# The column lists a certificate and an API key print with, for the tests of the printed tables.
from .access import KEY_COLUMNS as KEY_COLUMNS
from .certificates import CERTIFICATE_COLUMNS as CERTIFICATE_COLUMNS

__all__ = ["main"]

URL_SETTING = "--url (or CERTFLEET_URL)"

AddCommands = Callable[[argparse._SubParsersAction], None]
# A runner returns (value, columns, message): value None when the command printed its
# own output, message the text printed in place of the table without --json.
RunCommand = Callable[[ApiClient, argparse.Namespace], Awaitable[Any]]

# The command groups after serve, demo and bootstrap, in the order `certfleet --help` lists
# them: the function adding each group's commands and the one running them through the API
# (main runs `audit verify` and `permissions --markdown` without the API).
_API_GROUPS: dict[str, tuple[AddCommands, RunCommand]] = {
    "agents": (fleet.add_agents, fleet.run_agents),
    "certificates": (certificates.add_certificates, certificates.run_certificates),
    "targets": (fleet.add_targets, fleet.run_targets),
    "discovery": (fleet.add_discovery, fleet.run_discovery),
    "profiles": (certificates.add_profiles, certificates.run_profiles),
    "issuers": (pki.add_issuers, pki.run_issuers),
    "approvals": (certificates.add_approvals, certificates.run_approvals),
    "keys": (access.add_keys, access.run_keys),
    "roles": (access.add_roles, access.run_roles),
    "grants": (access.add_grants, access.run_grants),
    "policies": (certificates.add_policies, certificates.run_policies),
    "jobs": (certificates.add_jobs, certificates.run_jobs),
    "channels": (notifications.add_channels, notifications.run_channels),
    "notifications": (notifications.add_notifications, notifications.run_notifications),
    "me": (access.add_me, access.run_me),
    "status": (status.add_status, status.run_status),
    "version": (status.add_version, status.run_version),
    "permissions": (access.add_permissions, access.run_permissions),
    "audit": (audit.add_audit, audit.run_audit),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="certfleet", description="certfleet coordinator and operator CLI")
    parser.add_argument("--url", default=os.environ.get("CERTFLEET_URL", "https://127.0.0.1:8443"),
                        help="coordinator URL (env CERTFLEET_URL)")
    parser.add_argument("--api-key", default=os.environ.get("CERTFLEET_API_KEY"),
                        help="API key (env CERTFLEET_API_KEY)")
    parser.add_argument("--ca-bundle", default=os.environ.get("CERTFLEET_CA_BUNDLE"),
                        help="PEM file trusted for the coordinator's TLS (env CERTFLEET_CA_BUNDLE;"
                             " the coordinator writes DATA_DIR/tls/ca.pem)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    commands = parser.add_subparsers(dest="command", required=True)
    service.add_commands(commands)
    for add_commands, _ in _API_GROUPS.values():
        add_commands(commands)
    return parser


def _print(args: argparse.Namespace, value: Any, columns: list[str]) -> None:
    builtins = msgspec.to_builtins(value)
    if args.json:
        print(json.dumps(builtins, indent=2))
        return
    print(render(builtins, columns, now=int(time.time())))


async def _api(args: argparse.Namespace) -> int:
    """Run one command through the API and print what it returns."""
    if args.command == "bootstrap":
        if not args.token:
            print("certfleet: pass --token or set CERTFLEET_BOOTSTRAP_TOKEN", file=sys.stderr)
            return 2
        client = ApiClient(args.url, api_key=None, ca_bundle=args.ca_bundle, url_setting=URL_SETTING)
        run = service.exchange_bootstrap_token
    else:
        if not args.api_key:
            print("certfleet: set CERTFLEET_API_KEY or pass --api-key", file=sys.stderr)
            return 2
        client = ApiClient(args.url, api_key=args.api_key, ca_bundle=args.ca_bundle, url_setting=URL_SETTING)
        _, run = _API_GROUPS[args.command]
    async with client as api:
        value, columns, message = await run(api, args)
    if value is None:
        return 0
    if message and not args.json:
        print(message)
    else:
        _print(args, value, columns or [])
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        if args.command in ("serve", "demo"):
            return service.start(args)
        if args.command == "bootstrap" and args.reissue:
            return trio.run(service.reissue_bootstrap, args)
        if args.command == "audit" and args.action == "verify":
            return trio.run(audit.verify, args)
        if args.command == "permissions" and args.markdown:
            from ..auth.rbac import role_table_markdown

            sys.stdout.write(role_table_markdown())
            return 0
        return trio.run(_api, args)
    except KeyboardInterrupt:
        return 130
    except (InitializationError, StorageError) as exc:
        print(f"certfleet: cannot start: {exc}", file=sys.stderr)
        return 1
    except (ApiError, ConnectionFailure) as exc:
        print(f"certfleet: {printable(str(exc))}", file=sys.stderr)
        return 1
    except (OSError, httpx.HTTPError) as exc:
        print(f"certfleet: {printable(str(exc) or type(exc).__name__)}", file=sys.stderr)
        return 1
