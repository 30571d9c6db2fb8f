"""The CA hierarchy: roots, intermediates with constraints, external sub-CAs,
retirement and revocation."""

from __future__ import annotations

import json
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from certfleet.shared import wire
from certfleet.shared.pki import private_key_pem

from .. import errors
from ..ca.authority import IssuerLinks, NameConstraintsSpec, build_ca_csr, create_root
from ..ca.constraints import ConstraintViolation, check_subordinate_constraints
from ..core import Call, CoordinatorBase, Page, new_id, page_request, paged
from ..storage import Certificates, Issuers, Ocsp, Tx

__all__ = ["HierarchyOperations", "issuer_info"]


def issuer_info(row: dict[str, Any]) -> wire.IssuerInfo:
    subject = not_after = None
    if row["certificate_pem"]:
        certificate = x509.load_pem_x509_certificate(row["certificate_pem"].encode())
        subject = certificate.subject.rfc4514_string()
        not_after = int(certificate.not_valid_after_utc.timestamp())
    return wire.IssuerInfo(id=row["id"], name=row["name"], kind=row["kind"], status=row["status"],
                           created_at=row["created_at"], parent_id=row["parent_id"], subject=subject,
                           not_after=not_after, certificate_pem=row["certificate_pem"], csr_pem=row["csr_pem"],
                           revoked_at=row.get("revoked_at"), revocation_reason=row.get("revocation_reason"))


def serial_hex(certificate: x509.Certificate) -> str:
    """A CA certificate's serial as OCSP requests and CRL entries name it."""
    return format(certificate.serial_number, "x")


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _verify_chain(leaf: x509.Certificate, chain: list[x509.Certificate], now_ts: int) -> list[x509.Certificate]:
    """Check ``leaf`` up to a self-signed root inside ``chain``: each certificate
    signed by the next, each a CA with keyCertSign, each valid now. Returns the path
    above the leaf, root last. Raises ``ValueError`` explaining the first break."""
    import datetime as dt

    now = dt.datetime.fromtimestamp(now_ts, tz=dt.UTC)
    path, current, pool = [], leaf, list(chain)
    for _ in range(len(chain) + 1):
        if not current.not_valid_before_utc <= now <= current.not_valid_after_utc:
            raise ValueError(f"{current.subject.rfc4514_string()} is not valid now")
        parent = next((c for c in pool if c.subject == current.issuer), None)
        if parent is None:
            raise ValueError(f"no certificate in the chain issued {current.subject.rfc4514_string()}")
        try:
            current.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise ValueError(f"{current.subject.rfc4514_string()} is not signed by its issuer") from exc
        try:
            constraints = parent.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound as exc:
            raise ValueError(f"{parent.subject.rfc4514_string()} is not a CA") from exc
        if not constraints.ca:
            raise ValueError(f"{parent.subject.rfc4514_string()} is not a CA")
        path.append(parent)
        if parent.subject == parent.issuer:
            parent.verify_directly_issued_by(parent)
            return path
        pool.remove(parent)
        current = parent
    raise ValueError("the chain does not end in a self-signed root")


class HierarchyOperations(CoordinatorBase):
    async def issuers_list(self, call: Call) -> Page:
        after, limit = page_request(call)

        def list_(tx: Tx) -> tuple[list[dict[str, Any]], str | None]:
            reach = self.issuers_in_reach(tx, call, "issuer.read")
            return paged(Issuers(tx).list(after=after, limit=limit), limit, lambda row: reach is None or row["id"] in reach)

        rows, next_after = await self.database.transact(list_)
        return Page([issuer_info(r) for r in rows], next_after)

    async def issuers_get(self, call: Call) -> wire.IssuerInfo:
        def get(tx: Tx) -> dict[str, Any]:
            row = Issuers(tx).get(call.params["issuer_id"])
            reach = self.issuers_in_reach(tx, call, "issuer.read")
            if reach is not None and row["id"] not in reach:
                raise errors.NotFound(f"issuer {call.params['issuer_id']} does not exist")
            return row

        return issuer_info(await self.database.transact(get))

    def _unique_name(self, tx: Tx, name: str) -> None:
        if Issuers(tx).find(name) is not None:
            raise errors.Conflict(f"an issuer named {name!r} exists")

    async def issuers_create_root(self, call: Call) -> wire.IssuerInfo:
        body: wire.RootCreate = call.body
        root = create_root(body.common_name or body.name, now=self.now(), lifetime_days=body.lifetime_days,
                           path_length=body.path_length)
        issuer_id = new_id("iss")

        def create(tx: Tx) -> dict[str, Any]:
            self._unique_name(tx, body.name)
            Issuers(tx).insert(id=issuer_id, name=body.name, kind="root", status="active", parent_id=None,
                               certificate_pem=root.certificate_pem.decode(), chain_pem="",
                               sealed_key=self.authorities.seal_key(issuer_id, private_key_pem(root.key)),
                               now=self.now())
            self.record(tx, call, resource_type="issuer", resource_id=issuer_id, details={"kind": "root"})
            return Issuers(tx).get(issuer_id)

        return issuer_info(await self.database.transact(create))

    async def issuers_create_intermediate(self, call: Call) -> wire.IssuerInfo:
        body: wire.IntermediateCreate = call.body
        issuer_id = new_id("iss")
        constraints = None
        if body.name_constraints is not None:
            nc = body.name_constraints
            constraints = NameConstraintsSpec(tuple(nc.permitted_dns), tuple(nc.excluded_dns), tuple(nc.permitted_ip),
                                              tuple(nc.excluded_ip), tuple(nc.permitted_email),
                                              tuple(nc.excluded_email))
            try:
                constraints.extension()
            except ValueError as exc:
                raise errors.UnprocessableEntity(f"invalid name constraint: {exc}", slug="invalid-constraint") from exc

        def create(tx: Tx) -> dict[str, Any]:
            self._unique_name(tx, body.name)
            issuers = Issuers(tx)
            parent_row = issuers.find(body.parent)
            if parent_row is None or parent_row["status"] != "active":
                raise errors.UnprocessableEntity(f"no active issuer {body.parent!r}", slug="unknown-issuer")
            parent = self.authorities.authority(parent_row)
            parent_limit = parent.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
            if parent_limit.path_length == 0:
                raise errors.UnprocessableEntity(f"{body.parent} has path length 0: it may not have CA children",
                                                 slug="path-length")
            if (parent_limit.path_length is not None and body.path_length is not None
                    and body.path_length >= parent_limit.path_length):
                raise errors.UnprocessableEntity(
                    f"path length {body.path_length} must be below the parent's {parent_limit.path_length}",
                    slug="path-length")
            if constraints is not None and (extension := constraints.extension()) is not None:
                try:
                    check_subordinate_constraints(extension.permitted_subtrees or (),
                                                  self.authorities.chain(parent_row))
                except ConstraintViolation as exc:
                    raise errors.UnprocessableEntity(f"{exc}: a CA under {body.parent} could issue for nothing;"
                                                     " permit names inside the parent's",
                                                     slug="name-constraints", rule="name_constraints") from exc
            child = parent.create_subordinate(body.common_name or body.name, now=self.now(),
                                              lifetime_days=body.lifetime_days, path_length=body.path_length,
                                              constraints=constraints,
                                              links=IssuerLinks.under(self.pki_base(), parent_row["id"]))
            issuers.insert(id=issuer_id, name=body.name, kind="intermediate", status="active",
                           parent_id=parent_row["id"], certificate_pem=child.certificate_pem.decode(),
                           chain_pem=child.certificate_pem.decode() + parent_row["chain_pem"],
                           sealed_key=self.authorities.seal_key(issuer_id, private_key_pem(child.key)),
                           now=self.now())
            self.record(tx, call, resource_type="issuer", resource_id=issuer_id,
                        details={"kind": "intermediate", "parent": parent_row["id"],
                                 "path_length": body.path_length, "constrained": constraints is not None})
            return issuers.get(issuer_id)

        return issuer_info(await self.database.transact(create))

    async def issuers_create_external(self, call: Call) -> wire.IssuerInfo:
        body: wire.ExternalSubordinateCreate = call.body
        key, csr = build_ca_csr(body.common_name or body.name)
        issuer_id = new_id("iss")

        def create(tx: Tx) -> dict[str, Any]:
            self._unique_name(tx, body.name)
            Issuers(tx).insert(id=issuer_id, name=body.name, kind="external", status="pending", parent_id=None,
                               certificate_pem=None, chain_pem="", csr_pem=csr.decode(),
                               sealed_key=self.authorities.seal_key(issuer_id, private_key_pem(key)), now=self.now())
            self.record(tx, call, resource_type="issuer", resource_id=issuer_id, details={"kind": "external"})
            return Issuers(tx).get(issuer_id)

        return issuer_info(await self.database.transact(create))

    async def issuers_import(self, call: Call) -> wire.IssuerInfo:
        body: wire.IssuerCertificateImport = call.body
        try:
            certificate = x509.load_pem_x509_certificate(body.certificate.encode())
            chain = x509.load_pem_x509_certificates(body.chain.encode())
        except ValueError as exc:
            raise errors.BadRequest(f"certificate or chain is not PEM: {exc}", slug="invalid-certificate") from exc

        def activate(tx: Tx) -> dict[str, Any]:
            issuers = Issuers(tx)
            row = issuers.get(call.params["issuer_id"])
            if row["status"] != "pending":
                raise errors.Conflict("this issuer is not waiting for a certificate", slug="not-pending")
            key = self.authorities.unsealed_key(row)
            spki = serialization.PublicFormat.SubjectPublicKeyInfo
            if certificate.public_key().public_bytes(serialization.Encoding.DER, spki) != \
                    key.public_key().public_bytes(serialization.Encoding.DER, spki):
                raise errors.UnprocessableEntity("the certificate is not for this issuer's key", slug="key-mismatch")
            try:
                constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
                if not constraints.ca:
                    raise ValueError("the certificate is not a CA certificate")
                path = _verify_chain(certificate, chain, self.now())
            except (ValueError, x509.ExtensionNotFound) as exc:
                raise errors.UnprocessableEntity(f"chain does not validate: {exc}", slug="invalid-chain") from exc
            intermediates = "".join(_pem(c) for c in path if c.subject != c.issuer)
            issuers.activate(row["id"], certificate_pem=_pem(certificate), chain_pem=_pem(certificate) + intermediates)
            self.record(tx, call, resource_type="issuer", resource_id=row["id"],
                        details={"subject": certificate.subject.rfc4514_string(),
                                 "root": path[-1].subject.rfc4514_string()})
            return issuers.get(row["id"])

        return issuer_info(await self.database.transact(activate))

    async def finish_drained_retirements(self) -> list[str]:
        """Retiring issuers whose last certificate expired become retired: nothing is
        left for relying parties to check. Returns their ids."""

        def finish(tx: Tx) -> list[str]:
            issuers, done = Issuers(tx), []
            for row in issuers.list():
                if row["status"] == "retiring" and not Certificates(tx).live_count_for_issuer(row["id"], self.now()):
                    issuers.set_status(row["id"], "retired", self.now())
                    done.append(row["id"])
            return done

        return await self.database.transact(finish)

    async def issuers_retire(self, call: Call) -> wire.IssuerInfo:
        def retire(tx: Tx) -> dict[str, Any]:
            issuers = Issuers(tx)
            row = issuers.get(call.params["issuer_id"])
            if row["status"] not in ("active", "pending"):
                raise errors.Conflict(f"issuer is already {row['status']}", slug="not-active")
            live = Certificates(tx).live_count_for_issuer(row["id"], self.now())
            # Drain first: relying parties still need CRL and OCSP for what it issued.
            status = "retiring" if live else "retired"
            issuers.set_status(row["id"], status, self.now())
            self.record(tx, call, resource_type="issuer", resource_id=row["id"],
                        details={"status": status, "unexpired_certificates": live})
            return issuers.get(row["id"])

        return issuer_info(await self.database.transact(retire))

    async def issuers_revoke(self, call: Call) -> wire.IssuerInfo:
        """Revoke an intermediate CA: its parent's CRL lists it and the parent's OCSP
        responder answers ``revoked`` for it (RFC 5280 §5.3.1, RFC 6960 §2.2), nothing
        more is issued under it or any CA below it, and every certificate still
        relying on it raises an alert. A root or an external sub-CA has no parent
        here to publish the revocation: retire it instead."""
        body: wire.IssuerRevokeRequest = call.body

        def revoke(tx: Tx) -> dict[str, Any]:
            issuers = Issuers(tx)
            row = issuers.get(call.params["issuer_id"])
            if row["kind"] != "intermediate" or row["parent_id"] is None:
                why = ("is a root: no CRL above it can list it" if row["kind"] == "root"
                       else "was signed outside certfleet: only the CA that signed it can revoke it")
                raise errors.Conflict(f"issuer {row['name']} {why}; retire it instead", slug="not-revocable")
            if row["revoked_at"] is not None:
                raise errors.Conflict(f"issuer {row['name']} is already revoked", slug="already-revoked")
            now = self.now()
            issuers.revoke(row["id"], reason=body.reason, now=now)
            Ocsp(tx).invalidate(row["parent_id"],
                                serial_hex(x509.load_pem_x509_certificate(row["certificate_pem"].encode())))
            issuers.mark_crl_dirty(row["parent_id"], now)
            below = issuers.below(row["id"])
            affected = Certificates(tx).unrevoked_below(below, now)
            for certificate in affected:
                name = json.loads(certificate["names"])[0]
                self.emit(tx, kind="certificate.issuer-revoked", severity="critical",
                          subject=f"certificate:{certificate['id']}",
                          summary=f"{name}: its issuing CA {row['name']} was revoked ({body.reason});"
                                  " relying parties reject it, reissue under another CA",
                          dedup_key=f"issuer-revoked:{row['id']}:{certificate['id']}",
                          details={"issuer_id": row["id"], "reason": body.reason})
            self.record(tx, call, resource_type="issuer", resource_id=row["id"],
                        details={"reason": body.reason, "parent_id": row["parent_id"], "issuers_below": below[1:],
                                 "certificates_affected": len(affected)})
            return issuers.get(row["id"])

        return issuer_info(await self.database.transact(revoke))
