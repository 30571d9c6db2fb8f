"""The base of every wire message, JSON encoding and decoding, and the bounded field
types the message families share.

Every integer, string and collection a caller sends is bounded by its type; the types
here give the common bounds once, so a field means the same wherever it appears.
"""

from __future__ import annotations

from typing import Annotated, TypeVar

import msgspec


class Message(msgspec.Struct, forbid_unknown_fields=True):
    pass


T = TypeVar("T")


def decode(data: bytes, type: type[T]) -> T:
    """Decode JSON into ``type``; raises ``msgspec.ValidationError``/``DecodeError``."""
    value = msgspec.json.decode(data, type=type)
    validate = getattr(value, "validate", None)
    if validate is not None:
        validate()
    return value


def encode(value: object) -> bytes:
    return msgspec.json.encode(value)


INT64_MAX = 2**63 - 1
"""Both databases store integers in 64 bits: every integer a caller sends is bounded
well inside them (a test walks the catalogue's input types to keep it so)."""
MAX_TIMESTAMP = 253402300799
"""9999-12-31T23:59:59Z, the last second RFC 5280 §4.1.2.5.2 can write."""

_PLAIN = r"^[^\x00-\x1f\x7f-\x9f]*\Z"
# No control characters (C0, DEL, C1): names and operators' text reach terminals, where
# an escape sequence rewrites the screen, and PostgreSQL cannot store NUL at all.
# (`\Z`, not `$`, which also matches before a final newline.)

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=253, pattern=_PLAIN)]
KeyName = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=_PLAIN)]
"""What an operator calls an API key."""
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=_PLAIN)]
Reference = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=_PLAIN)]
"""The id (or name) of another resource."""
CommonName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=_PLAIN)]
"""A CA's subject common name (RFC 5280 Appendix A ``ub-common-name``: 64)."""
Description = Annotated[str, msgspec.Meta(max_length=512, pattern=_PLAIN)]
Note = Annotated[str, msgspec.Meta(max_length=1024, pattern=_PLAIN)]
Timestamp = Annotated[int, msgspec.Meta(ge=0, le=MAX_TIMESTAMP)]
"""Unix seconds."""

Identifier = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$")]
TargetName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
Fingerprint = Annotated[str, msgspec.Meta(min_length=64, max_length=64, pattern=r"^[0-9a-f]{64}$")]


def _check_printable(what: str, value: str) -> None:
    # Text an agent or operator writes itself must be plain: it ends up in terminals.
    # (A pattern cannot say this: its `$` also matches before a final newline.)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise msgspec.ValidationError(f"{what} contains control characters: {value[:80]!r}")
