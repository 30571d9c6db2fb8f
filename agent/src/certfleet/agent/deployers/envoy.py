"""Envoy: an SDS secret file for a ``path_config_source`` (Envoy's "Secret discovery
service" documentation): a ``DiscoveryResponse`` whose one resource is an
``envoy.extensions.transport_sockets.tls.v3.Secret`` carrying the chain and key inline.
The file is replaced by rename, the move Envoy's file watcher reacts to; no reload.

JSON is written whatever the extension: it is also valid YAML. Envoy is not packaged
for Debian: the tests check the file against the documented format, not a running Envoy.
"""

from __future__ import annotations

import json
from pathlib import Path

from certfleet.shared.targets import EnvoyTarget

from .base import Bundle
from .pipeline import Plan, PlannedFile

SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def sds_document(target: EnvoyTarget, bundle: Bundle) -> bytes:
    secret = {
        "@type": SECRET_TYPE,
        "name": target.secret_name,
        "tls_certificate": {
            "certificate_chain": {"inline_string": (bundle.certificate + bundle.chain).decode()},
            "private_key": {"inline_string": bundle.private_key.decode()},
        },
    }
    return json.dumps({"resources": [secret]}, indent=2).encode() + b"\n"


def plan(target: EnvoyTarget, bundle: Bundle) -> Plan:
    return Plan(kind="envoy", files=(PlannedFile(Path(target.sds_path), sds_document(target, bundle),
                                                 target.key_mode, private=True),),
                owner=target.owner, group=target.group, verify=target.verify)
