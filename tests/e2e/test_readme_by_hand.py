"""The README's "By hand" section, run as printed: the shell block is read from
README.md (so the two cannot drift apart), only its placeholders are filled in
(the tokens and the agent id the commands print, and the port, through the option
the README documents), and every line runs in one bash, the way a reader pastes it.
Lines the README marks "terminal 1" or "terminal 2" keep running, as they would in
a terminal of their own."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.processes import BIN, wait_until

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"
DOCUMENTED_PORT = "8443"
PLACEHOLDERS = {"cfb_…": r"\bcfb_[A-Za-z0-9_-]+", "cfe_…": r"\bcfe_[A-Za-z0-9_-]+", "agt_…": r"\bagt_[A-Za-z0-9]+"}


def by_hand_commands() -> list[str]:
    """The commands of the README's "By hand" shell block, continuation lines joined."""
    text = README.read_text()
    section = text[text.index("\n## By hand\n"):]
    section = section[:section.index("\n## ", 1)]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the By hand section has no ```sh block"
    return [line for line in block.group(1).split("\n") if line.strip()]


def _join_continuations(lines: list[str]) -> list[str]:
    commands: list[str] = []
    for line in lines:
        if commands and commands[-1].rstrip().endswith("\\"):
            commands[-1] += "\n" + line
        else:
            commands.append(line)
    return commands


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


class Shell:
    """One bash fed the commands on its stdin, as a terminal would. Each command's
    output goes to files of its own; ``{ …\\n}`` keeps a trailing comment from
    swallowing the redirection and runs the command in this shell, so its exports
    last. Job control puts each background command in a process group of its own."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd = cwd
        self.logs = cwd / ".by-hand"
        self.logs.mkdir()
        self.popen = subprocess.Popen(["bash"], stdin=subprocess.PIPE, cwd=cwd, env=env, text=True,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.background_groups: list[int] = []
        self._count = 0
        self._send("set -m")

    def _send(self, text: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(text + "\n")
        self.popen.stdin.flush()

    def run(self, command: str, *, timeout: float = 120) -> Ran:
        self._count += 1
        out, err, code = (self.logs / f"{self._count}.{name}" for name in ("out", "err", "rc"))
        self._send(f"{{\n{command}\n}} >{out} 2>{err}\necho $? >{code}.tmp && mv {code}.tmp {code}")
        wait_until(code.exists, timeout=timeout, what=f"`{command}` to finish")
        return Ran(int(code.read_text()), out.read_text(), err.read_text())

    def start(self, command: str) -> Path:
        """Run ``command`` in the background; returns the file its output goes to."""
        self._count += 1
        log, pid = self.logs / f"{self._count}.log", self.logs / f"{self._count}.pid"
        self._send(f"{{\n{command}\n}} >{log} 2>&1 &\necho $! >{pid}.tmp && mv {pid}.tmp {pid}")
        wait_until(pid.exists, what=f"`{command}` to start")
        self.background_groups.append(int(pid.read_text()))
        return log

    def close(self) -> None:
        for group in reversed(self.background_groups):
            try:
                os.killpg(group, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for group in self.background_groups:
            try:
                wait_until(lambda group=group: not _group_alive(group), timeout=30, what="the background jobs to stop")
            except AssertionError:
                os.killpg(group, signal.SIGKILL)
        assert self.popen.stdin is not None
        self.popen.stdin.close()
        self.popen.wait(timeout=30)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def _free_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


def test_the_readme_by_hand_section_ends_in_deployed(tmp_path):
    lines = _join_continuations(by_hand_commands())
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTFLEET_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    # The PKI listener's default port may be taken by another test running alongside.
    env["CERTFLEET_PKI_LISTEN"] = "127.0.0.1:0"
    shell = Shell(tmp_path, env)
    learned: dict[str, str] = {}

    def fill(line: str) -> str:
        # Placeholders in a trailing comment say what the command prints: left alone.
        command, comment = re.split(r"(?=\s#\s)", line, maxsplit=1) if re.search(r"\s#\s", line) else (line, "")
        for placeholder in PLACEHOLDERS:
            if placeholder in command:
                assert placeholder in learned, f"nothing printed {placeholder} before `{line}`"
                command = command.replace(placeholder, learned[placeholder])
        return command.replace(DOCUMENTED_PORT, port) + comment

    def learn(output: str) -> None:
        for placeholder, pattern in PLACEHOLDERS.items():
            if placeholder not in learned and (found := re.search(pattern, output)):
                learned[placeholder] = found.group(0)

    try:
        assert any(f"--listen 127.0.0.1:{DOCUMENTED_PORT}" in line for line in lines), lines
        *steps, last = lines
        for line in steps:
            command = fill(line)
            if re.search(r"#\s*terminal \d", line):
                log = shell.start(command)
                if " serve " in f" {command} ":
                    wait_until(lambda log=log: "coordinator listening on" in log.read_text(), what="the coordinator")
                learn(log.read_text())
                continue
            ran = shell.run(command)
            assert ran.returncode == 0, f"`{command}` failed ({ran.returncode}):\n{ran.stdout}{ran.stderr}"
            learn(ran.stdout + ran.stderr)

        # The last line is the one the reader repeats until the status is "deployed".
        assert "certificates list" in last

        def status() -> str | None:
            ran = shell.run(fill(last))
            assert ran.returncode == 0, ran.stderr
            row = re.search(r"www\.example\.test\s+(\w+)", ran.stdout)
            assert row is None or row.group(1) != "failed", ran.stdout
            return ran.stdout if row is not None and row.group(1) == "deployed" else None

        listed = wait_until(status, timeout=120, what="the certificate to be deployed")
        assert "www.example.test" in listed
        assert (tmp_path / "www" / "fullchain.pem").exists()
    finally:
        shell.close()
