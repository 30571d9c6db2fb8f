"""The coordinator's operations: one method per catalogue entry.

Methods receive a decoded, validated request and the caller, do their work in one
database transaction (mutation and audit row together) and return a wire message.
They raise :mod:`errors` exceptions and never choose HTTP status codes.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio
from cryptography.hazmat.primitives import serialization

from certfleet.shared import agent_token, jws, wire
from certfleet.shared.pki import CsrError, certificate_fingerprint, parse_csr
from certfleet.shared.workorder import OrderKind, sign_work_order

from . import credentials, errors
from .initialize import CoordinatorKeys
from .principal import Principal, PrincipalKind
from .storage import (
    Agents,
    ApiKeys,
    Audit,
    BootstrapTokens,
    Certificates,
    Database,
    EnrollmentTokens,
    Tx,
    WorkOrders,
)

__all__ = ["Call", "Coordinator"]

MAX_POLL_WAIT = 30
# A replica other than the one that queued an order learns of it by re-reading the
# database this often during a long poll.
POLL_RECHECK = 5.0


@dataclass(frozen=True)
class Call:
    principal: Principal
    body: Any = None
    params: dict[str, str] = field(default_factory=dict)
    query: dict[str, Any] = field(default_factory=dict)


def _spki_sha256(public_key: Any) -> str:
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


class Coordinator:
    def __init__(
        self,
        database: Database,
        keys: CoordinatorKeys,
        *,
        work_order_ttl: int = 7 * 86400,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.database = database
        self.keys = keys
        self.work_order_ttl = work_order_ttl
        self._clock = clock
        self._wakeups: dict[str, trio.Event] = {}
        self._root_pem = keys.root.public_bytes(serialization.Encoding.PEM).decode()
        self._chain_pem = keys.issuing.certificate_pem.decode()

    def now(self) -> int:
        return int(self._clock())

    # --- authentication, called by the HTTP layer ------------------------------------

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
                or row["revoked_at"] is not None
                or (row["expires_at"] is not None and row["expires_at"] <= now)
            ):
                raise errors.Unauthorized("invalid, revoked or expired API key")
            keys.touch(key_id, now)
            return Principal(
                PrincipalKind.API_KEY, key_id, credentials.ROLE_PERMISSIONS.get(row["role"], frozenset())
            )

        return await self.database.transact(check)

    async def authenticate_agent(self, token: str, method: str, path: str) -> Principal:
        """Verify an agent request token and consume its ``jti`` (replays are refused)."""
        now = self.now()

        def check(tx: Tx) -> Principal:
            agents = Agents(tx)
            found: dict[str, Any] = {}

            def key_for(kid: str):
                row = agents.find(kid)
                if row is None:
                    return None
                found.update(row)
                return jws.public_key_from_raw(row["public_key"])

            try:
                claims = agent_token.verify_request_token(
                    token, key_for=key_for, method=method, path=path, now=now
                )
            except jws.TokenError as exc:
                raise errors.Unauthorized(f"agent token refused: {exc.detail}", slug="invalid-agent-token") from exc
            if not agents.use_token_id(found["id"], claims["jti"], int(claims["exp"]), now):
                raise errors.Unauthorized("agent token was already used", slug="agent-token-replayed")
            agents.seen(found["id"], now)
            return Principal(PrincipalKind.AGENT, found["id"])

        return await self.database.transact(check)

    # --- public -----------------------------------------------------------------------

    async def health(self, call: Call) -> wire.Health:
        await self.database.transact(lambda tx: tx.one("SELECT 1 AS ok"))
        return wire.Health(status="ok")

    async def pki_ca_bundle(self, call: Call) -> str:
        return self._root_pem

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
            if not tokens.mark_used(row["id"], now):
                raise errors.Gone("the bootstrap token has already been exchanged", slug="bootstrap-used")
            ApiKeys(tx).insert(id=minted.id, secret_hash=minted.secret_hash, name="bootstrap admin",
                               role="admin", now=now)
            Audit(tx).record(actor="bootstrap", action="auth.bootstrap", subject=f"api-key:{minted.id}",
                             now=now, details={"role": "admin"})

        await self.database.transact(exchange)
        return wire.BootstrapResponse(api_key=minted.token, key_id=minted.id, role="admin")

    async def agent_enroll(self, call: Call) -> wire.EnrollResponse:
        body: wire.EnrollRequest = call.body
        refused = errors.Unauthorized("invalid, spent or expired enrollment token", slug="invalid-enrollment-token")
        token_id = credentials.parse(body.token, credentials.ENROLLMENT)
        if token_id is None:
            raise refused
        try:
            public_key = jws.public_key_from_raw(body.public_key)
        except jws.TokenError as exc:
            raise errors.BadRequest(exc.detail) from exc
        now = self.now()
        agent_id = _new_id("agt")

        def enroll(tx: Tx) -> None:
            tokens = EnrollmentTokens(tx)
            row = tokens.find(token_id)
            if row is None or not credentials.matches(body.token, row["secret_hash"]):
                raise refused
            if not tokens.consume(token_id, now):
                raise refused
            agents = Agents(tx)
            if tx.one("SELECT id FROM agents WHERE public_key = ?", (body.public_key,)):
                raise errors.Conflict("this identity key is already enrolled")
            agents.insert(id=agent_id, name=body.name, public_key=jws.public_key_raw(public_key),
                          labels=json.loads(row["labels"]), enrollment_token_id=token_id, now=now)
            Audit(tx).record(actor=f"enrollment-token:{token_id}", action="agent.enroll",
                             subject=f"agent:{agent_id}", now=now, details={"name": body.name})

        await self.database.transact(enroll)
        key = self.keys.work_order_key.public_key()
        return wire.EnrollResponse(
            agent_id=agent_id,
            work_order_keys=[wire.WorkOrderKey(kid=self.keys.work_order_kid, public_key=jws.public_key_raw(key))],
        )

    # --- operators --------------------------------------------------------------------

    async def agents_enrollment_token_create(self, call: Call) -> wire.EnrollmentTokenInfo:
        body: wire.EnrollmentTokenCreate = call.body
        minted = credentials.mint(credentials.ENROLLMENT)
        now = self.now()
        expires_at = now + body.ttl_seconds

        def create(tx: Tx) -> None:
            EnrollmentTokens(tx).insert(id=minted.id, secret_hash=minted.secret_hash, uses=body.uses,
                                        expires_at=expires_at, labels=body.labels,
                                        created_by=call.principal.actor, now=now)
            Audit(tx).record(actor=call.principal.actor, action="agent.enroll-token.create",
                             subject=f"enrollment-token:{minted.id}", now=now,
                             details={"uses": body.uses, "expires_at": expires_at})

        await self.database.transact(create)
        return wire.EnrollmentTokenInfo(id=minted.id, token=minted.token, uses_left=body.uses,
                                        expires_at=expires_at, labels=body.labels)

    @staticmethod
    def _agent_info(row: dict[str, Any]) -> wire.AgentInfo:
        return wire.AgentInfo(id=row["id"], name=row["name"], created_at=row["created_at"],
                              last_seen_at=row["last_seen_at"], labels=json.loads(row["labels"]))

    async def agents_list(self, call: Call) -> list[wire.AgentInfo]:
        rows = await self.database.transact(lambda tx: Agents(tx).list())
        return [self._agent_info(row) for row in rows]

    async def agents_get(self, call: Call) -> wire.AgentInfo:
        row = await self.database.transact(lambda tx: Agents(tx).get(call.params["agent_id"]))
        return self._agent_info(row)

    @staticmethod
    def _certificate_info(row: dict[str, Any]) -> wire.CertificateInfo:
        return wire.CertificateInfo(
            id=row["id"], names=json.loads(row["names"]), key_type=row["key_type"],
            lifetime_seconds=row["lifetime_seconds"], agent_id=row["agent_id"],
            target=msgspec.json.decode(row["target"], type=wire.FileTarget),
            status=row["status"], created_at=row["created_at"], serial=row["serial"],
            not_before=row["not_before"], not_after=row["not_after"],
            fingerprint_sha256=row["fingerprint_sha256"], last_error=row["last_error"],
        )

    async def certificates_create(self, call: Call) -> wire.CertificateInfo:
        body: wire.CertificateCreate = call.body
        names = list(body.names())
        now = self.now()
        certificate_id = _new_id("crt")
        order_id = _new_id("ord")
        token = sign_work_order(
            key=self.keys.work_order_key, order_id=order_id, agent_id=body.agent_id,
            kind=OrderKind.ISSUE,
            payload=wire.IssueOrder(certificate_id=certificate_id, names=names,
                                    key_type=body.key_type, target=body.target),
            now=now, ttl=self.work_order_ttl,
        )

        def create(tx: Tx) -> dict[str, Any]:
            if Agents(tx).find(body.agent_id) is None:
                raise errors.UnprocessableEntity(f"no agent {body.agent_id!r}", slug="unknown-agent")
            certificates = Certificates(tx)
            certificates.insert(id=certificate_id, names=names, key_type=str(body.key_type),
                                lifetime_seconds=body.lifetime_seconds, agent_id=body.agent_id,
                                target=wire.encode(body.target).decode(), now=now)
            WorkOrders(tx).insert(id=order_id, agent_id=body.agent_id, certificate_id=certificate_id,
                                  kind=str(OrderKind.ISSUE), token=token,
                                  expires_at=now + self.work_order_ttl, now=now)
            audit = Audit(tx)
            audit.record(actor=call.principal.actor, action="cert.create", subject=f"certificate:{certificate_id}",
                         now=now, details={"names": names, "agent_id": body.agent_id})
            audit.record(actor=call.principal.actor, action="work-order.queue", subject=f"work-order:{order_id}",
                         now=now, details={"kind": "issue", "certificate_id": certificate_id})
            return certificates.get(certificate_id)

        row = await self.database.transact(create)
        self._wake(body.agent_id)
        return self._certificate_info(row)

    async def certificates_list(self, call: Call) -> list[wire.CertificateInfo]:
        rows = await self.database.transact(lambda tx: Certificates(tx).list())
        return [self._certificate_info(row) for row in rows]

    async def certificates_get(self, call: Call) -> wire.CertificateInfo:
        row = await self.database.transact(lambda tx: Certificates(tx).get(call.params["certificate_id"]))
        return self._certificate_info(row)

    # --- agents -----------------------------------------------------------------------

    def _wake(self, agent_id: str) -> None:
        event = self._wakeups.pop(agent_id, None)
        if event is not None:
            event.set()

    async def agent_work(self, call: Call) -> wire.WorkBatch:
        """Long poll: answer at once if orders wait, else when one is queued or ``wait``
        seconds pass."""
        agent_id = call.principal.id
        wait = max(0, min(int(call.query.get("wait") or 0), MAX_POLL_WAIT))
        deadline = trio.current_time() + wait

        def take(tx: Tx) -> list[dict[str, Any]]:
            orders = WorkOrders(tx)
            rows = orders.deliverable(agent_id, self.now())
            orders.mark_dispatched([row["id"] for row in rows], self.now())
            return rows

        while True:
            event = self._wakeups.setdefault(agent_id, trio.Event())
            rows = await self.database.transact(take)
            remaining = deadline - trio.current_time()
            if rows or remaining <= 0:
                return wire.WorkBatch(orders=[wire.Delivery(id=r["id"], token=r["token"]) for r in rows])
            with trio.move_on_after(min(remaining, POLL_RECHECK)):
                await event.wait()

    async def agent_csr(self, call: Call) -> wire.CertificateBundle:
        agent_id, order_id = call.principal.id, call.params["order_id"]
        try:
            parsed = parse_csr(call.body.csr)
        except CsrError as exc:
            raise errors.BadRequest(str(exc), slug="invalid-csr") from exc
        public_key = parsed.csr.public_key()
        key_sha256 = _spki_sha256(public_key)
        now = self.now()

        def issue(tx: Tx) -> dict[str, Any]:
            order = WorkOrders(tx).find_for_agent(order_id, agent_id)
            if order["kind"] != OrderKind.ISSUE:
                raise errors.Conflict("this work order does not take a CSR")
            certificates = Certificates(tx)
            existing = certificates.version_for_order(order_id)
            if existing is not None:
                if existing["public_key_sha256"] != key_sha256:
                    raise errors.Conflict("a certificate for another key was already issued for this order",
                                          slug="order-already-issued")
                return existing
            if order["status"] not in WorkOrders.ACTIVE or order["expires_at"] <= now:
                raise errors.Conflict(f"work order is {order['status']}", slug="order-not-active")
            certificate = certificates.get(order["certificate_id"])
            if parsed.key_type != certificate["key_type"]:
                raise errors.UnprocessableEntity(
                    f"CSR key is {parsed.key_type}, the order asks for {certificate['key_type']}",
                    slug="csr-key-type")
            expected = set(json.loads(certificate["names"]))
            if parsed.names != expected:
                extra, missing = sorted(parsed.names - expected), sorted(expected - parsed.names)
                raise errors.UnprocessableEntity(
                    "CSR names do not match the order"
                    + (f"; not in the order: {', '.join(extra)}" if extra else "")
                    + (f"; missing: {', '.join(missing)}" if missing else ""),
                    slug="csr-names")
            issued = self.keys.issuing.issue(public_key, json.loads(certificate["names"]),
                                             lifetime_seconds=certificate["lifetime_seconds"], now=now)
            leaf = issued.certificate
            certificates.add_version(
                serial=issued.serial_hex, certificate_id=certificate["id"], order_id=order_id,
                issuer_id=self.keys.issuing_id, certificate_pem=issued.pem, public_key_sha256=key_sha256,
                fingerprint_sha256=certificate_fingerprint(leaf),
                not_before=int(leaf.not_valid_before_utc.timestamp()),
                not_after=int(leaf.not_valid_after_utc.timestamp()), now=now)
            certificates.set_status(certificate["id"], "issued", now)
            WorkOrders(tx).set_status(order_id, "issued", now)
            Audit(tx).record(actor=call.principal.actor, action="cert.issue",
                             subject=f"certificate:{certificate['id']}", now=now,
                             details={"serial": issued.serial_hex, "order_id": order_id,
                                      "issuer_id": self.keys.issuing_id})
            return certificates.version_for_order(order_id)  # type: ignore[return-value]

        version = await self.database.transact(issue)
        return wire.CertificateBundle(certificate=version["certificate_pem"], chain=self._chain_pem,
                                      serial=version["serial"], not_after=version["not_after"])

    async def agent_result(self, call: Call) -> wire.ResultAck:
        agent_id, order_id = call.principal.id, call.params["order_id"]
        body: wire.OrderResult = call.body
        now = self.now()

        def record(tx: Tx) -> None:
            orders = WorkOrders(tx)
            order = orders.find_for_agent(order_id, agent_id)
            if order["status"] == body.status:
                return  # the outbox re-sent a result we already have
            if order["status"] not in WorkOrders.ACTIVE:
                raise errors.Conflict(f"work order is already {order['status']}", slug="order-complete")
            orders.set_status(order_id, body.status, now, body.detail)
            if order["certificate_id"]:
                succeeded = body.status == "succeeded"
                Certificates(tx).set_status(order["certificate_id"], "deployed" if succeeded else "failed",
                                            now, None if succeeded else body.detail)
            Audit(tx).record(actor=call.principal.actor, action=f"work-order.{body.status}",
                             subject=f"work-order:{order_id}", now=now,
                             details={"fingerprint_sha256": body.fingerprint_sha256,
                                      "detail": body.detail[:512]})

        await self.database.transact(record)
        return wire.ResultAck(accepted=True)

    async def agent_report(self, call: Call) -> wire.ResultAck:
        agent_id = call.principal.id
        body: wire.AgentReport = call.body
        now = self.now()

        def record(tx: Tx) -> None:
            Agents(tx).add_event(agent_id=agent_id, event=body.event, order_id=body.order_id,
                                 reason=body.reason, detail=body.detail, now=now)
            order = None
            if body.order_id:
                order = tx.one("SELECT * FROM work_orders WHERE id = ? AND agent_id = ?",
                               (body.order_id, agent_id))
            if order is not None and order["status"] in WorkOrders.ACTIVE:
                detail = f"agent refused the work order ({body.reason}): {body.detail}"
                WorkOrders(tx).set_status(order["id"], "refused", now, detail)
                if order["certificate_id"]:
                    Certificates(tx).set_status(order["certificate_id"], "failed", now, detail)
            Audit(tx).record(actor=call.principal.actor, action=f"agent.{body.event}",
                             subject=f"work-order:{body.order_id or '-'}", now=now,
                             details={"reason": body.reason})

        await self.database.transact(record)
        return wire.ResultAck(accepted=True)
