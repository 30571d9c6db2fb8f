"""``describe_failure`` names a timeout as one, whatever I/O library raised it."""

from __future__ import annotations

import httpx
import trio

from certfleet.shared.connection import describe_failure


def test_a_timeout_the_caller_names_is_reported_as_no_answer_in_time():
    url = "https://coordinator.example.test:8443"
    for exc in (httpx.ReadTimeout("", request=httpx.Request("GET", url)), trio.TooSlowError()):
        described = describe_failure(url, exc, trust_hint="-", timeouts=(httpx.TimeoutException, trio.TooSlowError))
        assert "no answer in time" in described and "coordinator.example.test" in described, described
        assert "no answer in time" not in describe_failure(url, exc, trust_hint="-")
