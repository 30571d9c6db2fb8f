"""The installers carry copies of the service files (a piped `curl | sh` has no
repository beside it); the copies must not drift from the files in the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _heredoc(script: Path, marker: str) -> str:
    match = re.search(rf"<<'{marker}'\n(.*?)\n{marker}\n", script.read_text(), re.S)
    assert match, f"no {marker} heredoc in {script.name}"
    return match.group(1) + "\n"


@pytest.mark.parametrize("script, marker, original", [
    ("install-agent.sh", "UNIT", "systemd/certfleet-agent.service"),
    ("install-agent.sh", "PLIST", "launchd/dev.certfleet.agent.plist"),
    ("install-coordinator.sh", "UNIT", "systemd/certfleet-coordinator.service"),
])
def test_embedded_service_files_match_the_repository(script, marker, original):
    assert _heredoc(ROOT / "installers" / script, marker) == (ROOT / original).read_text()
