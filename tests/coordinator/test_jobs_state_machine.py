"""The job state machine, as data."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from certfleet.coordinator.lifecycle.jobs import TERMINAL, JobEvent, JobState, advance, retry_delay


def test_the_happy_path_and_a_retry():
    state = JobState.PENDING
    for event in (JobEvent.DELIVERED, JobEvent.ISSUED, JobEvent.ATTEMPT_FAILED, JobEvent.RETRY_DUE,
                  JobEvent.DELIVERED, JobEvent.ISSUED, JobEvent.DEPLOYED):
        state = advance(state, event)
    assert state is JobState.DONE


def test_terminal_states_take_no_event():
    for state in TERMINAL:
        for event in JobEvent:
            with pytest.raises(ValueError):
                advance(state, event)


@given(st.lists(st.sampled_from(list(JobEvent)), max_size=30))
def test_any_event_sequence_either_advances_or_is_refused(events):
    state = JobState.PENDING
    for event in events:
        try:
            state = advance(state, event)
        except ValueError:
            continue
        assert isinstance(state, JobState)


def test_retry_delays_grow_and_are_capped():
    rng = random.Random(7)
    delays = [retry_delay(n, rng, base=60, cap=3600) for n in range(1, 10)]
    assert all(30 <= delays[0] <= 60 for _ in [0])
    assert delays[2] > delays[0] and delays[4] > delays[2]
    assert max(delays) <= 3600 and min(delays[6:]) >= 1800
