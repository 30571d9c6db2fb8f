"""Argument types more than one command group parses: durations, labels, settings."""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

__all__ = ["duration", "label", "setting"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> int:
    """``90d``, ``12h``, ``30m``, ``45s`` or plain seconds."""
    match = re.fullmatch(r"(\d+)([smhd]?)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (use e.g. 90d, 12h, 30m)")
    return int(match.group(1)) * _UNITS[match.group(2) or "s"]


def label(text: str) -> tuple[str, str]:
    """``KEY=VALUE``, the value kept as text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError("labels are key=value")
    return key, value


def setting(text: str) -> tuple[str, Any]:
    """``KEY=VALUE``, the value parsed as JSON when it is JSON and kept as text when not."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError("expected KEY=VALUE")
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw
