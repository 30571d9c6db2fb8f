"""The ``ssh`` target: a proxy agent deploys to a device that cannot run an agent,
over SSH (RFC 4251–4254) and SFTP (draft-ietf-secsh-filexfer-02, as OpenSSH serves it).

The same rules as the local file pipeline (:mod:`.pipeline`), over the network:

1. the server must present the pinned host key (``host_key``): a custom
   :class:`paramiko.MissingHostKeyPolicy` refuses every other key, and nothing is
   loaded from a ``known_hosts`` file, so that policy is the only way in; the key is
   compared with the pin once more after the connection. The check happens before
   authentication: a password is never sent to a server that is not the pinned one;
2. a per-device lock, so two orders never interleave on the same files;
3. a snapshot of every remote file (content, mode, owner, or its absence), read over
   SFTP and saved in the agent's state once per order, before anything is written;
4. SHA-256 idempotency: if every file already holds the wanted content, nothing is
   written and nothing is run;
5. atomic writes: each file is uploaded to a temporary name in its own directory (its
   final mode set before any byte is written, fsynced where the server offers
   ``fsync@openssh.com``), then renamed over the old one with
   ``posix-rename@openssh.com`` — a server without it is refused rather than given a
   non-atomic replace;
6. the remote config test, the remote reload, and the post-deploy TLS check;
7. on any failure, the snapshot goes back the same atomic way (files that did not
   exist are removed), the device is reloaded again, and the error reports both.

The connection, the host key check, the file operations and the remote commands are
in :mod:`.ssh_session`. Secrets (a private key or a password) are never logged nor put
in an error.
"""

from __future__ import annotations

import hashlib
import logging
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec
import paramiko
import trio

from certfleet.shared.targets import DEFAULT_CHECK_HOST, SshTarget, TlsCheck, parse_ssh_host_key

from ..secrets import Secrets
from ..state import AgentState, Snapshot
from ..verify import verify_served
from .base import Bundle, DeployError, DeployOutcome, describe_served, is_cancellation
from .ssh_session import SESSION_ERRORS, HostKeyRefused, RemoteFile, RemoteResult, SshSession, load_credentials, where

__all__ = ["SshDeployer"]

log = logging.getLogger("certfleet.agent.deploy")

_locks: dict[str, trio.Lock] = {}

T = TypeVar("T")


@dataclass(frozen=True)
class _Planned:
    path: str
    content: bytes = field(repr=False)
    mode: int
    private: bool = False


def _planned_files(target: SshTarget, bundle: Bundle) -> list[_Planned]:
    files = [_Planned(target.certificate_path, bundle.certificate + bundle.chain, target.mode)]
    if target.chain_path:
        files.append(_Planned(target.chain_path, bundle.chain, target.mode))
    files.append(_Planned(target.key_path, bundle.private_key, target.key_mode, private=True))
    return files


def _tls_check(target: SshTarget) -> TlsCheck | None:
    """The post-deploy check, aimed at the device unless ``verify.host`` says otherwise
    (its default, this agent's loopback, never serves a remote device)."""
    if target.verify is None or target.verify.host != DEFAULT_CHECK_HOST:
        return target.verify
    return msgspec.structs.replace(target.verify, host=target.host)


# --- the deployer -------------------------------------------------------------------------

@dataclass
class _Progress:
    reloading: bool = False
    """The reload was started: a rollback must reload too."""


class SshDeployer:
    def __init__(self, state: AgentState, secrets: Secrets) -> None:
        self.state = state
        self.secrets = secrets

    @staticmethod
    def snapshot_name(target: SshTarget, path: str) -> str:
        return f"ssh://{where(target)}{path}"

    @staticmethod
    def describe(target: SshTarget) -> list[str]:
        """The plan in words, for ``certfleet-agent deploy --dry-run``; connects nowhere."""
        pin_type, fingerprint = parse_ssh_host_key(target.host_key)
        lines = ["kind: ssh",
                 f"connect to {where(target)} (host key {pin_type + ' ' if pin_type else ''}{fingerprint}),"
                 f" authenticating with the agent's secret {target.auth_secret!r}",
                 f"upload {target.certificate_path} (leaf and chain; new-file mode {target.mode:04o})"]
        if target.chain_path:
            lines.append(f"upload {target.chain_path} (chain; new-file mode {target.mode:04o})")
        lines.append(f"upload {target.key_path} (private key material; new-file mode {target.key_mode:04o})")
        lines.append("each to a temp file in its directory, then posix-rename over the old one")
        if target.test_command:
            lines.append(f"remote config test: {shlex.join(target.test_command)}")
        if target.reload_command:
            lines.append(f"remote reload: {shlex.join(target.reload_command)}")
        check = _tls_check(target)
        if check:
            lines.append(f"verify: {check.protocol} {check.host}:{check.port}")
        lines.append("on failure: restore the previous files" + (" and reload again" if target.reload_command
                                                                 else ""))
        return lines

    async def _call(self, function: Callable[..., T], *args) -> T:
        return await trio.to_thread.run_sync(function, *args)

    async def _connect(self, target: SshTarget) -> SshSession:
        """An authenticated connection to the pinned server. Raises :class:`DeployError`
        (step ``prepare``): nothing has been written."""
        remote = SshSession(target, load_credentials(self.secrets, target.auth_secret))
        try:
            await self._call(remote.connect)
        except HostKeyRefused as exc:
            await self._call(remote.close)
            raise DeployError(f"{exc}; nothing written", step="prepare") from None
        except paramiko.AuthenticationException:
            await self._call(remote.close)
            raise DeployError(f"{remote.where} refused the credentials in the agent's secret"
                              f" {target.auth_secret!r}; nothing written", step="prepare") from None
        except SESSION_ERRORS as exc:
            await self._call(remote.close)
            raise DeployError(f"cannot connect to {remote.where}: {str(exc) or type(exc).__name__};"
                              " nothing written", step="prepare") from None
        return remote

    def _snapshots(self, order_id: str, target: SshTarget, files: list[_Planned],
                   found: dict[str, RemoteFile | None]) -> dict[str, Snapshot]:
        """This order's snapshot, saved now if this is its first attempt."""
        names = {self.snapshot_name(target, f.path): f.path for f in files}
        saved = {s.name: s for s in self.state.snapshots(order_id) or [] if s.name in names}
        if len(saved) != len(names):
            fresh = []
            for name, path in names.items():
                now = found[path]
                fresh.append(Snapshot(name, False, b"", 0, 0, 0) if now is None
                             else Snapshot(name, True, now.content, now.mode, now.uid, now.gid))
            self.state.save_snapshots(order_id, [s for s in fresh if s.name not in saved])
            saved.update({s.name: s for s in fresh if s.name not in saved})
        return {names[name]: snapshot for name, snapshot in saved.items()}

    @staticmethod
    def _install(remote: SshSession, contents: list[tuple[str, bytes, int, tuple[int, int] | None]]) -> None:
        """Stage every file, then rename them all in: a failure before the renames
        leaves only temp files."""
        staged = [(remote.stage(path, content, mode=mode, owner=owner), path)
                  for path, content, mode, owner in contents]
        for temp, path in staged:
            remote.rename(temp, path)

    @staticmethod
    def _restore(remote: SshSession, snapshots: dict[str, Snapshot]) -> None:
        SshDeployer._install(remote, [(path, s.content, s.mode, (s.uid, s.gid))
                                      for path, s in snapshots.items() if s.existed])
        for path, snapshot in snapshots.items():
            if not snapshot.existed:
                remote.remove(path)

    async def _roll_back(self, remote: SshSession, target: SshTarget, snapshots: dict[str, Snapshot], *,
                         reload: bool, after_failed_test: bool = False) -> str:
        """Put the snapshot back on the device, reload if the new files were loaded,
        and say how it went. Shielded: a rollback that has started finishes even if the
        agent is being stopped (every remote call has its own time limit)."""
        with trio.CancelScope(shield=True):
            try:
                await self._call(self._restore, remote, snapshots)
            except SESSION_ERRORS as exc:
                return f"rollback FAILED: {str(exc) or type(exc).__name__}"
            reload_command = tuple(target.reload_command or ())
            if after_failed_test and reload_command and target.test_command:
                # As in the local pipeline: reload only if the restored files pass the
                # test, so that a configuration that was broken before stays as it was.
                retested = await self._run(remote, tuple(target.test_command))
                if not retested.ok:
                    return ("previous files restored; the config test fails with the previous files too (the"
                            " configuration itself is broken): not reloaded")
                settled = await self._run(remote, reload_command)
                return "previous files restored; reload with the previous files " + (
                    "succeeded" if settled.ok else f"failed: {settled.describe()}")
            if not reload or not reload_command:
                return "previous files restored"
            second = await self._run(remote, reload_command)
            return "previous files restored; reload after restore " + (
                "succeeded" if second.ok else f"failed: {second.describe()}")

    async def _run(self, remote: SshSession, argv: tuple[str, ...]) -> RemoteResult:
        try:
            return await self._call(remote.run, argv)
        except SESSION_ERRORS as exc:
            return RemoteResult(shlex.join(argv), remote.where, -1, f"cannot run it: {str(exc) or type(exc).__name__}")

    async def deploy(self, order_id: str, target: SshTarget, bundle: Bundle, *, server_name: str) -> DeployOutcome:
        """Put ``bundle`` on the device and load it. Raises :class:`DeployError`: step
        ``prepare`` (secret, host key, authentication, connection), ``write``,
        ``config-test``, ``reload`` or ``verify``, each with the rollback outcome."""
        files = _planned_files(target, bundle)
        lock_key = f"{target.host}:{target.port}\n" + "\n".join(sorted(f.path for f in files))
        async with _locks.setdefault(lock_key, trio.Lock()):
            remote = await self._connect(target)
            try:
                return await self._deploy(order_id, target, bundle, remote, files, server_name)
            finally:
                with trio.CancelScope(shield=True):
                    await self._call(remote.close)

    async def _deploy(self, order_id: str, target: SshTarget, bundle: Bundle, remote: SshSession,
                      files: list[_Planned], server_name: str) -> DeployOutcome:
        snapshots: dict[str, Snapshot] = {}
        try:
            await self._call(remote.remove_leftovers, [f.path for f in files])
            found = {f.path: await self._call(remote.read, f.path) for f in files}
            snapshots = self._snapshots(order_id, target, files, found)
            changed = tuple(f.path for f in files if not snapshots[f.path].existed
                            or hashlib.sha256(snapshots[f.path].content).digest()
                            != hashlib.sha256(f.content).digest())
            if not changed:
                log.info("%s already holds this certificate: nothing written, nothing run", remote.where)
                return DeployOutcome((), False, bundle.fingerprint_sha256)
            writes = []
            for planned in files:
                now = found[planned.path]
                if now is not None and now.content == planned.content:
                    continue
                if now is None:
                    writes.append((planned.path, planned.content, planned.mode, None))
                else:
                    # An existing file keeps its mode and owner; key material never
                    # keeps access for others.
                    mode = now.mode & ~0o007 if planned.private else now.mode
                    writes.append((planned.path, planned.content, mode, (now.uid, now.gid)))
            await self._call(self._install, remote, writes)
        except SESSION_ERRORS as exc:
            outcome = (await self._roll_back(remote, target, snapshots, reload=False) if snapshots
                       else "nothing written")
            raise DeployError(f"cannot write the files on {remote.where}: {str(exc) or type(exc).__name__};"
                              f" {outcome}", step="write", rolled_back=bool(snapshots)) from None

        progress = _Progress()
        try:
            return await self._load(target, bundle, remote, snapshots, changed, server_name, progress)
        except BaseException as exc:
            if not is_cancellation(exc):
                raise
            # The agent is stopping past its deadline with the new files not seen
            # through: as the local pipeline does, put the previous ones back first.
            # The order stays unfinished in the agent's state and runs again at start.
            log.warning("deployment to %s cancelled; restoring the previous files", remote.where)
            await self._roll_back(remote, target, snapshots, reload=progress.reloading)
            raise

    async def _load(self, target: SshTarget, bundle: Bundle, remote: SshSession, snapshots: dict[str, Snapshot],
                    changed: tuple[str, ...], server_name: str, progress: _Progress) -> DeployOutcome:
        """The remote config test, the reload and the check, each rolling back on failure."""
        if target.test_command:
            tested = await self._run(remote, tuple(target.test_command))
            if not tested.ok:
                log.warning("remote config test failed (%s); restoring the previous files", tested.describe())
                outcome = await self._roll_back(remote, target, snapshots, reload=False, after_failed_test=True)
                raise DeployError(f"config test failed: {tested.describe()}; {outcome}", step="config-test",
                                  rolled_back=True)

        reloaded = False
        if target.reload_command:
            progress.reloading = True
            result = await self._run(remote, tuple(target.reload_command))
            if not result.ok:
                log.warning("remote reload failed (%s); restoring the previous files", result.describe())
                outcome = await self._roll_back(remote, target, snapshots, reload=True)
                raise DeployError(f"reload failed: {result.describe()}; {outcome}", step="reload", rolled_back=True)
            reloaded = True

        served = None
        check = _tls_check(target)
        if check is not None:
            seen = await verify_served(check, expected=bundle.fingerprint_sha256, default_name=server_name)
            served = seen.fingerprint
            if not seen.matched:
                outcome = await self._roll_back(remote, target, snapshots, reload=True)
                raise DeployError(f"verification failed: {seen.detail}; {outcome}", step="verify",
                                  rolled_back=True, served_fingerprint=served)
        log.info("deployed to %s (%s)%s", remote.where, ", ".join(changed), "; reloaded" if reloaded else "")
        return DeployOutcome(changed, reloaded, bundle.fingerprint_sha256, served)

    async def check(self, target: SshTarget, *, server_name: str, expected: str | None) -> str:
        """A ``targets test``: connect (host key and credentials), run the remote config
        test, read the served leaf. Writes nothing. Raises :class:`DeployError`."""
        found = []
        remote = await self._connect(target)
        try:
            found.append(f"connected to {remote.where} (host key {remote.policy.pin_fingerprint})")
            if target.test_command:
                tested = await self._run(remote, tuple(target.test_command))
                if not tested.ok:
                    raise DeployError(f"config test failed: {tested.describe()}", step="config-test")
                found.append(f"config test passed: `{tested.command}`")
        finally:
            with trio.CancelScope(shield=True):
                await self._call(remote.close)
        check = _tls_check(target)
        if check is not None:
            found.append(await describe_served(check, expected=expected, server_name=server_name))
        return "; ".join(found)

    async def roll_back_order(self, order_id: str, target: SshTarget) -> str:
        """Put the device's files back as they were before ``order_id`` ran (an
        operator's ``certfleet-agent rollback``), then reload. Raises :class:`DeployError`."""
        paths = [f.path for f in _planned_files(target, Bundle(b"", b"", b"", ""))]
        names = {self.snapshot_name(target, path): path for path in paths}
        snapshots = {names[s.name]: s for s in self.state.snapshots(order_id) or [] if s.name in names}
        if len(snapshots) != len(names):
            raise DeployError(f"work order {order_id} left no snapshot of the files on {where(target)}",
                              step="prepare")
        async with _locks.setdefault(f"{target.host}:{target.port}\n" + "\n".join(sorted(paths)), trio.Lock()):
            remote = await self._connect(target)
            try:
                return await self._roll_back(remote, target, snapshots, reload=True)
            finally:
                with trio.CancelScope(shield=True):
                    await self._call(remote.close)
