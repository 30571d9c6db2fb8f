"""Health and readiness, the version, the CA bundle, metrics, status, and reading the
audit trail."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from importlib import metadata

import msgspec

from certfleet.shared import wire

from .. import audit, errors
from ..core import Call, CoordinatorBase, RawResponse
from ..metrics import TARGET_EVENTS, liveness
from ..storage import Agents, Approvals, Certificates, Targets, Tx
from ..storage.migrations import MIGRATIONS
from .certificates import certificate_info
from .fleet import agent_info

__all__ = ["SystemOperations"]

log = logging.getLogger("certfleet.system")

AUDIT_PAGE_MAX = 1000
SCHEMA_VERSION = max(version for version, _, _ in MIGRATIONS)
"""The schema this coordinator was built for: the last migration it knows."""
EXPORT_BATCH = 1000


class SystemOperations(CoordinatorBase):
    async def health(self, call: Call) -> wire.Health:
        await self.database.transact(lambda tx: tx.one("SELECT 1 AS ok"))
        return wire.Health(status="ok")

    async def _schema_version(self) -> int:
        row = await self.database.transact(lambda tx: tx.one("SELECT MAX(version) AS version FROM schema_migrations"))
        return int(row["version"] or 0) if row else 0

    async def ready(self, call: Call) -> wire.Readiness:
        """Ready when the database answers and holds this coordinator's schema: a
        replica started against a database another version migrated (or not yet
        migrated) is kept out of the load balancer's pool."""
        try:
            applied = await self._schema_version()
        except Exception:  # whatever the driver raises, the answer is the same: not ready
            log.warning("not ready: the database did not answer", exc_info=True)
            raise errors.ServiceUnavailable(slug="database-unreachable") from None
        if applied != SCHEMA_VERSION:
            log.warning("not ready: the database schema is version %d, this coordinator's is %d",
                        applied, SCHEMA_VERSION)
            raise errors.ServiceUnavailable(slug="schema-not-current")
        return wire.Readiness(status="ready", schema_version=applied)

    async def version(self, call: Call) -> wire.VersionInfo:
        return wire.VersionInfo(version=metadata.version("certfleet-coordinator"), api="v1",
                                schema_version=await self._schema_version(), database=self.database.dialect)

    async def pki_ca_bundle(self, call: Call) -> str:
        return self._root_pem

    async def metrics(self, call: Call) -> RawResponse:
        now = self.now()

        def snapshot(tx: Tx) -> dict[str, list]:
            agents = tx.all("SELECT last_seen_at FROM agents")
            by_liveness: dict[str, int] = {}
            for row in agents:
                state = liveness(row["last_seen_at"], now)
                by_liveness[state] = by_liveness.get(state, 0) + 1
            soonest = tx.all(
                "SELECT c.id, MAX(v.not_after) AS not_after FROM certificates c JOIN certificate_versions v"
                " ON v.certificate_id = c.id AND v.revoked_at IS NULL GROUP BY c.id ORDER BY 2 LIMIT 10")
            return {
                "certfleet_certificates": [((r["status"],), r["n"]) for r in tx.all(
                    "SELECT status, COUNT(*) AS n FROM certificates GROUP BY status")],
                "certfleet_certificate_expiry_seconds": [((r["id"],), r["not_after"] - now) for r in soonest],
                "certfleet_jobs": [((r["kind"], r["state"]), r["n"]) for r in tx.all(
                    "SELECT kind, state, COUNT(*) AS n FROM jobs GROUP BY kind, state")],
                "certfleet_work_orders": [((r["kind"], r["status"]), r["n"]) for r in tx.all(
                    "SELECT kind, status, COUNT(*) AS n FROM work_orders GROUP BY kind, status")],
                "certfleet_agents": [((state,), n) for state, n in by_liveness.items()],
                "certfleet_pending_approvals": [((), tx.one(
                    "SELECT COUNT(*) AS n FROM approvals WHERE status = 'pending'")["n"])],
                "certfleet_target_deployments": [
                    ((r["name"], r["kind"], event), r[event])
                    for r in Targets(tx).list() for event in TARGET_EVENTS],
            }

        body = self.telemetry.render(await self.database.transact(snapshot))
        return RawResponse(body, "text/plain; version=0.0.4; charset=utf-8")

    async def status(self, call: Call) -> wire.StatusSummary:
        now = self.now()

        visible = self.profile_visible(call, "status.read")

        def gather(tx: Tx) -> wire.StatusSummary:
            # A caller with a grant on some profiles sees what needs attention there.
            rows = [row for row in Certificates(tx).list() if visible(row)]
            hidden_agents = self.agents_out_of_reach(tx, call, "status.read")
            counts: dict[str, int] = {}
            for row in rows:
                counts[row["status"]] = counts.get(row["status"], 0) + 1
            expiring = [r for r in rows if r["status"] == "deployed" and r["not_after"] and r["not_before"]
                        and r["not_after"] - now < (r["not_after"] - r["not_before"]) / 3]
            failing = [r for r in rows if r["status"] in ("failed", "approval-expired")]
            agents = [agent_info(a, now) for a in Agents(tx).list() if a["id"] not in hidden_agents]
            by_liveness: dict[str, int] = {}
            for agent in agents:
                by_liveness[agent.liveness] = by_liveness.get(agent.liveness, 0) + 1
            pending = sum(1 for row in Approvals(tx).list("pending") if visible(row))
            return wire.StatusSummary(
                certificates=counts, expiring_soon=[certificate_info(r) for r in expiring],
                failing=[certificate_info(r) for r in failing], agents=by_liveness,
                offline_agents=[a for a in agents if a.liveness == "offline"], pending_approvals=pending)

        return await self.database.transact(gather)

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
