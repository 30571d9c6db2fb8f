"""The ``file`` target: the four PEM files certbot users expect, plus an optional hook.

``cert.pem`` (leaf), ``chain.pem`` (intermediates), ``fullchain.pem`` (both) and
``privkey.pem`` in one directory; ``reload_command``, if set, runs after they changed
(and again after a rollback). No config test and no TLS check: the files are all this
kind knows about.
"""

from __future__ import annotations

from pathlib import Path

from certfleet.shared.targets import FileTarget

from .base import Bundle
from .pipeline import Plan, PlannedFile

__all__ = ["FILE_NAMES", "plan"]

FILE_NAMES = ("cert.pem", "chain.pem", "fullchain.pem", "privkey.pem")


def plan(target: FileTarget, bundle: Bundle) -> Plan:
    directory = Path(target.directory)
    files = (
        PlannedFile(directory / "cert.pem", bundle.certificate, target.mode),
        PlannedFile(directory / "chain.pem", bundle.chain, target.mode),
        PlannedFile(directory / "fullchain.pem", bundle.certificate + bundle.chain, target.mode),
        PlannedFile(directory / "privkey.pem", bundle.private_key, target.key_mode, private=True),
    )
    return Plan(kind="file", files=files, owner=target.owner, group=target.group,
                reload=tuple(target.reload_command) if target.reload_command else None)
