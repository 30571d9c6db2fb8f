"""Every option and argument of ``certfleet`` and ``certfleet-agent``, in every
subcommand, says in ``--help`` what it is for."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from certfleet.agent.cli import _parser as agent_parser
from certfleet.coordinator.cli import _parser as coordinator_parser


def _silent(parser: argparse.ArgumentParser, command: str) -> Iterator[str]:
    """Each option or argument of ``parser`` and its subcommands without help text."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subcommand in action.choices.items():
                yield from _silent(subcommand, f"{command} {name}")
        elif not isinstance(action, argparse._HelpAction) and not (action.help or "").strip():
            yield f"{command} {'/'.join(action.option_strings) or action.dest.upper()}"


@pytest.mark.parametrize("command, parser", [("certfleet", coordinator_parser), ("certfleet-agent", agent_parser)])
def test_every_option_of_every_subcommand_has_help_text(command, parser):
    assert list(_silent(parser(), command)) == []


def test_the_walk_finds_an_option_without_help():
    parser = argparse.ArgumentParser(prog="tool")
    parser.add_subparsers().add_parser("sub").add_argument("--quiet-one")

    assert list(_silent(parser, "tool")) == ["tool sub --quiet-one"]
