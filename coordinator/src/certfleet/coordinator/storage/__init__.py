"""Coordinator storage: engines, migrations and per-aggregate repositories."""

from .engine import Conflict, Database, NotFound, StorageError, Tx, open_database
from .migrations import migrate
from .repos import (
    Agents,
    ApiKeys,
    Audit,
    BootstrapTokens,
    Certificates,
    EnrollmentTokens,
    Issuers,
    Meta,
    SigningKeys,
    WorkOrders,
)

__all__ = [
    "Agents",
    "ApiKeys",
    "Audit",
    "BootstrapTokens",
    "Certificates",
    "Conflict",
    "Database",
    "EnrollmentTokens",
    "Issuers",
    "Meta",
    "NotFound",
    "SigningKeys",
    "StorageError",
    "Tx",
    "WorkOrders",
    "migrate",
    "open_database",
]
