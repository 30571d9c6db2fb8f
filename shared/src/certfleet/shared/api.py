"""The operation catalogue: every API operation, declared once.

From this list come the coordinator's routes and their permission gates, the OpenAPI
document at ``/api/v1/openapi.json``, and the operator CLI's requests. Nothing is
listed twice, so nothing can drift.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any

from . import wire

__all__ = ["API_BASE", "OPERATIONS", "PAGE_LIMIT", "Auth", "Operation", "operation"]

API_BASE = "/api/v1"
PAGE_LIMIT = 1000
"""The most rows one page of a list holds, and how many it holds unless asked for fewer."""


class Auth(enum.StrEnum):
    """Who may call: anyone (the body may carry a one-time token), an operator with
    an API key, or an enrolled agent with a signed request token."""

    PUBLIC = "public"
    API_KEY = "api-key"
    AGENT = "agent"


@dataclass(frozen=True)
class Operation:
    name: str
    method: str
    path: str
    permission: str
    auth: Auth
    summary: str
    input: type | None = None
    output: Any = None
    query: dict[str, type] = field(default_factory=dict)
    """Query parameters: name → ``int`` or ``str``."""
    status: int = 200
    content_type: str = "application/json"
    destructive: bool = False
    """Removes or revokes something; the ``mcp`` role never holds these."""
    request_content_type: str = "application/json"
    """``input=bytes`` takes the raw body in this media type (OCSP requests)."""
    plain_http: bool = False
    """Also served on the optional plain-HTTP PKI listener: signed objects relying
    parties fetch without TLS (RFC 5280 §4.2.1.13 CRLs, RFC 6960 OCSP)."""
    paged: bool = False
    """A list that comes a page at a time, in its usual order: ``limit`` rows (at most
    and by default :data:`PAGE_LIMIT`) after the row whose id is ``after``. A full
    page answers with a ``Link: <…>; rel="next"`` header (RFC 8288 §3) naming the
    next one, so no read costs more than a page however large the fleet."""
    scoped: bool = False
    """The handler checks the caller's grants against every resource it touches (a
    certificate's profile and issuer, a job's certificate, an agent's certificates) and
    lists only what they reach, so a grant on one profile or issuer may call it.
    Otherwise the permission must be held globally: a new operation is closed to
    scoped grants until its handler checks scope."""
    idle: bool = False
    """Most calls find nothing to do (the agents' long poll): when the coordinator is
    overloaded they wait for the database behind every other request."""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z-]*(\.[a-z][a-z-]*)+", self.permission):
            raise ValueError(f"{self.name}: permission {self.permission!r} is not namespace.verb")
        if self.method not in {"GET", "POST", "PUT", "PATCH", "DELETE"}:
            raise ValueError(f"{self.name}: unsupported method {self.method}")
        if self.input is not None and self.method == "GET":
            raise ValueError(f"{self.name}: a GET takes no body")
        if self.paged:
            self.query.setdefault("after", str)
            self.query.setdefault("limit", int)

    @property
    def mutating(self) -> bool:
        """Changes state (and so writes an audit event). OCSP over POST is a query."""
        return self.method != "GET" and not self.plain_http

    @property
    def path_params(self) -> tuple[str, ...]:
        """Parameter names; ``{name:path}`` takes the rest of the path, slashes included."""
        return tuple(re.findall(r"\{([a-z_]+)(?::path)?\}", self.path))

    def url_path(self, **params: str) -> str:
        return re.sub(r"\{([a-z_]+)(?::path)?\}", lambda m: params[m.group(1)], self.path)


OPERATIONS: tuple[Operation, ...] = (
    # --- public: no credential, or a one-time token in the body ---------------------
    Operation("health", "GET", "/health", "system.health", Auth.PUBLIC,
              "Liveness with a database round-trip.", output=wire.Health),
    Operation("ready", "GET", "/ready", "system.ready", Auth.PUBLIC,
              "Readiness: the database answers and its schema is current (503 until both hold).",
              output=wire.Readiness),
    Operation("version", "GET", f"{API_BASE}/version", "version.read", Auth.API_KEY,
              "The coordinator's version, API version, schema version and database engine.",
              output=wire.VersionInfo),
    Operation("openapi", "GET", f"{API_BASE}/openapi.json", "system.openapi", Auth.PUBLIC,
              "This API's OpenAPI 3.1 document.", output=dict),
    Operation("metrics", "GET", "/metrics", "metrics.read", Auth.API_KEY,
              "Prometheus metrics (text exposition format).", content_type="text/plain; version=0.0.4"),
    Operation("status", "GET", f"{API_BASE}/status", "status.read", Auth.API_KEY,
              "What needs attention: expiring, failing, offline.", output=wire.StatusSummary, scoped=True),
    Operation("pki.ca-bundle", "GET", "/.well-known/certfleet/ca.pem", "pki.ca.read", Auth.PUBLIC,
              "The coordinator's root CA certificate (PEM), to be pinned by fingerprint.",
              content_type="application/pem-certificate-chain"),
    Operation("pki.ca-certificate", "GET", "/.well-known/pki/ca/{issuer}", "pki.ca.read", Auth.PUBLIC,
              "An issuer's certificate (DER), the AIA caIssuers target.", content_type="application/pkix-cert",
              plain_http=True),
    Operation("pki.crl", "GET", "/.well-known/pki/crl/{issuer}", "pki.crl.read", Auth.PUBLIC,
              "An issuer's current CRL (DER), with ETag.", content_type="application/pkix-crl", plain_http=True),
    Operation("pki.ocsp-post", "POST", "/.well-known/pki/ocsp/{issuer}", "pki.ocsp.query", Auth.PUBLIC,
              "OCSP (RFC 6960) over POST.", input=bytes, request_content_type="application/ocsp-request",
              content_type="application/ocsp-response", plain_http=True),
    Operation("pki.ocsp-get", "GET", "/.well-known/pki/ocsp/{issuer}/{request:path}", "pki.ocsp.query",
              Auth.PUBLIC, "OCSP (RFC 6960 Appendix A.1) over GET, base64 request in the path.",
              content_type="application/ocsp-response", plain_http=True),
    Operation("auth.bootstrap", "POST", f"{API_BASE}/auth/bootstrap", "auth.bootstrap", Auth.PUBLIC,
              "Exchange the one-time bootstrap token for the first admin API key.",
              input=wire.BootstrapRequest, output=wire.BootstrapResponse, status=201),
    Operation("agent.enroll", "POST", f"{API_BASE}/agent/enroll", "agent.enroll", Auth.PUBLIC,
              "Register an agent's identity key with an enrollment token.",
              input=wire.EnrollRequest, output=wire.EnrollResponse, status=201),
    # --- identity and access ----------------------------------------------------------
    Operation("auth.me", "GET", f"{API_BASE}/auth/me", "auth.self.read", Auth.API_KEY,
              "The caller's identity, grants and effective permissions.", output=wire.Me, scoped=True),
    Operation("auth.permissions", "GET", f"{API_BASE}/auth/permissions", "auth.permission.read",
              Auth.API_KEY, "Every permission, the operations it gates and the built-in roles holding it.",
              output=list[wire.PermissionInfo], scoped=True),
    Operation("auth.keys.create", "POST", f"{API_BASE}/auth/keys", "auth.key.create", Auth.API_KEY,
              "Create an API key (the secret is shown once).", input=wire.ApiKeyCreate,
              output=wire.ApiKeyInfo, status=201),
    Operation("auth.keys.list", "GET", f"{API_BASE}/auth/keys", "auth.key.read", Auth.API_KEY,
              "List API keys (never their secrets).", output=list[wire.ApiKeyInfo], paged=True),
    Operation("auth.keys.rotate", "POST", f"{API_BASE}/auth/keys/{{key_id}}/rotate", "auth.key.rotate",
              Auth.API_KEY, "Replace a key's secret; the old one stops working at once.",
              output=wire.ApiKeyInfo),
    Operation("auth.keys.revoke", "DELETE", f"{API_BASE}/auth/keys/{{key_id}}", "auth.key.revoke",
              Auth.API_KEY, "Revoke an API key.", output=wire.ApiKeyInfo, destructive=True),
    Operation("auth.own-keys.create", "POST", f"{API_BASE}/auth/me/keys", "auth.own-key.manage",
              Auth.API_KEY, "Create another key for the caller's own user, with at most the caller's roles.",
              input=wire.ApiKeyCreate, output=wire.ApiKeyInfo, status=201, scoped=True),
    Operation("auth.own-keys.list", "GET", f"{API_BASE}/auth/me/keys", "auth.own-key.read", Auth.API_KEY,
              "List the caller's own keys.", output=list[wire.ApiKeyInfo], scoped=True, paged=True),
    Operation("auth.own-keys.rotate", "POST", f"{API_BASE}/auth/me/keys/{{key_id}}/rotate",
              "auth.own-key.manage", Auth.API_KEY, "Rotate one of the caller's own keys.",
              output=wire.ApiKeyInfo, scoped=True),
    Operation("auth.own-keys.revoke", "DELETE", f"{API_BASE}/auth/me/keys/{{key_id}}", "auth.own-key.manage",
              Auth.API_KEY, "Revoke one of the caller's own keys.", output=wire.ApiKeyInfo, destructive=True, scoped=True),
    Operation("auth.roles.list", "GET", f"{API_BASE}/auth/roles", "auth.role.read", Auth.API_KEY,
              "List built-in and custom roles.", output=list[wire.RoleInfo]),
    Operation("auth.roles.create", "POST", f"{API_BASE}/auth/roles", "auth.role.edit", Auth.API_KEY,
              "Create a custom role from permissions the caller holds.", input=wire.RoleCreate,
              output=wire.RoleInfo, status=201),
    Operation("auth.roles.delete", "DELETE", f"{API_BASE}/auth/roles/{{role}}", "auth.role.edit",
              Auth.API_KEY, "Delete a custom role that nobody is granted.", output=wire.RoleInfo,
              destructive=True),
    Operation("auth.grants.list", "GET", f"{API_BASE}/auth/grants", "auth.role.read", Auth.API_KEY,
              "List role grants.", output=list[wire.GrantInfo], paged=True),
    Operation("auth.grants.create", "POST", f"{API_BASE}/auth/grants", "auth.role.assign", Auth.API_KEY,
              "Grant a role to a key, user or agent, globally or on one profile or issuer.",
              input=wire.GrantCreate, output=wire.GrantInfo, status=201, scoped=True),
    Operation("auth.grants.revoke", "DELETE", f"{API_BASE}/auth/grants/{{grant_id}}", "auth.role.assign",
              Auth.API_KEY, "Remove a grant (never the last admin's).", output=wire.GrantInfo,
              destructive=True, scoped=True),
    Operation("audit.list", "GET", f"{API_BASE}/audit", "audit.read", Auth.API_KEY,
              "Audit events, filtered, oldest first, with keyset pagination (after, limit).",
              output=wire.AuditPage,
              query={"after": int, "limit": int, "since_ms": int, "until_ms": int, "actor_id": str,
                     "action": str, "resource_type": str, "resource_id": str}),
    Operation("audit.export", "GET", f"{API_BASE}/audit/export", "audit.export", Auth.API_KEY,
              "The whole audit trail as NDJSON, streamed.", content_type="application/x-ndjson",
              query={"since_ms": int, "until_ms": int}),
    # --- fleet ------------------------------------------------------------------------
    Operation("agents.enrollment-token.create", "POST", f"{API_BASE}/agents/enrollment-tokens",
              "agent.enroll-token.create", Auth.API_KEY,
              "Mint an enrollment token (shown once) for N agents, expiring.",
              input=wire.EnrollmentTokenCreate, output=wire.EnrollmentTokenInfo, status=201),
    Operation("agents.list", "GET", f"{API_BASE}/agents", "agent.read", Auth.API_KEY,
              "List enrolled agents.", output=list[wire.AgentInfo], scoped=True, paged=True),
    Operation("agents.get", "GET", f"{API_BASE}/agents/{{agent_id}}", "agent.read", Auth.API_KEY,
              "Show one agent.", output=wire.AgentInfo, scoped=True),
    Operation("agents.retire", "POST", f"{API_BASE}/agents/{{agent_id}}/retire", "agent.retire", Auth.API_KEY,
              "Retire an agent: its identity is refused from now on, its work is cancelled, its"
              " certificates are no longer renewed, and the agent stops when it next polls.",
              output=wire.AgentInfo, destructive=True, scoped=True),
    # --- the CA hierarchy ---------------------------------------------------------------
    Operation("issuers.list", "GET", f"{API_BASE}/issuers", "issuer.read", Auth.API_KEY,
              "List issuers (local CAs).", output=list[wire.IssuerInfo], scoped=True, paged=True),
    Operation("issuers.get", "GET", f"{API_BASE}/issuers/{{issuer_id}}", "issuer.read", Auth.API_KEY,
              "Show one issuer with its certificate (or its pending CSR).", output=wire.IssuerInfo, scoped=True),
    Operation("issuers.create-root", "POST", f"{API_BASE}/issuers/roots", "ca.hierarchy.manage", Auth.API_KEY,
              "Create a self-signed root CA.", input=wire.RootCreate, output=wire.IssuerInfo, status=201),
    Operation("issuers.create-intermediate", "POST", f"{API_BASE}/issuers/intermediates", "ca.hierarchy.manage",
              Auth.API_KEY, "Create an intermediate CA under any CA, with path length and name constraints.",
              input=wire.IntermediateCreate, output=wire.IssuerInfo, status=201),
    Operation("issuers.create-external", "POST", f"{API_BASE}/issuers/external", "ca.hierarchy.manage",
              Auth.API_KEY, "Sub-CA mode: make a key and a CSR for an external root to sign.",
              input=wire.ExternalSubordinateCreate, output=wire.IssuerInfo, status=201),
    Operation("issuers.import", "POST", f"{API_BASE}/issuers/{{issuer_id}}/certificate", "ca.hierarchy.manage",
              Auth.API_KEY, "Import the certificate an external root signed; refused unless it matches the "
              "key and its chain validates.", input=wire.IssuerCertificateImport, output=wire.IssuerInfo),
    Operation("issuers.retire", "POST", f"{API_BASE}/issuers/{{issuer_id}}/retire", "ca.hierarchy.manage",
              Auth.API_KEY, "Stop issuing; keep publishing CRL and OCSP until the last certificate expires.",
              output=wire.IssuerInfo, destructive=True),
    Operation("issuers.revoke", "POST", f"{API_BASE}/issuers/{{issuer_id}}/revoke", "ca.hierarchy.manage",
              Auth.API_KEY, "Revoke an intermediate CA: listed on its parent's CRL and OCSP, nothing more issued "
              "under it, an alert for every certificate below it.", input=wire.IssuerRevokeRequest,
              output=wire.IssuerInfo, destructive=True),
    # --- certificates -----------------------------------------------------------------
    Operation("profiles.list", "GET", f"{API_BASE}/profiles", "profile.read", Auth.API_KEY,
              "List certificate profiles.", output=list[wire.ProfileInfo], scoped=True, paged=True),
    Operation("profiles.get", "GET", f"{API_BASE}/profiles/{{profile_id}}", "profile.read", Auth.API_KEY,
              "Show one profile and its policy.", output=wire.ProfileInfo, scoped=True),
    Operation("profiles.create", "POST", f"{API_BASE}/profiles", "profile.edit", Auth.API_KEY,
              "Create a certificate profile on an issuer.", input=wire.ProfileCreate,
              output=wire.ProfileInfo, status=201, scoped=True),
    Operation("profiles.update", "PUT", f"{API_BASE}/profiles/{{profile_id}}", "profile.edit", Auth.API_KEY,
              "Replace a profile's policy (through the approval queue if the profile requires approval).",
              input=wire.ProfileUpdate, output=wire.ProfileInfo, scoped=True),
    Operation("renewal-policies.list", "GET", f"{API_BASE}/renewal-policies", "policy.read", Auth.API_KEY,
              "List renewal policies.", output=list[wire.RenewalPolicyInfo], paged=True),
    Operation("renewal-policies.create", "POST", f"{API_BASE}/renewal-policies", "policy.edit", Auth.API_KEY,
              "Create a renewal policy (fraction of the lifetime or lead time, jitter, key reuse).",
              input=wire.RenewalPolicyCreate, output=wire.RenewalPolicyInfo, status=201),
    Operation("targets.list", "GET", f"{API_BASE}/targets", "target.read", Auth.API_KEY,
              "List deployment targets with their deployment counters.", output=list[wire.TargetInfo],
              query={"agent_id": str}, scoped=True, paged=True),
    Operation("targets.get", "GET", f"{API_BASE}/targets/{{target_id}}", "target.read", Auth.API_KEY,
              "Show one target: settings, certificates, counters, last deployment and last check.",
              output=wire.TargetInfo, scoped=True),
    Operation("targets.create", "POST", f"{API_BASE}/targets", "target.edit", Auth.API_KEY,
              "Declare a deployment target on an agent (settings are validated here and again on the agent).",
              input=wire.TargetCreate, output=wire.TargetInfo, status=201, scoped=True),
    Operation("targets.test", "POST", f"{API_BASE}/targets/{{target_id}}/test", "target.test", Auth.API_KEY,
              "Ask the target's agent to run its config test and read the certificate it serves; "
              "nothing is written.", output=wire.TargetInfo, status=202, scoped=True),
    Operation("certificates.create", "POST", f"{API_BASE}/certificates", "cert.create", Auth.API_KEY,
              "Create a managed certificate bound to an agent and a target; queues an issue order.",
              input=wire.CertificateCreate, output=wire.CertificateInfo, status=201, scoped=True),
    Operation("certificates.create-bulk", "POST", f"{API_BASE}/certificates/bulk", "cert.create", Auth.API_KEY,
              f"Create up to {wire.BULK_CREATE_LIMIT} managed certificates in one transaction, all or none;"
              " queues their issue orders.",
              input=wire.CertificateCreateBulk, output=list[wire.CertificateInfo], status=201, scoped=True),
    Operation("certificates.list", "GET", f"{API_BASE}/certificates", "cert.read", Auth.API_KEY,
              "List managed certificates (those under profiles the caller may read).",
              output=list[wire.CertificateInfo], scoped=True, paged=True),
    Operation("certificates.get", "GET", f"{API_BASE}/certificates/{{certificate_id}}", "cert.read",
              Auth.API_KEY, "Show one managed certificate.", output=wire.CertificateInfo, scoped=True),
    Operation("certificates.revoke", "POST", f"{API_BASE}/certificates/{{certificate_id}}/revoke", "cert.revoke",
              Auth.API_KEY, "Revoke every unexpired version of a certificate (RFC 5280 reason code).",
              input=wire.RevokeRequest, output=wire.RevokeResult, destructive=True, scoped=True),
    Operation("certificates.revoke-bulk", "POST", f"{API_BASE}/certificates/revoke", "cert.revoke", Auth.API_KEY,
              "Revoke every certificate matching a filter (issuer, profile, agent, tag); per-item results.",
              input=wire.BulkRevokeRequest, output=wire.BulkRevokeResult, destructive=True, scoped=True),
    Operation("jobs.list", "GET", f"{API_BASE}/jobs", "job.read", Auth.API_KEY,
              "Issuance and renewal jobs, with attempts and the last error.", output=list[wire.JobInfo],
              query={"state": str, "certificate_id": str}, scoped=True, paged=True),
    Operation("jobs.get", "GET", f"{API_BASE}/jobs/{{job_id}}", "job.read", Auth.API_KEY, "Show one job.",
              output=wire.JobInfo, scoped=True),
    Operation("jobs.retry", "POST", f"{API_BASE}/jobs/{{job_id}}/retry", "job.retry", Auth.API_KEY,
              "Start a failed job again.", output=wire.JobInfo, scoped=True),
    Operation("jobs.cancel", "POST", f"{API_BASE}/jobs/{{job_id}}/cancel", "job.cancel", Auth.API_KEY,
              "Cancel a job in flight (its order is withdrawn).", output=wire.JobInfo, destructive=True, scoped=True),
    Operation("channels.list", "GET", f"{API_BASE}/notification-channels", "notify.read", Auth.API_KEY,
              "List notification channels (never their secrets).", output=list[wire.ChannelInfo], paged=True),
    Operation("channels.create", "POST", f"{API_BASE}/notification-channels", "notify.edit", Auth.API_KEY,
              "Add a channel: webhook (HMAC-signed), Slack, Teams, PagerDuty, OpsGenie or email.",
              input=wire.ChannelCreate, output=wire.ChannelInfo, status=201),
    Operation("channels.delete", "DELETE", f"{API_BASE}/notification-channels/{{channel_id}}", "notify.edit",
              Auth.API_KEY, "Remove a channel and its queued deliveries.", output=wire.ChannelInfo,
              destructive=True),
    Operation("channels.test", "POST", f"{API_BASE}/notification-channels/{{channel_id}}/test", "notify.edit",
              Auth.API_KEY, "Send a test event now and report the outcome.", output=wire.NotificationInfo),
    Operation("notifications.list", "GET", f"{API_BASE}/notifications", "notify.read", Auth.API_KEY,
              "Deliveries, e.g. the dead-lettered ones (status=dead).", output=list[wire.NotificationInfo],
              query={"status": str}, paged=True),
    Operation("notifications.requeue", "POST", f"{API_BASE}/notifications/{{notification_id}}/requeue",
              "notify.edit", Auth.API_KEY, "Send a dead-lettered delivery again.", output=wire.NotificationInfo),
    # --- discovered certificates -------------------------------------------------------
    Operation("discovery.list", "GET", f"{API_BASE}/discovered-certificates", "discovery.read", Auth.API_KEY,
              "Certificates the agents found on their hosts and networks, filtered, with keyset pagination"
              " (after, limit); only present ones unless include_removed=1.", output=wire.DiscoveryPage,
              query={"status": str, "agent_id": str, "source": str, "issuer": str, "expires_before": int,
                     "expires_within_days": int, "include_removed": int, "after": int, "limit": int}),
    Operation("discovery.get", "GET", f"{API_BASE}/discovered-certificates/{{discovery_id}}", "discovery.read",
              Auth.API_KEY, "Show one discovered certificate.", output=wire.DiscoveredCertificateInfo),
    Operation("discovery.dismiss", "POST", f"{API_BASE}/discovered-certificates/{{discovery_id}}/dismiss",
              "discovery.triage", Auth.API_KEY, "Mark an unmanaged find as needing nothing, with a reason;"
              " it no longer raises expiry alerts.", input=wire.DiscoveryDismiss,
              output=wire.DiscoveredCertificateInfo),
    Operation("discovery.claim", "POST", f"{API_BASE}/discovered-certificates/{{discovery_id}}/claim",
              "discovery.triage", Auth.API_KEY, "Bring a find under management: a managed certificate bound to"
              " its agent, renewed (and deployed back) when its renewal time comes.", input=wire.DiscoveryClaim,
              output=wire.CertificateInfo, status=201),
    Operation("discovery.scan", "POST", f"{API_BASE}/discovery/scans", "discovery.scan", Auth.API_KEY,
              "Ask an agent to scan its files for certificates now (agents are also scanned daily).",
              input=wire.DiscoveryScanRequest, output=wire.DiscoveryScanInfo, status=202),
    Operation("discovery.probe", "POST", f"{API_BASE}/discovery/probes", "discovery.scan", Auth.API_KEY,
              "Ask an agent to probe address ranges × ports for TLS servers and report what they serve;"
              " the agent probes only inside the ranges its operator allowed it.",
              input=wire.DiscoveryProbeRequest, output=wire.DiscoveryScanInfo, status=202),
    Operation("discovery.scans", "GET", f"{API_BASE}/discovery/scans", "discovery.read", Auth.API_KEY,
              "Recent scan and probe orders, newest first, with the agents' summaries.",
              output=list[wire.DiscoveryScanInfo], query={"agent_id": str, "limit": int}),
    Operation("approvals.list", "GET", f"{API_BASE}/approvals", "approval.read", Auth.API_KEY,
              "Requests waiting for (or decided by) a second person.", output=list[wire.ApprovalInfo],
              query={"status": str}, scoped=True, paged=True),
    Operation("approvals.approve", "POST", f"{API_BASE}/approvals/{{approval_id}}/approve", "approval.decide",
              Auth.API_KEY, "Approve someone else's request.", input=wire.ApprovalDecision,
              output=wire.ApprovalInfo, scoped=True),
    Operation("approvals.reject", "POST", f"{API_BASE}/approvals/{{approval_id}}/reject", "approval.decide",
              Auth.API_KEY, "Reject a request.", input=wire.ApprovalDecision, output=wire.ApprovalInfo, scoped=True),
    # --- the agent protocol -----------------------------------------------------------
    Operation("agent.work", "GET", f"{API_BASE}/agent/work", "agent.work.poll", Auth.AGENT,
              "Long-poll for signed work orders addressed to the calling agent.",
              output=wire.WorkBatch, query={"wait": int}, idle=True),
    Operation("agent.csr", "POST", f"{API_BASE}/agent/orders/{{order_id}}/csr", "agent.order.csr",
              Auth.AGENT, "Submit the CSR for an issue order; returns the signed certificate.",
              input=wire.CsrSubmission, output=wire.CertificateBundle),
    Operation("agent.result", "POST", f"{API_BASE}/agent/orders/{{order_id}}/result",
              "agent.order.report", Auth.AGENT, "Report the outcome of a work order (idempotent).",
              input=wire.OrderResult, output=wire.ResultAck),
    Operation("agent.report", "POST", f"{API_BASE}/agent/reports", "agent.report", Auth.AGENT,
              "Report an event, such as a refused work order.",
              input=wire.AgentReport, output=wire.ResultAck),
    Operation("agent.discoveries", "POST", f"{API_BASE}/agent/discoveries", "agent.discovery.report",
              Auth.AGENT, "Report certificates found on the host or its network, and finds that are gone"
              " (idempotent).", input=wire.DiscoveryReport, output=wire.DiscoveryReceipt),
    Operation("agent.certificate", "GET", f"{API_BASE}/agent/certificates/{{certificate_id}}",
              "agent.certificate.read", Auth.AGENT, "Show a certificate bound to the calling agent.",
              output=wire.CertificateInfo),
)

_BY_NAME = {op.name: op for op in OPERATIONS}


def operation(name: str) -> Operation:
    return _BY_NAME[name]
