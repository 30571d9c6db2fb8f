"""The ``certfleet`` command: serve, demo, and the operator's API commands."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import msgspec
import trio

from certfleet.shared import wire
from certfleet.shared.pki import KeyType

from .client import ApiClient, ApiError
from .initialize import InitializationError
from .settings import Settings
from .storage import StorageError

__all__ = ["main"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> int:
    """``90d``, ``12h``, ``30m``, ``45s`` or plain seconds."""
    match = re.fullmatch(r"(\d+)([smhd]?)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (use e.g. 90d, 12h, 30m)")
    return int(match.group(1)) * _UNITS[match.group(2) or "s"]


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError("labels are key=value")
    return key, value


def _argv(text: str) -> list[str]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError("the reload command is a JSON array of arguments") from exc
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise argparse.ArgumentTypeError("the reload command is a non-empty JSON array of strings")
    return value


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

    serve = commands.add_parser("serve", help="run the coordinator")
    serve.add_argument("--listen", default="127.0.0.1:8443")
    serve.add_argument("--data-dir", type=Path)
    serve.add_argument("--tls-san", action="append", default=[], help="extra name for the TLS certificate")

    demo = commands.add_parser("demo", help="coordinator + agent + one certificate, end to end")
    demo.add_argument("--data-dir", type=Path, default=Path("demo-data"))
    demo.add_argument("--listen", default="127.0.0.1:8443")
    demo.add_argument("--once", action="store_true", help="exit after the first deployment")

    bootstrap = commands.add_parser("bootstrap", help="exchange the bootstrap token for an admin API key")
    bootstrap.add_argument("--token", default=os.environ.get("CERTFLEET_BOOTSTRAP_TOKEN"))

    agents = commands.add_parser("agents", help="agents and enrollment").add_subparsers(dest="action", required=True)
    token = agents.add_parser("enroll-token", help="mint an enrollment token")
    token.add_argument("--uses", type=int, default=1)
    token.add_argument("--ttl", type=duration, default=3600)
    token.add_argument("--label", type=_label, action="append", default=[])
    agents.add_parser("list")
    show_agent = agents.add_parser("show")
    show_agent.add_argument("agent_id")

    certificates = commands.add_parser("certificates", help="managed certificates").add_subparsers(
        dest="action", required=True)
    create = certificates.add_parser("create", help="create a certificate and queue its issuance")
    create.add_argument("--cn", required=True)
    create.add_argument("--san", action="append", default=[])
    create.add_argument("--agent", required=True)
    create.add_argument("--key-type", choices=[k.value for k in KeyType], default=KeyType.EC_P256.value)
    create.add_argument("--lifetime", type=duration, default=90 * 86400)
    create.add_argument("--target-dir", required=True, help="directory for the file target")
    create.add_argument("--mode", type=lambda s: int(s, 8), default=0o644)
    create.add_argument("--owner")
    create.add_argument("--group")
    create.add_argument("--reload-command", type=_argv,
                        help='argv as a JSON array, e.g. \'["systemctl","reload","nginx"]\'')
    certificates.add_parser("list")
    show = certificates.add_parser("show")
    show.add_argument("certificate_id")
    return parser


def _print(args: argparse.Namespace, value: Any, columns: list[str]) -> None:
    builtins = msgspec.to_builtins(value)
    if args.json:
        print(json.dumps(builtins, indent=2))
        return
    rows = builtins if isinstance(builtins, list) else [builtins]
    table = [[("" if row.get(c) is None else str(row.get(c))) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in table)) if table else len(c) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in table:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


async def _api(args: argparse.Namespace) -> int:
    needs_key = args.command != "bootstrap"
    if needs_key and not args.api_key:
        print("certfleet: set CERTFLEET_API_KEY or pass --api-key", file=sys.stderr)
        return 2
    async with ApiClient(args.url, api_key=args.api_key if needs_key else None, ca_bundle=args.ca_bundle) as api:
        if args.command == "bootstrap":
            if not args.token:
                print("certfleet: pass --token or set CERTFLEET_BOOTSTRAP_TOKEN", file=sys.stderr)
                return 2
            result = await api.call("auth.bootstrap", wire.BootstrapRequest(token=args.token))
            if args.json:
                _print(args, result, [])
            else:
                print(f"admin API key (shown once; export it as CERTFLEET_API_KEY):\n{result.api_key}")
        elif args.command == "agents" and args.action == "enroll-token":
            result = await api.call("agents.enrollment-token.create", wire.EnrollmentTokenCreate(
                uses=args.uses, ttl_seconds=args.ttl, labels=dict(args.label)))
            if args.json:
                _print(args, result, [])
            else:
                print(f"enrollment token (shown once; {result.uses_left} use(s)):\n{result.token}")
        elif args.command == "agents":
            if args.action == "list":
                _print(args, await api.call("agents.list"), ["id", "name", "last_seen_at"])
            else:
                _print(args, await api.call("agents.get", agent_id=args.agent_id),
                       ["id", "name", "created_at", "last_seen_at"])
        elif args.command == "certificates":
            columns = ["id", "names", "status", "agent_id", "not_after", "last_error"]
            if args.action == "create":
                target = wire.FileTarget(directory=str(Path(args.target_dir).resolve()), mode=args.mode,
                                         owner=args.owner, group=args.group, reload_command=args.reload_command)
                body = wire.CertificateCreate(common_name=args.cn, sans=args.san, agent_id=args.agent,
                                              target=target, key_type=KeyType(args.key_type),
                                              lifetime_seconds=args.lifetime)
                _print(args, await api.call("certificates.create", body), columns)
            elif args.action == "list":
                _print(args, await api.call("certificates.list"), columns)
            else:
                _print(args, await api.call("certificates.get", certificate_id=args.certificate_id),
                       columns + ["serial", "fingerprint_sha256"])
    return 0


async def _termination_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for received in signals:
            logging.getLogger("certfleet.server").info("%s received; shutting down", signal.Signals(received).name)
            return


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        if args.command == "serve":
            from .server import run_coordinator

            settings = Settings.from_env(data_dir=args.data_dir, listen=args.listen, tls_sans=tuple(args.tls_san))
            trio.run(functools.partial(run_coordinator, settings, shutdown_trigger=_termination_signal))
            return 0
        if args.command == "demo":
            from .demo import run_demo

            return trio.run(run_demo, args.data_dir, args.listen, args.once)
        return trio.run(_api, args)
    except KeyboardInterrupt:
        return 130
    except (InitializationError, StorageError) as exc:
        print(f"certfleet: cannot start: {exc}", file=sys.stderr)
        return 1
    except ApiError as exc:
        print(f"certfleet: {exc}", file=sys.stderr)
        return 1
    except (OSError, httpx.HTTPError) as exc:
        print(f"certfleet: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
