"""The installers and the service files.

The installers carry copies of the service files (a piped ``curl | sh`` has no
repository beside it); the copies must not drift from the files in the repository.
The units must pass ``systemd-analyze verify`` and the plists must parse. The agent
installer's refusals are checked here without a coordinator: bad input stops it
before it changes anything. The whole one-liner against a real coordinator is in
tests/e2e/test_install_one_liner.py.
"""

from __future__ import annotations

import os
import plistlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
AGENT_INSTALLER = ROOT / "installers" / "install-agent.sh"
UNITS = ("certfleet-agent.service", "certfleet-coordinator.service")
PLISTS = ("io.certfleet.agent.plist", "io.certfleet.coordinator.plist")


def _heredoc(script: Path, marker: str) -> str:
    match = re.search(rf"<<'{marker}'\n(.*?)\n{marker}\n", script.read_text(), re.S)
    assert match, f"no {marker} heredoc in {script.name}"
    return match.group(1) + "\n"


@pytest.mark.parametrize("script, marker, original", [
    ("install-agent.sh", "UNIT", "systemd/certfleet-agent.service"),
    ("install-agent.sh", "PLIST", "launchd/io.certfleet.agent.plist"),
    ("install-coordinator.sh", "UNIT", "systemd/certfleet-coordinator.service"),
])
def test_embedded_service_files_match_the_repository(script, marker, original):
    assert _heredoc(ROOT / "installers" / script, marker) == (ROOT / original).read_text()


# --- systemd ------------------------------------------------------------------------------


def _directives(unit: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in (ROOT / "systemd" / unit).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_accepts_the_unit(tmp_path, unit):
    """``systemd-analyze verify`` parses every directive and checks the ExecStart
    binary exists; it works without systemd as PID 1. The copy points ExecStart at an
    executable that exists here (the unit's own path exists only on an installed host)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    text = (ROOT / "systemd" / unit).read_text()
    text = re.sub(r"^ExecStart=/usr/local/bin/(\S+)", lambda m: f"ExecStart={shutil.which('true')}",
                  text, flags=re.M)
    copy = tmp_path / unit
    copy.write_text(text)

    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "SYSTEMD_LOG_COLOR": "0"})

    complaints = [line for line in (result.stdout + result.stderr).splitlines() if unit in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


def test_the_agent_unit_stops_gracefully_and_restarts_only_on_failure():
    agent = _directives("certfleet-agent.service")

    assert agent["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert agent["TimeoutStopSec"] == ["90"]
    assert agent["Restart"] == ["on-failure"]  # exit 0 (retired, stopped) is not restarted
    assert agent["RestartPreventExitStatus"] == ["2"]  # invalid settings: a restart cannot help
    assert agent["ExecStart"] == ["/usr/local/bin/certfleet-agent --config /etc/certfleet/agent.toml run"]


@pytest.mark.parametrize("unit, hardening", [
    ("certfleet-agent.service", {"NoNewPrivileges": "yes", "ProtectSystem": "yes", "ProtectHome": "read-only",
                                 "PrivateTmp": "yes", "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes",
                                 "ProtectControlGroups": "yes", "LockPersonality": "yes", "UMask": "0077",
                                 "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX"}),
    ("certfleet-coordinator.service", {"User": "certfleet", "CapabilityBoundingSet": "", "NoNewPrivileges": "yes",
                                       "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateDevices": "yes",
                                       "SystemCallFilter": "@system-service", "RestrictNamespaces": "yes",
                                       "UMask": "0077", "Restart": "on-failure"}),
])
def test_units_keep_their_hardening(unit, hardening):
    directives = _directives(unit)
    for key, value in hardening.items():
        assert directives.get(key) == [value], key


# --- launchd ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PLISTS)
def test_plists_parse_and_name_their_job(name):
    with (ROOT / "launchd" / name).open("rb") as handle:
        job = plistlib.load(handle)

    assert job["Label"] == name.removesuffix(".plist")
    assert job["ProgramArguments"][0].startswith("/usr/local/bin/certfleet")
    assert job["RunAtLoad"] is True
    # Restarted after a crash, not after a clean exit (a retired agent exits 0).
    assert job["KeepAlive"] == {"SuccessfulExit": False}
    assert job["Umask"] == 0o077


def test_the_agent_plist_waits_for_the_agents_stop_deadline():
    with (ROOT / "launchd" / "io.certfleet.agent.plist").open("rb") as handle:
        job = plistlib.load(handle)
    assert job["ExitTimeOut"] == 90
    assert job["ProgramArguments"][1:] == ["--config", "/etc/certfleet/agent.toml", "run"]


def test_nothing_refers_to_the_old_launchd_labels_except_to_clean_them_up():
    for path in [*ROOT.glob("installers/*.sh"), *ROOT.glob("launchd/*"), *ROOT.glob("docs/**/*.md"),
                 ROOT / "README.md"]:
        for line in path.read_text().splitlines():
            if "dev.certfleet." in line:
                assert path.parent.name == "installers", f"{path}: {line}"


# --- the agent installer's refusals -------------------------------------------------------


def test_the_agent_installer_embeds_each_placeholder_exactly_once():
    text = AGENT_INSTALLER.read_text()
    assert text.count("@CERTFLEET_COORDINATOR_URL@") == 1
    assert text.count("@CERTFLEET_CA_FINGERPRINT@") == 1


@pytest.mark.parametrize("script", ["install-agent.sh", "install-coordinator.sh", "uninstall.sh"])
def test_installers_are_valid_posix_sh(script):
    shells = [shell for shell in ("dash", "sh") if shutil.which(shell)]
    result = subprocess.run([shells[0], "-n", str(ROOT / "installers" / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    shellcheck = shutil.which("shellcheck")
    if shellcheck:
        lint = subprocess.run([shellcheck, "-s", "sh", str(ROOT / "installers" / script)], capture_output=True,
                              text=True)
        assert lint.returncode == 0, lint.stdout


def _run_installer(prefix: Path, *args: str, script: str | None = None) -> subprocess.CompletedProcess:
    """The installer as a piped one-liner would run it: ``sh -s -- ARGS`` reading stdin."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTFLEET_")}
    return subprocess.run(["sh", "-s", "--", "--prefix", str(prefix), *args],
                          input=script if script is not None else AGENT_INSTALLER.read_text(),
                          capture_output=True, text=True, env=env, timeout=120)


def _filled_in(url: str = "https://127.0.0.1:9", fingerprint: str = "ab" * 32) -> str:
    return (AGENT_INSTALLER.read_text().replace("@CERTFLEET_COORDINATOR_URL@", url)
            .replace("@CERTFLEET_CA_FINGERPRINT@", fingerprint))


@pytest.mark.parametrize("args, script, refusal", [
    (["--bogus"], None, "unknown option: --bogus"),
    (["--token"], None, "--token needs a value"),
    (["--keep-state"], None, "--keep-state goes with --uninstall"),
    (["--token", "T"], None, "no coordinator address"),
    (["--token", "T", "--label", "novalue"], None, "--label takes KEY=VALUE"),
    (["--token", "T", "--label", "env=prod;id"], None, "--label takes KEY=VALUE"),
    (["--token", "T", "--label", "a=b=c"], None, "--label takes KEY=VALUE"),
    (["--token", "T"], _filled_in(url="http://plain.example"), "must start with https://"),
    (["--token", "T"], _filled_in(url="https://x.example/$(id)"), "characters other than"),
    (["--token", "T"], _filled_in(fingerprint="abc"), "the CA fingerprint must be a SHA-256"),
    (["--token", "T", "--python", "/nonexistent/python3"], _filled_in(), "Python 3.11 or newer is required"),
    ([], _filled_in(), "--token is required"),
])
def test_the_agent_installer_refuses_bad_input_and_changes_nothing(tmp_path, args, script, refusal):
    prefix = tmp_path / "root"

    result = _run_installer(prefix, *args, script=script)

    assert result.returncode != 0
    assert refusal in result.stderr, result.stderr
    assert not prefix.exists()


def test_the_agent_installer_refuses_a_prefix_with_odd_characters(tmp_path):
    result = _run_installer(tmp_path / "a b", "--token", "T")
    assert result.returncode != 0 and "--prefix must be" in result.stderr


def test_the_agent_installer_explains_its_options():
    result = subprocess.run(["sh", "-s", "--", "--help"], input=AGENT_INSTALLER.read_text(), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0
    for option in ("--token", "--prefix", "--no-service", "--uninstall", "--keep-state"):
        assert option in result.stdout


def test_uninstalling_what_is_not_there_is_harmless(tmp_path):
    result = _run_installer(tmp_path / "root", "--uninstall")
    assert result.returncode == 0, result.stderr
    assert "Uninstalled" in result.stdout
