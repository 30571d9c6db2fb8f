"""Access control: the bootstrap key, API keys, roles, grants and what the caller
holds (``Me``)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from .types import Description, Identifier, KeyName, Message, Timestamp


class BootstrapRequest(Message):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class BootstrapResponse(Message):
    api_key: str
    key_id: str
    role: str


PrincipalType = Literal["api-key", "user", "agent"]
ScopeType = Literal["global", "profile", "issuer"]


class ApiKeyCreate(Message):
    """A new API key. ``roles`` are granted globally at creation; narrower grants
    are made with the grants API. Every role must be within the caller's own
    permissions."""

    name: KeyName
    roles: Annotated[list[Identifier], msgspec.Meta(max_length=16)] = []
    user: Identifier | None = None
    expires_at: Timestamp | None = None


class ApiKeyInfo(Message):
    id: str
    name: str
    user: str | None
    created_at: int
    expires_at: int | None = None
    revoked_at: int | None = None
    last_used_at: int | None = None
    token: str | None = None
    """Present only in the answer to create and rotate: shown once."""


class RoleCreate(Message):
    name: Identifier
    permissions: Annotated[list[Annotated[str, msgspec.Meta(max_length=64)]], msgspec.Meta(min_length=1, max_length=256)]
    description: Description = ""


class RoleInfo(Message):
    name: str
    permissions: list[str]
    description: str = ""
    builtin: bool = False


class GrantCreate(Message):
    principal_type: PrincipalType
    principal_id: Identifier
    role: Identifier
    scope_type: ScopeType = "global"
    scope_id: Identifier | None = None
    expires_at: Timestamp | None = None

    def validate(self) -> None:
        if (self.scope_type == "global") != (self.scope_id is None):
            raise msgspec.ValidationError("scope_id is required for a profile or issuer scope, and only then")


class GrantInfo(Message):
    id: str
    principal_type: str
    principal_id: str
    role: str
    scope_type: str
    scope_id: str | None
    created_by: str
    created_at: int
    expires_at: int | None = None


class Me(Message):
    principal_type: str
    principal_id: str
    user: str | None
    grants: list[GrantInfo]
    permissions: dict[str, list[str]]
    """Each permission with the scopes it holds at: ``global`` or ``profile:ID`` /
    ``issuer:ID``."""


class PermissionInfo(Message):
    permission: str
    operations: list[str]
    roles: list[str]
