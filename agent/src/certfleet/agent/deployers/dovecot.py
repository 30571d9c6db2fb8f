"""Dovecot: `ssl_cert = <file` (leaf + intermediates) and `ssl_key = <file`; `doveconf -n` (parses the configuration), then `doveadm reload`. Verify with protocol `tls` (IMAPS) or `imap` (STARTTLS)."""

from __future__ import annotations

from certfleet.shared.targets import DovecotTarget

from .base import Bundle
from .common import server_plan
from .pipeline import Plan


def plan(target: DovecotTarget, bundle: Bundle) -> Plan:
    return server_plan("dovecot", target, bundle)
