"""Prometheus metrics (text exposition format, prometheus-client).

Counts of certificates, jobs and agents are read from the database at scrape time,
so every coordinator behind a load balancer reports the same fleet. Issuance
latency and deploy outcomes are this process's own counters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

__all__ = ["TARGET_EVENTS", "Metrics", "liveness"]

#: What agents report per deployment attempt, counted per target.
TARGET_EVENTS = ("attempts", "skipped", "config_test_failures", "reload_failures", "verification_failures",
                 "rollbacks")

ONLINE_WITHIN = 60
LATE_WITHIN = 300


def liveness(last_seen_at: int | None, now: int) -> str:
    """From polls alone (no heartbeat traffic): an agent long-polls every ~25 s."""
    if last_seen_at is None:
        return "never-seen"
    age = now - last_seen_at
    return "online" if age <= ONLINE_WITHIN else "late" if age <= LATE_WITHIN else "offline"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.issuance_seconds = Histogram(
            "certfleet_issuance_seconds", "Time to check a CSR, sign and store the certificate.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=self.registry)
        self.deployments = Counter(
            "certfleet_deployments", "Deployment results reported by agents.", ["outcome"], registry=self.registry)
        self.notifications = Counter(
            "certfleet_notifications", "Notification delivery attempts by outcome.", ["outcome"],
            registry=self.registry)

    def render(self, snapshot: Mapping[str, Iterable[tuple[tuple[str, ...], float]]]) -> bytes:
        """The exposition text: this process's metrics plus a fleet ``snapshot``
        (metric name → ((label values), value)) read from the database."""
        families = []
        for name, (documentation, labels) in _FLEET.items():
            family_type = CounterMetricFamily if name in _FLEET_COUNTERS else GaugeMetricFamily
            family = family_type(name, documentation, labels=labels)
            for label_values, value in snapshot.get(name, ()):
                family.add_metric(list(label_values), value)
            families.append(family)

        class _Snapshot:
            def collect(self):
                return families

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Snapshot())
        return generate_latest(self.registry) + generate_latest(registry)


_FLEET: dict[str, tuple[str, list[str]]] = {
    "certfleet_certificates": ("Managed certificates by status.", ["status"]),
    "certfleet_certificate_expiry_seconds": ("Seconds until the soonest certificates expire.", ["certificate_id"]),
    "certfleet_jobs": ("Issuance and renewal jobs by kind and state (done, failed… are outcomes).",
                       ["kind", "state"]),
    "certfleet_work_orders": ("Work orders (attempts) by kind and status.", ["kind", "status"]),
    "certfleet_agents": ("Agents by liveness.", ["liveness"]),
    "certfleet_pending_approvals": ("Requests waiting for a second person.", []),
    "certfleet_target_deployments": ("Deployment events reported by agents, per target: attempts, identical "
                                     "content skipped, config test, reload and verification failures, rollbacks.",
                                     ["target", "kind", "event"]),
}
# Totals kept in the database (the same on every coordinator), exposed as counters.
_FLEET_COUNTERS = frozenset({"certfleet_target_deployments"})
