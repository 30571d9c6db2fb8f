"""Revocation: single and bulk, visible in OCSP at once and in the CRL after the
debounce. A revoke never builds a CRL itself, so its cost does not grow with the
number of certificates already revoked.

A ``certificate-hold`` (RFC 5280 §5.3.1) is the one revocation that can be undone:
``remove-from-crl`` releases it (the entry leaves the next full CRL, which §5.3.1
allows in place of a delta CRL's removeFromCRL entry, and OCSP answers ``good``
again), and any other reason makes it final, keeping the hold's revocation date."""

from __future__ import annotations

import json
from typing import Any

from certfleet.shared import wire

from .. import errors
from ..core import Call, CoordinatorBase
from ..lifecycle.jobs import JobEvent
from ..storage import Certificates, Issuers, Jobs, Ocsp, Profiles, Tx, WorkOrders

__all__ = ["RevocationOperations"]


class RevocationOperations(CoordinatorBase):
    def _republish(self, tx: Tx, versions: list[dict[str, Any]]) -> None:
        """Drop the versions' pre-signed OCSP answers and ask for new CRLs."""
        ocsp, issuers = Ocsp(tx), Issuers(tx)
        for version in versions:
            ocsp.invalidate(version["issuer_id"], version["serial"])
            issuers.mark_crl_dirty(version["issuer_id"], self.now())

    def _release_hold(self, tx: Tx, call: Call, certificate: dict[str, Any]) -> wire.RevokeResult:
        certificates = Certificates(tx)
        held = certificates.held_versions(certificate["id"], self.now())
        if not held:
            return wire.RevokeResult(certificate_id=certificate["id"], status="not-on-hold",
                                     detail="only a certificate-hold can be released")
        for version in held:
            certificates.release_hold(version["serial"])
        self._republish(tx, held)
        # Revoking cancelled its work, not its deployment: the held version is still
        # in place on its target, and renewal resumes from here.
        certificates.set_status(certificate["id"], "deployed", self.now())
        serials = [v["serial"] for v in held]
        self.record(tx, call, resource_type="certificate", resource_id=certificate["id"],
                    details={"reason": "remove-from-crl", "serials": serials})
        return wire.RevokeResult(certificate_id=certificate["id"], status="released", serials=serials)

    def _revoke_certificate(self, tx: Tx, call: Call, certificate: dict[str, Any], reason: str) -> wire.RevokeResult:
        if reason == "remove-from-crl":
            return self._release_hold(tx, call, certificate)
        certificates = Certificates(tx)
        versions = certificates.unrevoked_versions(certificate["id"], self.now())
        # A final reason turns a hold into a revocation; a second hold changes nothing.
        held = [] if reason == "certificate-hold" else certificates.held_versions(certificate["id"], self.now())
        if not versions and not held:
            status = "already-revoked" if certificate["status"] == "revoked" else "nothing-to-revoke"
            return wire.RevokeResult(certificate_id=certificate["id"], status=status)
        for version in versions:
            certificates.revoke_version(version["serial"], reason=reason, now=self.now())
        for version in held:
            certificates.set_revocation_reason(version["serial"], reason)
        versions = versions + held
        self._republish(tx, versions)
        certificates.set_status(certificate["id"], "revoked", self.now())
        for order in tx.all("SELECT id FROM work_orders WHERE certificate_id = ? AND status IN (?, ?, ?)",
                            (certificate["id"], *WorkOrders.ACTIVE)):
            WorkOrders(tx).set_status(order["id"], "cancelled", self.now(), "certificate revoked")
        job = Jobs(tx).active_for_certificate(certificate["id"])
        if job is not None:
            self.job_event(tx, call, job, JobEvent.CANCELLED, "certificate revoked")
        serials = [v["serial"] for v in versions]
        self.emit(tx, kind="certificate.revoked", severity="warning", subject=f"certificate:{certificate['id']}",
                  summary=f"{json.loads(certificate['names'])[0]} revoked ({reason})",
                  dedup_key=f"revoked:{certificate['id']}:{reason}:{','.join(serials)}", details={"reason": reason})
        self.record(tx, call, resource_type="certificate", resource_id=certificate["id"],
                    details={"reason": reason, "serials": serials})
        return wire.RevokeResult(certificate_id=certificate["id"], status="revoked", serials=serials)

    async def certificates_revoke(self, call: Call) -> wire.RevokeResult:
        def revoke(tx: Tx) -> wire.RevokeResult:
            certificate = Certificates(tx).get(call.params["certificate_id"])
            self.require_on_profile(call, "cert.revoke", Profiles(tx).get(certificate["profile_id"]), hide=True)
            return self._revoke_certificate(tx, call, certificate, call.body.reason)

        return await self.database.transact(revoke)

    async def certificates_revoke_bulk(self, call: Call) -> wire.BulkRevokeResult:
        body: wire.BulkRevokeRequest = call.body

        def select(tx: Tx) -> list[dict[str, Any]]:
            issuer = profile = None
            if body.issuer:
                found = Issuers(tx).find(body.issuer)
                if found is None:
                    raise errors.UnprocessableEntity(f"no issuer {body.issuer!r}", slug="unknown-issuer")
                issuer = found["id"]
            if body.profile:
                profile = self.resolve_profile(tx, body.profile)["id"]
            return Certificates(tx).select(issuer_id=issuer, profile_id=profile, agent_id=body.agent, tag=body.tag)

        matching = await self.database.transact(select)
        readable = self.profile_visible(call, "cert.read")
        visible = self.profile_visible(call, "cert.revoke")
        results = []
        # One transaction per certificate: one failure must not undo the others.
        for certificate in matching:
            if not readable(certificate):
                continue  # out of the caller's reach: not even its id is told
            if not visible(certificate):
                results.append(wire.RevokeResult(certificate_id=certificate["id"], status="refused",
                                                 detail="cert.revoke is not granted on its profile"))
                continue
            results.append(await self.database.transact(
                lambda tx, c=certificate: self._revoke_certificate(tx, call, Certificates(tx).get(c["id"]), body.reason)))
        summary = {s: sum(r.status == s for r in results) for s in {r.status for r in results}}
        await self.database.transact(lambda tx: self.record(
            tx, call, resource_type="certificate-filter", resource_id="-",
            details={"filter": {"issuer": body.issuer, "profile": body.profile, "agent": body.agent,
                                "tag": body.tag}, "results": summary}))
        return wire.BulkRevokeResult(results=results)
