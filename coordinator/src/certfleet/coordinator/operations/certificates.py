"""Profiles and managed certificates, and issuance under a profile's policy."""

from __future__ import annotations

import json
from typing import Any

import msgspec

from certfleet.shared import wire
from certfleet.shared.pki import KeyType
from certfleet.shared.workorder import OrderKind, sign_work_order

from .. import errors
from ..auth.rbac import Scope
from ..ca.authority import IssuedCertificate, IssuerLinks, LeafOptions, LifetimeBeyondIssuer
from ..ca.constraints import ConstraintViolation, check_name_constraints
from ..ca.policy import PolicyViolation, check_issuance, default_lifetime, validate_policy
from ..core import Call, Page, new_id, page_request, paged
from ..lifecycle.jobs import JobEvent, JobState
from ..storage import Agents, Approvals, Certificates, Issuers, Jobs, Profiles, Tx, WorkOrders
from .jobs import JobOperations
from .targets import TargetOperations

__all__ = ["CertificateOperations", "certificate_info", "profile_info", "profile_policy"]


def certificate_info(row: dict[str, Any]) -> wire.CertificateInfo:
    return wire.CertificateInfo(
        id=row["id"], names=json.loads(row["names"]), key_type=row["key_type"],
        lifetime_seconds=row["lifetime_seconds"], agent_id=row["agent_id"], profile_id=row["profile_id"],
        target=msgspec.json.decode(row["target"], type=wire.Target), status=row["status"],
        created_at=row["created_at"], serial=row["serial"], not_before=row["not_before"],
        not_after=row["not_after"], fingerprint_sha256=row["fingerprint_sha256"], last_error=row["last_error"],
        tags=json.loads(row["tags"]), revoked_at=row.get("revoked_at"), renew_at=row["renew_at"],
        renewal_policy_id=row["renewal_policy_id"], target_id=row["target_id"],
    )


def profile_policy(row: dict[str, Any]) -> wire.ProfilePolicy:
    return msgspec.json.decode(row["policy"], type=wire.ProfilePolicy)


def profile_info(row: dict[str, Any], pending_approval: str | None = None) -> wire.ProfileInfo:
    return wire.ProfileInfo(id=row["id"], name=row["name"], issuer_id=row["issuer_id"], created_at=row["created_at"],
                            policy=profile_policy(row), version=row["version"], pending_approval=pending_approval)


def _check_policy(policy: wire.ProfilePolicy, *, key_type: KeyType, names: list[str], lifetime: int) -> None:
    try:
        check_issuance(policy, key_type=key_type, names=names, lifetime_seconds=lifetime)
    except PolicyViolation as exc:
        raise errors.UnprocessableEntity(exc.detail, slug="policy-violation", rule=exc.rule, value=str(exc.value)) \
            from exc


def _validated_policy(policy: wire.ProfilePolicy) -> wire.ProfilePolicy:
    try:
        validate_policy(policy)
    except ValueError as exc:
        raise errors.UnprocessableEntity(str(exc), slug="invalid-policy") from exc
    return policy


class CertificateOperations(JobOperations, TargetOperations):
    # --- profiles -----------------------------------------------------------------------

    async def profiles_list(self, call: Call) -> Page:
        after, limit = page_request(call)
        visible = self.profile_visible(call, "profile.read")
        rows, next_after = paged(await self.database.transact(lambda tx: Profiles(tx).list(after=after, limit=limit)),
                                 limit, lambda row: visible({**row, "profile_id": row["id"]}))
        return Page([profile_info(r) for r in rows], next_after)

    async def profiles_get(self, call: Call) -> wire.ProfileInfo:
        def get(tx: Tx) -> dict[str, Any]:
            row = Profiles(tx).get(call.params["profile_id"])
            self.require_on_profile(call, "profile.read", row, hide=True)
            return row

        return profile_info(await self.database.transact(get))

    async def profiles_create(self, call: Call) -> wire.ProfileInfo:
        body: wire.ProfileCreate = call.body
        policy = _validated_policy(body.policy)

        def create(tx: Tx) -> dict[str, Any]:
            issuer = Issuers(tx).find(body.issuer)
            if issuer is None or issuer["status"] != "active":
                raise errors.UnprocessableEntity(f"no active issuer {body.issuer!r}", slug="unknown-issuer")
            self.require_scope(call, "profile.edit", Scope("issuer", issuer["id"]))
            profiles = Profiles(tx)
            if profiles.find(body.name) is not None:
                raise errors.Conflict(f"profile {body.name!r} exists")
            profile_id = new_id("prf")
            profiles.insert(id=profile_id, name=body.name, issuer_id=issuer["id"],
                            policy=wire.encode(policy).decode(), now=self.now())
            self.record(tx, call, resource_type="profile", resource_id=profile_id,
                        details={"name": body.name, "issuer_id": issuer["id"]})
            return profiles.get(profile_id)

        return profile_info(await self.database.transact(create))

    async def profiles_update(self, call: Call) -> wire.ProfileInfo:
        body: wire.ProfileUpdate = call.body
        policy = _validated_policy(body.policy)

        def update(tx: Tx) -> tuple[dict[str, Any], str | None]:
            profiles = Profiles(tx)
            row = profiles.get(call.params["profile_id"])
            self.require_on_profile(call, "profile.edit", row)
            expected = body.expected_version if body.expected_version is not None else row["version"]
            if profile_policy(row).requires_approval:
                # An approval-tier profile's own rules change only with a second person.
                approval_id = self.request_approval(
                    tx, call, kind="profile-edit", subject_id=row["id"], profile=row,
                    payload={"policy": msgspec.to_builtins(policy), "expected_version": expected})
                return row, approval_id
            self.apply_profile_policy(tx, call, row, policy, expected)
            return profiles.get(row["id"]), None

        row, approval_id = await self.database.transact(update)
        return profile_info(row, approval_id)

    def apply_profile_policy(self, tx: Tx, call: Call, row: dict[str, Any], policy: wire.ProfilePolicy,
                             expected_version: int) -> None:
        Profiles(tx).update_policy(row["id"], wire.encode(policy).decode(), expected_version=expected_version,
                                   now=self.now())
        self.record(tx, call, action="profiles.update", resource_type="profile", resource_id=row["id"],
                    details={"version": expected_version + 1})

    # --- approvals (the queue itself lives in operations.approvals) ---------------------

    def request_approval(self, tx: Tx, call: Call, *, kind: str, subject_id: str, profile: dict[str, Any],
                         payload: dict[str, Any]) -> str:
        approval_id = new_id("apr")
        Approvals(tx).insert(id=approval_id, kind=kind, subject_id=subject_id, profile_id=profile["id"],
                             payload=json.dumps(payload), requested_by=call.principal.actor,
                             requester=call.principal.user or call.principal.actor, now=self.now(),
                             expires_at=self.now() + profile_policy(profile).approval_ttl_seconds)
        self.record(tx, call, action="approval.request", resource_type="approval", resource_id=approval_id,
                    details={"kind": kind, "subject_id": subject_id})
        return approval_id

    # --- certificates ---------------------------------------------------------------------

    def request_issuance(self, tx: Tx, call: Call, certificate: dict[str, Any], *, kind: str = "issue") -> str:
        """Every issuance starts here — manual, approved, scheduled renewal: it opens
        the certificate's job, which under an approval-tier profile waits for a
        second person and otherwise queues an order. Returns the order or approval id."""
        return self.request_issuances(tx, call, [certificate], kind=kind)[0]

    def request_issuances(self, tx: Tx, call: Call, certificates: list[dict[str, Any]], *,
                          kind: str = "issue") -> list[str]:
        """:meth:`request_issuance` for several certificates in a handful of statements
        instead of a handful each (the renewal scheduler's batches); the order or
        approval ids, in the same order."""
        profiles = Profiles(tx).get_many({c["profile_id"] for c in certificates})
        policies = {profile_id: profile_policy(row) for profile_id, row in profiles.items()}
        held = [policies[c["profile_id"]].requires_approval for c in certificates]
        jobs = self.open_jobs(tx, call, certificates, kind=kind,
                              states=[JobState.AWAITING_APPROVAL if h else JobState.PENDING for h in held])
        queued = [(certificate, job) for certificate, job, h in zip(certificates, jobs, held, strict=True) if not h]
        order_ids = iter(self.queue_issues(tx, call, queued))
        ids = []
        for certificate, job, h in zip(certificates, jobs, held, strict=True):
            if not h:
                ids.append(next(order_ids))
                continue
            Certificates(tx).set_status(certificate["id"], "awaiting-approval", self.now())
            ids.append(self.request_approval(tx, call, kind="issuance", subject_id=certificate["id"],
                                             profile=profiles[certificate["profile_id"]],
                                             payload={"job_id": job["id"]}))
        return ids

    def queue_issue(self, tx: Tx, call: Call, certificate: dict[str, Any], job: dict[str, Any],
                    event: JobEvent | None = None) -> str:
        """Sign and queue an ``issue`` order for the certificate's job (``event`` moves
        the job when it was waiting); the one place issuance orders are made."""
        return self.queue_issues(tx, call, [(certificate, job)], event)[0]

    def queue_issues(self, tx: Tx, call: Call, jobs: list[tuple[dict[str, Any], dict[str, Any]]],
                     event: JobEvent | None = None) -> list[str]:
        """:meth:`queue_issue` for several (certificate, job) pairs, their reads and
        writes batched; the order ids, in the same order."""
        if not jobs:
            return []
        now, certificates = self.now(), [certificate for certificate, _ in jobs]
        targets = self.trusted_settings_many(tx, {c["target_id"] for c in certificates})
        reused = self.reusable_key_orders(tx, certificates)
        orders = []
        for certificate in certificates:
            order_id = new_id("ord")
            token = sign_work_order(
                key=self.keys.work_order_key, order_id=order_id, agent_id=certificate["agent_id"],
                kind=OrderKind.ISSUE,
                payload=wire.IssueOrder(certificate_id=certificate["id"], names=json.loads(certificate["names"]),
                                        key_type=certificate["key_type"], target=targets[certificate["target_id"]],
                                        reuse_key_of=reused.get(certificate["id"]),
                                        target_id=certificate["target_id"]),
                now=now, ttl=self.work_order_ttl)
            orders.append((order_id, certificate["agent_id"], certificate["id"], certificate["target_id"], token))
        WorkOrders(tx).insert_many(orders, kind=str(OrderKind.ISSUE), expires_at=now + self.work_order_ttl, now=now)
        Certificates(tx).set_status_many([c["id"] for c in certificates], "pending", now)
        attempts = {}
        for (certificate, job), (order_id, *_) in zip(jobs, orders, strict=True):
            self.record(tx, call, action="work-order.queue", resource_type="work-order", resource_id=order_id,
                        details={"kind": "issue", "certificate_id": certificate["id"], "job_id": job["id"]})
            attempt = {"order_id": order_id, "attempts": job["attempts"] + 1, "next_attempt_at": None}
            if event is None:
                attempts[job["id"]] = attempt
            else:
                self.job_event(tx, call, job, event, f"attempt {job['attempts'] + 1}", **attempt)
        Jobs(tx).update_many(attempts, now)
        return [order_id for order_id, *_ in orders]

    async def certificates_create(self, call: Call) -> wire.CertificateInfo:
        return (await self._create_certificates(call, [call.body], indexed=False))[0]

    async def certificates_create_bulk(self, call: Call) -> list[wire.CertificateInfo]:
        return await self._create_certificates(call, call.body.certificates, indexed=True)

    async def _create_certificates(self, call: Call, bodies: list[wire.CertificateCreate], *,
                                   indexed: bool) -> list[wire.CertificateInfo]:
        """Create managed certificates and request their first issuance in one
        transaction: all of them or none. ``indexed``: a refused item's problem names
        its index. Profiles and agents are looked up once per transaction, and the
        issuance requests go as one batch."""
        certificate_ids = [new_id("crt") for _ in bodies]

        def create(tx: Tx) -> list[dict[str, Any]]:
            profiles: dict[str, dict[str, Any]] = {}
            agents: set[str] = set()
            for index, (certificate_id, body) in enumerate(zip(certificate_ids, bodies, strict=True)):
                try:
                    self._insert_certificate(tx, call, certificate_id, body, profiles, agents)
                except errors.CertfleetError as exc:
                    if indexed:
                        exc.detail = f"certificates[{index}]: {exc.detail}"
                    raise
            certificates = Certificates(tx)
            inserted = certificates.get_many(certificate_ids)
            self.request_issuances(tx, call, [inserted[i] for i in certificate_ids])
            created = certificates.get_many(certificate_ids)
            return [created[i] for i in certificate_ids]

        rows = await self.database.transact(create)
        for agent_id in {body.agent_id for body in bodies}:
            self.wake(agent_id)
        return [certificate_info(row) for row in rows]

    def _insert_certificate(self, tx: Tx, call: Call, certificate_id: str, body: wire.CertificateCreate,
                            profiles: dict[str, dict[str, Any]], agents: set[str]) -> None:
        """Check one certificate against its profile, agent and target and insert it;
        ``profiles`` (name or id → row) and ``agents`` (ids known to exist) are what
        this transaction has looked up so far."""
        names = list(body.names())
        profile = profiles.get(body.profile)
        if profile is None:
            profile = profiles[body.profile] = self.resolve_profile(tx, body.profile)
        self.require_on_profile(call, "cert.create", profile)
        policy = profile_policy(profile)
        lifetime = body.lifetime_seconds if body.lifetime_seconds is not None else default_lifetime(policy)
        _check_policy(policy, key_type=body.key_type, names=names, lifetime=lifetime)
        if body.agent_id not in agents:
            if Agents(tx).find(body.agent_id) is None:
                raise errors.UnprocessableEntity(f"no agent {body.agent_id!r}", slug="unknown-agent")
            agents.add(body.agent_id)
        self._check_issuer_lifetime(self._check_constraints(tx, profile, names), lifetime)
        if body.target_id is not None:
            target = self.resolve_target(tx, body.target_id, agent_id=body.agent_id)
            # Deploying to a target overwrites what its certificates put there.
            self.require_in_reach(tx, call, "cert.create", "target", target["id"])
        else:
            # An inline target becomes a target of its own, named after the certificate.
            target = self.create_target(tx, call, name=certificate_id, agent_id=body.agent_id, settings=body.target)
        Certificates(tx).insert(id=certificate_id, names=names, key_type=str(body.key_type),
                                lifetime_seconds=lifetime, agent_id=body.agent_id,
                                profile_id=profile["id"], target_id=target["id"], now=self.now(), tags=body.tags,
                                renewal_policy_id=self.resolve_renewal_policy(tx, body.renewal_policy))
        self.record(tx, call, resource_type="certificate", resource_id=certificate_id,
                    details={"names": names, "agent_id": body.agent_id, "profile_id": profile["id"]})

    async def certificates_list(self, call: Call) -> Page:
        after, limit = page_request(call)
        everything, profiles, issuers = call.principal.permissions.profile_filter("cert.read")
        rows, next_after = paged(await self.database.transact(lambda tx: Certificates(tx).list(
            within=None if everything else (profiles, issuers), after=after, limit=limit)), limit)
        return Page([certificate_info(row) for row in rows], next_after)

    async def certificates_get(self, call: Call) -> wire.CertificateInfo:
        def get(tx: Tx) -> dict[str, Any]:
            row = Certificates(tx).get(call.params["certificate_id"])
            self.require_on_profile(call, "cert.read", Profiles(tx).get(row["profile_id"]), hide=True)
            return row

        return certificate_info(await self.database.transact(get))

    # --- issuance ---------------------------------------------------------------------------

    def _check_constraints(self, tx: Tx, profile: dict[str, Any], names: list[str]) -> dict[str, Any]:
        """The profile's issuer, if it may issue for ``names`` under every CA's name
        constraints above it."""
        issuer = Issuers(tx).get(profile["issuer_id"])
        if issuer["status"] != "active":
            raise errors.Conflict(f"issuer {issuer['name']} is {issuer['status']} and no longer issues",
                                  slug="issuer-not-active")
        if (revoked := Issuers(tx).revoked_above(issuer["id"])) is not None:
            raise errors.Conflict(f"issuer {issuer['name']} is below {revoked['name']}, which was revoked:"
                                  " issue under another CA", slug="issuer-not-active")
        try:
            check_name_constraints(names, self.authorities.chain(issuer))
        except ConstraintViolation as exc:
            raise errors.UnprocessableEntity(str(exc), slug="name-constraints", rule="name_constraints") from exc
        return issuer

    def _check_issuer_lifetime(self, issuer: dict[str, Any], lifetime: int) -> None:
        """Refuse a lifetime the issuer's own certificate does not cover: a leaf is
        never cut short behind the caller's back."""
        try:
            self.authorities.authority(issuer).check_lifetime(now=self.now(), lifetime_seconds=lifetime)
        except LifetimeBeyondIssuer as exc:
            raise errors.UnprocessableEntity(str(exc), slug="lifetime-beyond-issuer", rule="lifetime_seconds",
                                             value=str(lifetime)) from exc

    def issue_under_profile(self, tx: Tx, certificate: dict[str, Any], public_key: Any,
                            key_type: KeyType) -> tuple[IssuedCertificate, dict[str, Any]]:
        """Check the request against the profile (as it is now) and the issuer's name
        constraints, then sign. Returns the certificate and the issuer row."""
        profile = Profiles(tx).get(certificate["profile_id"])
        policy = profile_policy(profile)
        names = json.loads(certificate["names"])
        _check_policy(policy, key_type=key_type, names=names, lifetime=certificate["lifetime_seconds"])
        issuer = self._check_constraints(tx, profile, names)
        self._check_issuer_lifetime(issuer, certificate["lifetime_seconds"])
        links = IssuerLinks.under(self.pki_base(), issuer["id"])
        if policy.short_lived:
            # Short-lived certificates are not revocable: no CRL or OCSP to point at.
            links = IssuerLinks(ca_issuers_url=links.ca_issuers_url)
        options = LeafOptions(ekus=tuple(policy.ekus), must_staple=policy.must_staple, links=links)
        issued = self.authorities.authority(issuer).issue(public_key, names,
                                                          lifetime_seconds=certificate["lifetime_seconds"],
                                                          now=self.now(), options=options)
        return issued, issuer
