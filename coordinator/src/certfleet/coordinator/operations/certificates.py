"""Profiles and managed certificates, as operators see them."""

from __future__ import annotations

import json
from typing import Any

import msgspec

from certfleet.shared import wire
from certfleet.shared.workorder import OrderKind, sign_work_order

from .. import errors
from ..core import Call, CoordinatorBase, new_id
from ..rbac import Scope
from ..storage import Agents, Certificates, Profiles, Tx, WorkOrders

__all__ = ["CertificateOperations", "certificate_info"]


def certificate_info(row: dict[str, Any]) -> wire.CertificateInfo:
    return wire.CertificateInfo(
        id=row["id"], names=json.loads(row["names"]), key_type=row["key_type"],
        lifetime_seconds=row["lifetime_seconds"], agent_id=row["agent_id"],
        target=msgspec.json.decode(row["target"], type=wire.FileTarget), status=row["status"],
        created_at=row["created_at"], profile_id=row["profile_id"], serial=row["serial"],
        not_before=row["not_before"], not_after=row["not_after"],
        fingerprint_sha256=row["fingerprint_sha256"], last_error=row["last_error"],
    )


def _profile_info(row: dict[str, Any]) -> wire.ProfileInfo:
    return wire.ProfileInfo(id=row["id"], name=row["name"], issuer_id=row["issuer_id"], created_at=row["created_at"])


class CertificateOperations(CoordinatorBase):
    async def profiles_list(self, call: Call) -> list[wire.ProfileInfo]:
        rows = await self.database.transact(lambda tx: Profiles(tx).list())
        visible = self.profile_visible(call, "profile.read")
        return [_profile_info(r) for r in rows if visible({**r, "profile_id": r["id"]})]

    async def profiles_create(self, call: Call) -> wire.ProfileInfo:
        body: wire.ProfileCreate = call.body

        def create(tx: Tx) -> dict[str, Any]:
            issuer = tx.one("SELECT id FROM issuers WHERE id = ? OR name = ?", (body.issuer, body.issuer))
            if issuer is None:
                raise errors.UnprocessableEntity(f"no issuer {body.issuer!r}", slug="unknown-issuer")
            self.require_scope(call, "profile.edit", Scope("issuer", issuer["id"]))
            profiles = Profiles(tx)
            if profiles.find(body.name) is not None:
                raise errors.Conflict(f"profile {body.name!r} exists")
            profile_id = new_id("prf")
            profiles.insert(id=profile_id, name=body.name, issuer_id=issuer["id"], now=self.now())
            self.record(tx, call, resource_type="profile", resource_id=profile_id,
                        details={"name": body.name, "issuer_id": issuer["id"]})
            return profiles.get(profile_id)

        return _profile_info(await self.database.transact(create))

    async def certificates_create(self, call: Call) -> wire.CertificateInfo:
        body: wire.CertificateCreate = call.body
        names = list(body.names())
        now = self.now()
        certificate_id = new_id("crt")
        order_id = new_id("ord")
        token = sign_work_order(
            key=self.keys.work_order_key, order_id=order_id, agent_id=body.agent_id, kind=OrderKind.ISSUE,
            payload=wire.IssueOrder(certificate_id=certificate_id, names=names, key_type=body.key_type,
                                    target=body.target),
            now=now, ttl=self.work_order_ttl,
        )

        def create(tx: Tx) -> dict[str, Any]:
            profile = self.resolve_profile(tx, body.profile)
            self.require_on_profile(call, "cert.create", profile)
            if Agents(tx).find(body.agent_id) is None:
                raise errors.UnprocessableEntity(f"no agent {body.agent_id!r}", slug="unknown-agent")
            certificates = Certificates(tx)
            certificates.insert(id=certificate_id, names=names, key_type=str(body.key_type),
                                lifetime_seconds=body.lifetime_seconds, agent_id=body.agent_id,
                                profile_id=profile["id"], target=wire.encode(body.target).decode(), now=now)
            WorkOrders(tx).insert(id=order_id, agent_id=body.agent_id, certificate_id=certificate_id,
                                  kind=str(OrderKind.ISSUE), token=token, expires_at=now + self.work_order_ttl,
                                  now=now)
            self.record(tx, call, resource_type="certificate", resource_id=certificate_id,
                        details={"names": names, "agent_id": body.agent_id, "profile_id": profile["id"]})
            self.record(tx, call, action="work-order.queue", resource_type="work-order", resource_id=order_id,
                        details={"kind": "issue", "certificate_id": certificate_id})
            return certificates.get(certificate_id)

        row = await self.database.transact(create)
        self.wake(body.agent_id)
        return certificate_info(row)

    async def certificates_list(self, call: Call) -> list[wire.CertificateInfo]:
        rows = await self.database.transact(lambda tx: Certificates(tx).list())
        visible = self.profile_visible(call, "cert.read")
        return [certificate_info(row) for row in rows if visible(row)]

    async def certificates_get(self, call: Call) -> wire.CertificateInfo:
        def get(tx: Tx) -> dict[str, Any]:
            row = Certificates(tx).get(call.params["certificate_id"])
            self.require_on_profile(call, "cert.read", Profiles(tx).get(row["profile_id"]), hide=True)
            return row

        return certificate_info(await self.database.transact(get))
