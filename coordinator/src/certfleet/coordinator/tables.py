"""How the operator CLI shows API results to a person.

A list is a table, one row per item; a single item is a column of ``field: value``
lines. Every value is made readable and safe for a terminal:

* times (epoch seconds, or milliseconds in ``at_ms``) as ISO 8601 UTC, with "in 3
  days" / "2 hours ago" where the distance is the point (expiry, next attempt);
* file modes in octal (``0644``), serials as ``openssl x509 -serial`` prints them
  (upper-case hex, whole bytes, so a leading zero is kept), lists comma-separated,
  objects as ``key=value`` pairs;
* control characters (terminal escape sequences, newlines in a table cell) and
  bidirectional overrides escaped as ``\\x1b``, ``\\n``, ``\\u202e``: names, tags
  and error details come from other people and from agents.
"""

from __future__ import annotations

import datetime
import unicodedata
from collections.abc import Iterable
from typing import Any

__all__ = ["format_value", "printable", "render"]

RELATIVE_TIMES = frozenset({"not_after", "expires_at", "next_attempt_at", "renew_at", "last_seen_at", "last_seen",
                            "last_used_at"})
"""Time fields where how far away they are matters more than the date."""

_OTHER_TIMES = frozenset({"not_before", "first_seen", "expires_before"})
_MODES = frozenset({"mode", "key_mode"})
_SERIALS = frozenset({"serial", "serials"})
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(text: str) -> str:
    """``text`` with control characters and bidirectional overrides escaped, so
    what a terminal shows is what the text holds."""
    if text.isprintable():
        return text
    out = []
    for char in text:
        if unicodedata.category(char) in ("Cc", "Zl", "Zp") or char in _BIDI_CONTROLS:
            out.append(char.encode("unicode_escape").decode("ascii"))
        else:
            out.append(char)
    return "".join(out)


def _is_time(field: str) -> bool:
    return field.endswith("_at") or field in RELATIVE_TIMES or field in _OTHER_TIMES


def _relative(seconds: int) -> str:
    distance = abs(seconds)
    unit, size = next(((unit, size) for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60))
                       if distance >= size), ("second", 1))
    count = (distance + size // 2) // size  # to the nearest unit: 2 days 23 hours is "3 days"
    amount = f"{count} {unit}{'' if count == 1 else 's'}"
    return f"in {amount}" if seconds >= 0 else f"{amount} ago"


def _time(field: str, epoch: int, now: int) -> str:
    try:
        moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return str(epoch)
    text = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{text} ({_relative(epoch - now)})" if field in RELATIVE_TIMES else text


def _serial(value: str) -> str:
    """As ``openssl x509 -serial`` prints it: upper-case hex in whole bytes."""
    sign, digits = ("-", value[1:]) if value.startswith("-") else ("", value)
    try:
        int(digits, 16)
    except ValueError:
        return printable(value)
    digits = digits.upper()
    return sign + ("0" + digits if len(digits) % 2 else digits)


def format_value(field: str, value: Any, *, now: int) -> str:
    """One value of ``field`` as text on one line."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        if field == "at_ms":
            return _time(field, value // 1000, now)
        if _is_time(field):
            return _time(field, value, now)
        if field in _MODES:
            return f"{value:04o}"
        return str(value)
    if isinstance(value, str):
        return _serial(value) if field in _SERIALS else printable(value)
    if isinstance(value, dict):
        return ", ".join(f"{printable(str(key))}={_nested(str(key), item, now)}" for key, item in value.items())
    if isinstance(value, list | tuple):
        separator = "; " if any(isinstance(item, dict) for item in value) else ", "
        return separator.join(format_value(field, item, now=now) for item in value)
    return printable(str(value))


def _nested(field: str, value: Any, now: int) -> str:
    text = format_value(field, value, now=now)
    return f"{{{text}}}" if isinstance(value, dict) else text


def _table(rows: list[dict[str, Any]], columns: list[str], now: int) -> Iterable[str]:
    cells = [[format_value(column, row.get(column), now=now) for column in columns] for row in rows]
    widths = [max([len(column), *(len(line[i]) for line in cells)]) for i, column in enumerate(columns)]
    yield "  ".join(column.upper().ljust(width) for column, width in zip(columns, widths, strict=True)).rstrip()
    for line in cells:
        yield "  ".join(value.ljust(width) for value, width in zip(line, widths, strict=True)).rstrip()


def _record(row: dict[str, Any], columns: list[str], now: int) -> Iterable[str]:
    width = max((len(column) for column in columns), default=0) + 1
    for column in columns:
        value = row.get(column)
        if isinstance(value, str) and "\n" in value.strip("\n") and column not in _SERIALS:
            # A PEM block or a multi-line detail: its own indented lines.
            yield f"{column}:"
            yield from (f"    {printable(line)}" for line in value.strip("\n").split("\n"))
        else:
            yield f"{column + ':':<{width}} {format_value(column, value, now=now)}".rstrip()


def render(value: Any, columns: list[str], *, now: int) -> str:
    """A list as a table of ``columns``; one object as ``field: value`` lines."""
    if isinstance(value, list):
        return "\n".join(_table([row if isinstance(row, dict) else {} for row in value], columns, now))
    return "\n".join(_record(value if isinstance(value, dict) else {}, columns, now))
