"""What relying parties fetch: issuer certificates, CRLs and OCSP answers.

An issuer's CRL and OCSP responder speak for everything it signed: leaves and the
intermediate CAs under it. Pre-signed OCSP answers fetched over GET are cacheable
until their nextUpdate (RFC 5019 §6.2), so HTTP caches and CDNs can serve them."""

from __future__ import annotations

import base64
import binascii
import hashlib
import urllib.parse
from typing import Any

import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp as x509_ocsp

from certfleet.shared.pki import private_key_pem

from .. import errors
from ..ca import ocsp
from ..ca.crl import build_crl
from ..core import Call, CoordinatorBase, RawResponse
from ..storage import Certificates, Crls, Issuers, Ocsp, Tx
from .hierarchy import serial_hex

__all__ = ["PkiOperations"]

CRL_VALIDITY = 24 * 3600
CRL_REFRESH = 6 * 3600
CRL_DEBOUNCE = 2
OCSP_VALIDITY = 24 * 3600
RESPONDER_LIFETIME = 30 * 86400


class PkiOperations(CoordinatorBase):
    crl_builds = 0
    """How many CRLs this process built; lets tests prove what did (not) build one."""

    def _issuer(self, tx: Tx, name_or_id: str) -> dict[str, Any]:
        row = Issuers(tx).find(name_or_id)
        if row is None or row["certificate_pem"] is None:
            raise errors.NotFound(f"no issuer {name_or_id!r}")
        return row

    async def pki_ca_certificate(self, call: Call) -> RawResponse:
        row = await self.database.transact(lambda tx: self._issuer(tx, call.params["issuer"]))
        der = x509.load_pem_x509_certificate(row["certificate_pem"].encode()).public_bytes(serialization.Encoding.DER)
        return RawResponse(der, "application/pkix-cert", headers={"Cache-Control": "max-age=3600"})

    # --- CRL ------------------------------------------------------------------------------

    async def _rebuild_crl(self, issuer_id: str) -> dict[str, Any]:
        """Build and store the issuer's CRL; returns the stored row.

        The revoked entries are read and the CRL number taken in one transaction, the
        CRL is built and signed outside any (at 100,000 entries that takes seconds,
        which every other write, agents' requests included, would otherwise wait
        for), and it is stored only if no newer one was stored meanwhile. A revocation
        after the snapshot marks the issuer dirty again; a build that never got stored
        leaves its number ahead of the stored CRL's, which makes the issuer due again.
        """
        now = self.now()

        def snapshot(tx: Tx) -> tuple[dict[str, Any], list[tuple[str, int, str]], int]:
            issuer = Issuers(tx).get(issuer_id)
            revoked = [(r["serial"], r["revoked_at"], r["revocation_reason"] or "unspecified")
                       for r in Certificates(tx).revoked_for_issuer(issuer_id, now)]
            revoked += [(serial, row["revoked_at"], row["revocation_reason"] or "unspecified")
                        for row, serial, not_after in _children(tx, issuer_id)
                        if row["revoked_at"] is not None and not_after > now]
            return issuer, revoked, Issuers(tx).take_crl_number(issuer_id)

        issuer, revoked, number = await self.database.transact(snapshot)
        authority = self.authorities.authority(issuer)
        built = await trio.to_thread.run_sync(
            lambda: build_crl(authority, revoked, number=number, now=now, validity=CRL_VALIDITY))
        self.crl_builds += 1

        def store(tx: Tx) -> dict[str, Any]:
            crls = Crls(tx)
            current = crls.get(issuer_id)
            if current is None or current["number"] < number:
                crls.put(issuer_id=issuer_id, number=number, der=base64.b64encode(built.der).decode(),
                         this_update=built.this_update, next_update=built.next_update, etag=built.etag)
                return crls.get(issuer_id)  # type: ignore[return-value]
            return current

        return await self.database.transact(store)

    async def refresh_crls(self) -> int:
        """Rebuild every CRL that is dirty for longer than the debounce, stale, missing,
        or whose last build was not stored; returns how many were built. Run
        periodically by the coordinator."""
        now = self.now()
        due = await self.database.transact(
            lambda tx: Issuers(tx).crl_due(dirty_before=now - CRL_DEBOUNCE, stale_before=now - CRL_REFRESH))
        for issuer in due:
            await self._rebuild_crl(issuer["id"])
        return len(due)

    async def pki_crl(self, call: Call) -> RawResponse:
        def current(tx: Tx) -> tuple[str, dict[str, Any] | None]:
            issuer = self._issuer(tx, call.params["issuer"])
            return issuer["id"], Crls(tx).get(issuer["id"])

        issuer_id, crl = await self.database.transact(current)
        if crl is None:
            crl = await self._rebuild_crl(issuer_id)
        headers = {"ETag": crl["etag"], "Cache-Control": f"max-age={max(0, crl['next_update'] - self.now()) // 2}",
                   "Last-Modified": _http_date(crl["this_update"])}
        if call.headers.get("if-none-match") == crl["etag"]:
            return RawResponse(b"", "application/pkix-crl", status=304, headers=headers)
        return RawResponse(base64.b64decode(crl["der"]), "application/pkix-crl", headers=headers)

    # --- OCSP -----------------------------------------------------------------------------

    def _responder(self, tx: Tx, issuer: dict[str, Any]) -> ocsp.Responder:
        """The issuer's delegated responder, rotated once two thirds of its life passed."""
        store = Ocsp(tx)
        row = store.responder(issuer["id"])
        authority = self.authorities.authority(issuer)
        if row is None or row["not_after"] - self.now() < RESPONDER_LIFETIME // 3:
            certificate, key = ocsp.issue_responder(authority, now=self.now(), lifetime=RESPONDER_LIFETIME)
            store.put_responder(issuer_id=issuer["id"],
                                certificate_pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
                                sealed_key=self.keys.master.seal(private_key_pem(key),
                                                                 context=f"ocsp-responder:{issuer['id']}"),
                                not_after=int(certificate.not_valid_after_utc.timestamp()))
            return ocsp.Responder(authority.certificate, certificate, key)
        # Unsealing and parsing the key cost more than answering: keep the responder
        # for as long as its row is the same (another coordinator may rotate it).
        cached = self._ocsp_responders.get(issuer["id"])
        if cached is not None and cached[0] == (row["certificate_pem"], authority.certificate_pem):
            return cached[1]
        from certfleet.shared.pki import load_private_key

        key = load_private_key(self.keys.master.open(row["sealed_key"], context=f"ocsp-responder:{issuer['id']}"))
        responder = ocsp.Responder(authority.certificate,
                                   x509.load_pem_x509_certificate(row["certificate_pem"].encode()),
                                   key)  # type: ignore[arg-type]
        self._ocsp_responders[issuer["id"]] = ((row["certificate_pem"], authority.certificate_pem), responder)
        return responder

    async def _answer(self, issuer_name: str, der: bytes) -> RawResponse:
        request = ocsp.parse_request(der)
        if request is None:
            return RawResponse(ocsp.malformed(), "application/ocsp-response")

        def status_of(tx: Tx, issuer: dict[str, Any]) -> ocsp.CertStatus:
            version = Certificates(tx).version(request.serial_hex)
            if version is not None and version["issuer_id"] == issuer["id"]:
                return _status(version)
            # Not a leaf of this issuer: perhaps a CA it signed.
            for child, serial, _ in _children(tx, issuer["id"]):
                if serial == request.serial_hex:
                    return _status(child)
            return ocsp.CertStatus("unknown")

        def answer(tx: Tx) -> tuple[bytes, bool]:
            """The DER answer, and whether it is a pre-signed one any client may be given."""
            issuer = Issuers(tx).find(issuer_name)
            if issuer is None or issuer["certificate_pem"] is None or issuer["status"] == "retired":
                return ocsp.unauthorized(), False
            responder = self._responder(tx, issuer)
            if not responder.matches_issuer(request):
                return ocsp.unauthorized(), False
            store = Ocsp(tx)
            if request.nonce is None:
                cached = store.response(issuer["id"], request.serial_hex)
                if cached is not None and cached["refresh_at"] > self.now():
                    return base64.b64decode(cached["der"]), True
            status = status_of(tx, issuer)
            signed = responder.respond(request, status, now=self.now(), validity=OCSP_VALIDITY)
            shareable = request.nonce is None and status.status != "unknown"
            if shareable:
                store.put_response(issuer_id=issuer["id"], serial=request.serial_hex,
                                   der=base64.b64encode(signed).decode(), refresh_at=self.now() + OCSP_VALIDITY // 2)
            return signed, shareable

        der, shareable = await self.database.transact(answer)
        if not shareable:
            # A nonce's echo, an "unknown" or an error must not be served to anyone else.
            return RawResponse(der, "application/ocsp-response", headers={"Cache-Control": "no-cache"})
        return RawResponse(der, "application/ocsp-response", headers=self._cache_headers(der))

    def _cache_headers(self, der: bytes) -> dict[str, str]:
        """RFC 5019 §6.2: cacheable until nextUpdate, with validators (ETag,
        Last-Modified) so a cache can revalidate."""
        response = x509_ocsp.load_der_ocsp_response(der)
        this_update = int(response.this_update_utc.timestamp())
        next_update = int(response.next_update_utc.timestamp()) if response.next_update_utc else self.now()
        return {"Cache-Control": f"max-age={max(0, next_update - self.now())}, public, no-transform, must-revalidate",
                "ETag": '"' + hashlib.sha256(der).hexdigest()[:32] + '"',
                "Last-Modified": _http_date(this_update), "Expires": _http_date(next_update)}

    async def pki_ocsp_post(self, call: Call) -> RawResponse:
        return await self._answer(call.params["issuer"], call.body)

    async def pki_ocsp_get(self, call: Call) -> RawResponse:
        encoded = urllib.parse.unquote(call.params["request"])
        try:
            der = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            return RawResponse(ocsp.malformed(), "application/ocsp-response", headers={"Cache-Control": "no-cache"})
        answered = await self._answer(call.params["issuer"], der)
        etag = (answered.headers or {}).get("ETag")
        if etag is not None and call.headers.get("if-none-match") == etag:
            return RawResponse(b"", "application/ocsp-response", status=304, headers=answered.headers)
        return answered


def _children(tx: Tx, issuer_id: str) -> list[tuple[dict[str, Any], str, int]]:
    """The CAs ``issuer_id`` signed, each with its certificate's serial (hex) and notAfter."""
    found = []
    for row in Issuers(tx).children(issuer_id):
        certificate = x509.load_pem_x509_certificate(row["certificate_pem"].encode())
        found.append((row, serial_hex(certificate), int(certificate.not_valid_after_utc.timestamp())))
    return found


def _status(row: dict[str, Any]) -> ocsp.CertStatus:
    """A leaf's or a child CA's status from its revoked_at and revocation_reason."""
    if row["revoked_at"] is not None:
        return ocsp.CertStatus("revoked", row["revoked_at"], row["revocation_reason"])
    return ocsp.CertStatus("good")


def _http_date(timestamp: int) -> str:
    from email.utils import formatdate

    return formatdate(timestamp, usegmt=True)
