"""Per-aggregate repositories, written once against :class:`~..engine.Tx`.

Each class wraps one transaction; a service composes them inside a single
``database.transact`` call so a mutation and its audit row commit together.
Methods are named for the entity; a missing row raises :class:`NotFound`.

One module per aggregate or close family: :mod:`.pki` (issuers, CRLs, OCSP),
:mod:`.access` (API keys, roles, grants, tokens, rate limits), :mod:`.certificates`
(profiles, renewal policies, certificates), :mod:`.jobs` (jobs, work orders,
approvals), :mod:`.fleet` (agents, targets), :mod:`.notifications`,
:mod:`.discovery` and :mod:`.installation` (meta, signing keys); the helpers they
share are in :mod:`._common`.
"""

from .access import ApiKeys, BootstrapTokens, EnrollmentTokens, Grants, RateLimits, Roles
from .certificates import Certificates, Profiles, RenewalPolicies
from .discovery import DiscoveredCertificates
from .fleet import Agents, Targets
from .installation import Meta, SigningKeys
from .jobs import Approvals, Jobs, WorkOrders
from .notifications import Notifications
from .pki import Crls, Issuers, Ocsp

__all__ = [
    "Agents",
    "ApiKeys",
    "Approvals",
    "BootstrapTokens",
    "Certificates",
    "Crls",
    "DiscoveredCertificates",
    "EnrollmentTokens",
    "Grants",
    "Issuers",
    "Jobs",
    "Meta",
    "Notifications",
    "Ocsp",
    "Profiles",
    "RateLimits",
    "RenewalPolicies",
    "Roles",
    "SigningKeys",
    "Targets",
    "WorkOrders",
]
