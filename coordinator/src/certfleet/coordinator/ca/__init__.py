"""The local certificate authority: hierarchy, policy, issuance, CRL and OCSP."""

from .authority import CertificateAuthority, IssuedCertificate, LeafOptions, create_root

__all__ = ["CertificateAuthority", "IssuedCertificate", "LeafOptions", "create_root"]
