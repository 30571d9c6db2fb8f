"""Noticing certificate files that change behind the agent's back.

:func:`watch` follows the discovery roots with ``watchfiles`` (inotify, FSEvents,
kqueue, or polling where notifications are not available), which also debounces: a
burst of writes arrives as one batch. For each batch it rescans only what changed —
the changed paths themselves and, one level deep, their directories, since a key
appearing beside a certificate changes that certificate's record — and hands the
inventory delta to ``on_change``.

It also watches the files the agent deployed. When one of them no longer holds what
the agent wrote (by SHA-256), a :class:`DriftEvent` goes to ``on_drift``: someone
replaced a managed certificate by hand, or another tool did.

Notifications can be lost (a queue overflow, a root created after the watch started),
so the watcher complements periodic full scans; it does not replace them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import stat
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

import trio
import watchfiles

from ..files import TEMP_MARKER
from ..state import AgentState
from .filesystem import scan
from .formats import parse_content
from .inventory import Delta, cached_files, inventory_delta
from .records import DEFAULT_LIMITS, ScanLimits, ScanRoot

__all__ = ["DriftEvent", "check_drift", "rescan_roots", "watch"]

log = logging.getLogger("certfleet.agent.discovery")

WAKE_MS = 500
"""How often the notification threads return when nothing happens. The first return
tells that the watches are in place; later ones bound how long cancellation waits."""

ManagedFiles = Mapping[str, str] | Callable[[], Mapping[str, str]]
"""Deployed file path → SHA-256 of what the agent wrote there (or a function giving it,
asked again for every batch so new deployments count)."""


@dataclass(frozen=True)
class DriftEvent:
    """A managed file whose content is no longer what the agent deployed.

    ``seen_sha256`` is ``None`` when the file is gone or is no longer a readable regular
    file; ``fingerprint_sha256`` is that of the first certificate now in the file, if
    any."""

    path: str
    expected_sha256: str
    seen_sha256: str | None
    fingerprint_sha256: str | None


def check_drift(path: str, expected_sha256: str, *, max_file_bytes: int = DEFAULT_LIMITS.max_file_bytes,
                passwords: Iterable[str | bytes] = ()) -> DriftEvent | None:
    """Compare the file at ``path`` with what the agent deployed; ``None`` if equal.

    The file is opened without blocking and read only if it is a regular file no larger
    than ``max_file_bytes``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return DriftEvent(path, expected_sha256, None, None)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > max_file_bytes:
            return DriftEvent(path, expected_sha256, None, None)
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            size += len(chunk)
            if size > max_file_bytes:  # grew after the fstat
                return DriftEvent(path, expected_sha256, None, None)
    except OSError:
        return DriftEvent(path, expected_sha256, None, None)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    seen = hashlib.sha256(data).hexdigest()
    if seen == expected_sha256:
        return None
    secrets = tuple(p.encode() if isinstance(p, str) else p for p in passwords)
    certificates = parse_content(data, passwords=secrets).certificates
    return DriftEvent(path, expected_sha256, seen, certificates[0].fingerprint_sha256 if certificates else None)


def _root_of(path: str, roots: Iterable[str]) -> str | None:
    """The deepest configured root that ``path`` is in."""
    inside = [root for root in roots if ScanRoot(root).covers(path)]
    return max(inside, key=len) if inside else None


def rescan_roots(changed: Iterable[str], roots: Iterable[str]) -> tuple[ScanRoot, ...]:
    """What to scan again after ``changed`` paths changed under ``roots``: each changed
    path (recursively: it may be a directory moved in, or gone with everything under
    it) and its directory's own files (for key files beside certificates). Depths count
    from the configured root, as in a full scan."""
    roots = tuple(roots)
    wanted: dict[tuple[str, bool], ScanRoot] = {}
    for path in changed:
        root = _root_of(path, roots)
        if root is None:
            continue
        depth = path[len(root):].count("/")
        wanted.setdefault((path, True), ScanRoot(path, True, depth))
        if path != root:
            parent = os.path.dirname(path)
            wanted.setdefault((parent, False), ScanRoot(parent, False, depth - 1))
    candidates = list(wanted.values())
    return tuple(sorted(
        (candidate for candidate in candidates
         if not any(other is not candidate and other.recursive and other.covers(candidate.path)
                    and (other.path != candidate.path or not candidate.recursive) for other in candidates)),
        key=lambda root: (root.path, not root.recursive)))


def _event_filter() -> watchfiles.DefaultFilter:
    # The agent's own temp files come and go during every deployment; the rename that
    # follows is what matters. Version-control directories (etckeeper's /etc/.git) are
    # ignored as the default filter does.
    return watchfiles.DefaultFilter(ignore_entity_patterns=(f"^{TEMP_MARKER}",))


async def _follow(paths: list[str], *, recursive: bool, send: trio.MemorySendChannel, ready: trio.Event,
                  debounce_ms: int, force_polling: bool | None) -> None:
    """Forward batches of changed paths; fall back to polling when the system refuses
    more notification watches (inotify's ``max_user_watches``)."""
    async with send:
        await _follow_until_stopped(paths, recursive=recursive, send=send, ready=ready, debounce_ms=debounce_ms,
                                    force_polling=force_polling)


async def _follow_until_stopped(paths: list[str], *, recursive: bool, send: trio.MemorySendChannel,
                                ready: trio.Event, debounce_ms: int, force_polling: bool | None) -> None:
    polling = force_polling
    while True:
        try:
            async for changes in watchfiles.awatch(
                    *paths, watch_filter=_event_filter(), debounce=debounce_ms, step=50, rust_timeout=WAKE_MS,
                    yield_on_timeout=True, force_polling=polling, recursive=recursive,
                    ignore_permission_denied=True):
                ready.set()
                if changes:
                    await send.send({path for _, path in changes})
            return
        except (OSError, RuntimeError) as exc:  # watchfiles reports a refused watch as either
            if polling or ready.is_set():
                raise
            log.warning("cannot watch %s with notifications (%s); polling instead", ", ".join(paths), exc)
            polling = True


async def watch(roots: Iterable[str | os.PathLike[str]], on_change: Callable[[Delta], Awaitable[None]], *,
                state: AgentState, limits: ScanLimits = DEFAULT_LIMITS, passwords: Iterable[str | bytes] = (),
                managed: ManagedFiles | None = None, on_drift: Callable[[DriftEvent], Awaitable[None]] | None = None,
                lock: trio.Lock | None = None, debounce_ms: int = 1600, force_polling: bool | None = None,
                task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Watch ``roots`` and the managed files until cancelled; started once the watches
    are in place.

    For every debounced batch: managed files that changed are checked for drift
    (``on_drift``), then the changed paths are rescanned and a non-empty delta is passed
    to ``on_change``, which should send it and call ``commit_delta`` once acknowledged.
    If it does not commit, the same paths are rescanned with the next batch, so a delta
    may be offered more than once (its records are upserts, so that is harmless). An
    exception from ``on_change`` or ``on_drift`` ends the watch: handle what you can
    (an unreachable coordinator) inside them.

    ``lock``, if given, is held around each batch, so the agent can keep full scans and
    its own deployments from interleaving with it (a deployment in progress is not
    drift). Roots that do not exist when the watch starts are not watched, and the
    directories of managed files are those known at the start.
    """
    root_paths = [os.path.abspath(os.fspath(root)) for root in roots]
    passwords = tuple(passwords)
    watched_roots = [root for root in root_paths if os.path.isdir(root)]
    # macOS reports events under the real path of a root; map them back.
    real_roots = {os.path.realpath(root): root for root in watched_roots}

    def managed_now() -> Mapping[str, str]:
        if managed is None:
            return {}
        return {os.path.abspath(p): digest for p, digest in (managed() if callable(managed) else managed).items()}

    managed_directories = sorted({os.path.dirname(path) for path in managed_now()} - set(watched_roots))
    managed_directories = [d for d in managed_directories if os.path.isdir(d)
                           and not any(ScanRoot(root).covers(d) for root in watched_roots)]
    if not watched_roots and not managed_directories:
        task_status.started()
        return

    def as_found(path: str) -> str:
        for real, root in real_roots.items():
            if real != root and ScanRoot(real).covers(path):
                return root + path[len(real):]
        return path

    send, receive = trio.open_memory_channel[set[str]](64)
    pending: set[str] = set()
    async with trio.open_nursery() as nursery:
        readiness = []
        for paths, recursive in ((watched_roots, True), (managed_directories, False)):
            if paths:
                ready = trio.Event()
                readiness.append(ready)
                nursery.start_soon(functools.partial(_follow, paths, recursive=recursive, send=send.clone(),
                                                     ready=ready, debounce_ms=debounce_ms,
                                                     force_polling=force_polling))
        send.close()
        for ready in readiness:
            await ready.wait()
        task_status.started()
        async for batch in receive:
            while True:  # take what queued up meanwhile as part of this batch
                try:
                    batch |= receive.receive_nowait()
                except trio.WouldBlock:
                    break
            changed = {as_found(path) for path in batch}
            async with lock if lock is not None else contextlib.nullcontext():
                await _check_drift(changed, managed_now(), on_drift, limits=limits, passwords=passwords)
                pending = await _rescan(changed | pending, watched_roots, on_change, state=state, limits=limits,
                                        passwords=passwords)


async def _check_drift(changed: set[str], managed: Mapping[str, str],
                       on_drift: Callable[[DriftEvent], Awaitable[None]] | None, *, limits: ScanLimits,
                       passwords: tuple[str | bytes, ...]) -> None:
    if on_drift is None:
        return
    for path in sorted(changed & managed.keys()):
        event = await trio.to_thread.run_sync(functools.partial(
            check_drift, path, managed[path], max_file_bytes=limits.max_file_bytes, passwords=passwords))
        if event is not None:
            await on_drift(event)


async def _rescan(changed: set[str], roots: list[str], on_change: Callable[[Delta], Awaitable[None]], *,
                  state: AgentState, limits: ScanLimits, passwords: tuple[str | bytes, ...]) -> set[str]:
    """Rescan what ``changed`` touches; the paths to try again if the delta was not
    committed by ``on_change``."""
    targets = rescan_roots(changed, roots)
    if not targets:
        return set()
    previous = cached_files(state)
    result = await trio.to_thread.run_sync(
        functools.partial(scan, targets, limits=limits, passwords=passwords, previous=previous),
        abandon_on_cancel=True)  # scanning only reads: nothing is left half-done
    delta = inventory_delta(state, result)
    if delta.is_empty:
        return set()
    await on_change(delta)
    return set() if inventory_delta(state, result).is_empty else changed
