"""The host's ``commands.allow`` bounds what any target can make the agent run."""

from __future__ import annotations

import os
import sys

import pytest

from certfleet.agent.commands import CommandPolicy, CommandRefused
from certfleet.agent.deployers import Bundle, DeployError, Deployers
from certfleet.agent.secrets import Secrets
from certfleet.agent.state import AgentState
from certfleet.shared import wire


def _bundle() -> Bundle:
    return Bundle(b"-----CERT-----\n", b"", b"-----KEY-----\n", "0" * 64)


def test_without_an_allow_file_every_program_is_allowed(tmp_path):
    CommandPolicy(tmp_path / "commands.allow").check(["/bin/true"], ("nginx", "-t"))


def test_listed_programs_are_allowed_after_resolving_path_and_symlinks(tmp_path):
    allow = tmp_path / "commands.allow"
    link = tmp_path / "true-link"
    link.symlink_to("/bin/true")
    allow.write_text(f"# reload programs\n{link}\nsh  # used by a hook\n")
    policy = CommandPolicy(allow)
    policy.check(["/bin/true"], ["true", "--ignored"], [os.path.realpath("/bin/sh"), "-c", "x"])
    with pytest.raises(CommandRefused, match="is not listed"):
        policy.check(["/bin/false"])
    with pytest.raises(CommandRefused, match="not found on PATH"):
        policy.check(["certfleet-no-such-program"])


def test_an_allow_file_others_can_write_is_refused(tmp_path):
    allow = tmp_path / "commands.allow"
    allow.write_text("/bin/true\n")
    allow.chmod(0o666)
    with pytest.raises(CommandRefused, match="writable by group or others"):
        CommandPolicy(allow).check(["/bin/true"])


async def test_a_target_whose_reload_is_not_allowed_is_refused_before_anything_is_written(tmp_path):
    allow = tmp_path / "commands.allow"
    allow.write_text("/bin/true\n")
    deployers = Deployers(AgentState(tmp_path / "state.db"), Secrets(tmp_path / "secrets.json"), CommandPolicy(allow))
    site = tmp_path / "site"
    target = wire.NginxTarget(certificate_path=str(site / "cert.pem"), key_path=str(site / "key.pem"),
                              test_command=["/bin/true"], reload_command=[sys.executable, "-c", "print"])
    with pytest.raises(DeployError) as refused:
        await deployers.deploy("ord_policy", target, _bundle(), server_name="www.example.test")
    assert refused.value.step == "prepare" and "command policy" in refused.value.detail
    assert not site.exists()
    allowed = wire.NginxTarget(certificate_path=str(site / "cert.pem"), key_path=str(site / "key.pem"),
                               test_command=["/bin/true"], reload_command=["/bin/true"])
    outcome = await deployers.deploy("ord_allowed", allowed, _bundle(), server_name="www.example.test")
    assert outcome.reloaded and (site / "key.pem").read_bytes() == b"-----KEY-----\n"
