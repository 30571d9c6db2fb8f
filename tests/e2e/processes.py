"""The coordinator and the agent as the separate programs an operator runs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.support import BOOTSTRAP_TOKEN

BIN = Path(sys.executable).parent
T = TypeVar("T")


def wait_until(check: Callable[[], T], *, timeout: float = 60.0, what: str = "condition") -> T:
    """Poll an observable outcome of another process until it holds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class Process:
    """A child process whose stderr is collected by a thread (so it never blocks)."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.argv = argv
        self.popen = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._reader.join(timeout=5)


class Coordinator:
    """``certfleet serve`` on 127.0.0.1:0. A replica sharing another's database passes
    the same ``master_key`` and that coordinator's ``api_key`` (it cannot bootstrap)."""

    def __init__(self, root: Path, database_url: str | None, *, master_key: str | None = None,
                 api_key: str | None = None, **extra_env: str) -> None:
        self.data_dir = root / "coordinator"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CERTFLEET_")}
        env["CERTFLEET_BOOTSTRAP_TOKEN"] = BOOTSTRAP_TOKEN
        env.update(extra_env)
        if database_url:
            env["CERTFLEET_DATABASE_URL"] = database_url
        if master_key:
            env["CERTFLEET_MASTER_KEY"] = master_key
        self.process = Process([str(BIN / "certfleet"), "serve", "--listen", "127.0.0.1:0",
                                "--data-dir", str(self.data_dir)], env)
        found = wait_until(lambda: re.search(r'coordinator listening on (https://[^\s"]+)', self.process.output)
                           or self.process.popen.poll() is not None, what="the coordinator to listen")
        if not isinstance(found, re.Match):
            raise AssertionError(f"coordinator exited:\n{self.process.output}")
        self.url = found.group(1)
        self.ca_path = self.data_dir / "tls" / "ca.pem"
        self.api_key = api_key or ""
        if not self.api_key:
            self.api_key = self.cli("bootstrap", "--token", BOOTSTRAP_TOKEN)["api_key"]

    def cli(self, *args: str, api_key: str | None = None) -> Any:
        """Run the operator CLI with ``--json`` and return its parsed output."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CERTFLEET_")}
        env.update(CERTFLEET_URL=self.url, CERTFLEET_CA_BUNDLE=str(self.ca_path),
                   CERTFLEET_API_KEY=api_key or self.api_key)
        completed = subprocess.run([str(BIN / "certfleet"), "--json", *args], env=env, capture_output=True,
                                   text=True, timeout=60)
        if completed.returncode != 0:
            raise AssertionError(f"certfleet {' '.join(args)} failed: {completed.stderr}")
        return json.loads(completed.stdout)

    def ca_fingerprint(self) -> str:
        completed = subprocess.run(["openssl", "x509", "-in", str(self.ca_path), "-noout", "-fingerprint",
                                    "-sha256"], capture_output=True, text=True, check=True)
        return completed.stdout.strip().split("=", 1)[1]

    def certificate(self, certificate_id: str) -> dict[str, Any]:
        return self.cli("certificates", "show", certificate_id)


class AgentHost:
    def __init__(self, root: Path, coordinator: Coordinator) -> None:
        self.dir = root / "agent"
        self.coordinator = coordinator
        token = coordinator.cli("agents", "enroll-token", "--uses", "1")["token"]
        completed = subprocess.run(
            [str(BIN / "certfleet-agent"), "--agent-dir", str(self.dir), "enroll", "--coordinator",
             coordinator.url, "--token", token, "--ca-fingerprint", coordinator.ca_fingerprint(), "--json"],
            capture_output=True, text=True, timeout=60)
        assert completed.returncode == 0, completed.stderr
        self.agent_id = json.loads(completed.stdout)["agent_id"]

    def start(self, **extra_env: str) -> Process:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CERTFLEET_")}
        env.update(extra_env)
        return Process([str(BIN / "certfleet-agent"), "--agent-dir", str(self.dir), "run"], env)
