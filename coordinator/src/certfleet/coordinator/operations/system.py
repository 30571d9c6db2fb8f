"""Health, the CA bundle, and reading the audit trail."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec

from certfleet.shared import wire

from .. import audit
from ..core import Call, CoordinatorBase

__all__ = ["SystemOperations"]

AUDIT_PAGE_MAX = 1000
EXPORT_BATCH = 1000


class SystemOperations(CoordinatorBase):
    async def health(self, call: Call) -> wire.Health:
        await self.database.transact(lambda tx: tx.one("SELECT 1 AS ok"))
        return wire.Health(status="ok")

    async def pki_ca_bundle(self, call: Call) -> str:
        return self._root_pem

    async def audit_list(self, call: Call) -> wire.AuditPage:
        query = dict(call.query)
        limit = max(1, min(int(query.pop("limit", 100)), AUDIT_PAGE_MAX))
        after = int(query.pop("after", 0))
        rows = await self.database.transact(lambda tx: audit.query(tx, after=after, limit=limit, **query))
        events = [msgspec.convert(audit.as_wire(r), wire.AuditEvent) for r in rows]
        return wire.AuditPage(events=events, next_after=events[-1].id if len(events) == limit else None)

    async def audit_export(self, call: Call) -> AsyncIterator[bytes]:
        """NDJSON, streamed in batches so memory stays flat however long the trail."""
        since, until = call.query.get("since_ms"), call.query.get("until_ms")

        async def stream() -> AsyncIterator[bytes]:
            after = 0
            while True:
                rows = await self.database.transact(
                    lambda tx, after=after: audit.query(tx, after=after, limit=EXPORT_BATCH, since_ms=since,
                                                        until_ms=until))
                if not rows:
                    return
                yield b"".join(msgspec.json.encode(audit.as_wire(r)) + b"\n" for r in rows)
                after = rows[-1]["id"]

        return stream()
