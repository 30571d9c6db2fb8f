"""The coordinator's own state: health, the status summary and the audit trail."""

from __future__ import annotations

from typing import Any

from .agent import AgentInfo
from .certificates import CertificateInfo
from .types import Message


class Health(Message):
    status: str


class Readiness(Message):
    """``GET /ready``: the database answers and its schema is the one this coordinator
    was built for (a load balancer's readiness check; ``/health`` is liveness)."""

    status: str
    schema_version: int


class VersionInfo(Message):
    """``GET /api/v1/version``: what this coordinator runs."""

    version: str
    api: str
    schema_version: int
    database: str
    """``sqlite`` or ``postgresql``."""


class StatusSummary(Message):
    """What needs attention, for ``certfleet status``."""

    certificates: dict[str, int]
    expiring_soon: list[CertificateInfo]
    """Unrenewed certificates with less than a third of their lifetime left."""
    failing: list[CertificateInfo]
    agents: dict[str, int]
    offline_agents: list[AgentInfo]
    pending_approvals: int


class AuditEvent(Message):
    id: int
    at_ms: int
    actor_type: str
    actor_id: str
    action: str
    resource_type: str
    resource_id: str
    outcome: str
    request_id: str
    source_address: str
    body_sha256: str
    latency_ms: int
    details: dict[str, Any]
    prev_hash: str
    hash: str


class AuditPage(Message):
    events: list[AuditEvent]
    next_after: int | None = None
