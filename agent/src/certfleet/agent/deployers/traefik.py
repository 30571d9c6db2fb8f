"""Traefik's file provider: the certificate and key files, and the dynamic
configuration that lists them (``tls.certificates``, see Traefik's "TLS" and "File
provider" documentation). Traefik watches that file and reloads on change, so there is
no reload command; the configuration names the fingerprint in a comment, so it changes
with every new certificate and Traefik notices even when the paths stay the same.

Traefik is not packaged for Debian: the tests check the written files against the
documented format, not a running Traefik.
"""

from __future__ import annotations

import json
from pathlib import Path

from certfleet.shared.targets import TraefikTarget

from .base import Bundle
from .pipeline import Plan, PlannedFile


def dynamic_config(target: TraefikTarget, fingerprint: str) -> bytes:
    # json.dumps gives a double-quoted string that is valid in both YAML and TOML.
    cert, key = json.dumps(target.certificate_path), json.dumps(target.key_path)
    header = f"# Written by certfleet-agent; certificate sha256 {fingerprint}\n"
    if target.dynamic_config_path.endswith(".toml"):
        return (header + f"[[tls.certificates]]\n  certFile = {cert}\n  keyFile = {key}\n").encode()
    return (header + f"tls:\n  certificates:\n    - certFile: {cert}\n      keyFile: {key}\n").encode()


def plan(target: TraefikTarget, bundle: Bundle) -> Plan:
    files = (
        PlannedFile(Path(target.certificate_path), bundle.certificate + bundle.chain, target.mode),
        PlannedFile(Path(target.key_path), bundle.private_key, target.key_mode, private=True),
        # Last, so Traefik reads the configuration only after both files are in place.
        PlannedFile(Path(target.dynamic_config_path), dynamic_config(target, bundle.fingerprint_sha256),
                    target.mode),
    )
    return Plan(kind="traefik", files=files, owner=target.owner, group=target.group, verify=target.verify)
