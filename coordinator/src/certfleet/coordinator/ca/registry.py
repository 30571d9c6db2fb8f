"""The coordinator's issuers, loaded from storage with their keys unsealed.

Keys are decrypted on first use and kept in memory; every issuer row carries the
chain above it (intermediates, never the root) so a leaf's ``chain.pem`` and the
name-constraint check need no walk through the table.
"""

from __future__ import annotations

from typing import Any

from cryptography import x509

from certfleet.shared.pki import load_private_key

from ..secretbox import MasterKey
from .authority import CertificateAuthority

__all__ = ["Authorities"]


class Authorities:
    def __init__(self, master: MasterKey) -> None:
        self.master = master
        self._cache: dict[str, CertificateAuthority] = {}

    def seal_key(self, issuer_id: str, pem: bytes) -> str:
        return self.master.seal(pem, context=f"issuer:{issuer_id}")

    def authority(self, row: dict[str, Any]) -> CertificateAuthority:
        """The issuer's signing identity; raises ``ValueError`` for an issuer that has
        no certificate yet (a sub-CA awaiting its signed certificate)."""
        cached = self._cache.get(row["id"])
        if cached is not None and cached.certificate_pem.decode() == row["certificate_pem"]:
            return cached
        if not row["certificate_pem"]:
            raise ValueError(f"issuer {row['name']} has no certificate yet")
        key = load_private_key(self.master.open(row["sealed_key"], context=f"issuer:{row['id']}"))
        authority = CertificateAuthority(x509.load_pem_x509_certificate(row["certificate_pem"].encode()), key)
        self._cache[row["id"]] = authority
        return authority

    def unsealed_key(self, row: dict[str, Any]):
        return load_private_key(self.master.open(row["sealed_key"], context=f"issuer:{row['id']}"))

    @staticmethod
    def chain(row: dict[str, Any]) -> list[x509.Certificate]:
        """The issuer and the intermediates above it, nearest first."""
        return x509.load_pem_x509_certificates(row["chain_pem"].encode()) if row["chain_pem"] else []
