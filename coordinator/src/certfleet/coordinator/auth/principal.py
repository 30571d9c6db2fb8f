"""Who is calling, and the request facts the audit trail records."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .rbac import EffectivePermissions

__all__ = ["ANONYMOUS", "Principal", "PrincipalKind", "RequestMeta"]


class PrincipalKind(enum.StrEnum):
    ANONYMOUS = "anonymous"
    API_KEY = "api-key"
    AGENT = "agent"


@dataclass(frozen=True)
class Principal:
    kind: PrincipalKind
    id: str
    user: str | None = None
    permissions: EffectivePermissions = field(default_factory=EffectivePermissions)
    expires_at: int | None = None
    """When the credential itself expires (``None``: never); what it mints may not outlive it."""

    @property
    def actor(self) -> str:
        """How audit rows name the caller: by id, never by secret."""
        return f"{self.kind}:{self.id}"


ANONYMOUS = Principal(PrincipalKind.ANONYMOUS, "-")


@dataclass(frozen=True)
class RequestMeta:
    request_id: str = "-"
    source_address: str = "-"
    body_sha256: str = "-"
    started: float = 0.0
    """``time.monotonic()`` when the request arrived."""
