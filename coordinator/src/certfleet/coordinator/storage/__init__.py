"""Coordinator storage: engines, migrations and per-aggregate repositories."""

from .engine import AppendOnly, Conflict, Database, NotFound, StorageError, Tx, open_database
from .migrations import migrate
from .repos import (
    Agents,
    ApiKeys,
    Approvals,
    BootstrapTokens,
    Certificates,
    Crls,
    EnrollmentTokens,
    Grants,
    Issuers,
    Meta,
    Ocsp,
    Profiles,
    RateLimits,
    Roles,
    SigningKeys,
    WorkOrders,
)

__all__ = [
    "Agents",
    "ApiKeys",
    "AppendOnly",
    "Approvals",
    "BootstrapTokens",
    "Certificates",
    "Conflict",
    "Crls",
    "Database",
    "EnrollmentTokens",
    "Grants",
    "Issuers",
    "Meta",
    "Profiles",
    "RateLimits",
    "Roles",
    "NotFound",
    "Ocsp",
    "SigningKeys",
    "StorageError",
    "Tx",
    "WorkOrders",
    "migrate",
    "open_database",
]
