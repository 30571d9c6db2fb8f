"""Caddy with certificates from files (`tls cert.pem key.pem` in the Caddyfile); `caddy validate`, then `caddy reload` (through its admin API)."""

from __future__ import annotations

from certfleet.shared.targets import CaddyTarget

from .base import Bundle
from .common import server_plan
from .pipeline import Plan


def plan(target: CaddyTarget, bundle: Bundle) -> Plan:
    return server_plan("caddy", target, bundle)
