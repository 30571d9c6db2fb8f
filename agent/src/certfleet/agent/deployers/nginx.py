"""NGINX: `ssl_certificate` (leaf + intermediates) and `ssl_certificate_key`; `nginx -t`, then `nginx -s reload` (graceful: old workers finish their connections)."""

from __future__ import annotations

from certfleet.shared.targets import NginxTarget

from .base import Bundle
from .common import server_plan
from .pipeline import Plan


def plan(target: NginxTarget, bundle: Bundle) -> Plan:
    return server_plan("nginx", target, bundle)
