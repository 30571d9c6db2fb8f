"""Where certfleet keeps state on a host."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["state_dir"]


def state_dir(variable: str, name: str) -> Path:
    """``$variable`` if set; else ``/var/lib/<name>`` for root, the XDG data dir otherwise."""
    if value := os.environ.get(variable):
        return Path(value)
    if os.geteuid() == 0:
        return Path("/var/lib") / name
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / name
