"""Identity and access: bootstrap, API keys, roles, grants, ``me``.

The escalation guard: nobody grants (or hands to a new key, or puts in a custom
role) a permission at a scope they do not hold themselves, and the last live global
admin cannot be removed.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import msgspec

from certfleet.shared import wire
from certfleet.shared.api import OPERATIONS, Auth

from .. import errors
from ..auth import credentials
from ..auth.rbac import ALL_PERMISSIONS, BUILTIN_ROLES, GLOBAL, Scope, earliest
from ..core import Call, CoordinatorBase, Page, new_id, page_request, paged, role_permissions
from ..storage import ApiKeys, BootstrapTokens, Grants, Issuers, Profiles, Roles, Tx

__all__ = ["AccessOperations"]


def _key_info(row: dict[str, Any], token: str | None = None) -> wire.ApiKeyInfo:
    return wire.ApiKeyInfo(id=row["id"], name=row["name"], user=row["user_id"], created_at=row["created_at"],
                           expires_at=row["expires_at"], revoked_at=row["revoked_at"],
                           last_used_at=row["last_used_at"], token=token)


def _grant_info(row: dict[str, Any]) -> wire.GrantInfo:
    return wire.GrantInfo(id=row["id"], principal_type=row["principal_type"], principal_id=row["principal_id"],
                          role=row["role"], scope_type=row["scope_type"], scope_id=row["scope_id"],
                          created_by=row["created_by"], created_at=row["created_at"], expires_at=row["expires_at"])


class AccessOperations(CoordinatorBase):
    # --- guards -----------------------------------------------------------------------

    def _resolve_scope(self, tx: Tx, scope: Scope) -> tuple[Scope, str | None]:
        """The scope with a profile or issuer named by name or id turned into its id
        (what grants store and checks compare), and the issuer of a profile scope."""
        if scope.type == "profile":
            profile = Profiles(tx).find(scope.id or "")
            if profile is None:
                raise errors.UnprocessableEntity(f"no profile {scope.id!r}", slug="unknown-profile")
            return Scope("profile", profile["id"]), profile["issuer_id"]
        if scope.type == "issuer":
            issuer = Issuers(tx).find(scope.id or "")
            if issuer is None:
                raise errors.UnprocessableEntity(f"no issuer {scope.id!r}", slug="unknown-issuer")
            return Scope("issuer", issuer["id"]), None
        return scope, None

    def _guard_role(self, tx: Tx, call: Call, role: str, scope: Scope) -> tuple[Scope, int | None]:
        """The scope resolved to ids, if the caller holds every permission of ``role``
        there; and when the caller's own standing for them ends (``None``: never)."""
        permissions = role_permissions(tx, role, self.integrity)
        if permissions is None:
            raise errors.UnprocessableEntity(f"no role {role!r}", slug="unknown-role")
        scope, issuer = self._resolve_scope(tx, scope)
        held = {p: call.principal.permissions.held_until(p, scope, issuer_of_profile=issuer) for p in permissions}
        missing = sorted(p for p, (holds, _) in held.items() if not holds)
        if missing:
            raise errors.Forbidden(
                f"you cannot grant {role!r} at {scope}: you do not hold {', '.join(missing)} there",
                slug="escalation-denied")
        return scope, earliest(call.principal.expires_at, *(until for _, until in held.values()))

    def _refuse_past_expiry(self, expires_at: int | None) -> None:
        """Keys and grants alike: an expiry must lie ahead, or the credential is dead at birth."""
        if expires_at is not None and expires_at <= self.now():
            raise errors.UnprocessableEntity("expires_at is in the past", slug="invalid-expiry")

    def _within_standing(self, requested: int | None, standing: int | None, what: str) -> int | None:
        """The expiry of a credential or grant the caller hands out: never later than the
        caller's own access to what it gives (their key's expiry and their grants').
        Without a requested expiry it takes the caller's."""
        if standing is None:
            return requested
        if requested is None:
            return standing
        if requested > standing:
            ends = datetime.datetime.fromtimestamp(standing, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            raise errors.UnprocessableEntity(
                f"{what} would outlive your own access, which ends at {ends}: ask for expires_at at or before it",
                slug="outlives-grantor")
        return requested

    def _guard_last_admin(self, tx: Tx, *, dropping_grant: str | None = None, dropping_key: str | None = None) -> None:
        def still_admin(grant: dict[str, Any]) -> bool:
            if grant["id"] == dropping_grant:
                return False
            return not (grant["principal_type"] == "api-key" and grant["principal_id"] == dropping_key)

        if not any(still_admin(g) for g in Grants(tx).live_global_admins(self.now())):
            raise errors.Conflict("this would remove the last admin", slug="last-admin")

    def _grant(self, tx: Tx, call: Call, *, principal_type: str, principal_id: str, role: str, scope: Scope,
               expires_at: int | None) -> dict[str, Any]:
        grant_id = new_id("grt")
        grants = Grants(tx)
        grants.insert(id=grant_id, principal_type=principal_type, principal_id=principal_id, role=role,
                      scope_type=scope.type, scope_id=scope.id, expires_at=expires_at,
                      created_by=call.principal.actor, now=self.now())
        self.integrity.seal(tx, "grants", grant_id)
        return grants.get(grant_id)

    # --- bootstrap ----------------------------------------------------------------------

    async def auth_bootstrap(self, call: Call) -> wire.BootstrapResponse:
        token: str = call.body.token
        now = self.now()
        minted = credentials.mint(credentials.API_KEY)

        def exchange(tx: Tx) -> None:
            tokens = BootstrapTokens(tx)
            row = tokens.current()
            if row is None or row["used_at"] is not None:
                raise errors.Gone("the bootstrap token has already been exchanged", slug="bootstrap-used")
            if not credentials.matches(token, row["secret_hash"]):
                raise errors.Unauthorized("invalid bootstrap token")
            # The conditional update is what makes two racing exchanges yield one admin.
            if not tokens.mark_used(row["id"], now):
                raise errors.Gone("the bootstrap token has already been exchanged", slug="bootstrap-used")
            ApiKeys(tx).insert(id=minted.id, secret_hash=minted.secret_hash, name="bootstrap admin",
                               user_id="admin", created_by="bootstrap", now=now)
            self.integrity.seal(tx, "api_keys", minted.id)
            self._grant(tx, call, principal_type="api-key", principal_id=minted.id, role="admin", scope=GLOBAL,
                        expires_at=None)
            self.record(tx, call, resource_type="api-key", resource_id=minted.id, details={"role": "admin"},
                        actor=("bootstrap-token", row["id"]))

        await self.database.transact(exchange)
        return wire.BootstrapResponse(api_key=minted.token, key_id=minted.id, role="admin")

    # --- me -------------------------------------------------------------------------------

    async def auth_me(self, call: Call) -> wire.Me:
        principal = call.principal
        principals = [(str(principal.kind), principal.id)] + ([("user", principal.user)] if principal.user else [])
        grants = await self.database.transact(lambda tx: Grants(tx).live_for(principals, self.now()))
        return wire.Me(principal_type=str(principal.kind), principal_id=principal.id, user=principal.user,
                       grants=[_grant_info(g) for g in grants], permissions=principal.permissions.describe())

    async def auth_permissions(self, call: Call) -> list[wire.PermissionInfo]:
        by_permission: dict[str, list[str]] = {}
        for op in OPERATIONS:
            if op.auth is not Auth.PUBLIC:
                by_permission.setdefault(op.permission, []).append(op.name)
        return [wire.PermissionInfo(permission=p, operations=ops,
                                    roles=[r for r, (_, perms) in BUILTIN_ROLES.items() if p in perms])
                for p, ops in sorted(by_permission.items())]

    # --- API keys -------------------------------------------------------------------------

    def _create_key(self, tx: Tx, call: Call, body: wire.ApiKeyCreate, user: str | None) -> tuple[dict, str]:
        self._refuse_past_expiry(body.expires_at)
        expires_at = body.expires_at
        for role in body.roles:
            _, standing = self._guard_role(tx, call, role, GLOBAL)
            expires_at = self._within_standing(expires_at, standing, "the key")
        body = msgspec.structs.replace(body, expires_at=expires_at)
        minted = credentials.mint(credentials.API_KEY)
        keys = ApiKeys(tx)
        keys.insert(id=minted.id, secret_hash=minted.secret_hash, name=body.name, user_id=user,
                    created_by=call.principal.actor, now=self.now(), expires_at=body.expires_at)
        self.integrity.seal(tx, "api_keys", minted.id)
        for role in body.roles:
            self._grant(tx, call, principal_type="api-key", principal_id=minted.id, role=role, scope=GLOBAL,
                        expires_at=body.expires_at)
        self.record(tx, call, resource_type="api-key", resource_id=minted.id,
                    details={"name": body.name, "user": user, "roles": body.roles, "expires_at": body.expires_at})
        return keys.get(minted.id), minted.token

    async def auth_keys_create(self, call: Call) -> wire.ApiKeyInfo:
        row, token = await self.database.transact(lambda tx: self._create_key(tx, call, call.body, call.body.user))
        return _key_info(row, token)

    async def auth_keys_list(self, call: Call) -> Page:
        after, limit = page_request(call)
        rows, next_after = paged(await self.database.transact(lambda tx: ApiKeys(tx).list(after=after, limit=limit)),
                                 limit)
        return Page([_key_info(r) for r in rows], next_after)

    def _own(self, call: Call, row: dict[str, Any]) -> bool:
        principal = call.principal
        return row["id"] == principal.id or (principal.user is not None and row["user_id"] == principal.user)

    def _rotate_key(self, tx: Tx, call: Call, key_id: str, *, own: bool) -> tuple[dict, str]:
        keys = ApiKeys(tx)
        row = keys.get(key_id)
        if own and not self._own(call, row):
            raise errors.NotFound(f"API key {key_id} does not exist")
        if row["revoked_at"] is not None:
            raise errors.Conflict("a revoked key cannot be rotated", slug="key-revoked")
        # Same id, new secret: grants and audit history stay attached to the key.
        minted = credentials.mint(credentials.API_KEY, id=key_id)
        keys.set_secret(key_id, minted.secret_hash)
        self.integrity.seal(tx, "api_keys", key_id)
        self.record(tx, call, resource_type="api-key", resource_id=key_id)
        return keys.get(key_id), minted.token

    def _revoke_key(self, tx: Tx, call: Call, key_id: str, *, own: bool) -> dict:
        keys = ApiKeys(tx)
        row = keys.get(key_id)
        if own and not self._own(call, row):
            raise errors.NotFound(f"API key {key_id} does not exist")
        self._guard_last_admin(tx, dropping_key=key_id)
        keys.revoke(key_id, self.now())
        self.integrity.seal(tx, "api_keys", key_id)
        self.record(tx, call, resource_type="api-key", resource_id=key_id)
        return keys.get(key_id)

    async def auth_keys_rotate(self, call: Call) -> wire.ApiKeyInfo:
        row, token = await self.database.transact(lambda tx: self._rotate_key(tx, call, call.params["key_id"], own=False))
        return _key_info(row, token)

    async def auth_keys_revoke(self, call: Call) -> wire.ApiKeyInfo:
        return _key_info(await self.database.transact(lambda tx: self._revoke_key(tx, call, call.params["key_id"], own=False)))

    async def auth_own_keys_create(self, call: Call) -> wire.ApiKeyInfo:
        if call.principal.user is None:
            raise errors.Conflict("the calling key belongs to no user, so it has no own keys to add to",
                                  slug="no-user")
        if call.body.user not in (None, call.principal.user):
            raise errors.Forbidden("own keys belong to your own user", slug="escalation-denied")
        row, token = await self.database.transact(
            lambda tx: self._create_key(tx, call, call.body, call.principal.user))
        return _key_info(row, token)

    async def auth_own_keys_list(self, call: Call) -> Page:
        after, limit = page_request(call)
        rows, next_after = paged(await self.database.transact(
            lambda tx: ApiKeys(tx).list(call.principal.user, key_id=call.principal.id, after=after, limit=limit)), limit)
        return Page([_key_info(r) for r in rows], next_after)

    async def auth_own_keys_rotate(self, call: Call) -> wire.ApiKeyInfo:
        row, token = await self.database.transact(lambda tx: self._rotate_key(tx, call, call.params["key_id"], own=True))
        return _key_info(row, token)

    async def auth_own_keys_revoke(self, call: Call) -> wire.ApiKeyInfo:
        return _key_info(await self.database.transact(lambda tx: self._revoke_key(tx, call, call.params["key_id"], own=True)))

    # --- roles ---------------------------------------------------------------------------

    async def auth_roles_list(self, call: Call) -> list[wire.RoleInfo]:
        custom = await self.database.transact(lambda tx: Roles(tx).list())
        return [wire.RoleInfo(name=n, permissions=sorted(p), description=d, builtin=True)
                for n, (d, p) in BUILTIN_ROLES.items()] + [
            wire.RoleInfo(name=r["name"], permissions=json.loads(r["permissions"]), description=r["description"])
            for r in custom]

    async def auth_roles_create(self, call: Call) -> wire.RoleInfo:
        body: wire.RoleCreate = call.body
        unknown = sorted(set(body.permissions) - ALL_PERMISSIONS)
        if unknown:
            raise errors.UnprocessableEntity(f"unknown permissions: {', '.join(unknown)}", slug="unknown-permission")
        if body.name in BUILTIN_ROLES:
            raise errors.Conflict(f"{body.name!r} is a built-in role")
        missing = sorted(p for p in body.permissions if not call.principal.permissions.holds(p))
        if missing:
            raise errors.Forbidden(f"you do not hold {', '.join(missing)} globally", slug="escalation-denied")

        def create(tx: Tx) -> None:
            Roles(tx).insert(name=body.name, description=body.description, permissions=body.permissions,
                             created_by=call.principal.actor, now=self.now())
            self.integrity.seal(tx, "roles", body.name)
            self.record(tx, call, resource_type="role", resource_id=body.name,
                        details={"permissions": sorted(body.permissions)})

        await self.database.transact(create)
        return wire.RoleInfo(name=body.name, permissions=sorted(body.permissions), description=body.description)

    async def auth_roles_delete(self, call: Call) -> wire.RoleInfo:
        name = call.params["role"]

        def delete(tx: Tx) -> dict[str, Any]:
            if name in BUILTIN_ROLES:
                raise errors.Conflict(f"{name!r} is a built-in role", slug="builtin-role")
            roles = Roles(tx)
            row = roles.find(name)
            if row is None:
                raise errors.NotFound(f"role {name} does not exist")
            if Grants(tx).count_for_role(name):
                raise errors.Conflict(f"role {name!r} is still granted; revoke its grants first", slug="role-in-use")
            roles.delete(name)
            self.record(tx, call, resource_type="role", resource_id=name)
            return row

        row = await self.database.transact(delete)
        return wire.RoleInfo(name=row["name"], permissions=json.loads(row["permissions"]),
                             description=row["description"])

    # --- grants --------------------------------------------------------------------------

    async def auth_grants_list(self, call: Call) -> Page:
        after, limit = page_request(call)
        rows, next_after = paged(await self.database.transact(lambda tx: Grants(tx).list(after=after, limit=limit)),
                                 limit)
        return Page([_grant_info(g) for g in rows], next_after)

    async def auth_grants_create(self, call: Call) -> wire.GrantInfo:
        body: wire.GrantCreate = call.body
        self._refuse_past_expiry(body.expires_at)
        scope = Scope(body.scope_type, body.scope_id)

        def create(tx: Tx) -> dict[str, Any]:
            resolved, standing = self._guard_role(tx, call, body.role, scope)
            expires_at = self._within_standing(body.expires_at, standing, "the grant")
            grant = self._grant(tx, call, principal_type=body.principal_type, principal_id=body.principal_id,
                                role=body.role, scope=resolved, expires_at=expires_at)
            self.record(tx, call, resource_type="grant", resource_id=grant["id"],
                        details={"principal": f"{body.principal_type}:{body.principal_id}", "role": body.role,
                                 "scope": str(resolved), "expires_at": expires_at})
            return grant

        return _grant_info(await self.database.transact(create))

    async def auth_grants_revoke(self, call: Call) -> wire.GrantInfo:
        grant_id = call.params["grant_id"]

        def revoke(tx: Tx) -> dict[str, Any]:
            grants = Grants(tx)
            grant = grants.get(grant_id)
            # Taking a role away needs the same standing as giving it.
            self._guard_role(tx, call, grant["role"], Scope(grant["scope_type"], grant["scope_id"]))
            self._guard_last_admin(tx, dropping_grant=grant_id)
            grants.delete(grant_id)
            self.record(tx, call, resource_type="grant", resource_id=grant_id,
                        details={"principal": f"{grant['principal_type']}:{grant['principal_id']}",
                                 "role": grant["role"]})
            return grant

        return _grant_info(await self.database.transact(revoke))
