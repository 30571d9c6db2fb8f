"""HAProxy: one PEM holding the leaf, the intermediates and the key (``crt`` in a
``bind`` line); ``haproxy -c -f``, then a reload through the master CLI socket
(master-worker mode) or a reload command (``systemctl reload haproxy`` uses ``-sf``).

A master-CLI reload answers before the new workers have loaded the file, and a bad
file leaves the old workers serving: the post-deploy check is what notices, so set
``verify`` with ``master_socket``.
"""

from __future__ import annotations

from pathlib import Path

from certfleet.shared.targets import HaproxyTarget

from .base import Bundle
from .pipeline import MasterSocketReload, Plan, PlannedFile


def plan(target: HaproxyTarget, bundle: Bundle) -> Plan:
    combined = bundle.certificate + bundle.chain + bundle.private_key
    reload = MasterSocketReload(Path(target.master_socket)) if target.master_socket else target.effective_reload()
    return Plan(kind="haproxy", files=(PlannedFile(Path(target.certificate_path), combined, target.key_mode,
                                                   private=True),),
                owner=target.owner, group=target.group, test=target.effective_test(), reload=reload,
                verify=target.verify)
