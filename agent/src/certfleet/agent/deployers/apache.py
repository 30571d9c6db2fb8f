"""Apache httpd: `SSLCertificateFile` (leaf + intermediates, Apache 2.4.8 and later) and `SSLCertificateKeyFile`; `apachectl -t`, then `apachectl -k graceful`."""

from __future__ import annotations

from certfleet.shared.targets import ApacheTarget

from .base import Bundle
from .common import server_plan
from .pipeline import Plan


def plan(target: ApacheTarget, bundle: Bundle) -> Plan:
    return server_plan("apache", target, bundle)
