"""Renewal planning for 1-hour to 398-day certificates."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from certfleet.coordinator.lifecycle.planning import DEFAULT_POLICY, RenewalPolicy, plan_renewal

HOUR, DAY = 3600, 86400
lifetimes = st.integers(min_value=HOUR, max_value=398 * DAY)
policies = st.one_of(
    st.builds(RenewalPolicy, fraction=st.floats(1 / 3, 0.9), jitter=st.floats(0, 0.1)),
    st.builds(RenewalPolicy, fraction=st.none(), lead_seconds=st.integers(1, 400 * DAY), jitter=st.floats(0, 0.1)),
)


@settings(max_examples=500, deadline=None)
@given(lifetime=lifetimes, policy=policies, seed=st.integers(0, 2**32), start=st.integers(1_700_000_000, 1_900_000_000))
def test_planned_time_is_inside_validity_with_a_margin(lifetime, policy, seed, start):
    planned = plan_renewal(start, start + lifetime, policy, now=start, rng=random.Random(seed))
    assert start + lifetime / 3 <= planned <= start + 0.9 * lifetime + 1e-6


@settings(max_examples=300, deadline=None)
@given(lifetime=lifetimes, seed=st.integers(0, 2**32), window=st.tuples(st.floats(0, 1), st.floats(0, 1)))
def test_an_ari_window_is_honoured(lifetime, seed, window):
    start = 1_800_000_000
    low, high = sorted(window)
    if high - low < 1e-6:
        return
    ari = (start + low * lifetime, start + high * lifetime)
    planned = plan_renewal(start, start + lifetime, DEFAULT_POLICY, now=start, rng=random.Random(seed), ari_window=ari)
    assert ari[0] <= planned <= ari[1]


def test_default_is_two_thirds_with_proportional_jitter():
    start = 1_800_000_000
    for lifetime in (HOUR, DAY, 6 * DAY, 90 * DAY, 398 * DAY):
        times = [plan_renewal(start, start + lifetime, DEFAULT_POLICY, now=start, rng=random.Random(i)) - start
                 for i in range(200)]
        assert min(times) >= (2 / 3 - 0.05) * lifetime - 1e-6 and max(times) <= (2 / 3 + 0.05) * lifetime + 1e-6
        assert max(times) - min(times) > 0.05 * lifetime  # a fleet issued together spreads out


def test_a_lead_time_longer_than_the_lifetime_still_waits_a_third():
    start = 1_800_000_000
    policy = RenewalPolicy(fraction=None, lead_seconds=30 * DAY, jitter=0)
    assert plan_renewal(start, start + 6 * DAY, policy, now=start, rng=random.Random(1)) == start + 2 * DAY
    assert plan_renewal(start, start + 90 * DAY, policy, now=start, rng=random.Random(1)) == start + 60 * DAY


def test_overdue_and_ari_in_the_past_mean_now():
    start = 1_800_000_000
    now = start + int(0.95 * DAY)
    assert plan_renewal(start, start + DAY, DEFAULT_POLICY, now=now, rng=random.Random(1)) == now
    assert plan_renewal(start, start + DAY, DEFAULT_POLICY, now=now, rng=random.Random(1),
                        ari_window=(start, start + 10)) == now


def test_policies_validate():
    for bad in (dict(fraction=None), dict(fraction=0.95), dict(fraction=0.1), dict(fraction=None, lead_seconds=-1),
                dict(jitter=0.5), dict(fraction=0.5, lead_seconds=10)):
        with pytest.raises(ValueError):
            RenewalPolicy(**bad)
