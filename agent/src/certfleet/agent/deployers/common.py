"""Plans shared by the kinds whose server reads a certificate file and a key file."""

from __future__ import annotations

from pathlib import Path

from certfleet.shared.targets import _ServerTarget

from .base import Bundle
from .pipeline import Plan, PlannedFile

__all__ = ["server_plan"]


def server_plan(kind: str, target: _ServerTarget, bundle: Bundle) -> Plan:
    """Leaf + intermediates to ``certificate_path``, the key to ``key_path``, the
    intermediates alone to ``chain_path`` if set; the kind's test and reload."""
    files = [PlannedFile(Path(target.certificate_path), bundle.certificate + bundle.chain, target.mode)]
    if target.chain_path:
        files.append(PlannedFile(Path(target.chain_path), bundle.chain, target.mode))
    files.append(PlannedFile(Path(target.key_path), bundle.private_key, target.key_mode, private=True))
    return Plan(kind=kind, files=tuple(files), owner=target.owner, group=target.group,
                test=target.effective_test(), reload=target.effective_reload(), verify=target.verify)
