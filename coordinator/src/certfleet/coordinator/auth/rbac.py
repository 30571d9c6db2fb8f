"""Roles, grants and effective permissions.

Every gated operation in the catalogue names one permission (``namespace.verb``).
A role is a set of permissions; a grant gives a role to a principal (an API key, a
user — every key of that user — or an agent), globally or on one profile or issuer,
optionally until an expiry. A principal's effective permissions are the union of its
live grants, each permission remembering the scopes it holds at.

The seven built-in roles are derived from the catalogue, so a new operation lands in
the right roles without editing a list: see :data:`BUILTIN_ROLES`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from certfleet.shared.api import OPERATIONS, Auth

__all__ = [
    "BUILTIN_ROLES",
    "GLOBAL",
    "ALL_PERMISSIONS",
    "EffectivePermissions",
    "Scope",
    "earliest",
    "role_table_markdown",
]

#: Every permission that a gate checks (public operations have one too, but nobody
#: needs to hold it).
ALL_PERMISSIONS: frozenset[str] = frozenset(op.permission for op in OPERATIONS if op.auth is not Auth.PUBLIC)
_AGENT_PROTOCOL = frozenset(op.permission for op in OPERATIONS if op.auth is Auth.AGENT)
_DESTRUCTIVE = frozenset(op.permission for op in OPERATIONS if op.destructive)
_AUDIT = frozenset({"audit.read", "audit.export"})
# An audit asks what certificates are in use, managed or not (PCI DSS v4.0 requirement
# 4.2.1.1 wants an inventory of them), so auditors read the discovered ones.
_INVENTORY = frozenset({"discovery.read"})
# Administration of access and of PKI policy: not day-to-day lifecycle work.
_ADMINISTRATION = frozenset(
    p for p in ALL_PERMISSIONS
    if p.startswith(("auth.key.", "auth.role.", "auth.own-key.", "profile.edit", "ca."))
)
_OPERATOR = ALL_PERMISSIONS - _AGENT_PROTOCOL - _ADMINISTRATION - {"audit.export"}

BUILTIN_ROLES: Mapping[str, tuple[str, frozenset[str]]] = {
    "admin": ("Everything.", ALL_PERMISSIONS),
    "operator": ("Day-to-day certificate lifecycle; no access administration.", _OPERATOR),
    "viewer": ("Read-only, without the audit trail.",
               frozenset(p for p in _OPERATOR if p.endswith(".read")) - _AUDIT),
    "agent": ("The agent protocol only.", _AGENT_PROTOCOL),
    "mcp": ("Operator without destructive operations, for AI assistants.", _OPERATOR - _DESTRUCTIVE),
    "cli": ("Operator plus management of the caller's own API keys.",
            _OPERATOR | {"auth.own-key.read", "auth.own-key.manage"}),
    "auditor": ("Reads and exports the audit trail and reads the inventory of discovered certificates;"
                " nothing else.", _AUDIT | _INVENTORY),
}


@dataclass(frozen=True, order=True)
class Scope:
    """Where a grant applies: ``global``, or one ``profile`` or ``issuer``."""

    type: str
    id: str | None = None

    def __str__(self) -> str:
        return self.type if self.id is None else f"{self.type}:{self.id}"

    def covers(self, other: Scope, *, issuer_of_profile: str | None = None) -> bool:
        """Whether holding a permission here implies holding it at ``other``.

        Global covers everything; an issuer scope covers its profiles.
        """
        if self.type == "global" or self == other:
            return True
        return (self.type == "issuer" and other.type == "profile" and issuer_of_profile is not None
                and self.id == issuer_of_profile)


GLOBAL = Scope("global")


def _later(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else max(a, b)


def earliest(*expiries: int | None) -> int | None:
    """The first of several expiries (``None`` never expires)."""
    bounded = [e for e in expiries if e is not None]
    return min(bounded) if bounded else None


@dataclass(frozen=True)
class EffectivePermissions:
    scopes: Mapping[str, frozenset[Scope]] = field(default_factory=dict)
    expiries: Mapping[tuple[str, Scope], int | None] = field(default_factory=dict)
    """(permission, scope) → when the last grant giving it there expires (``None``: never)."""

    @classmethod
    def from_grants(cls, grants: Iterable[tuple[frozenset[str], Scope, int | None]]) -> EffectivePermissions:
        """From (permissions, scope, expiry) per live grant; an expiry of ``None`` never comes."""
        scopes: dict[str, set[Scope]] = {}
        expiries: dict[tuple[str, Scope], int | None] = {}
        for permissions, scope, expires_at in grants:
            for permission in permissions:
                scopes.setdefault(permission, set()).add(scope)
                key = (permission, scope)
                expiries[key] = _later(expiries[key], expires_at) if key in expiries else expires_at
        return cls({p: frozenset(s) for p, s in scopes.items()}, expiries)

    def held_until(self, permission: str, scope: Scope = GLOBAL, *,
                   issuer_of_profile: str | None = None) -> tuple[bool, int | None]:
        """Whether ``permission`` is held at ``scope``, and until when (``None``: with no
        expiry): the latest expiry among the grants that cover the scope."""
        covering = [held for held in self.scopes.get(permission, ())
                    if held.covers(scope, issuer_of_profile=issuer_of_profile)]
        if not covering:
            return False, None
        until: int | None = 0
        for held in covering:
            until = _later(until, self.expiries.get((permission, held)))
        return True, until

    def holds_anywhere(self, permission: str) -> bool:
        return bool(self.scopes.get(permission))

    def holds(self, permission: str, scope: Scope = GLOBAL, *, issuer_of_profile: str | None = None) -> bool:
        return self.held_until(permission, scope, issuer_of_profile=issuer_of_profile)[0]

    def profile_filter(self, permission: str) -> tuple[bool, frozenset[str], frozenset[str]]:
        """For listing: (everything?, allowed profile ids, allowed issuer ids)."""
        held = self.scopes.get(permission, frozenset())
        if GLOBAL in held:
            return True, frozenset(), frozenset()
        return (False, frozenset(s.id for s in held if s.type == "profile" and s.id),
                frozenset(s.id for s in held if s.type == "issuer" and s.id))

    def describe(self) -> dict[str, list[str]]:
        return {p: sorted(str(s) for s in scopes) for p, scopes in sorted(self.scopes.items())}


def role_table_markdown() -> str:
    """The permission catalogue and role table for docs/reference/permissions.md."""
    roles = list(BUILTIN_ROLES)
    lines = [
        "# Permissions and roles",
        "",
        "Generated from the operation catalogue by `certfleet permissions --markdown`;",
        "a test fails when this page and the code disagree.",
        "",
        "A grant on one profile or issuer reaches only the operations marked *(scoped)*:",
        "they check it against every resource they touch and list only what it reaches.",
        "Every other operation needs its permission held globally.",
        "",
        "## Built-in roles",
        "",
        "| role | holds |",
        "|---|---|",
    ]
    lines += [f"| `{name}` | {description} |" for name, (description, _) in BUILTIN_ROLES.items()]
    lines += ["", "## Permission catalogue", "",
              "| permission | operations | " + " | ".join(roles) + " |",
              "|---|---|" + "---|" * len(roles)]
    by_permission: dict[str, list[str]] = {}
    for op in OPERATIONS:
        reach = " (scoped)" if op.scoped and op.auth is Auth.API_KEY else ""
        by_permission.setdefault(op.permission, []).append(f"`{op.method} {op.path}`{reach}")
    for permission in sorted(by_permission):
        if permission not in ALL_PERMISSIONS:
            continue
        marks = " | ".join("✓" if permission in BUILTIN_ROLES[r][1] else "" for r in roles)
        lines.append(f"| `{permission}` | {'<br>'.join(by_permission[permission])} | {marks} |")
    lines += ["", "Public operations (no credential; some take a one-time token in the body):", ""]
    lines += [f"- `{op.method} {op.path}` ({op.permission})" for op in OPERATIONS if op.auth is Auth.PUBLIC]
    return "\n".join(lines) + "\n"
