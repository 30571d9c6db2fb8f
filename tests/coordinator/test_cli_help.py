"""The coordinator's own commands explain every option in ``--help``, and the README
says how to put the coordinator on another port."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from certfleet.coordinator.cli import _parser

README = Path(__file__).resolve().parents[2] / "README.md"


def _subcommand(path: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = _parser()
    for name in path:
        choices = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
        parser = choices[name]
    return parser


@pytest.mark.parametrize("path", [("serve",), ("demo",), ("bootstrap",), ("audit", "verify")], ids=" ".join)
def test_every_option_has_help_text(path):
    parser = _subcommand(path)
    silent = [action.option_strings or action.dest for action in parser._actions
              if not (action.help or "").strip() and action.help is not argparse.SUPPRESS]
    assert silent == [], f"certfleet {' '.join(path)}: options without help text: {silent}"


def test_the_readme_says_how_to_change_the_port():
    text = README.read_text()
    assert re.search(r"certfleet serve [^\n]*--listen 127\.0\.0\.1:8443", text), "the By hand block shows --listen"
    assert re.search(r"[Aa]nother port[^\n]*`--listen", text), "the README says --listen changes the port"
