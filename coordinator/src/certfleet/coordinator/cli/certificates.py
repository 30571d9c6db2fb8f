"""``certificates``, ``profiles``, ``approvals``, ``policies`` and ``jobs``: managed
certificates, the policy they are issued under, and the work of issuing them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from certfleet.shared import wire
from certfleet.shared.pki import KeyType

from ..client import ApiClient
from .arguments import duration

__all__ = ["CERTIFICATE_COLUMNS", "add_approvals", "add_certificates", "add_jobs", "add_policies", "add_profiles",
           "run_approvals", "run_certificates", "run_jobs", "run_policies", "run_profiles"]

CERTIFICATE_COLUMNS = ["id", "names", "status", "agent_id", "profile_id", "not_after", "last_error"]
REASONS = ["unspecified", "key-compromise", "ca-compromise", "affiliation-changed", "superseded",
           "cessation-of-operation", "certificate-hold", "privilege-withdrawn", "aa-compromise", "remove-from-crl"]


def _argv(text: str) -> list[str]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError("the reload command is a JSON array of arguments") from exc
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise argparse.ArgumentTypeError("the reload command is a non-empty JSON array of strings")
    return value


def add_certificates(commands: argparse._SubParsersAction) -> None:
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


async def run_certificates(api: ApiClient, args: argparse.Namespace) -> Any:
    action = args.action
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


def add_profiles(commands: argparse._SubParsersAction) -> None:
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
        profile_edit.add_argument("--default-lifetime", type=duration,
                                  help="the lifetime of certificates created without --lifetime"
                                       " (default: 90 days, or the maximum when that is shorter)")
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


async def run_profiles(api: ApiClient, args: argparse.Namespace) -> Any:
    action = args.action
    columns = ["id", "name", "issuer_id", "version", "pending_approval"]
    if action == "list":
        return await api.call("profiles.list"), columns, None
    if action == "show":
        return await api.call("profiles.get", profile_id=args.profile), columns + ["policy"], None
    policy = wire.ProfilePolicy(
        key_types=[KeyType(k) for k in args.key_type] if args.key_type else list(KeyType),
        max_lifetime_seconds=args.max_lifetime, default_lifetime_seconds=args.default_lifetime, ekus=args.eku or ["server-auth", "client-auth"],
        name_patterns=args.name_pattern, must_staple=args.must_staple, short_lived=args.short_lived,
        requires_approval=args.requires_approval, approval_ttl_seconds=args.approval_ttl)
    if action == "create":
        return (await api.call("profiles.create", wire.ProfileCreate(name=args.name, issuer=args.issuer,
                                                                     policy=policy)), columns, None)
    return (await api.call("profiles.update", wire.ProfileUpdate(policy=policy), profile_id=args.profile),
            columns, None)


def add_approvals(commands: argparse._SubParsersAction) -> None:
    approvals = commands.add_parser("approvals", help="four-eyes approval").add_subparsers(dest="action", required=True)
    approvals_list = approvals.add_parser("list", help="approval requests")
    approvals_list.add_argument("--status", choices=["pending", "approved", "rejected", "expired"],
                                help="only requests in this state")
    for verb in ("approve", "reject"):
        decide = approvals.add_parser(verb, help=f"{verb} a pending request (not your own)")
        decide.add_argument("approval_id", help="the request's id")
        decide.add_argument("--note", default="", help="why (kept in the audit trail)")


async def run_approvals(api: ApiClient, args: argparse.Namespace) -> Any:
    action = args.action
    columns = ["id", "kind", "subject_id", "status", "requested_by", "expires_at", "decided_by"]
    if action == "list":
        query = {"status": args.status} if args.status else None
        return await api.call("approvals.list", query=query), columns, None
    return (await api.call(f"approvals.{action}", wire.ApprovalDecision(note=args.note),
                           approval_id=args.approval_id), columns, None)


def add_policies(commands: argparse._SubParsersAction) -> None:
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


async def run_policies(api: ApiClient, args: argparse.Namespace) -> Any:
    columns = ["id", "name", "fraction", "lead_seconds", "jitter", "reuse_key"]
    if args.action == "list":
        return await api.call("renewal-policies.list"), columns, None
    body = wire.RenewalPolicyCreate(name=args.name, fraction=None if args.lead else (args.fraction or 2 / 3),
                                    lead_seconds=args.lead, jitter=args.jitter, reuse_key=args.reuse_key)
    return await api.call("renewal-policies.create", body), columns, None


def add_jobs(commands: argparse._SubParsersAction) -> None:
    jobs = commands.add_parser("jobs", help="issuance and renewal jobs").add_subparsers(dest="action", required=True)
    jobs_list = jobs.add_parser("list", help="jobs, with attempts and the last error")
    jobs_list.add_argument("--state", help="only jobs in this state, e.g. failed")
    jobs_list.add_argument("--certificate", help="only this certificate's jobs")
    for verb, verb_help in (("show", "one job, with its last error"), ("retry", "try a failed job again now"),
                            ("cancel", "cancel a job in flight (its order is withdrawn)")):
        jobs.add_parser(verb, help=verb_help).add_argument("job_id", help="the job's id")


async def run_jobs(api: ApiClient, args: argparse.Namespace) -> Any:
    action = args.action
    columns = ["id", "certificate_id", "kind", "state", "attempts", "next_attempt_at", "last_error"]
    if action == "list":
        query = {k: v for k, v in (("state", args.state), ("certificate_id", args.certificate)) if v}
        return await api.call("jobs.list", query=query or None), columns, None
    name = {"show": "jobs.get", "retry": "jobs.retry", "cancel": "jobs.cancel"}[action]
    return await api.call(name, job_id=args.job_id), columns, None
