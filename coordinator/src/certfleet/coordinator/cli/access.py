"""``keys``, ``roles``, ``grants``, ``me`` and ``permissions``: who may do what."""

from __future__ import annotations

import argparse
import time
from typing import Any

from certfleet.shared import wire

from ..client import ApiClient
from .arguments import duration

__all__ = ["KEY_COLUMNS", "add_grants", "add_keys", "add_me", "add_permissions", "add_roles", "run_grants",
           "run_keys", "run_me", "run_permissions", "run_roles"]

KEY_COLUMNS = ["id", "name", "user", "expires_at", "revoked_at", "last_used_at"]
GRANT_COLUMNS = ["id", "principal_type", "principal_id", "role", "scope_type", "scope_id", "expires_at"]


def add_keys(commands: argparse._SubParsersAction) -> None:
    keys = commands.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    key_create = keys.add_parser("create", help="create a key (the secret is shown once)")
    key_create.add_argument("name", help="what the key is for, e.g. ci-deploy")
    key_create.add_argument("--role", action="append", default=[], help="role granted globally (repeatable)")
    key_create.add_argument("--user", help="the person the key acts for (default: none, a service key)")
    key_create.add_argument("--ttl", type=duration, help="expire after this long")
    key_create.add_argument("--own", action="store_true", help="create it for your own user (cli role)")
    key_list = keys.add_parser("list", help="API keys (never their secrets)")
    key_list.add_argument("--own", action="store_true", help="only your own user's keys")
    for verb in ("rotate", "revoke"):
        key_verb = keys.add_parser(verb, help="a new secret, shown once" if verb == "rotate" else
                                   "the key stops working at once")
        key_verb.add_argument("key_id", help="the key's id")
        key_verb.add_argument("--own", action="store_true", help="a key of your own user (cli role)")


async def run_keys(api: ApiClient, args: argparse.Namespace) -> Any:
    action = args.action
    now = int(time.time())
    prefix = "auth.own-keys" if args.own else "auth.keys"
    if action == "create":
        body = wire.ApiKeyCreate(name=args.name, roles=args.role, user=args.user,
                                 expires_at=now + args.ttl if args.ttl else None)
        result = await api.call(f"{prefix}.create", body)
        return result, None, f"API key {result.id} (shown once):\n{result.token}"
    if action == "list":
        return await api.call(f"{prefix}.list"), KEY_COLUMNS, None
    result = await api.call(f"{prefix}.{action}", key_id=args.key_id)
    if action == "rotate":
        return result, None, f"new secret for {result.id} (shown once; the old one no longer works):\n{result.token}"
    return result, KEY_COLUMNS, None


def add_roles(commands: argparse._SubParsersAction) -> None:
    roles = commands.add_parser("roles", help="roles").add_subparsers(dest="action", required=True)
    roles.add_parser("list", help="built-in and custom roles, with their permissions")
    role_create = roles.add_parser("create", help="a custom role")
    role_create.add_argument("name", help="the role's name")
    role_create.add_argument("--permission", action="append", required=True,
                             help="a permission it grants (repeatable; see `certfleet permissions`)")
    role_create.add_argument("--description", default="", help="what the role is for")
    role_delete = roles.add_parser("delete", help="delete a custom role no grant uses")
    role_delete.add_argument("name", help="the role's name")


async def run_roles(api: ApiClient, args: argparse.Namespace) -> Any:
    action = args.action
    if action == "list":
        return await api.call("auth.roles.list"), ["name", "builtin", "permissions"], None
    if action == "create":
        body = wire.RoleCreate(name=args.name, permissions=args.permission, description=args.description)
        return await api.call("auth.roles.create", body), ["name", "permissions"], None
    return await api.call("auth.roles.delete", role=args.name), ["name", "permissions"], None


def add_grants(commands: argparse._SubParsersAction) -> None:
    grants = commands.add_parser("grants", help="role grants").add_subparsers(dest="action", required=True)
    grants.add_parser("list", help="who holds which role, where")
    grant_create = grants.add_parser("create", help="give a principal a role, globally or on one profile or issuer")
    grant_create.add_argument("principal", help="api-key:ID, user:NAME or agent:ID")
    grant_create.add_argument("role", help="the role's name")
    grant_create.add_argument("--profile", help="only on this profile")
    grant_create.add_argument("--issuer", help="only on this issuer")
    grant_create.add_argument("--ttl", type=duration, help="expire after this long, e.g. 8h (default: never)")
    grant_revoke = grants.add_parser("revoke", help="take a grant back")
    grant_revoke.add_argument("grant_id", help="the grant's id")


def _principal(text: str) -> tuple[str, str]:
    kind, sep, value = text.partition(":")
    if not sep or kind not in ("api-key", "user", "agent") or not value:
        raise SystemExit("certfleet: a principal is api-key:ID, user:NAME or agent:ID")
    return kind, value


async def run_grants(api: ApiClient, args: argparse.Namespace) -> Any:
    action = args.action
    now = int(time.time())
    if action == "list":
        return await api.call("auth.grants.list"), GRANT_COLUMNS, None
    if action == "revoke":
        return await api.call("auth.grants.revoke", grant_id=args.grant_id), GRANT_COLUMNS, None
    kind, principal_id = _principal(args.principal)
    scope_type, scope_id = ("profile", args.profile) if args.profile else (
        ("issuer", args.issuer) if args.issuer else ("global", None))
    body = wire.GrantCreate(principal_type=kind, principal_id=principal_id, role=args.role,
                            scope_type=scope_type, scope_id=scope_id,
                            expires_at=now + args.ttl if args.ttl else None)
    return await api.call("auth.grants.create", body), GRANT_COLUMNS, None


def add_me(commands: argparse._SubParsersAction) -> None:
    commands.add_parser("me", help="who am I, with which permissions")


async def run_me(api: ApiClient, args: argparse.Namespace) -> Any:
    return await api.call("auth.me"), ["principal_type", "principal_id", "user", "permissions"], None


def add_permissions(commands: argparse._SubParsersAction) -> None:
    permissions = commands.add_parser("permissions", help="the permission catalogue")
    permissions.add_argument("--markdown", action="store_true",
                             help="print the reference page (docs/reference/permissions.md) offline")


async def run_permissions(api: ApiClient, args: argparse.Namespace) -> Any:
    return await api.call("auth.permissions"), ["permission", "roles", "operations"], None
