"""Fixtures the deployer tests share: a throwaway CA and a fresh agent pipeline."""

from __future__ import annotations

import pytest

from certfleet.agent.deployers import Deployers
from certfleet.agent.secrets import Secrets
from certfleet.agent.state import AgentState
from tests.deployers.mail_servers import Issuer


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer()


@pytest.fixture
def deployers(tmp_path) -> Deployers:
    return Deployers(AgentState(tmp_path / "state" / "agent.db"), Secrets(tmp_path / "secrets.json"))
