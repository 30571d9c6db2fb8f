"""The one deployment procedure every file-based target goes through.

A deployer only says *what* to write and which commands apply (a :class:`Plan`); this
module does the rest, the same way for every kind:

1. a per-target lock, so two orders never interleave on the same files;
2. a snapshot of every file the plan touches (content, owner, group, mode), saved in
   the agent's state once per order, before anything is written;
3. SHA-256 idempotency: if every file already holds the wanted content, nothing is
   written and nothing is reloaded;
4. atomic writes: every file is staged as a temp file in its own directory (final
   owner and mode already set, fsynced), then all are renamed into place;
5. the target's config test, its reload, and the post-deploy check that the new leaf
   is the one being served;
6. on any failure, rollback: the snapshot goes back byte for byte (existing files keep
   their owner and mode, files that did not exist are removed), the server is reloaded
   again if it was reloaded, and the error reports both outcomes.

A crash anywhere resumes the same order from the same snapshot: leftover temp files
are removed, files that differ are written, and the test, reload and check run again.
"""

from __future__ import annotations

import grp
import hashlib
import logging
import os
import pwd
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from certfleet.shared.targets import TlsCheck

from ..commands import CommandResult, run_argv
from ..failpoints import failpoint
from ..files import TEMP_MARKER, fsync_directory, write_temp
from ..state import AgentState, Snapshot
from ..verify import verify_served
from .base import Bundle, DeployError, DeployOutcome, is_cancellation

__all__ = ["MasterSocketReload", "Pipeline", "Plan", "PlannedFile"]

log = logging.getLogger("certfleet.agent.deploy")

_locks: dict[str, trio.Lock] = {}

MASTER_SOCKET_TIMEOUT = 30.0


@dataclass(frozen=True)
class PlannedFile:
    path: Path
    content: bytes
    mode: int
    """Mode for the file if it does not exist yet; an existing file keeps its own."""
    private: bool = False
    """Holds key material: shown as such in plans, never logged."""


@dataclass(frozen=True)
class MasterSocketReload:
    """Reload HAProxy through its master CLI (``reload`` on the master socket)."""

    socket: Path


Reload = tuple[str, ...] | MasterSocketReload


@dataclass(frozen=True)
class Plan:
    kind: str
    files: tuple[PlannedFile, ...]
    owner: str | None = None
    group: str | None = None
    test: tuple[str, ...] | None = None
    reload: Reload | None = None
    verify: TlsCheck | None = None
    equivalent: Callable[[PlannedFile, bytes], bool] | None = field(default=None, compare=False)
    """For formats that are never byte-identical twice (a keystore's random salt):
    whether existing content already holds what the planned file would."""

    @property
    def lock_key(self) -> str:
        return "\n".join(sorted(str(f.path) for f in self.files))

    def describe(self) -> list[str]:
        """The plan in words, for ``certfleet-agent deploy --dry-run``."""
        lines = [f"kind: {self.kind}"]
        for planned in self.files:
            what = "private key material" if planned.private else f"{len(planned.content)} bytes"
            state = "exists" if planned.path.exists() else "new"
            lines.append(f"write {planned.path} ({what}; {state}; new-file mode {planned.mode:04o})")
        if self.owner or self.group:
            lines.append(f"new files owned by {self.owner or '(agent user)'}:{self.group or '(agent group)'}")
        if self.test:
            lines.append(f"config test: {list(self.test)}")
        if isinstance(self.reload, MasterSocketReload):
            lines.append(f"reload: 'reload' on the HAProxy master socket {self.reload.socket}")
        elif self.reload:
            lines.append(f"reload: {list(self.reload)}")
        if self.verify:
            lines.append(f"verify: {self.verify.protocol} {self.verify.host}:{self.verify.port}"
                         f" (SNI {self.verify.server_name or 'the first name'})")
        lines.append("on failure: restore the snapshot" + (" and reload again" if self.reload else ""))
        return lines


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


MAX_FILE_BYTES = 16 << 20
"""Certificates, keys, keystores and configs are small; anything larger is not one."""


def read_nofollow(path: Path) -> bytes | None:
    """The file's content, ``None`` if it does not exist. Refuses to follow a symlink,
    to read anything but a regular file (a FIFO would block the agent) and to read
    more than :data:`MAX_FILE_BYTES`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path} is not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise OSError(f"{path} is larger than {MAX_FILE_BYTES} bytes")
        return handle.read(MAX_FILE_BYTES + 1)


async def _master_socket_reload(reload: MasterSocketReload) -> CommandResult:
    argv = ("haproxy-master-cli", str(reload.socket), "reload")
    try:
        with trio.fail_after(MASTER_SOCKET_TIMEOUT):
            stream = await trio.open_unix_socket(str(reload.socket))
            async with stream:
                await stream.send_all(b"reload\n")
                answer = b""
                while chunk := await stream.receive_some(4096):
                    answer += chunk[: 4096 - len(answer)]
    except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
        return CommandResult(argv, 1, "", f"cannot reload through {reload.socket}: {str(exc) or type(exc).__name__}")
    text = answer.decode(errors="replace")
    failed = "Unknown command" in text or "Permission denied" in text
    return CommandResult(argv, 1 if failed else 0, text, text if failed else "")


async def run_reload(reload: Reload) -> CommandResult:
    if isinstance(reload, MasterSocketReload):
        return await _master_socket_reload(reload)
    return await run_argv(reload)


class Pipeline:
    def __init__(self, state: AgentState) -> None:
        self.state = state

    # --- snapshot and files -------------------------------------------------------------

    @staticmethod
    def _owner(plan: Plan) -> tuple[int, int]:
        try:
            uid = pwd.getpwnam(plan.owner).pw_uid if plan.owner else os.geteuid()
            gid = grp.getgrnam(plan.group).gr_gid if plan.group else os.getegid()
        except KeyError as exc:
            raise DeployError(f"unknown owner or group: {exc.args[0]}", step="prepare") from exc
        return uid, gid

    @staticmethod
    def _mode_for(planned: PlannedFile, snapshot: Snapshot) -> int:
        """The mode a file is written with: the existing file's, except that key
        material never keeps access for others (a key written over a 0644 file)."""
        return snapshot.mode & ~0o007 if planned.private else snapshot.mode

    def _snapshot(self, order_id: str, plan: Plan) -> dict[str, Snapshot]:
        existing = self.state.snapshots(order_id)
        if existing is None:
            uid, gid = self._owner(plan)
            existing = []
            for planned in plan.files:
                content = read_nofollow(planned.path)
                if content is None:
                    existing.append(Snapshot(str(planned.path), False, b"", planned.mode, uid, gid))
                else:
                    info = planned.path.lstat()
                    existing.append(Snapshot(str(planned.path), True, content, stat.S_IMODE(info.st_mode),
                                             info.st_uid, info.st_gid))
            self.state.save_snapshots(order_id, existing)
        return {s.name: s for s in existing}

    @staticmethod
    def _prepare_directories(plan: Plan) -> None:
        for directory in sorted({f.path.parent for f in plan.files}):
            directory.mkdir(parents=True, exist_ok=True, mode=0o755)
            if directory.is_symlink() or not directory.is_dir():
                raise DeployError(f"{directory} is not a directory", step="prepare")
        names = {(f.path.parent, f.path.name) for f in plan.files}
        for directory, name in names:
            for leftover in directory.glob(f"{TEMP_MARKER}{name}.*"):
                leftover.unlink(missing_ok=True)

    @staticmethod
    def _install(contents: dict[Path, bytes], snapshots: dict[str, Snapshot],
                 modes: dict[Path, int] | None = None) -> None:
        """Stage every file first, then rename them in; a crash between the two leaves
        only temp files, which recovery removes. ``modes`` overrides the snapshot's."""
        staged = {}
        for path, data in contents.items():
            snapshot = snapshots[str(path)]
            mode = (modes or {}).get(path, snapshot.mode)
            staged[path] = write_temp(path, data, mode=mode, uid=snapshot.uid, gid=snapshot.gid)
        failpoint("deploy.after-stage")
        for position, (path, temp) in enumerate(staged.items()):
            os.replace(temp, path)
            if position == 0:
                failpoint("deploy.after-first-rename")
        for directory in {p.parent for p in staged}:
            fsync_directory(directory)

    def _restore(self, snapshots: dict[str, Snapshot]) -> None:
        self._install({Path(n): s.content for n, s in snapshots.items() if s.existed}, snapshots)
        for name, snapshot in snapshots.items():
            if not snapshot.existed:
                Path(name).unlink(missing_ok=True)
        for directory in {Path(n).parent for n in snapshots}:
            fsync_directory(directory)

    def _is_current(self, plan: Plan, planned: PlannedFile, snapshot: Snapshot) -> bool:
        if not snapshot.existed:
            return False
        if _sha256(snapshot.content) == _sha256(planned.content):
            return True
        return plan.equivalent is not None and plan.equivalent(planned, snapshot.content)

    # --- the procedure ------------------------------------------------------------------

    async def _roll_back(self, snapshots: dict[str, Snapshot], plan: Plan, *, reload: bool,
                         after_failed_test: bool = False) -> str:
        """Put the snapshot back (and reload if the new files were loaded); say how it
        went. Shielded: a rollback that has started finishes even if the agent is
        being stopped (the reload has its own time limit)."""
        with trio.CancelScope(shield=True):
            try:
                self._restore(snapshots)
            except OSError as exc:
                return f"rollback FAILED: {exc}"
            if after_failed_test:
                return "previous files restored" + await self._settle_after_failed_test(plan)
            if not reload or plan.reload is None:
                return "previous files restored"
            second = await run_reload(plan.reload)
            return ("previous files restored; reload after restore "
                    + ("succeeded" if second.ok else f"failed: {second.describe()}"))

    async def _settle_after_failed_test(self, plan: Plan) -> str:
        """After a failed config test the server was not reloaded, but some servers
        read certificate files lazily (each new Postfix smtpd does), so a process may
        have started on the new files in the meantime. If the restored configuration
        passes the test, reload so every process serves the restored files; if it
        fails too, the configuration was broken before this deployment, and a reload
        could take the server down: leave it."""
        if plan.reload is None or plan.test is None:
            return ""
        retested = await run_argv(plan.test)
        if not retested.ok:
            return "; the config test fails with the previous files too (the configuration itself is broken): not reloaded"
        settled = await run_reload(plan.reload)
        return "; reload with the previous files " + ("succeeded" if settled.ok else f"failed: {settled.describe()}")

    async def deploy(self, order_id: str, plan: Plan, bundle: Bundle, *, server_name: str) -> DeployOutcome:
        if len({f.path for f in plan.files}) != len(plan.files):  # Path drops a trailing "/"
            raise DeployError("the target names the same file twice", step="prepare")
        lock = _locks.setdefault(plan.lock_key, trio.Lock())
        async with lock:
            snapshots = {}
            try:
                self._prepare_directories(plan)
                snapshots = self._snapshot(order_id, plan)
                changed = tuple(str(f.path) for f in plan.files
                                if not self._is_current(plan, f, snapshots[str(f.path)]))
                if not changed:
                    log.info("%s target already holds this certificate: nothing written, no reload", plan.kind)
                    self._remember(order_id, plan)
                    return DeployOutcome((), False, bundle.fingerprint_sha256)
                differing = {f.path: f.content for f in plan.files if read_nofollow(f.path) != f.content}
                self._install(differing, snapshots,
                              {f.path: self._mode_for(f, snapshots[str(f.path)]) for f in plan.files})
            except OSError as exc:
                outcome = await self._roll_back(snapshots, plan, reload=False) if snapshots else "nothing written"
                raise DeployError(f"cannot write the {plan.kind} files: {exc}; {outcome}", step="write",
                                  rolled_back=bool(snapshots)) from exc

            reloading = False
            try:
                if plan.test:
                    tested = await run_argv(plan.test)
                    if not tested.ok:
                        log.warning("config test failed (%s); restoring the previous files", tested.describe())
                        outcome = await self._roll_back(snapshots, plan, reload=False, after_failed_test=True)
                        raise DeployError(f"config test failed: {tested.describe()}; {outcome}",
                                          step="config-test", rolled_back=True)

                reloaded = False
                if plan.reload:
                    reloading = True
                    result = await run_reload(plan.reload)
                    if not result.ok:
                        log.warning("reload failed (%s); restoring the previous files", result.describe())
                        outcome = await self._roll_back(snapshots, plan, reload=True)
                        raise DeployError(f"reload failed: {result.describe()}; {outcome}", step="reload",
                                          rolled_back=True)
                    reloaded = True

                served = None
                if plan.verify:
                    check = await verify_served(plan.verify, expected=bundle.fingerprint_sha256, default_name=server_name)
                    served = check.fingerprint
                    if not check.matched:
                        outcome = await self._roll_back(snapshots, plan, reload=True)
                        raise DeployError(f"verification failed: {check.detail}; {outcome}", step="verify",
                                          rolled_back=True, served_fingerprint=served)
                log.info("deployed %s (%s)%s", plan.kind, ", ".join(changed), "; reloaded" if reloaded else "")
                self._remember(order_id, plan)
                return DeployOutcome(changed, reloaded, bundle.fingerprint_sha256, served)
            except BaseException as exc:
                if not is_cancellation(exc):
                    raise
                # Stopped past its deadline (SIGTERM): the new files were not seen
                # through, so the previous ones go back before the agent exits. The
                # order stays unfinished in the agent's state and runs again at start.
                log.warning("%s deployment cancelled; restoring the previous files", plan.kind)
                await self._roll_back(snapshots, plan, reload=reloading)
                raise

    def _remember(self, order_id: str, plan: Plan) -> None:
        """Record what each managed file now holds (the drift reference)."""
        digests = {}
        for planned in plan.files:
            content = read_nofollow(planned.path)
            if content is not None:
                digests[str(planned.path)] = _sha256(content)
        self.state.record_deployed_files(order_id, digests)

    async def roll_back_order(self, order_id: str, plan: Plan) -> str:
        """Put back the files as they were before ``order_id`` ran (an operator's
        ``certfleet-agent rollback``), then reload."""
        existing = self.state.snapshots(order_id)
        if existing is None:
            raise DeployError(f"work order {order_id} left no snapshot", step="prepare")
        async with _locks.setdefault(plan.lock_key, trio.Lock()):
            outcome = await self._roll_back({s.name: s for s in existing}, plan, reload=True)
            self._remember(order_id, plan)
            return outcome
