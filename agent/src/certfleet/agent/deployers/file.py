"""The ``file`` target: the four PEM files certbot users expect, plus an optional hook.

``cert.pem`` (leaf), ``chain.pem`` (intermediates), ``fullchain.pem`` (both) and
``privkey.pem`` in one directory, or the leaf with its intermediates and the key at two
given paths; ``reload_command``, if set, runs after they changed
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
    if target.certificate_path is not None and target.key_path is not None:
        files: tuple[PlannedFile, ...] = (
            PlannedFile(Path(target.certificate_path), bundle.certificate + bundle.chain, target.mode),
            PlannedFile(Path(target.key_path), bundle.private_key, target.key_mode, private=True),
        )
    else:
        directory = Path(target.directory)  # type: ignore[arg-type]
        files = (
            PlannedFile(directory / "cert.pem", bundle.certificate, target.mode),
            PlannedFile(directory / "chain.pem", bundle.chain, target.mode),
            PlannedFile(directory / "fullchain.pem", bundle.certificate + bundle.chain, target.mode),
            PlannedFile(directory / "privkey.pem", bundle.private_key, target.key_mode, private=True),
        )
    return Plan(kind="file", files=files, owner=target.owner, group=target.group,
                reload=tuple(target.reload_command) if target.reload_command else None)
