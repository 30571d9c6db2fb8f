"""When to renew: a pure function of the certificate's validity, the policy, what the
CA suggests (ARI), the time and a random source.

The default renews once two thirds of the lifetime have passed (as step-ca's renewer
does), with jitter proportional to the lifetime so a fleet issued together does not
renew together. It never uses a fixed "30 days before expiry", which would renew a
6-day certificate before it was issued and a 398-day one absurdly early relative to
a 1-hour one. An ACME Renewal Information window (RFC 9773 §4.2) wins when known:
a uniformly random moment inside it, or now if it has already begun.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["DEFAULT_POLICY", "RenewalPolicy", "plan_renewal"]

EARLIEST = 1 / 3
"""Never renew before a third of the lifetime: a lead time longer than the
certificate would otherwise renew it straight after issuance, forever."""
LATEST = 0.9
"""Always leave a tenth of the lifetime for retries before expiry."""


@dataclass(frozen=True)
class RenewalPolicy:
    """Either ``fraction`` of the lifetime or ``lead_seconds`` before expiry."""

    fraction: float | None = 2 / 3
    lead_seconds: int | None = None
    jitter: float = 0.05
    """Spread, as a fraction of the lifetime, either side of the planned moment."""
    reuse_key: bool = False

    def __post_init__(self) -> None:
        if (self.fraction is None) == (self.lead_seconds is None):
            raise ValueError("a renewal policy sets either fraction or lead_seconds")
        if self.fraction is not None and not EARLIEST <= self.fraction <= LATEST:
            raise ValueError(f"fraction must be between {EARLIEST:.2f} and {LATEST}")
        if self.lead_seconds is not None and self.lead_seconds <= 0:
            raise ValueError("lead_seconds must be positive")
        if not 0 <= self.jitter <= 0.1:
            raise ValueError("jitter must be between 0 and 0.1")


DEFAULT_POLICY = RenewalPolicy()


def plan_renewal(not_before: float, not_after: float, policy: RenewalPolicy, *, now: float,
                 rng: random.Random, ari_window: tuple[float, float] | None = None) -> float:
    """The moment to start renewing; ``now`` or later, and never past 90 % of the
    lifetime unless ``now`` already is."""
    lifetime = not_after - not_before
    if lifetime <= 0:
        return now
    earliest, latest = not_before + EARLIEST * lifetime, not_before + LATEST * lifetime
    if ari_window is not None:
        start, end = ari_window
        if start < end and start < not_after:
            end = min(end, not_after)
            return max(now, rng.uniform(start, end))
    if policy.fraction is not None:
        target = not_before + policy.fraction * lifetime
    else:
        target = not_after - policy.lead_seconds  # type: ignore[operator]
    spread = policy.jitter * lifetime
    target += rng.uniform(-spread, spread)
    return max(now, min(max(target, earliest), latest))
