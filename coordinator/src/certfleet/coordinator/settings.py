"""Coordinator settings from flags and the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from certfleet.shared.paths import state_dir

__all__ = ["DEFAULT_PKI_PORT", "Settings", "default_data_dir", "split_host_port"]

DEFAULT_PKI_PORT = 8080
"""Where relying parties fetch CRLs, OCSP answers and CA certificates over plain
HTTP: the links in certificates must be ``http://`` (RFC 5280 §4.2.1.13; nginx will
not staple OCSP from an ``https`` responder)."""


def split_host_port(address: str) -> tuple[str, str]:
    """``HOST:PORT`` as ``(host, port text)``, an IPv6 host without its brackets."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), port


def default_data_dir() -> Path:
    """``CERTFLEET_DATA_DIR``; else ``/var/lib/certfleet`` for root, the XDG data dir otherwise."""
    return state_dir("CERTFLEET_DATA_DIR", "certfleet")


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str | None = None
    listen: str = "127.0.0.1:8443"
    tls_sans: tuple[str, ...] = ()
    bootstrap_token: str | None = field(default=None, repr=False)
    master_key: str | None = field(default=None, repr=False)
    work_order_ttl: int = 7 * 86400
    public_url: str | None = None
    """How clients reach this coordinator (behind a load balancer); default: the bound URL."""
    pki_listen: str | None = None
    """The plain-HTTP listener for CRL, OCSP and CA certificates only. Default: the
    host of ``listen`` on port :data:`DEFAULT_PKI_PORT` (any free port when ``listen``
    asks for port 0); ``off`` serves none, and certificates then point at
    ``pki_public_url`` or, failing that, at the HTTPS ``public_url``."""
    pki_public_url: str | None = None
    """How relying parties reach that listener (written into certificates as the base
    of the CRL, OCSP and CA-issuer links); default: its bound address."""
    maintenance_interval: float | None = 1.0
    """Seconds between rounds of the periodic loops; ``None`` turns them off (tests
    that drive time by hand run the rounds themselves)."""
    cors_origins: tuple[str, ...] = ()
    """Browser origins allowed to call the API cross-origin; none by default."""
    discovery_scan_interval: int | None = 86400
    """Seconds between each agent's scheduled filesystem scans; 0 or ``None``: only
    scans asked for by hand (``certfleet discovery scan``)."""

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "data_dir": default_data_dir(),
            "database_url": os.environ.get("CERTFLEET_DATABASE_URL") or None,
            "bootstrap_token": os.environ.get("CERTFLEET_BOOTSTRAP_TOKEN") or None,
            "master_key": os.environ.get("CERTFLEET_MASTER_KEY") or None,
            "public_url": os.environ.get("CERTFLEET_PUBLIC_URL") or None,
            "pki_listen": os.environ.get("CERTFLEET_PKI_LISTEN") or None,
            "pki_public_url": os.environ.get("CERTFLEET_PKI_PUBLIC_URL") or None,
            "discovery_scan_interval": int(os.environ.get("CERTFLEET_DISCOVERY_SCAN_INTERVAL") or 86400),
            "cors_origins": tuple(o.strip() for o in os.environ.get("CERTFLEET_CORS_ORIGINS", "").split(",")
                                  if o.strip()),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["data_dir"] = Path(values["data_dir"]).resolve()  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]

    @property
    def pki_bind(self) -> str | None:
        """The ``HOST:PORT`` the PKI listener binds, ``None`` when it is off."""
        if self.pki_listen is not None:
            return None if self.pki_listen.strip().lower() == "off" else self.pki_listen
        host, port = split_host_port(self.listen)
        host = f"[{host}]" if ":" in host else host
        return f"{host}:{0 if port == '0' else DEFAULT_PKI_PORT}"

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"
