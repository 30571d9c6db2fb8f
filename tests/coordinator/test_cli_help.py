"""The README says how to put the coordinator on another port (every option's help
text is checked for both commands by tests/test_command_help.py)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_says_how_to_change_the_port():
    text = README.read_text()
    assert re.search(r"certfleet serve [^\n]*--listen 127\.0\.0\.1:8443", text), "the By hand block shows --listen"
    assert re.search(r"[Aa]nother port[^\n]*`--listen", text), "the README says --listen changes the port"
