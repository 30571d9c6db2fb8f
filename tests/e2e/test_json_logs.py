"""CERTFLEET_LOG_FORMAT=json: every line either command logs is one JSON object."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.e2e.processes import BIN, Coordinator

pytestmark = [pytest.mark.e2e]


def test_the_coordinator_logs_json_lines(tmp_path):
    coordinator = Coordinator(tmp_path, None, CERTFLEET_LOG_FORMAT="json")
    coordinator.cli("certificates", "list")
    coordinator.process.stop()
    lines = [line for line in coordinator.process.lines if line.strip()]
    entries = [json.loads(line) for line in lines]
    assert entries and all(set(e) >= {"ts", "level", "logger", "message"} for e in entries)
    assert any(e["logger"] == "certfleet.server" and "listening on https://" in e["message"] for e in entries)
    assert all(e["ts"].endswith("Z") and e["level"] in ("debug", "info", "warning", "error") for e in entries)


def test_an_unknown_log_format_is_refused(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTFLEET_")}
    env["CERTFLEET_LOG_FORMAT"] = "xml"
    completed = subprocess.run([str(BIN / "certfleet-agent"), "--agent-dir", str(tmp_path), "run"], env=env,
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode != 0 and "CERTFLEET_LOG_FORMAT must be text or json" in completed.stderr
