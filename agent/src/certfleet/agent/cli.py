"""The ``certfleet-agent`` command: ``enroll``, ``run``, ``config check``, ``deploy --dry-run``
and ``rollback``."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import trio

from certfleet.shared import logs
from certfleet.shared.connection import InsecureUrl, describe_failure, require_https

from .client import TIMEOUTS, TRUST_HINT, CoordinatorError
from .config import (
    CONFIG_ENV,
    DEFAULT_CONFIG_FILE,
    AgentConfig,
    AgentSettings,
    ConfigError,
    check_enrolled_ca,
    load_settings,
)
from .enroll import EnrollmentError, enroll, normalize_fingerprint

__all__ = ["main"]

log = logging.getLogger("certfleet.agent")

INVALID_CONFIG = 2
"""Exit status for settings that cannot work (the service manager does not restart on it)."""


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[a-z0-9][a-z0-9._/-]{0,62}", key) \
            or not re.fullmatch(r"[A-Za-z0-9._:/@-]{0,128}", value):
        raise argparse.ArgumentTypeError("labels are KEY=VALUE: a lower-case key (letters, digits, . _ / -) and a"
                                         " value of letters, digits and . _ : / @ -")
    return key, value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="certfleet-agent", description="certfleet agent")
    parser.add_argument("--config", type=Path, default=None,
                        help=f"operator settings, TOML (env {CONFIG_ENV}; default {DEFAULT_CONFIG_FILE} if it exists)")
    parser.add_argument("--agent-dir", type=Path, default=None,
                        help="state directory (overrides state_dir and env CERTFLEET_AGENT_DIR)")
    commands = parser.add_subparsers(dest="command", required=True)
    enroll_cmd = commands.add_parser("enroll", help="register this host with a coordinator")
    enroll_cmd.add_argument("--coordinator", help="https://HOST:8443 (default: coordinator_url from the config)")
    enroll_cmd.add_argument("--token", default=os.environ.get("CERTFLEET_ENROLLMENT_TOKEN"),
                            help="enrollment token (env CERTFLEET_ENROLLMENT_TOKEN)")
    enroll_cmd.add_argument("--ca-fingerprint",
                            help="SHA-256 of the coordinator's root CA certificate"
                                 " (default: ca_fingerprint from the config)")
    enroll_cmd.add_argument("--name", help="agent name (default: the hostname)")
    enroll_cmd.add_argument("--force", action="store_true", help="replace an existing enrollment")
    enroll_cmd.add_argument("--label", action="append", default=[], type=_label, metavar="KEY=VALUE",
                            help="a label for this agent (repeatable); the token's labels win on the same key")
    enroll_cmd.add_argument("--json", action="store_true", help="print the agent id and state directory as JSON")
    run = commands.add_parser("run", help="poll for work orders and execute them")
    run.add_argument("--coordinator", help="override the coordinator URL (config, env, enrollment)")
    config = commands.add_parser("config", help="the operator settings (agent.toml)")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    check = config_commands.add_parser("check", help="validate the settings and print the effective values"
                                                     " and where each came from (exit 2 if invalid)")
    check.add_argument("--json", action="store_true", help="print the settings, their sources and the enrollment"
                                                           " as JSON")
    deploy = commands.add_parser("deploy", help="show the deployment plan for a target (only --dry-run:"
                                                " real deployments come from signed work orders)")
    deploy.add_argument("--dry-run", action="store_true", required=True,
                        help="print the plan and change nothing (required)")
    which = deploy.add_mutually_exclusive_group(required=True)
    which.add_argument("--certificate", metavar="CERTIFICATE_OR_TARGET_ID",
                       help="a certificate (or target) this agent deployed: its target and latest certificate")
    which.add_argument("--target-file", type=Path, help="a target's settings as JSON (kind included)")
    scan = commands.add_parser("scan", help="look for certificates in files now and report them to the"
                                            " coordinator (as a scheduled scan would)")
    scan.add_argument("--root", action="append", default=[], metavar="DIR",
                      help="scan only DIR (inside the configured roots); repeatable")
    scan.add_argument("--no-report", action="store_true",
                      help="print what is found; send nothing, record nothing")
    scan.add_argument("--json", action="store_true", help="print the finds and problems as JSON")
    rollback = commands.add_parser("rollback", help="restore what the latest deployment to a target replaced,"
                                                    " and reload")
    rollback.add_argument("target", metavar="TARGET_ID_OR_CERTIFICATE_ID",
                          help="the target, or a certificate deployed to it")
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


def _config_check(settings: AgentSettings, as_json: bool) -> int:
    """Print the effective settings with their sources, and the enrollment they apply to."""
    paths = settings.paths()
    enrollment = None
    if paths.config.exists():
        try:
            enrolled = AgentConfig.load(paths)
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"{paths.config} (written at enrollment) is unreadable: {exc!r}") from None
        enrollment = {"agent_id": enrolled.agent_id, "coordinator": enrolled.coordinator,
                      "ca_matches_pin": check_enrolled_ca(settings, paths)}
    effective = settings.effective()
    if as_json:
        print(json.dumps({"valid": True, "config_file": str(settings.config_file) if settings.config_file else None,
                          "settings": {k: {"value": v, "source": s} for k, (v, s) in effective.items()},
                          "enrollment": enrollment}, indent=2))
        return 0
    print(f"config file: {settings.config_file or f'none ({DEFAULT_CONFIG_FILE} does not exist)'}")
    shown = {key: "(unset)" if value is None else value if isinstance(value, str) else json.dumps(value)
             for key, (value, _) in effective.items()}
    key_width, value_width = max(map(len, shown)), max(map(len, shown.values()))
    for key, (_, source) in effective.items():
        print(f"  {key:<{key_width}} = {shown[key]:<{value_width}}  [{source}]")
    if enrollment is None:
        print(f"enrollment: none ({paths.config} does not exist)")
    else:
        pin = {True: "; its CA matches ca_fingerprint", None: ""}[enrollment["ca_matches_pin"]]
        print(f"enrollment: {enrollment['agent_id']} with {enrollment['coordinator']}{pin}")
    print("configuration is valid")
    return 0


def _reloader(args: argparse.Namespace, running: AgentSettings) -> Callable[[], None]:
    """What SIGHUP does: read the settings again and apply what can change live (the
    log level); a change to anything else is reported, since it needs a restart. An
    invalid file raises :class:`ConfigError` and changes nothing."""

    def reload() -> None:
        fresh = load_settings(args.config, agent_dir=args.agent_dir)
        logging.getLogger().setLevel(fresh.log_level_number)
        before, after = running.effective(), fresh.effective()
        changed = [key for key in after if key != "log_level" and after[key][0] != before[key][0]]
        if changed:
            log.warning("settings changed that apply only after a restart: %s", ", ".join(changed))
        log.info("settings reloaded; log level %s", fresh.log_level)

    return reload


def _invalid(message: str, *, as_json: bool = False) -> int:
    if as_json:
        print(json.dumps({"valid": False, "error": message}))
    print(f"certfleet-agent: {message}", file=sys.stderr)
    return INVALID_CONFIG


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    checking = args.command == "config"
    as_json = checking and args.json
    try:
        settings = load_settings(args.config, agent_dir=args.agent_dir)
        if checking:
            return _config_check(settings, as_json)
    except ConfigError as exc:
        return _invalid(str(exc), as_json=as_json)
    logs.configure(settings.log_level_number)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    paths = settings.paths()
    try:
        if args.command == "enroll":
            coordinator = args.coordinator or settings.coordinator_url
            fingerprint = args.ca_fingerprint or settings.ca_fingerprint
            if not args.token:
                return _invalid("pass --token or set CERTFLEET_ENROLLMENT_TOKEN")
            if not coordinator or not fingerprint:
                return _invalid("pass --coordinator and --ca-fingerprint, or set coordinator_url and"
                                " ca_fingerprint in the config")
            require_https(coordinator, setting="--coordinator" if args.coordinator else "coordinator_url")
            if args.ca_fingerprint and settings.ca_fingerprint and \
                    normalize_fingerprint(args.ca_fingerprint) != settings.ca_fingerprint:
                return _invalid("--ca-fingerprint differs from ca_fingerprint in the config; the agent"
                                " would refuse to run with that enrollment")
            enrolled = trio.run(lambda: enroll(paths, coordinator=coordinator, token=args.token,
                                               ca_fingerprint=fingerprint, name=args.name, force=args.force,
                                               labels=dict(args.label)))
            if args.json:
                print(json.dumps({"agent_id": enrolled.agent_id, "agent_dir": str(paths.root)}))
            else:
                print(f"enrolled as {enrolled.agent_id}; state in {paths.root}")
            return 0
        if args.command == "scan":
            from . import manual

            try:
                found = trio.run(lambda: manual.scan_by_hand(paths, roots=args.root,
                                                             configured_roots=settings.discovery_roots,
                                                             report=not args.no_report))
            except manual.ManualError as exc:
                print(f"certfleet-agent: {exc}", file=sys.stderr)
                return 1
            if args.json:
                print(json.dumps(found, indent=2))
            else:
                for record in found.get("certificates", []):
                    print(f"{record['path']}#{record['position']}  {record['subject']}  not after"
                          f" {record['not_after']}  {record['fingerprint_sha256'][:16]}"
                          + ("  (key beside it)" if record["has_private_key"] else ""))
                for problem in found.get("problems", []):
                    print(f"problem: {problem['path']}: {problem['kind']}: {problem['detail']}")
                print(found["summary"])
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

        try:
            check_enrolled_ca(settings, paths)
        except ConfigError as exc:
            return _invalid(str(exc))
        if args.coordinator:
            require_https(args.coordinator, setting="--coordinator")
        trio.run(functools.partial(run_agent, paths, args.coordinator or settings.coordinator_url, _clock(),
                                   on_reload=_reloader(args, settings), discovery_roots=settings.discovery_roots,
                                   probe_ranges=settings.probe_ranges, watch_changes=settings.watch_changes,
                                   proxy_targets=settings.proxy_targets))
        return 0
    except KeyboardInterrupt:
        return 130
    except InsecureUrl as exc:
        # Settings that cannot work: the service manager should not restart on it.
        return _invalid(str(exc))
    except httpx.TransportError as exc:
        try:
            url = str(exc.request.url.copy_with(path="/", query=None))
        except RuntimeError:  # raised before a request was made
            url = "the coordinator"
        print(f"certfleet-agent: {describe_failure(url, exc, trust_hint=TRUST_HINT, timeouts=TIMEOUTS)}",
              file=sys.stderr)
        return 1
    except (EnrollmentError, CoordinatorError, httpx.HTTPError, FileNotFoundError) as exc:
        print(f"certfleet-agent: {str(exc) or type(exc).__name__}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
