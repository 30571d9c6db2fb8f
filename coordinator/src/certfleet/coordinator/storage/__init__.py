"""Coordinator storage: engines, migrations and per-aggregate repositories."""

from .engine import AppendOnly, Conflict, Database, NotFound, StorageError, Tx, open_database
from .migrations import migrate
from .repos import (
    Agents,
    ApiKeys,
    BootstrapTokens,
    Certificates,
    EnrollmentTokens,
    Grants,
    Issuers,
    Meta,
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
    "BootstrapTokens",
    "Certificates",
    "Conflict",
    "Database",
    "EnrollmentTokens",
    "Grants",
    "Issuers",
    "Meta",
    "Profiles",
    "RateLimits",
    "Roles",
    "NotFound",
    "SigningKeys",
    "StorageError",
    "Tx",
    "WorkOrders",
    "migrate",
    "open_database",
]
