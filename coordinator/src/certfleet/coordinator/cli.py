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
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import trio

from certfleet.shared import logs, wire
from certfleet.shared.pki import KeyType
from certfleet.shared.targets import KINDS

from .client import ApiClient, ApiError, ConnectionFailure
from .initialize import InitializationError
from .settings import Settings
from .storage import StorageError
from .tables import format_value, printable, render

__all__ = ["main"]

URL_SETTING = "--url (or CERTFLEET_URL)"

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
REASONS = ["unspecified", "key-compromise", "ca-compromise", "affiliation-changed", "superseded",
           "cessation-of-operation", "certificate-hold", "privilege-withdrawn", "aa-compromise", "remove-from-crl"]
ISSUER_REASONS = ["unspecified", "key-compromise", "ca-compromise", "affiliation-changed", "superseded",
                  "cessation-of-operation", "privilege-withdrawn"]


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


def _setting(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError("expected KEY=VALUE")
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


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
    serve.add_argument("--listen", default="127.0.0.1:8443", metavar="HOST:PORT",
                       help="address and port of the HTTPS API (default: %(default)s; port 0: any free port)")
    serve.add_argument("--data-dir", type=Path,
                       help="where the master key, TLS files and SQLite database live (env CERTFLEET_DATA_DIR;"
                            " default: /var/lib/certfleet for root, else ~/.local/share/certfleet)")
    serve.add_argument("--tls-san", action="append", default=[], metavar="NAME",
                       help="extra DNS name or IP address for the TLS certificate made on first start (repeatable)")

    demo = commands.add_parser("demo", help="coordinator + agent + one certificate, end to end")
    demo.add_argument("--data-dir", type=Path, default=Path("demo-data"),
                      help="where the demo keeps its coordinator, agent and certificate (default: %(default)s)")
    demo.add_argument("--listen", default="127.0.0.1:8443", metavar="HOST:PORT",
                      help="address and port of the demo coordinator (default: %(default)s; port 0: any free port)")
    demo.add_argument("--once", action="store_true", help="exit after the first deployment")

    bootstrap = commands.add_parser("bootstrap", help="exchange the bootstrap token for an admin API key")
    bootstrap.add_argument("--token", default=os.environ.get("CERTFLEET_BOOTSTRAP_TOKEN"),
                           help="the one-time token the coordinator printed at first start"
                                " (env CERTFLEET_BOOTSTRAP_TOKEN)")
    bootstrap.add_argument("--reissue", action="store_true",
                           help="on the coordinator's host: print a new token in place of one never exchanged"
                                " (reads the data dir and database directly)")
    bootstrap.add_argument("--data-dir", type=Path,
                           help="with --reissue: the coordinator's data dir (env CERTFLEET_DATA_DIR)")
    bootstrap.add_argument("--database-url", default=os.environ.get("CERTFLEET_DATABASE_URL"),
                           help="with --reissue: the coordinator's database, if not the SQLite file in the data dir"
                                " (env CERTFLEET_DATABASE_URL)")

    agents = commands.add_parser("agents", help="agents and enrollment").add_subparsers(dest="action", required=True)
    token = agents.add_parser("enroll-token", help="mint an enrollment token")
    token.add_argument("--uses", type=int, default=1, help="how many agents may enroll with it (default: %(default)s)")
    token.add_argument("--ttl", type=duration, default=3600,
                       help="valid for this long, e.g. 1h, 7d (default: one hour)")
    token.add_argument("--label", type=_label, action="append", default=[], metavar="KEY=VALUE",
                       help="a label every agent enrolled with it gets (repeatable; wins over the agent's own)")
    agents.add_parser("list", help="every agent, with liveness and when it was last seen")
    show_agent = agents.add_parser("show", help="one agent, with its labels")
    show_agent.add_argument("agent_id", help="the agent's id (see `certfleet agents list`)")
    retire_agent = agents.add_parser("retire", help="refuse the agent's identity from now on, cancel its work,"
                                                    " stop renewing its certificates; the agent stops itself")
    retire_agent.add_argument("agent_id", help="the agent's id")

    certificates = commands.add_parser("certificates", help="managed certificates").add_subparsers(
        dest="action", required=True)
    create = certificates.add_parser("create", help="create a certificate and queue its issuance")
    create.add_argument("--cn", required=True, help="the common name, also put in the SANs")
    create.add_argument("--san", action="append", default=[],
                        help="another DNS name, IP address, e-mail or URI in the certificate (repeatable)")
    create.add_argument("--agent", required=True, help="id of the agent that holds the key and deploys it")
    create.add_argument("--profile", default="default", help="profile (name or id) whose policy applies"
                                                             " (default: %(default)s)")
    create.add_argument("--tag", action="append", default=[], help="a tag for filtering and bulk revocation"
                                                                   " (repeatable)")
    create.add_argument("--key-type", choices=[k.value for k in KeyType], default=KeyType.EC_P256.value,
                        help="the key the agent makes (default: %(default)s)")
    create.add_argument("--lifetime", type=duration,
                        help="e.g. 90d, 12h (default: the profile's default lifetime, within its maximum)")
    where = create.add_mutually_exclusive_group(required=True)
    where.add_argument("--target", help="a named target (see `certfleet targets`)")
    where.add_argument("--target-dir", help="directory for an inline file target")
    create.add_argument("--renewal-policy", help="a renewal policy name or id (default: two thirds, new key)")
    create.add_argument("--mode", type=lambda s: int(s, 8), default=0o644,
                        help="with --target-dir: octal mode of the certificate files (default: 0644)")
    create.add_argument("--key-mode", type=lambda s: int(s, 8), default=0o600,
                        help="with --target-dir: octal mode of the key file (default: 0600)")
    create.add_argument("--owner", help="with --target-dir: user owning the files (default: the agent's)")
    create.add_argument("--group", help="with --target-dir: group owning the files (default: the agent's)")
    create.add_argument("--reload-command", type=_argv,
                        help='argv as a JSON array, e.g. \'["systemctl","reload","nginx"]\'')
    certificates.add_parser("list", help="every managed certificate you may see")
    show = certificates.add_parser("show", help="one certificate, with its serial and fingerprint")
    show.add_argument("certificate_id", help="the certificate's id")

    revoke = certificates.add_parser("revoke", help="revoke every unexpired version")
    revoke.add_argument("certificate_id", help="the certificate's id")
    revoke.add_argument("--reason", default="unspecified", choices=REASONS,
                        help="the CRL reason (RFC 5280 §5.3.1; default: %(default)s)")
    create_bulk = certificates.add_parser(
        "create-bulk", help=f"create up to {wire.BULK_CREATE_LIMIT} certificates from a JSON file, all or none")
    create_bulk.add_argument("file", help='{"certificates": [...]} or the list alone, each entry as the API\'s'
                                          ' certificates.create body; "-" reads standard input')
    bulk = certificates.add_parser("revoke-bulk", help="revoke everything matching a filter")
    bulk.add_argument("--reason", default="unspecified", choices=REASONS,
                      help="the CRL reason (RFC 5280 §5.3.1; default: %(default)s)")
    for name in ("issuer", "profile", "agent", "tag"):
        bulk.add_argument(f"--{name}", help=f"only certificates with this {name} (filters combine)")

    targets = commands.add_parser("targets", help="deployment targets").add_subparsers(dest="action", required=True)
    target_create = targets.add_parser("create", help="declare a target on an agent")
    target_create.add_argument("name", help="the target's name, unique on its agent")
    target_create.add_argument("--agent", required=True, help="id of the agent that deploys to it")
    target_create.add_argument("--kind", required=True, choices=KINDS, help="what the target is")
    target_create.add_argument("--settings", type=_settings, default={},
                               help="settings as a JSON object, or @FILE to read them from a file")
    target_create.add_argument("--set", type=_setting, action="append", default=[], metavar="KEY=VALUE",
                               help="one setting (VALUE is parsed as JSON if it can be, e.g. 'verify={\"port\":443}')")
    targets.add_parser("list", help="every target, with its last deployment and check").add_argument(
        "--agent", help="only this agent's targets")
    targets.add_parser("show", help="one target, with its settings and counters").add_argument(
        "target", help="the target's id or name")
    target_test = targets.add_parser("test", help="the agent runs the config test and reads the served certificate")
    target_test.add_argument("target", help="the target's id or name")
    target_test.add_argument("--wait", type=duration, default=0, help="wait this long for the agent's answer")

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
    claim.add_argument("--set", type=_setting, action="append", default=[], metavar="KEY=VALUE",
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

    profiles = commands.add_parser("profiles", help="certificate profiles").add_subparsers(dest="action", required=True)
    profiles.add_parser("list", help="every profile")
    profile_show = profiles.add_parser("show", help="one profile, with its policy")
    profile_show.add_argument("profile", help="the profile's name or id")
    for verb in ("create", "update"):
        profile_edit = profiles.add_parser(verb, help=f"{verb} a profile (update replaces the whole policy)")
        profile_edit.add_argument("name" if verb == "create" else "profile",
                                  help="the new profile's name" if verb == "create" else "the profile's name or id")
        if verb == "create":
            profile_edit.add_argument("--issuer", default="issuing",
                                      help="the issuer (name or id) that signs its certificates (default: %(default)s)")
        profile_edit.add_argument("--key-type", action="append", choices=[k.value for k in KeyType],
                                  help="a key type it allows (repeatable; default: all)")
        profile_edit.add_argument("--max-lifetime", type=duration, default=398 * 86400,
                                  help="the longest lifetime it allows, e.g. 90d (default: 398d)")
        profile_edit.add_argument("--eku", action="append",
                                  choices=["server-auth", "client-auth", "code-signing", "email-protection"],
                                  help="an extended key usage of its certificates (repeatable;"
                                       " default: server-auth and client-auth)")
        profile_edit.add_argument("--name-pattern", action="append",
                                  help="*.example.com, **.example.com, ip:10.0.0.0/8, spiffe://td/path/*")
        profile_edit.add_argument("--must-staple", action="store_true",
                                  help="certificates carry the OCSP must-staple extension (RFC 7633)")
        profile_edit.add_argument("--short-lived", action="store_true",
                                  help="at most seven days, and no CRL or OCSP pointers in the certificates")
        profile_edit.add_argument("--requires-approval", action="store_true",
                                  help="each issuance waits for a second person's approval")
        profile_edit.add_argument("--approval-ttl", type=duration, default=3 * 86400,
                                  help="how long an approval request stays open (default: 3d)")

    issuers = commands.add_parser("issuers", help="the CA hierarchy").add_subparsers(dest="action", required=True)
    issuers.add_parser("list", help="every issuer (root, intermediate, external)")
    issuer_show = issuers.add_parser("show", help="one issuer, with its certificate")
    issuer_show.add_argument("issuer", help="the issuer's name or id")
    root = issuers.add_parser("create-root", help="a new self-signed root CA")
    root.add_argument("name", help="the new issuer's name (also its common name)")
    root.add_argument("--path-length", type=int,
                      help="how many intermediates may stand below it (RFC 5280 §4.2.1.9; default: no limit)")
    root.add_argument("--days", type=int, default=10 * 365, help="lifetime in days (default: %(default)s)")
    middle = issuers.add_parser("create-intermediate", help="a new intermediate CA signed by another issuer")
    middle.add_argument("name", help="the new issuer's name (also its common name)")
    middle.add_argument("--parent", required=True, help="the issuer (name or id) that signs it")
    middle.add_argument("--path-length", type=int, default=0,
                        help="how many intermediates may stand below it (default: %(default)s)")
    middle.add_argument("--days", type=int, default=5 * 365, help="lifetime in days (default: %(default)s)")
    for kind in ("permit", "exclude"):
        for what in ("dns", "ip", "email"):
            middle.add_argument(f"--{kind}-{what}", action="append", default=[],
                                help=f"name constraint (RFC 5280 §4.2.1.10): {kind} this {what.upper()}"
                                     f" subtree (repeatable)")
    external = issuers.add_parser("create-external", help="sub-CA mode: print a CSR for an external root")
    external.add_argument("name", help="the new issuer's name")
    imported = issuers.add_parser("import", help="import the certificate the external root signed")
    imported.add_argument("issuer", help="the pending issuer's name or id (from create-external)")
    imported.add_argument("--certificate", type=Path, required=True,
                          help="the certificate the external root signed, PEM")
    imported.add_argument("--chain", type=Path, required=True, help="the external intermediates and root, PEM")
    retire = issuers.add_parser("retire", help="stop issuing; keep publishing CRL and OCSP until its last"
                                                 " certificate expires")
    retire.add_argument("issuer", help="the issuer's name or id")
    issuer_revoke = issuers.add_parser("revoke", help="revoke an intermediate CA on its parent's CRL and OCSP")
    issuer_revoke.add_argument("issuer", help="the issuer's name or id")
    issuer_revoke.add_argument("--reason", required=True, choices=ISSUER_REASONS,
                               help="the CRL reason (RFC 5280 §5.3.1)")

    approvals = commands.add_parser("approvals", help="four-eyes approval").add_subparsers(dest="action", required=True)
    approvals_list = approvals.add_parser("list", help="approval requests")
    approvals_list.add_argument("--status", choices=["pending", "approved", "rejected", "expired"],
                                help="only requests in this state")
    for verb in ("approve", "reject"):
        decide = approvals.add_parser(verb, help=f"{verb} a pending request (not your own)")
        decide.add_argument("approval_id", help="the request's id")
        decide.add_argument("--note", default="", help="why (kept in the audit trail)")

    keys = commands.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    key_create = keys.add_parser("create", help="create a key (the secret is shown once)")
    key_create.add_argument("name", help="what the key is for, e.g. ci-deploy")
    key_create.add_argument("--role", action="append", default=[], help="role granted globally (repeatable)")
    key_create.add_argument("--user", help="the person the key acts for (default: none, a service key)")
    key_create.add_argument("--ttl", type=duration, help="expire after this long")
    key_create.add_argument("--own", action="store_true", help="create it for your own user (cli role)")
    key_list = keys.add_parser("list", help="API keys (never their secrets)")
    key_list.add_argument("--own", action="store_true", help="only your own user's keys")
    for verb in ("rotate", "revoke"):
        key_verb = keys.add_parser(verb, help="a new secret, shown once" if verb == "rotate" else
                                   "the key stops working at once")
        key_verb.add_argument("key_id", help="the key's id")
        key_verb.add_argument("--own", action="store_true", help="a key of your own user (cli role)")

    roles = commands.add_parser("roles", help="roles").add_subparsers(dest="action", required=True)
    roles.add_parser("list", help="built-in and custom roles, with their permissions")
    role_create = roles.add_parser("create", help="a custom role")
    role_create.add_argument("name", help="the role's name")
    role_create.add_argument("--permission", action="append", required=True,
                             help="a permission it grants (repeatable; see `certfleet permissions`)")
    role_create.add_argument("--description", default="", help="what the role is for")
    role_delete = roles.add_parser("delete", help="delete a custom role no grant uses")
    role_delete.add_argument("name", help="the role's name")

    grants = commands.add_parser("grants", help="role grants").add_subparsers(dest="action", required=True)
    grants.add_parser("list", help="who holds which role, where")
    grant_create = grants.add_parser("create", help="give a principal a role, globally or on one profile or issuer")
    grant_create.add_argument("principal", help="api-key:ID, user:NAME or agent:ID")
    grant_create.add_argument("role", help="the role's name")
    grant_create.add_argument("--profile", help="only on this profile")
    grant_create.add_argument("--issuer", help="only on this issuer")
    grant_create.add_argument("--ttl", type=duration, help="expire after this long, e.g. 8h (default: never)")
    grant_revoke = grants.add_parser("revoke", help="take a grant back")
    grant_revoke.add_argument("grant_id", help="the grant's id")

    policies = commands.add_parser("policies", help="renewal policies").add_subparsers(dest="action", required=True)
    policies.add_parser("list", help="renewal policies")
    policy_create = policies.add_parser("create", help="renew at a fraction of the lifetime or a lead time")
    policy_create.add_argument("name", help="the policy's name")
    policy_kind = policy_create.add_mutually_exclusive_group()
    policy_kind.add_argument("--fraction", type=float, help="e.g. 0.66 (the default is two thirds)")
    policy_kind.add_argument("--lead", type=duration, help="renew this long before expiry, e.g. 10d")
    policy_create.add_argument("--jitter", type=float, default=0.05,
                               help="spread renewals by this fraction of the lifetime (default: %(default)s)")
    policy_create.add_argument("--reuse-key", action="store_true", help="keep the key on renewal (default: new key)")

    jobs = commands.add_parser("jobs", help="issuance and renewal jobs").add_subparsers(dest="action", required=True)
    jobs_list = jobs.add_parser("list", help="jobs, with attempts and the last error")
    jobs_list.add_argument("--state", help="only jobs in this state, e.g. failed")
    jobs_list.add_argument("--certificate", help="only this certificate's jobs")
    for verb, verb_help in (("show", "one job, with its last error"), ("retry", "try a failed job again now"),
                            ("cancel", "cancel a job in flight (its order is withdrawn)")):
        jobs.add_parser(verb, help=verb_help).add_argument("job_id", help="the job's id")

    channels = commands.add_parser("channels", help="notification channels").add_subparsers(dest="action",
                                                                                            required=True)
    channels.add_parser("list", help="notification channels (never their secrets)")
    channel_create = channels.add_parser("create", help="a place notifications are sent")
    channel_create.add_argument("name", help="the channel's name")
    channel_create.add_argument("--kind", required=True,
                                choices=["webhook", "slack", "teams", "pagerduty", "opsgenie", "email"],
                                help="where it delivers")
    channel_create.add_argument("--setting", type=_setting, action="append", default=[], metavar="KEY=VALUE",
                                help="VALUE is parsed as JSON when it can be (port=587, starttls=false, to=[\"a@x\"])")
    channel_create.add_argument("--secret", type=_label, action="append", default=[],
                                help="key=value; sealed at rest, never shown again")
    channel_create.add_argument("--min-severity", choices=["info", "warning", "critical"], default="warning",
                                help="send only events at least this severe (default: %(default)s)")
    channels.add_parser("test", help="send a test event now").add_argument("channel", help="the channel's name or id")
    channels.add_parser("delete", help="delete a channel").add_argument("channel", help="the channel's name or id")
    notifications = commands.add_parser("notifications", help="deliveries").add_subparsers(dest="action",
                                                                                           required=True)
    notifications.add_parser("list", help="deliveries and how they went").add_argument(
        "--status", choices=["pending", "delivered", "dead"], help="only deliveries in this state")
    notifications.add_parser("requeue", help="send a dead-lettered delivery again").add_argument(
        "notification_id", help="the delivery's id")

    commands.add_parser("me", help="who am I, with which permissions")
    commands.add_parser("status", help="what needs attention: expiring, failing, offline")
    permissions = commands.add_parser("permissions", help="the permission catalogue")
    permissions.add_argument("--markdown", action="store_true",
                             help="print the reference page (docs/reference/permissions.md) offline")

    audit_cmd = commands.add_parser("audit", help="the audit trail").add_subparsers(dest="action", required=True)
    verify = audit_cmd.add_parser("verify", help="walk the hash chain straight from the database")
    verify.add_argument("--data-dir", type=Path,
                        help="the coordinator's data dir: its master key keys the chain, and its SQLite database"
                             " (env CERTFLEET_DATA_DIR)")
    verify.add_argument("--database-url", default=os.environ.get("CERTFLEET_DATABASE_URL"),
                        help="the coordinator's database, if not the SQLite file in the data dir"
                             " (env CERTFLEET_DATABASE_URL)")
    audit_list = audit_cmd.add_parser("list", help="audit events, oldest first, a page at a time")
    audit_list.add_argument("--after", type=int, default=0, help="the last id of the previous page")
    audit_list.add_argument("--limit", type=int, default=100, help="at most this many (default: %(default)s)")
    audit_list.add_argument("--actor", help="only events by this principal id")
    audit_list.add_argument("--action", dest="audit_action", help="only this operation, e.g. certificates.revoke")
    audit_list.add_argument("--resource-type", help="only events on this kind of resource, e.g. certificate")
    audit_list.add_argument("--resource-id", help="only events on this resource")
    audit_cmd.add_parser("export", help="NDJSON on stdout")
    return parser


def _print(args: argparse.Namespace, value: Any, columns: list[str]) -> None:
    builtins = msgspec.to_builtins(value)
    if args.json:
        print(json.dumps(builtins, indent=2))
        return
    print(render(builtins, columns, now=int(time.time())))


def _bulk_request(path: str) -> wire.CertificateCreateBulk:
    """The body of ``certificates create-bulk``: the file's certificates, checked here
    first so a mistake is reported with its entry's index before anything is sent."""
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise SystemExit(f"certfleet: cannot read {path}: {exc.strerror}") from None
    if data.lstrip().startswith(b"["):
        data = b'{"certificates": ' + data + b"}"
    try:
        return wire.decode(data, wire.CertificateCreateBulk)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise SystemExit(f"certfleet: {path}: {exc}") from None


def _principal(text: str) -> tuple[str, str]:
    kind, sep, value = text.partition(":")
    if not sep or kind not in ("api-key", "user", "agent") or not value:
        raise SystemExit("certfleet: a principal is api-key:ID, user:NAME or agent:ID")
    return kind, value


CERTIFICATE_COLUMNS = ["id", "names", "status", "agent_id", "profile_id", "not_after", "last_error"]
KEY_COLUMNS = ["id", "name", "user", "expires_at", "revoked_at", "last_used_at"]
GRANT_COLUMNS = ["id", "principal_type", "principal_id", "role", "scope_type", "scope_id", "expires_at"]


async def _run_api(api: ApiClient, args: argparse.Namespace) -> Any:
    """Run one API command; returns (value, columns) to print, or None if printed."""
    command, action = args.command, getattr(args, "action", None)
    now = int(time.time())
    if command == "agents":
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
    if command == "certificates":
        if action == "create":
            target = None if args.target else wire.FileTarget(
                directory=str(Path(args.target_dir).resolve()), mode=args.mode, key_mode=args.key_mode,
                owner=args.owner, group=args.group, reload_command=args.reload_command)
            body = wire.CertificateCreate(common_name=args.cn, sans=args.san, agent_id=args.agent, target=target,
                                          target_id=args.target, profile=args.profile, tags=args.tag,
                                          key_type=KeyType(args.key_type), lifetime_seconds=args.lifetime,
                                          renewal_policy=args.renewal_policy)
            return await api.call("certificates.create", body), CERTIFICATE_COLUMNS, None
        if action == "create-bulk":
            return await api.call("certificates.create-bulk", _bulk_request(args.file)), CERTIFICATE_COLUMNS, None
        if action == "list":
            return await api.call("certificates.list"), CERTIFICATE_COLUMNS, None
        if action == "revoke":
            return (await api.call("certificates.revoke", wire.RevokeRequest(reason=args.reason),
                                   certificate_id=args.certificate_id), ["certificate_id", "status", "serials"], None)
        if action == "revoke-bulk":
            body = wire.BulkRevokeRequest(reason=args.reason, issuer=args.issuer, profile=args.profile,
                                          agent=args.agent, tag=args.tag)
            return (await api.call("certificates.revoke-bulk", body)).results, \
                ["certificate_id", "status", "serials", "detail"], None
        return (await api.call("certificates.get", certificate_id=args.certificate_id),
                CERTIFICATE_COLUMNS + ["serial", "fingerprint_sha256"], None)
    if command == "targets":
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
    if command == "discovery":
        return await _discovery(api, args)
    if command == "profiles":
        columns = ["id", "name", "issuer_id", "version", "pending_approval"]
        if action == "list":
            return await api.call("profiles.list"), columns, None
        if action == "show":
            return await api.call("profiles.get", profile_id=args.profile), columns + ["policy"], None
        policy = wire.ProfilePolicy(
            key_types=[KeyType(k) for k in args.key_type] if args.key_type else list(KeyType),
            max_lifetime_seconds=args.max_lifetime, ekus=args.eku or ["server-auth", "client-auth"],
            name_patterns=args.name_pattern, must_staple=args.must_staple, short_lived=args.short_lived,
            requires_approval=args.requires_approval, approval_ttl_seconds=args.approval_ttl)
        if action == "create":
            return (await api.call("profiles.create", wire.ProfileCreate(name=args.name, issuer=args.issuer,
                                                                         policy=policy)), columns, None)
        return (await api.call("profiles.update", wire.ProfileUpdate(policy=policy), profile_id=args.profile),
                columns, None)
    if command == "issuers":
        columns = ["id", "name", "kind", "status", "parent_id", "not_after", "subject"]
        if action == "list":
            return await api.call("issuers.list"), columns, None
        if action == "show":
            return await api.call("issuers.get", issuer_id=args.issuer), columns + ["certificate_pem"], None
        if action == "create-root":
            body = wire.RootCreate(name=args.name, path_length=args.path_length, lifetime_days=args.days)
            return await api.call("issuers.create-root", body), columns, None
        if action == "create-intermediate":
            constraints = wire.NameConstraints(
                permitted_dns=args.permit_dns, excluded_dns=args.exclude_dns, permitted_ip=args.permit_ip,
                excluded_ip=args.exclude_ip, permitted_email=args.permit_email, excluded_email=args.exclude_email)
            body = wire.IntermediateCreate(name=args.name, parent=args.parent, path_length=args.path_length,
                                           lifetime_days=args.days, name_constraints=constraints)
            return await api.call("issuers.create-intermediate", body), columns, None
        if action == "create-external":
            result = await api.call("issuers.create-external", wire.ExternalSubordinateCreate(name=args.name))
            return result, None, f"issuer {result.id} is pending; have the external root sign this CSR:\n{result.csr_pem}"
        if action == "import":
            body = wire.IssuerCertificateImport(certificate=args.certificate.read_text(), chain=args.chain.read_text())
            return await api.call("issuers.import", body, issuer_id=args.issuer), columns, None
        if action == "revoke":
            return (await api.call("issuers.revoke", wire.IssuerRevokeRequest(reason=args.reason),
                                   issuer_id=args.issuer), columns + ["revocation_reason"], None)
        return await api.call("issuers.retire", issuer_id=args.issuer), columns, None
    if command == "approvals":
        columns = ["id", "kind", "subject_id", "status", "requested_by", "expires_at", "decided_by"]
        if action == "list":
            query = {"status": args.status} if args.status else None
            return await api.call("approvals.list", query=query), columns, None
        return (await api.call(f"approvals.{action}", wire.ApprovalDecision(note=args.note),
                               approval_id=args.approval_id), columns, None)
    if command == "keys":
        prefix = "auth.own-keys" if args.own else "auth.keys"
        if action == "create":
            body = wire.ApiKeyCreate(name=args.name, roles=args.role, user=args.user,
                                     expires_at=now + args.ttl if args.ttl else None)
            result = await api.call(f"{prefix}.create", body)
            return result, None, f"API key {result.id} (shown once):\n{result.token}"
        if action == "list":
            return await api.call(f"{prefix}.list"), KEY_COLUMNS, None
        result = await api.call(f"{prefix}.{action}", key_id=args.key_id)
        if action == "rotate":
            return result, None, f"new secret for {result.id} (shown once; the old one no longer works):\n{result.token}"
        return result, KEY_COLUMNS, None
    if command == "roles":
        if action == "list":
            return await api.call("auth.roles.list"), ["name", "builtin", "permissions"], None
        if action == "create":
            body = wire.RoleCreate(name=args.name, permissions=args.permission, description=args.description)
            return await api.call("auth.roles.create", body), ["name", "permissions"], None
        return await api.call("auth.roles.delete", role=args.name), ["name", "permissions"], None
    if command == "grants":
        if action == "list":
            return await api.call("auth.grants.list"), GRANT_COLUMNS, None
        if action == "revoke":
            return await api.call("auth.grants.revoke", grant_id=args.grant_id), GRANT_COLUMNS, None
        kind, principal_id = _principal(args.principal)
        scope_type, scope_id = ("profile", args.profile) if args.profile else (
            ("issuer", args.issuer) if args.issuer else ("global", None))
        body = wire.GrantCreate(principal_type=kind, principal_id=principal_id, role=args.role,
                                scope_type=scope_type, scope_id=scope_id,
                                expires_at=now + args.ttl if args.ttl else None)
        return await api.call("auth.grants.create", body), GRANT_COLUMNS, None
    if command == "policies":
        columns = ["id", "name", "fraction", "lead_seconds", "jitter", "reuse_key"]
        if action == "list":
            return await api.call("renewal-policies.list"), columns, None
        body = wire.RenewalPolicyCreate(name=args.name, fraction=None if args.lead else (args.fraction or 2 / 3),
                                        lead_seconds=args.lead, jitter=args.jitter, reuse_key=args.reuse_key)
        return await api.call("renewal-policies.create", body), columns, None
    if command == "jobs":
        columns = ["id", "certificate_id", "kind", "state", "attempts", "next_attempt_at", "last_error"]
        if action == "list":
            query = {k: v for k, v in (("state", args.state), ("certificate_id", args.certificate)) if v}
            return await api.call("jobs.list", query=query or None), columns, None
        name = {"show": "jobs.get", "retry": "jobs.retry", "cancel": "jobs.cancel"}[action]
        return await api.call(name, job_id=args.job_id), columns, None
    if command == "channels":
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
    if command == "notifications":
        columns = ["id", "channel_id", "kind", "severity", "status", "attempts", "last_error"]
        if action == "list":
            query = {"status": args.status} if args.status else None
            return await api.call("notifications.list", query=query), columns, None
        return await api.call("notifications.requeue", notification_id=args.notification_id), columns, None
    if command == "status":
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
    if command == "me":
        return await api.call("auth.me"), ["principal_type", "principal_id", "user", "permissions"], None
    if command == "permissions":
        return await api.call("auth.permissions"), ["permission", "roles", "operations"], None
    if command == "audit":
        if action == "export":
            sys.stdout.write(await api.call("audit.export"))
            return None, None, None
        query = {"after": args.after, "limit": args.limit, "actor_id": args.actor, "action": args.audit_action,
                 "resource_type": args.resource_type, "resource_id": args.resource_id}
        page = await api.call("audit.list", query={k: v for k, v in query.items() if v is not None})
        return page.events, ["id", "at_ms", "actor_type", "actor_id", "action", "resource_type", "resource_id",
                             "outcome"], None
    raise SystemExit(f"certfleet: unknown command {command}")


DISCOVERY_COLUMNS = ["id", "status", "agent_id", "source", "path", "subject", "not_after"]


async def _discovery(api: ApiClient, args: argparse.Namespace) -> Any:
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


async def _api(args: argparse.Namespace) -> int:
    if args.command == "bootstrap":
        if not args.token:
            print("certfleet: pass --token or set CERTFLEET_BOOTSTRAP_TOKEN", file=sys.stderr)
            return 2
        async with ApiClient(args.url, api_key=None, ca_bundle=args.ca_bundle) as api:
            result = await api.call("auth.bootstrap", wire.BootstrapRequest(token=args.token))
        if args.json:
            _print(args, result, [])
        else:
            print(f"admin API key (shown once; export it as CERTFLEET_API_KEY):\n{result.api_key}")
        return 0
    if not args.api_key:
        print("certfleet: set CERTFLEET_API_KEY or pass --api-key", file=sys.stderr)
        return 2
    async with ApiClient(args.url, api_key=args.api_key, ca_bundle=args.ca_bundle,
                         url_setting=URL_SETTING) as api:
        value, columns, message = await _run_api(api, args)
    if value is None:
        return 0
    if message and not args.json:
        print(message)
    else:
        _print(args, value, columns or [])
    return 0


async def _audit_verify(args: argparse.Namespace) -> int:
    from .audit import verify_chain
    from .initialize import WrongMasterKey, check_master_key
    from .secretbox import MasterKey, MasterKeyError, audit_chain_key
    from .settings import default_data_dir
    from .storage import open_database

    data_dir = (args.data_dir or default_data_dir()).resolve()
    if not args.database_url and not (data_dir / "certfleet.db").exists():
        print(f"certfleet: no database in {data_dir}; pass --data-dir or --database-url", file=sys.stderr)
        return 2
    try:
        master = MasterKey.load(data_dir / "master.key", os.environ.get("CERTFLEET_MASTER_KEY") or None)
    except MasterKeyError as exc:
        print(f"certfleet: {exc}: the chain is keyed by the master key", file=sys.stderr)
        return 2
    try:
        database = await trio.to_thread.run_sync(
            functools.partial(open_database, args.database_url, data_dir, create=False))
    except StorageError as exc:
        print(f"certfleet: cannot open the database: {exc}", file=sys.stderr)
        return 2
    try:
        # Every event's hash is keyed by the master key, so under another key every
        # event looks changed: tell that apart before calling anything tampered.
        await database.transact(lambda tx: check_master_key(tx, master))
        report = await verify_chain(database, key=audit_chain_key(master))
    except WrongMasterKey:
        # A key that verifies every event is the right one: then the check value is what changed.
        report = await verify_chain(database, key=audit_chain_key(master))
        if report.ok and report.events:
            print(f"audit chain OK: {report.events} events, but the database's master key check value was"
                  " changed: this key verifies every event, so the key is right and the check value was altered")
            return 1
        print("certfleet: this is not the master key of this database (its key check value does not open),"
              " so the chain cannot be checked: use the data dir (master.key) or CERTFLEET_MASTER_KEY"
              " the coordinator runs with", file=sys.stderr)
        return 2
    except (InitializationError, StorageError) as exc:
        print(f"certfleet: cannot read the audit trail: {exc}", file=sys.stderr)
        return 2
    finally:
        await database.close()
    if report.ok:
        print(f"audit chain OK: {report.events} events")
        return 0
    print(f"audit chain BROKEN at event {report.first_bad_id}: {report.problem}"
          f" ({report.events} events before it verify)")
    return 1


async def _bootstrap_reissue(args: argparse.Namespace) -> int:
    from .initialize import reissue_bootstrap_token
    from .storage import open_database

    settings = Settings.from_env(data_dir=args.data_dir, database_url=args.database_url)
    try:
        database = await trio.to_thread.run_sync(
            functools.partial(open_database, settings.database_url, settings.data_dir, create=False))
        try:
            token = await reissue_bootstrap_token(settings, database, now=int(time.time()))
        finally:
            await database.close()
    except (InitializationError, StorageError) as exc:
        print(f"certfleet: cannot reissue the bootstrap token: {exc}", file=sys.stderr)
        return 1
    print("new one-time bootstrap token (the previous one no longer works; exchange it with"
          f" `certfleet bootstrap --token …`):\n{token}")
    return 0


async def _termination_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for received in signals:
            logging.getLogger("certfleet.server").info("%s received; shutting down", signal.Signals(received).name)
            return


def _start(args: argparse.Namespace) -> int:
    """``serve`` or ``demo``; a failure to start is the one line ``main`` prints, even
    when it was raised inside the nurseries (trio wraps it in exception groups)."""
    try:
        if args.command == "serve":
            from .server import run_coordinator

            settings = Settings.from_env(data_dir=args.data_dir, listen=args.listen, tls_sans=tuple(args.tls_san))
            trio.run(functools.partial(run_coordinator, settings, shutdown_trigger=_termination_signal))
            return 0
        from .demo import run_demo

        return trio.run(run_demo, args.data_dir, args.listen, args.once)
    except BaseExceptionGroup as group:
        failure: BaseException = group
        while isinstance(failure, BaseExceptionGroup) and len(failure.exceptions) == 1:
            failure = failure.exceptions[0]
        if isinstance(failure, (InitializationError, StorageError)):
            raise failure from None
        raise


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        if args.command in ("serve", "demo"):
            return _start(args)
        if args.command == "bootstrap" and args.reissue:
            return trio.run(_bootstrap_reissue, args)
        if args.command == "audit" and args.action == "verify":
            return trio.run(_audit_verify, args)
        if args.command == "permissions" and args.markdown:
            from .auth.rbac import role_table_markdown

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


if __name__ == "__main__":
    sys.exit(main())
