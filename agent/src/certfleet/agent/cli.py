"""The ``certfleet-agent`` command: ``enroll``, ``run``, ``deploy --dry-run`` and ``rollback``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import httpx
import trio

from certfleet.shared import logs

from .client import CoordinatorError
from .config import AgentPaths, default_agent_dir
from .enroll import EnrollmentError, enroll

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="certfleet-agent", description="certfleet agent")
    parser.add_argument("--agent-dir", type=Path, default=None,
                        help="state directory (env CERTFLEET_AGENT_DIR)")
    commands = parser.add_subparsers(dest="command", required=True)
    enroll_cmd = commands.add_parser("enroll", help="register this host with a coordinator")
    enroll_cmd.add_argument("--coordinator", required=True, help="https://HOST:8443")
    enroll_cmd.add_argument("--token", default=os.environ.get("CERTFLEET_ENROLLMENT_TOKEN"),
                            help="enrollment token (env CERTFLEET_ENROLLMENT_TOKEN)")
    enroll_cmd.add_argument("--ca-fingerprint", required=True,
                            help="SHA-256 of the coordinator's root CA certificate")
    enroll_cmd.add_argument("--name", help="agent name (default: the hostname)")
    enroll_cmd.add_argument("--force", action="store_true", help="replace an existing enrollment")
    enroll_cmd.add_argument("--json", action="store_true")
    run = commands.add_parser("run", help="poll for work orders and execute them")
    run.add_argument("--coordinator", help="override the coordinator URL stored at enrollment")
    deploy = commands.add_parser("deploy", help="show the deployment plan for a target (only --dry-run:"
                                                " real deployments come from signed work orders)")
    deploy.add_argument("--dry-run", action="store_true", required=True)
    which = deploy.add_mutually_exclusive_group(required=True)
    which.add_argument("--certificate", metavar="CERTIFICATE_OR_TARGET_ID",
                       help="a certificate (or target) this agent deployed: its target and latest certificate")
    which.add_argument("--target-file", type=Path, help="a target's settings as JSON (kind included)")
    rollback = commands.add_parser("rollback", help="restore what the latest deployment to a target replaced,"
                                                    " and reload")
    rollback.add_argument("target", metavar="TARGET_ID_OR_CERTIFICATE_ID")
    return parser


def _clock():
    """The wall clock; ``CERTFLEET_AGENT_CLOCK_FILE`` (a test facility, like the
    failpoints) makes the agent read the time from a file a test moves forward, so a
    real agent process can live through a simulated day."""
    path = os.environ.get("CERTFLEET_AGENT_CLOCK_FILE")
    if not path:
        return time.time
    clock_file = Path(path)
    return lambda: float(clock_file.read_text())


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    paths = AgentPaths(args.agent_dir or default_agent_dir())
    try:
        if args.command == "enroll":
            if not args.token:
                print("certfleet-agent: pass --token or set CERTFLEET_ENROLLMENT_TOKEN", file=sys.stderr)
                return 2
            enrolled = trio.run(lambda: enroll(paths, coordinator=args.coordinator, token=args.token,
                                               ca_fingerprint=args.ca_fingerprint, name=args.name,
                                               force=args.force))
            if args.json:
                print(json.dumps({"agent_id": enrolled.agent_id, "agent_dir": str(paths.root)}))
            else:
                print(f"enrolled as {enrolled.agent_id}; state in {paths.root}")
            return 0
        if args.command in ("deploy", "rollback"):
            from . import manual

            try:
                if args.command == "deploy":
                    target_json = args.target_file.read_bytes() if args.target_file else None
                    print(trio.run(lambda: manual.dry_run(paths, certificate_id=args.certificate,
                                                          target_json=target_json)))
                else:
                    print(trio.run(manual.roll_back, paths, args.target))
            except manual.ManualError as exc:
                print(f"certfleet-agent: {exc}", file=sys.stderr)
                return 1
            return 0
        from .daemon import run_agent

        trio.run(run_agent, paths, args.coordinator, _clock())
        return 0
    except KeyboardInterrupt:
        return 130
    except (EnrollmentError, CoordinatorError, httpx.HTTPError, FileNotFoundError) as exc:
        print(f"certfleet-agent: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
