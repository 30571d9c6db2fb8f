"""What every group of operations shares: storage, keys, the clock, authentication,
authorization helpers and the audit append."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from cryptography.hazmat.primitives import serialization

from certfleet.shared import agent_token, jws
from certfleet.shared.api import PAGE_LIMIT

from . import audit, errors
from .auth import credentials, ratelimit
from .auth.principal import Principal, PrincipalKind, RequestMeta
from .auth.rbac import BUILTIN_ROLES, EffectivePermissions, Scope
from .ca.registry import Authorities
from .initialize import CoordinatorKeys
from .integrity import RowIntegrity
from .metrics import Metrics
from .secretbox import audit_chain_key
from .storage import Agents, ApiKeys, Database, Grants, Profiles, RateLimits, Roles, Tx

__all__ = ["CONTROL_CHARACTERS", "Call", "CoordinatorBase", "Page", "RawResponse", "new_id", "printable"]

SEEN_PRECISION = 10
"""Seconds an agent's ``last_seen_at`` may lag: liveness counts in minutes, and a row
write on every request of a busy agent would cost more than the precision is worth."""

CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
"""C0, DEL and C1: what :func:`printable` spells ``\\xNN``."""


def printable(text: str) -> str:
    """``text`` with control characters (C0, DEL, C1) spelt ``\\xNN``. What a
    certificate says about itself, or a file's name, reaches operators' terminals and
    notifications: a hostile one must not move a cursor, nor be refused and take the
    rest of its report with it. The same text always escapes the same way, so a
    removal still finds its record."""
    return CONTROL_CHARACTERS.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


@dataclass(frozen=True)
class Call:
    principal: Principal
    body: Any = None
    params: dict[str, str] = field(default_factory=dict)
    query: dict[str, Any] = field(default_factory=dict)
    operation: str = "-"
    meta: RequestMeta = field(default_factory=RequestMeta)
    headers: dict[str, str] = field(default_factory=dict)
    """The request headers a handler may need (``if-none-match``), lower-cased."""


@dataclass(frozen=True)
class RawResponse:
    """A handler's answer that is not a JSON message (DER objects, 304s)."""

    body: bytes
    content_type: str
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Page:
    """One page of a paged list (see ``Operation.paged``): its items, and the id to ask
    for the next page after, when this one was full."""

    items: list[Any]
    next_after: str | None = None


def page_request(call: Call) -> tuple[str | None, int]:
    """The ``after`` id and the ``limit`` (1 to ``PAGE_LIMIT``) a paged list was asked for."""
    return call.query.get("after"), max(1, min(call.query.get("limit") or PAGE_LIMIT, PAGE_LIMIT))


def paged(rows: list[dict[str, Any]], limit: int, keep: Callable[[dict[str, Any]], bool] = lambda row: True,
          ) -> tuple[list[dict[str, Any]], str | None]:
    """The rows of one page that ``keep`` keeps, and the id after which the next page
    starts when the page read was full (a page filtered for scope may be short and
    still have a next one)."""
    return [row for row in rows if keep(row)], rows[-1]["id"] if len(rows) == limit else None


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def role_permissions(tx: Tx, role: str, integrity: RowIntegrity) -> frozenset[str] | None:
    """A role's permissions, built-in or custom; ``None`` if no such role, or if its
    row fails the integrity check."""
    if role in BUILTIN_ROLES:
        return BUILTIN_ROLES[role][1]
    row = Roles(tx).find(role)
    if row is None or not integrity.valid("roles", row):
        return None
    return frozenset(json.loads(row["permissions"]))


def effective_permissions(tx: Tx, principals: list[tuple[str, str]], now: int,
                          integrity: RowIntegrity) -> tuple[EffectivePermissions, list[dict[str, Any]]]:
    grants = [g for g in Grants(tx).live_for(principals, now) if integrity.valid("grants", g)]
    held = []
    for grant in grants:
        permissions = role_permissions(tx, grant["role"], integrity)
        if permissions is not None:
            held.append((permissions, Scope(grant["scope_type"], grant["scope_id"]), grant["expires_at"]))
    return EffectivePermissions.from_grants(held), grants


class CoordinatorBase:
    def __init__(self, database: Database, keys: CoordinatorKeys, *, work_order_ttl: int = 7 * 86400,
                 clock: Callable[[], float] = time.time) -> None:
        self.database = database
        self.keys = keys
        self.work_order_ttl = work_order_ttl
        self._clock = clock
        self._wakeups: dict[str, trio.Event] = {}
        self._ocsp_responders: dict[str, tuple[tuple[str, bytes], Any]] = {}
        """issuer id → (the rows it was built from, the unsealed OCSP responder)."""
        self._root_pem = keys.root.public_bytes(serialization.Encoding.PEM).decode()
        self.authorities = Authorities(keys.master)
        self.integrity = RowIntegrity(keys.master)
        self._audit_key = audit_chain_key(keys.master)
        self.telemetry = Metrics()
        self.public_url = ""
        """The HTTPS base URL clients use; set once the server is bound."""
        self.pki_url: str | None = None
        """The base URL written into certificates for CRL, OCSP and CA issuers: the
        plain-HTTP PKI listener when there is one, else :attr:`public_url`."""

    def now(self) -> int:
        return int(self._clock())

    # --- audit ------------------------------------------------------------------------

    def record(self, tx: Tx, call: Call, *, resource_type: str, resource_id: str, action: str | None = None,
               outcome: str = "success", details: dict[str, Any] | None = None,
               actor: tuple[str, str] | None = None) -> None:
        """Append an audit event for ``call`` inside ``tx`` (the change's own transaction).

        ``actor`` names who acted when the caller is anonymous but presented a
        one-time token (``("enrollment-token", id)``).
        """
        actor_type, actor_id = actor or (str(call.principal.kind), call.principal.id)
        event = audit.AuditRecord(
            at_ms=int(self._clock() * 1000), actor_type=actor_type, actor_id=actor_id,
            action=action or call.operation, resource_type=resource_type, resource_id=resource_id,
            outcome=outcome, request_id=call.meta.request_id, source_address=call.meta.source_address,
            body_sha256=call.meta.body_sha256,
            latency_ms=int((time.monotonic() - call.meta.started) * 1000) if call.meta.started else 0,
            details=details or {})
        # Appended as the transaction's last work, all of its events together: the
        # chain's lock (PostgreSQL) is then held for the append and the COMMIT only.
        tx.collect_at_end("audit", lambda events: audit.append_all(tx, events, key=self._audit_key)).append(event)

    async def record_refusal(self, call: Call, *, count_failure: bool, **fields: Any) -> int:
        """Audit a refused request; count it if authentication failed.

        Returns the failed authentications from the caller's address in the current
        rate-limit window.
        """
        key = f"auth-failure:{call.meta.source_address}"
        window = self.now() // ratelimit.WINDOW * ratelimit.WINDOW

        def write(tx: Tx) -> int:
            limits = RateLimits(tx)
            if count_failure:
                limits.hit(key, window)
            self.record(tx, call, **fields)
            return limits.hits(key, window)

        return await self.database.transact(write)

    # --- authentication ---------------------------------------------------------------

    async def authenticate_api_key(self, token: str) -> Principal:
        key_id = credentials.parse(token, credentials.API_KEY)
        if key_id is None:
            raise errors.Unauthorized("malformed API key")
        now = self.now()

        def check(tx: Tx) -> Principal:
            keys = ApiKeys(tx)
            row = keys.find(key_id)
            if (
                row is None
                or not credentials.matches(token, row["secret_hash"])
                or not self.integrity.valid("api_keys", row)
                or row["revoked_at"] is not None
                or (row["expires_at"] is not None and row["expires_at"] <= now)
            ):
                raise errors.Unauthorized("invalid, revoked or expired API key")
            keys.touch(key_id, now)
            principals = [("api-key", key_id)] + ([("user", row["user_id"])] if row["user_id"] else [])
            permissions, _ = effective_permissions(tx, principals, now, self.integrity)
            return Principal(PrincipalKind.API_KEY, key_id, row["user_id"], permissions, row["expires_at"])

        return await self.database.transact(check)

    async def authenticate_agent(self, token: str, method: str, path: str, *, idle: bool = False) -> Principal:
        """Verify an agent request token and consume its ``jti`` (replays are refused).

        ``idle``: the request is a long poll, which waits for the database behind any
        other request (see :meth:`Database.transact`)."""
        now = self.now()

        def check(tx: Tx) -> Principal:
            agents = Agents(tx)
            found: dict[str, Any] = {}

            def key_for(kid: str):
                row = agents.find(kid)
                if row is None or not self.integrity.valid("agents", row):
                    return None
                found.update(row)
                return jws.public_key_from_raw(row["public_key"])

            try:
                claims = agent_token.verify_request_token(token, key_for=key_for, method=method, path=path, now=now)
            except jws.TokenError as exc:
                raise errors.Unauthorized(f"agent token refused: {exc.detail}", slug="invalid-agent-token") from exc
            if found["retired_at"] is not None:
                # Only the agent's own key gets this far: it alone learns it was retired.
                raise errors.Gone("this agent was retired", slug="agent-retired")
            if not agents.use_token_id(found["id"], claims["jti"], int(claims["exp"])):
                raise errors.Unauthorized("agent token was already used", slug="agent-token-replayed")
            if found["last_seen_at"] is None or found["last_seen_at"] < now - SEEN_PRECISION:
                agents.seen(found["id"], now)
            permissions, _ = effective_permissions(tx, [("agent", found["id"])], now, self.integrity)
            return Principal(PrincipalKind.AGENT, found["id"], None, permissions)

        return await self.database.transact(check, idle=idle)

    # --- authorization inside a resource ----------------------------------------------

    @staticmethod
    def require_on_profile(call: Call, permission: str, profile: dict[str, Any], *, hide: bool = False) -> None:
        """The gate checked ``permission`` somewhere; this checks it covers ``profile``.

        ``hide`` answers 404 instead of 403 where the resource's existence must not leak.
        """
        if call.principal.permissions.holds(permission, Scope("profile", profile["id"]),
                                            issuer_of_profile=profile["issuer_id"]):
            return
        if hide:
            raise errors.NotFound("no such resource")
        raise errors.Forbidden(f"{permission!r} is not granted on profile {profile['name']!r}",
                               slug="scope-denied")

    @staticmethod
    def require_scope(call: Call, permission: str, scope: Scope, issuer_of_profile: str | None = None) -> None:
        if not call.principal.permissions.holds(permission, scope, issuer_of_profile=issuer_of_profile):
            raise errors.Forbidden(f"{permission!r} is not held at {scope}", slug="escalation-denied")

    def profile_visible(self, call: Call, permission: str):
        everything, profiles, issuers = call.principal.permissions.profile_filter(permission)
        return lambda row: everything or row["profile_id"] in profiles or row["issuer_id"] in issuers

    def issuers_in_reach(self, tx: Tx, call: Call, permission: str) -> set[str] | None:
        """Issuer ids the caller holds ``permission`` on, directly or through one of
        their profiles; ``None`` when it is held globally."""
        everything, profiles, issuers = call.principal.permissions.profile_filter(permission)
        if everything:
            return None
        if profiles:
            rows = tx.all(f"SELECT issuer_id FROM profiles WHERE id IN ({', '.join('?' * len(profiles))})",
                          tuple(profiles))
            issuers = issuers | {row["issuer_id"] for row in rows}
        return set(issuers)

    def agents_out_of_reach(self, tx: Tx, call: Call, permission: str,
                            agent_ids: list[str] | None = None) -> set[str]:
        """Agents (of ``agent_ids``, or all) holding a certificate under a profile where
        the caller lacks ``permission``. An agent is in a scoped caller's reach only if
        every certificate on it is: retiring it touches all of them."""
        return self._out_of_reach(tx, call, permission, "agent_id", agent_ids)

    def targets_out_of_reach(self, tx: Tx, call: Call, permission: str,
                             target_ids: list[str] | None = None) -> set[str]:
        """Targets (of ``target_ids``, or all) that a certificate under a profile where
        the caller lacks ``permission`` is deployed to: their settings and commands
        serve that certificate too."""
        return self._out_of_reach(tx, call, permission, "target_id", target_ids)

    def _out_of_reach(self, tx: Tx, call: Call, permission: str, column: str, ids: list[str] | None) -> set[str]:
        everything, profiles, issuers = call.principal.permissions.profile_filter(permission)
        if everything:
            return set()
        sql = (f"SELECT DISTINCT c.{column} AS owner, c.profile_id, p.issuer_id FROM certificates c"
               " JOIN profiles p ON p.id = c.profile_id")
        params: tuple[str, ...] = ()
        if ids is not None:
            if not ids:
                return set()
            sql += f" WHERE c.{column} IN ({', '.join('?' * len(ids))})"
            params = tuple(ids)
        return {row["owner"] for row in tx.all(sql, params)
                if row["profile_id"] not in profiles and row["issuer_id"] not in issuers}

    def require_in_reach(self, tx: Tx, call: Call, permission: str, kind: str, id: str, *,
                         hide: bool = False) -> None:
        """Refuse unless every certificate on the ``agent`` or deployed to the ``target``
        ``id`` is where ``permission`` is held (``hide``: as if it did not exist)."""
        if self._out_of_reach(tx, call, permission, f"{kind}_id", [id]):
            if hide:
                raise errors.NotFound(f"{kind} {id} does not exist")
            raise errors.Forbidden(f"{permission!r} is not granted on every profile with certificates on {kind} {id}",
                                   slug="scope-denied")

    def resolve_profile(self, tx: Tx, name_or_id: str) -> dict[str, Any]:
        profile = Profiles(tx).find(name_or_id)
        if profile is None:
            raise errors.UnprocessableEntity(f"no profile {name_or_id!r}", slug="unknown-profile")
        return profile

    def pki_base(self) -> str:
        return (self.pki_url or self.public_url).rstrip("/")

    # --- wakeups for long polls --------------------------------------------------------

    def wake(self, agent_id: str) -> None:
        event = self._wakeups.pop(agent_id, None)
        if event is not None:
            event.set()
