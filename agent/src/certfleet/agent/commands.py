"""Running reload and test commands: argv lists, never a shell."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

import trio

__all__ = ["CommandResult", "run_argv"]

OUTPUT_LIMIT = 4096


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int | None
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        status = "timed out" if self.returncode is None else f"exited {self.returncode}"
        text = f"`{' '.join(self.argv)}` {status}"
        if self.stderr.strip():
            text += f"; stderr: {self.stderr.strip()}"
        return text


def _clip(data: bytes | None) -> str:
    text = (data or b"").decode(errors="replace")
    return text if len(text) <= OUTPUT_LIMIT else text[:OUTPUT_LIMIT] + "…"


async def run_argv(argv: list[str] | tuple[str, ...], *, timeout: float = 120.0,
                   env: Mapping[str, str] | None = None) -> CommandResult:
    """Run ``argv`` (no shell), capturing output; a missing program is a failure too.

    ``env`` adds variables to the agent's own environment for this process: the way to
    hand a program a password, since any local user can read another process's argv."""
    argv = tuple(argv)
    try:
        with trio.move_on_after(timeout):
            completed = await trio.run_process(
                list(argv), capture_stdout=True, capture_stderr=True, check=False,
                stdin=subprocess.DEVNULL, env={**os.environ, **env} if env else None,
            )
            return CommandResult(argv, completed.returncode, _clip(completed.stdout), _clip(completed.stderr))
    except OSError as exc:
        return CommandResult(argv, 127, "", f"cannot run {argv[0]}: {exc.strerror or exc}")
    return CommandResult(argv, None, "", f"no answer within {timeout:.0f}s")

