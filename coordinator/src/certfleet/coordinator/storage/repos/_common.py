"""Helpers the repositories share: rows by id a few statements at a time, :class:`NotFound`
for a missing row, keyset paging, and the reach of a scoped caller."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..engine import NotFound, Tx

# Ids per ``IN (...)`` list: far below either engine's limit on parameters.
_IDS_PER_STATEMENT = 500


def _by_id(tx: Tx, select: str, ids: Iterable[str], column: str = "id") -> dict[str, dict[str, Any]]:
    """Rows of ``select ... WHERE {column} IN (ids)`` by their ``id``: a few statements
    for any number of ids instead of one each."""
    wanted, rows = sorted(set(ids)), {}
    for start in range(0, len(wanted), _IDS_PER_STATEMENT):
        chunk = wanted[start:start + _IDS_PER_STATEMENT]
        for row in tx.all(f"{select} WHERE {column} IN ({', '.join('?' * len(chunk))})", chunk):
            rows[row["id"]] = row
    return rows


def _all_by_id(tx: Tx, select: str, ids: Iterable[str], what: str, column: str = "id") -> dict[str, dict[str, Any]]:
    """:func:`_by_id`, with :class:`NotFound` for the first id that has no row."""
    wanted = set(ids)
    rows = _by_id(tx, select, wanted, column)
    missing = wanted - rows.keys()
    if missing:
        raise NotFound(f"{what} {min(missing)}")
    return rows


def _required(row: dict[str, Any] | None, what: str) -> dict[str, Any]:
    if row is None:
        raise NotFound(what)
    return row


ALL_ROWS = 2**62
"""A LIMIT that keeps every row (both engines accept it; PostgreSQL refuses -1)."""


def _keyset(table: str, alias: str, order: tuple[str, ...], after: str | None) -> tuple[str, tuple[str, ...]]:
    """SQL keeping the rows after the row whose id is ``after`` in the order ``order``
    (keyset paging: a page costs the same wherever it starts). An ``after`` that names
    no row leaves nothing."""
    if after is None:
        return "1 = 1", ()
    columns = ", ".join(f"{alias}.{column}" for column in order)
    return f"({columns}) > (SELECT {', '.join(order)} FROM {table} WHERE id = ?)", (after,)


def _scope_clause(profile_ids: Iterable[str], issuer_ids: Iterable[str]) -> tuple[str, list[str]]:
    """SQL keeping rows whose profile ``p`` is one of ``profile_ids`` or under one of
    ``issuer_ids`` (a scoped caller's reach); false when both are empty."""
    profiles, issuers = sorted(profile_ids), sorted(issuer_ids)
    parts = []
    if profiles:
        parts.append(f"p.id IN ({', '.join('?' * len(profiles))})")
    if issuers:
        parts.append(f"p.issuer_id IN ({', '.join('?' * len(issuers))})")
    return (f"({' OR '.join(parts)})" if parts else "1 = 0"), [*profiles, *issuers]
