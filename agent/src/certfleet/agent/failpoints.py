"""Crash injection for the recovery tests.

``CERTFLEET_AGENT_FAILPOINTS`` lists names (comma-separated); when execution reaches
a listed point the agent kills itself with SIGKILL, exactly as a power cut or an OOM
kill would stop it. Unset, this is a dictionary lookup and nothing else.
"""

from __future__ import annotations

import os
import signal

__all__ = ["failpoint"]

_ACTIVE = frozenset(filter(None, os.environ.get("CERTFLEET_AGENT_FAILPOINTS", "").split(",")))


def failpoint(name: str) -> None:
    if name in _ACTIVE:
        os.kill(os.getpid(), signal.SIGKILL)
