"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

import pytest

from tests.e2e.processes import AgentHost, Coordinator


@pytest.fixture
def fleet(tmp_path, database_url):
    """A coordinator process, an enrolled agent host, and a list of processes the test
    started (stopped at the end)."""
    coordinator = Coordinator(tmp_path, database_url)
    processes = []
    try:
        yield coordinator, AgentHost(tmp_path, coordinator), processes
    finally:
        for process in processes:
            process.stop()
        coordinator.process.stop()
