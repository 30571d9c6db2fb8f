"""Running reload and test commands: argv lists, never a shell."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import trio

__all__ = ["CommandPolicy", "CommandRefused", "CommandResult", "run_argv"]

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


class CommandRefused(Exception):
    pass


class CommandPolicy:
    """Which programs targets may make this agent run.

    Target settings come from the coordinator, inside signed work orders; the agent
    often runs as root. ``commands.allow`` in the agent's directory (one program per
    line, ``#`` comments) narrows what any target can run, whatever the coordinator
    signs: a compromised coordinator, or an operator allowed to declare targets, then
    cannot turn a reload command into arbitrary code on the host. Programs are
    compared after resolving them on ``PATH`` and through symlinks. Without the file,
    every program is allowed (and the agent says so once at start).

    The file must not be writable by group or others: whoever can edit it can widen it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def allowed(self) -> frozenset[str] | None:
        """The resolved programs allowed, or ``None`` when there is no allow file."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CommandRefused(f"cannot read {self.path}: {exc.strerror}") from exc
        with os.fdopen(fd, "r", encoding="utf-8", errors="strict") as handle:
            if os.fstat(handle.fileno()).st_mode & 0o022:
                raise CommandRefused(f"{self.path} is writable by group or others: chmod go-w it")
            lines = handle.read(1 << 20).splitlines()
        programs = set()
        for line in lines:
            entry = line.split("#", 1)[0].strip()
            if entry:
                programs.add(_resolve(entry) or entry)
        return frozenset(programs)

    def check(self, *argvs: tuple[str, ...] | list[str] | None) -> None:
        allowed = self.allowed()
        if allowed is None:
            return
        for argv in argvs:
            if not argv:
                continue
            program = _resolve(argv[0])
            if program is None:
                raise CommandRefused(f"program {argv[0]!r} not found on PATH")
            if program not in allowed:
                raise CommandRefused(f"program {program} is not listed in {self.path}; add it there to let"
                                     " targets run it")


def _resolve(program: str) -> str | None:
    found = program if os.path.isabs(program) else shutil.which(program)
    return os.path.realpath(found) if found and os.path.exists(found) else None
