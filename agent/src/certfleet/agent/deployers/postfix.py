"""Postfix: `smtpd_tls_cert_file` (leaf + intermediates) and `smtpd_tls_key_file`; `postfix check`, then `postfix reload`. Verify with protocol `smtp` (STARTTLS on port 25 or 587) or `tls` (port 465)."""

from __future__ import annotations

from certfleet.shared.targets import PostfixTarget

from .base import Bundle
from .common import server_plan
from .pipeline import Plan


def plan(target: PostfixTarget, bundle: Bundle) -> Plan:
    return server_plan("postfix", target, bundle)
