"""Messages exchanged between agents, operators and the coordinator.

Every message is a msgspec Struct: decoding validates types and, with
``forbid_unknown_fields``, refuses fields it does not know, so a typo in a request is
an error instead of a silently ignored setting. The same classes produce the JSON
Schema published in the OpenAPI document.

One module per family of messages, all re-exported here:

* :mod:`.types`: the ``Message`` base, ``encode``/``decode`` and the bounded field
  types the families share;
* :mod:`.agent`: enrollment, work orders and what an agent sends back;
* :mod:`.discovery`: discovery reports, the inventory and scan requests;
* :mod:`.access`: bootstrap, API keys, roles, grants and ``Me``;
* :mod:`.certificates`: targets, certificates, profiles, renewal policies, jobs,
  approvals and revocation;
* :mod:`.issuers`: the CA hierarchy;
* :mod:`.notifications`: channels and notifications;
* :mod:`.system`: health, the status summary and the audit trail.

The deployment target settings (:mod:`certfleet.shared.targets`) are re-exported too.
"""

from __future__ import annotations

from ..targets import (
    ApacheTarget,
    CaddyTarget,
    DovecotTarget,
    EnvoyTarget,
    FileTarget,
    HaproxyTarget,
    KeystoreTarget,
    KubernetesSecretTarget,
    NginxTarget,
    PostfixTarget,
    Target,
    TlsCheck,
    TraefikTarget,
)
from .access import (
    ApiKeyCreate,
    ApiKeyInfo,
    BootstrapRequest,
    BootstrapResponse,
    GrantCreate,
    GrantInfo,
    Me,
    PermissionInfo,
    PrincipalType,
    RoleCreate,
    RoleInfo,
    ScopeType,
)
from .agent import (
    AgentInfo,
    AgentLabelKey,
    AgentLabelValue,
    AgentReport,
    CertificateBundle,
    CheckTargetOrder,
    CsrSubmission,
    Delivery,
    DeploymentFacts,
    EnrollmentTokenCreate,
    EnrollmentTokenInfo,
    EnrollRequest,
    EnrollResponse,
    IssueOrder,
    OrderResult,
    ProbeOrder,
    ResultAck,
    ScanOrder,
    WorkBatch,
    WorkOrderKey,
)
from .certificates import (
    BULK_CREATE_LIMIT,
    EKU,
    MAX_LIFETIME_SECONDS,
    MIN_LIFETIME_SECONDS,
    ApprovalDecision,
    ApprovalInfo,
    BulkRevokeRequest,
    BulkRevokeResult,
    CertificateCreate,
    CertificateCreateBulk,
    CertificateInfo,
    JobInfo,
    ProfileCreate,
    ProfileInfo,
    ProfilePolicy,
    ProfileUpdate,
    Reason,
    RenewalPolicyCreate,
    RenewalPolicyInfo,
    RevokeRequest,
    RevokeResult,
    TargetCounters,
    TargetCreate,
    TargetInfo,
    check_lifetime,
)
from .discovery import (
    MAX_DISCOVERY_RECORDS,
    DiscoveredCertificate,
    DiscoveredCertificateInfo,
    DiscoveryClaim,
    DiscoveryDismiss,
    DiscoveryPage,
    DiscoveryProbeRequest,
    DiscoveryReceipt,
    DiscoveryRemoval,
    DiscoveryReport,
    DiscoveryScanInfo,
    DiscoveryScanRequest,
    DiscoveryStatus,
    DistinguishedName,
    Location,
    Position,
    UtcTimestamp,
)
from .issuers import (
    ExternalSubordinateCreate,
    IntermediateCreate,
    IssuerCertificateImport,
    IssuerInfo,
    IssuerRevocationReason,
    IssuerRevokeRequest,
    NameConstraints,
    RootCreate,
)
from .notifications import (
    ChannelCreate,
    ChannelField,
    ChannelInfo,
    ChannelSetting,
    NotificationInfo,
    Severity,
)
from .system import (
    AuditEvent,
    AuditPage,
    Health,
    Readiness,
    StatusSummary,
    VersionInfo,
)
from .types import (
    INT64_MAX,
    MAX_TIMESTAMP,
    CommonName,
    Description,
    Fingerprint,
    Identifier,
    KeyName,
    Message,
    Name,
    Note,
    Reference,
    Tag,
    TargetName,
    Timestamp,
    decode,
    encode,
)

__all__ = [
    # types
    "Message", "decode", "encode", "INT64_MAX", "MAX_TIMESTAMP", "Name", "KeyName", "Tag", "Reference",
    "CommonName", "Description", "Note", "Timestamp", "Identifier", "TargetName", "Fingerprint",
    # agent
    "IssueOrder", "CheckTargetOrder", "ScanOrder", "ProbeOrder", "EnrollmentTokenCreate", "EnrollmentTokenInfo",
    "AgentLabelKey", "AgentLabelValue", "EnrollRequest", "WorkOrderKey", "EnrollResponse", "AgentInfo", "Delivery",
    "WorkBatch", "CsrSubmission", "CertificateBundle", "DeploymentFacts", "OrderResult", "AgentReport", "ResultAck",
    # discovery
    "MAX_DISCOVERY_RECORDS", "DistinguishedName", "UtcTimestamp", "Location", "Position", "DiscoveredCertificate",
    "DiscoveryRemoval", "DiscoveryReport", "DiscoveryReceipt", "DiscoveryStatus", "DiscoveredCertificateInfo",
    "DiscoveryPage", "DiscoveryDismiss", "DiscoveryScanRequest", "DiscoveryProbeRequest", "DiscoveryScanInfo",
    "DiscoveryClaim",
    # access
    "BootstrapRequest", "BootstrapResponse", "PrincipalType", "ScopeType", "ApiKeyCreate", "ApiKeyInfo",
    "RoleCreate", "RoleInfo", "GrantCreate", "GrantInfo", "Me", "PermissionInfo",
    # certificates
    "TargetCreate", "TargetCounters", "TargetInfo", "MIN_LIFETIME_SECONDS", "MAX_LIFETIME_SECONDS",
    "check_lifetime", "CertificateCreate", "BULK_CREATE_LIMIT", "CertificateCreateBulk", "CertificateInfo", "EKU",
    "ProfilePolicy", "ProfileCreate", "ProfileUpdate", "ProfileInfo", "RenewalPolicyCreate", "RenewalPolicyInfo",
    "JobInfo", "ApprovalInfo", "ApprovalDecision", "Reason", "RevokeRequest", "BulkRevokeRequest", "RevokeResult",
    "BulkRevokeResult",
    # issuers
    "NameConstraints", "RootCreate", "IntermediateCreate", "ExternalSubordinateCreate", "IssuerCertificateImport",
    "IssuerInfo", "IssuerRevocationReason", "IssuerRevokeRequest",
    # notifications
    "Severity", "ChannelField", "ChannelSetting", "ChannelCreate", "ChannelInfo", "NotificationInfo",
    # system
    "Health", "Readiness", "VersionInfo", "StatusSummary", "AuditEvent", "AuditPage",
    # deployment target settings
    "ApacheTarget", "CaddyTarget", "DovecotTarget", "EnvoyTarget", "FileTarget", "HaproxyTarget", "KeystoreTarget",
    "KubernetesSecretTarget", "NginxTarget", "PostfixTarget", "Target", "TlsCheck", "TraefikTarget",
]
