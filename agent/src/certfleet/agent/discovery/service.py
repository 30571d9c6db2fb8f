"""Discovery as the agent runs it: a ``scan`` or ``probe`` work order (or
``certfleet-agent scan`` by hand) becomes reports to the coordinator.

A filesystem scan sends only what changed since the last acknowledged scan (the
delta against the agent's own inventory) and records the new inventory only after
the coordinator acknowledged every report, so a report lost on the way is sent again
by the next scan. A probe reports every certificate the endpoints served. Private
keys are never read into a report: ``has_private_key`` says only that one is there.

Passwords for encrypted PKCS#12 files, Java keystores and keys are the agent's
secrets whose names start with ``discovery-password`` (the secrets file, 0600).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path

import msgspec
import trio

from certfleet.shared import wire

from ..secrets import SecretError, Secrets
from ..state import AgentState
from .filesystem import scan
from .inventory import Delta, cached_files, commit_delta, inventory_delta
from .probe import AllowedRanges, ProbePlan, ProbePlanError, ProbeResult, probe
from .records import DEFAULT_LIMITS, DEFAULT_ROOTS, CertificateRecord, ScanLimits

__all__ = ["DiscoveryRefused", "DiscoveryService", "PASSWORD_SECRET_PREFIX"]

log = logging.getLogger("certfleet.agent.discovery")

PASSWORD_SECRET_PREFIX = "discovery-password"


class DiscoveryRefused(ValueError):
    """The order asks for something this agent's operator did not allow."""


def _wire_record(record: CertificateRecord) -> wire.DiscoveredCertificate:
    return msgspec.convert(record.to_dict(), wire.DiscoveredCertificate)


MAX_ENDPOINTS_IN_SUMMARY = 60
"""Endpoints listed one per line in a probe order's result (its detail is capped)."""


def _location(endpoint) -> str:
    """``host:port`` (IPv6 in brackets), with ``#name`` when the handshake sent SNI."""
    host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    return f"{host}:{endpoint.port}" + (f"#{endpoint.sni}" if endpoint.sni else "")


def _chunks(items: Sequence, size: int) -> list[Sequence]:
    return [items[i:i + size] for i in range(0, len(items), size)] or [items[:0]]


class DiscoveryService:
    def __init__(self, state: AgentState, client, secrets: Secrets, *, roots: Sequence[Path] = (),
                 probe_ranges: Sequence[str] = (), limits: ScanLimits = DEFAULT_LIMITS) -> None:
        """``roots``: where scans look (the defaults when empty); ``probe_ranges``: the
        only networks a probe may touch (none: probes are refused)."""
        self.state = state
        self.client = client
        self.secrets = secrets
        self.roots = tuple(str(root) for root in roots) or DEFAULT_ROOTS
        self.allowed = AllowedRanges(tuple(probe_ranges))
        self.limits = limits
        self.lock = trio.Lock()
        """Held by a full scan and by the change watcher, so that deltas are computed
        against an inventory nobody is changing."""

    def passwords(self) -> list[str]:
        try:
            return self.secrets.values_named(PASSWORD_SECRET_PREFIX)
        except SecretError as exc:  # a scan without passwords still finds everything unencrypted
            log.warning("scanning without keystore passwords: %s", exc)
            return []

    def roots_for(self, requested: Sequence[str]) -> tuple[str, ...]:
        if not requested:
            return self.roots
        allowed = [Path(root) for root in self.roots]
        for root in requested:
            path = Path(root)
            if ".." in path.parts or not any(path == base or base in path.parents for base in allowed):
                raise DiscoveryRefused(f"{root} is not inside the roots this agent scans ({', '.join(self.roots)})")
        return tuple(requested)

    async def scan_files(self, scan_id: str, requested_roots: Sequence[str] = ()) -> str:
        """Scan, report the delta, and record it once acknowledged; returns a summary."""
        roots = self.roots_for(requested_roots)
        passwords = self.passwords()
        async with self.lock:
            previous = cached_files(self.state)
            result = await trio.to_thread.run_sync(
                functools.partial(scan, roots, limits=self.limits, passwords=passwords, previous=previous),
                abandon_on_cancel=True)
            delta = inventory_delta(self.state, result)
            await self.send_delta(scan_id, delta)
            commit_delta(self.state, delta)
        stats = result.statistics
        problems = len(result.problems)
        return (f"scanned {', '.join(roots)}: {stats.certificates} certificate(s) found, {len(delta.added)} new or"
                f" changed, {len(delta.removed)} gone, {delta.unchanged_count} unchanged; {problems} problem(s)"
                + ("; stopped at the file limit" if result.truncated else ""))

    async def send_delta(self, scan_id: str, delta: Delta) -> None:
        added = [_wire_record(record) for record in delta.added]
        removed = [wire.DiscoveryRemoval(fingerprint_sha256=f, path=p, position=n) for f, p, n in delta.removed]
        await self._send("filesystem", scan_id, added, removed)

    async def probe_network(self, scan_id: str, order: wire.ProbeOrder) -> str:
        try:
            plan = ProbePlan(ranges=tuple(order.ranges), ports=tuple(order.ports),
                             server_names=tuple(order.server_names), timeout=order.timeout_seconds,
                             concurrency=order.concurrency)
            result = await probe(plan, allowed=self.allowed)
        except ProbePlanError as exc:  # outside the allowed ranges, too large, malformed: nothing was probed
            raise DiscoveryRefused(str(exc)) from exc
        await self._send("network", scan_id, self._served_records(result), [])
        totals = result.totals
        # The certificates went in the reports; how each endpoint spoke (protocol,
        # cipher) goes in the order's result, which the operator reads with
        # `certfleet discovery scans`.
        spoken = [f"{_location(e)}: {e.protocol} {e.cipher}, {len(e.chain)} certificate(s)"
                  for e in result.endpoints if e.status == "tls"]
        return (f"probed {totals.attempted} endpoint(s): {totals.tls} served TLS, {totals.not_tls} did not,"
                f" {totals.handshake_failed} failed the handshake, {totals.refused} refused,"
                f" {totals.timeout} timed out, {totals.unreachable} unreachable"
                + "".join(f"\n{line}" for line in spoken[:MAX_ENDPOINTS_IN_SUMMARY])
                + (f"\n… and {len(spoken) - MAX_ENDPOINTS_IN_SUMMARY} more" if len(spoken) > MAX_ENDPOINTS_IN_SUMMARY
                   else ""))

    @staticmethod
    def _served_records(result: ProbeResult) -> list[wire.DiscoveredCertificate]:
        records = {}
        for endpoint in result.endpoints:
            location = _location(endpoint)
            for position, served in enumerate(endpoint.chain):
                if served.facts is None:
                    continue  # unparseable: nothing to manage, and the coordinator could not store it
                facts = msgspec.structs.replace(served.facts, position=position)
                record = _wire_record(facts.placed(location, has_private_key=False))
                records[(record.fingerprint_sha256, location, position)] = record
        return list(records.values())

    async def _send(self, source: str, scan_id: str, added: list, removed: list) -> None:
        size = wire.MAX_DISCOVERY_RECORDS
        batches = [(chunk, []) for chunk in _chunks(added, size)] + [([], chunk) for chunk in _chunks(removed, size)
                                                                      if chunk]
        for number, (found, gone) in enumerate(batches, start=1):
            report = wire.DiscoveryReport(source=source, scan_id=scan_id, added=list(found), removed=list(gone),
                                          complete=number == len(batches))
            await self.client.call("agent.discoveries", report)
