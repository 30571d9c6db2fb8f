"""Who is calling: resolved once per request by the HTTP layer."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Principal", "PrincipalKind"]


class PrincipalKind(enum.StrEnum):
    ANONYMOUS = "anonymous"
    API_KEY = "api-key"
    AGENT = "agent"


@dataclass(frozen=True)
class Principal:
    kind: PrincipalKind
    id: str
    permissions: frozenset[str] = frozenset()

    @property
    def actor(self) -> str:
        """How audit rows name the caller: by id, never by secret."""
        return f"{self.kind}:{self.id}"


ANONYMOUS = Principal(PrincipalKind.ANONYMOUS, "-")
