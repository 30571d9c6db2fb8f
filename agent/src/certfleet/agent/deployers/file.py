"""The ``file`` target: the four PEM files certbot users expect, plus a reload.

``cert.pem`` (leaf), ``chain.pem`` (intermediates), ``fullchain.pem`` (both) and
``privkey.pem`` are written atomically (temp file in the same directory, fsync,
rename, fsync the directory). Before anything is touched the current files are
snapshotted into the agent's state, once per order, so that:

* identical content is skipped (SHA-256): no write, no reload;
* a failing reload command puts the snapshot back, reloads again, and reports both;
* a crash anywhere resumes the same order from the same snapshot: leftover temp
  files are removed, the files that differ are written, the reload runs.
"""

from __future__ import annotations

import grp
import hashlib
import logging
import os
import pwd
import stat
from pathlib import Path

import trio

from certfleet.shared.wire import FileTarget

from ..commands import run_argv
from ..failpoints import failpoint
from ..files import TEMP_MARKER, fsync_directory, write_temp
from ..state import AgentState, Snapshot
from .base import Bundle, DeployError, DeployOutcome

__all__ = ["FILE_NAMES", "FileDeployer"]

log = logging.getLogger("certfleet.agent.deploy")

FILE_NAMES = ("cert.pem", "chain.pem", "fullchain.pem", "privkey.pem")
KEY_FILE = "privkey.pem"

_locks: dict[str, trio.Lock] = {}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


class FileDeployer:
    def __init__(self, state: AgentState) -> None:
        self.state = state

    @staticmethod
    def plan(bundle: Bundle) -> dict[str, bytes]:
        return {
            "cert.pem": bundle.certificate,
            "chain.pem": bundle.chain,
            "fullchain.pem": bundle.certificate + bundle.chain,
            "privkey.pem": bundle.private_key,
        }

    @staticmethod
    def _owner(target: FileTarget) -> tuple[int, int]:
        try:
            uid = pwd.getpwnam(target.owner).pw_uid if target.owner else os.geteuid()
            gid = grp.getgrnam(target.group).gr_gid if target.group else os.getegid()
        except KeyError as exc:
            raise DeployError(f"unknown owner or group: {exc.args[0]}") from exc
        return uid, gid

    def _snapshot(self, order_id: str, directory: Path, target: FileTarget) -> dict[str, Snapshot]:
        existing = self.state.snapshots(order_id)
        if existing is None:
            uid, gid = self._owner(target)
            existing = []
            for name in FILE_NAMES:
                path = directory / name
                content = _read(path)
                if content is None:
                    mode = target.key_mode if name == KEY_FILE else target.mode
                    existing.append(Snapshot(name, False, b"", mode, uid, gid))
                else:
                    info = path.lstat()
                    existing.append(Snapshot(name, True, content, stat.S_IMODE(info.st_mode),
                                             info.st_uid, info.st_gid))
            self.state.save_snapshots(order_id, existing)
        return {s.name: s for s in existing}

    @staticmethod
    def _remove_leftovers(directory: Path) -> None:
        for entry in directory.iterdir():
            if entry.name.startswith(TEMP_MARKER):
                entry.unlink(missing_ok=True)

    @staticmethod
    def _install(directory: Path, contents: dict[str, bytes], snapshots: dict[str, Snapshot]) -> None:
        """Stage every file first, then rename them in; a crash between the two leaves
        only temp files, which recovery removes."""
        staged = {
            name: write_temp(directory / name, data, mode=snapshots[name].mode,
                             uid=snapshots[name].uid, gid=snapshots[name].gid)
            for name, data in contents.items()
        }
        failpoint("deploy.after-stage")
        for position, (name, temp) in enumerate(staged.items()):
            os.replace(temp, directory / name)
            if position == 0:
                failpoint("deploy.after-first-rename")
        fsync_directory(directory)

    def _restore(self, directory: Path, snapshots: dict[str, Snapshot]) -> None:
        self._install(directory, {n: s.content for n, s in snapshots.items() if s.existed}, snapshots)
        for name, snapshot in snapshots.items():
            if not snapshot.existed:
                (directory / name).unlink(missing_ok=True)
        fsync_directory(directory)

    async def deploy(self, order_id: str, target: FileTarget, bundle: Bundle) -> DeployOutcome:
        directory = Path(target.directory)
        lock = _locks.setdefault(str(directory), trio.Lock())
        async with lock:
            try:
                directory.mkdir(parents=True, exist_ok=True, mode=0o755)
                if directory.is_symlink() or not directory.is_dir():
                    raise DeployError(f"{directory} is not a directory")
                self._remove_leftovers(directory)
                snapshots = self._snapshot(order_id, directory, target)
                desired = self.plan(bundle)
                changed = tuple(n for n, data in desired.items()
                                if not snapshots[n].existed or _sha256(snapshots[n].content) != _sha256(data))
                if not changed:
                    return DeployOutcome((), False, bundle.fingerprint_sha256)
                differing = {n: data for n, data in desired.items() if _read(directory / n) != data}
                self._install(directory, differing, snapshots)
            except OSError as exc:
                raise DeployError(f"cannot write to {directory}: {exc}") from exc
            if not target.reload_command:
                return DeployOutcome(changed, False, bundle.fingerprint_sha256)
            result = await run_argv(target.reload_command)
            if result.ok:
                log.info("deployed %s to %s and reloaded", ", ".join(changed), directory)
                return DeployOutcome(changed, True, bundle.fingerprint_sha256)
            log.warning("reload failed (%s); restoring the previous files", result.describe())
            try:
                self._restore(directory, snapshots)
            except OSError as exc:
                raise DeployError(f"reload failed: {result.describe()}; rollback FAILED: {exc}") from exc
            second = await run_argv(target.reload_command)
            raise DeployError(
                f"reload failed: {result.describe()}; previous files restored;"
                f" reload after restore {'succeeded' if second.ok else 'failed: ' + second.describe()}"
            )
