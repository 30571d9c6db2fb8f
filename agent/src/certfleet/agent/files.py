"""Durable file writes: temp file in the same directory, fsync, rename, fsync dir."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["TEMP_MARKER", "fsync_directory", "write_atomic", "write_temp"]

# Temp files carry this marker so recovery can find and remove leftovers.
TEMP_MARKER = ".certfleet-tmp-"


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_temp(path: Path, data: bytes, *, mode: int, uid: int | None = None, gid: int | None = None) -> Path:
    """Write ``data`` to a fresh temp file beside ``path`` with its final mode and
    owner already set (so the rename never exposes wrong permissions); fsync it."""
    temp = path.with_name(f"{TEMP_MARKER}{path.name}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        if uid is not None or gid is not None:
            os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return temp


def write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = write_temp(path, data, mode=mode)
    os.replace(temp, path)
    fsync_directory(path.parent)
