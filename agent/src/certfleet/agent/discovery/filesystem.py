"""Finding certificates on this host's filesystem.

:func:`scan` walks the roots it is given and reports every certificate it finds in
PEM (RFC 7468), DER (RFC 5280), PKCS#7 (RFC 5652), PKCS#12 (RFC 7292) and Java
keystore files. It is a plain function that only reads: the agent runs it in a worker
thread (``trio.to_thread.run_sync``) and stores nothing until the coordinator has
acknowledged what was found (see ``inventory.py``).

Nothing on the host can stop or stall a scan. A file is classified by ``stat`` before
it is opened, so FIFOs, devices and sockets are never opened, and it is opened with
``O_NONBLOCK`` (and ``O_NOFOLLOW`` unless it was reached through a symlink) and
checked again with ``fstat``, so a file swapped in between cannot block either. Files
above the size limit are reported and not read; directories already visited (by
device and inode) are not entered again, which ends symlink loops; errors on one path
become problems in the result and the walk goes on.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .formats import HEAD_BYTES, Content, parse_content, sniff
from .jks import keytool_path, list_java_keystore
from .records import (
    DEFAULT_LIMITS,
    DEFAULT_ROOTS,
    CertificateRecord,
    FileStamp,
    ParsedFile,
    ProblemKind,
    ScanLimits,
    ScannedFile,
    ScanProblem,
    ScanResult,
    ScanRoot,
    ScanStatistics,
    digest_passwords,
)

__all__ = ["scan"]

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)


class _FileLimitReached(Exception):
    pass


@dataclass
class _Walk:
    limits: ScanLimits
    passwords: tuple[bytes, ...]
    previous: Mapping[str, ScannedFile]
    keytool: str | None
    passwords_digest: str
    files: dict[str, ScannedFile] = field(default_factory=dict)
    problems: list[ScanProblem] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    visited_directories: set[tuple[int, int]] = field(default_factory=set)
    # A file reached by two paths (hard link, symlink) is read once.
    by_identity: dict[FileStamp, ParsedFile] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("directories", "files", "parsed", "from_cache", "not_certificates", "special_files"), 0))

    def problem(self, path: str, kind: ProblemKind, detail: str, *, unknown: bool = False) -> None:
        self.problems.append(ScanProblem(path, kind, detail))
        if unknown:
            self.unknown.append(path)

    # --- directories ----------------------------------------------------------------------

    def directory(self, path: str, info: os.stat_result, depth: int, ancestors: frozenset[tuple[int, int]],
                  *, recursive: bool) -> None:
        identity = (info.st_dev, info.st_ino)
        if identity in ancestors:
            self.problem(path, ProblemKind.SYMLINK_LOOP, "a symbolic link leads back to a directory above it")
            return
        if identity in self.visited_directories:
            return  # reached before by another path: its certificates are reported there
        if recursive:
            self.visited_directories.add(identity)
        self.counts["directories"] += 1
        try:
            with os.scandir(path) as entries:
                names = sorted(entry.name for entry in entries)
        except OSError as exc:
            self.problem(path, ProblemKind.UNREADABLE, f"cannot list the directory: {exc.strerror or exc}",
                         unknown=True)
            return
        inside = ancestors | {identity}
        for name in names:
            self.entry(os.path.join(path, name), depth + 1, inside, recursive=recursive)

    def entry(self, path: str, depth: int, ancestors: frozenset[tuple[int, int]], *, recursive: bool) -> None:
        if path in self.files:
            return  # scanned already from another root
        try:
            info = os.lstat(path)
            through_link = stat.S_ISLNK(info.st_mode)
            if through_link:
                info = os.stat(path)
        except FileNotFoundError:
            if os.path.islink(path):
                self.problem(path, ProblemKind.BROKEN_SYMLINK, f"symbolic link to {_link_target(path)}, which is missing")
            return  # removed while the scan ran
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                self.problem(path, ProblemKind.SYMLINK_LOOP, "symbolic links that lead to each other")
            else:
                self.problem(path, ProblemKind.UNREADABLE, exc.strerror or str(exc), unknown=True)
            return
        if stat.S_ISDIR(info.st_mode):
            if not recursive:
                return
            if depth > self.limits.max_depth:
                self.problem(path, ProblemKind.LIMIT_REACHED,
                             f"deeper than {self.limits.max_depth} directories; not scanned", unknown=True)
                return
            self.directory(path, info, depth, ancestors, recursive=True)
        elif stat.S_ISREG(info.st_mode):
            self.file(path, info, through_link=through_link)
        else:
            self.counts["special_files"] += 1  # FIFOs, devices, sockets: never opened

    # --- files ----------------------------------------------------------------------------

    def file(self, path: str, info: os.stat_result, *, through_link: bool) -> None:
        self.counts["files"] += 1
        if self.counts["files"] > self.limits.max_files:
            self.problem(path, ProblemKind.LIMIT_REACHED,
                         f"more than {self.limits.max_files} files; the scan stopped here")
            raise _FileLimitReached
        stamp = FileStamp.of(info)
        cached = self.previous.get(path)
        if cached is not None and cached.stamp == stamp and cached.parsed.still_valid(self.passwords_digest):
            self.counts["from_cache"] += 1
            self.files[path] = cached
            return
        if stamp in self.by_identity:
            self.files[path] = ScannedFile(stamp, self.by_identity[stamp])
            return
        if info.st_size > self.limits.max_file_bytes:
            self.files[path] = ScannedFile(stamp, self._too_large(info.st_size))
            return
        try:
            fd = os.open(path, _OPEN_FLAGS | (0 if through_link else os.O_NOFOLLOW))
        except OSError as exc:
            self.problem(path, ProblemKind.UNREADABLE, exc.strerror or str(exc), unknown=True)
            return
        try:
            opened = os.fstat(fd)
            if not stat.S_ISREG(opened.st_mode):  # replaced since the stat above
                self.counts["special_files"] += 1
                return
            stamp = FileStamp.of(opened)
            parsed = self._read(fd, opened.st_size)
        except OSError as exc:
            self.problem(path, ProblemKind.UNREADABLE, exc.strerror or str(exc), unknown=True)
            return
        finally:
            os.close(fd)
        self.counts["parsed"] += 1
        self.by_identity[stamp] = parsed
        self.files[path] = ScannedFile(stamp, parsed)

    def _too_large(self, size: int) -> ParsedFile:
        return ParsedFile(problems=((ProblemKind.TOO_LARGE, f"{_mib(size)} is more than the"
                                     f" {_mib(self.limits.max_file_bytes)} limit; not read"),))

    def _read(self, fd: int, size: int) -> ParsedFile:
        if size > self.limits.max_file_bytes:
            return self._too_large(size)
        head = _read_up_to(fd, HEAD_BYTES)
        kind = sniff(head)
        if kind is Content.BINARY:
            return ParsedFile()
        if kind is Content.JAVA_KEYSTORE:
            return list_java_keystore(fd, passwords=[p.decode(errors="replace") for p in self.passwords],
                                      timeout=self.limits.keytool_timeout, keytool=self.keytool)
        # The size limit holds even for a file that grew after the fstat.
        data = head + _read_up_to(fd, self.limits.max_file_bytes + 1 - len(head))
        if len(data) > self.limits.max_file_bytes:
            return self._too_large(len(data))
        return parse_content(data, passwords=self.passwords)


def _read_up_to(fd: int, limit: int) -> bytes:
    chunks, remaining = [], limit
    while remaining > 0:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _link_target(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


def _as_root(root: str | os.PathLike[str] | ScanRoot) -> ScanRoot:
    if isinstance(root, ScanRoot):
        return ScanRoot(os.path.abspath(root.path), root.recursive, root.depth)
    return ScanRoot(os.path.abspath(os.fspath(root)))


def _records(files: Mapping[str, ScannedFile]) -> list[CertificateRecord]:
    """Place every parsed certificate at its path, with ``has_private_key`` set from the
    keys in its own file or any file of the same directory (compared by public key)."""
    keys_by_directory: dict[str, set[str]] = {}
    for path, scanned in files.items():
        if scanned.parsed.key_spkis:
            keys_by_directory.setdefault(os.path.dirname(path), set()).update(scanned.parsed.key_spkis)
    records = []
    for path, scanned in files.items():
        beside = keys_by_directory.get(os.path.dirname(path), set())
        for facts in scanned.parsed.certificates:
            has_key = facts.key_in_file or (facts.spki_sha256 is not None and facts.spki_sha256 in beside)
            records.append(facts.placed(path, has_private_key=has_key))
    records.sort(key=lambda record: (record.path, record.position))
    return records


def scan(roots: Iterable[str | os.PathLike[str] | ScanRoot] = DEFAULT_ROOTS, *, limits: ScanLimits = DEFAULT_LIMITS,
         passwords: Iterable[str | bytes] = (), previous: Mapping[str, ScannedFile] | None = None) -> ScanResult:
    """Scan ``roots`` (directories or files; missing ones are skipped) for certificates.

    ``passwords`` are tried on encrypted PKCS#12 files, Java keystores and private keys
    (the agent passes values from its secrets file). ``previous`` is the file cache of
    an earlier scan (``inventory.cached_files``): a file whose stamp (device, inode,
    size, mtime, ctime) is unchanged is not read again. Never raises for anything it
    finds on disk; what it could not read is in :attr:`ScanResult.problems`.
    """
    scan_roots = tuple(_as_root(root) for root in roots)
    encoded = tuple(p.encode() if isinstance(p, str) else p for p in passwords)
    walk = _Walk(limits=limits, passwords=encoded, previous=previous or {}, keytool=keytool_path(),
                 passwords_digest=digest_passwords(encoded))
    truncated = False
    try:
        # Whole trees first: a directory they cover is then not listed a second time.
        for root in sorted(scan_roots, key=lambda root: not root.recursive):
            _scan_root(walk, root)
    except _FileLimitReached:
        truncated = True
    for path, scanned in walk.files.items():
        walk.problems.extend(ScanProblem(path, kind, detail) for kind, detail in scanned.parsed.problems)
        if scanned.parsed.is_empty:
            walk.counts["not_certificates"] += 1
    records = _records(walk.files)
    return ScanResult(
        roots=scan_roots, certificates=tuple(records), problems=tuple(walk.problems), files=walk.files,
        unknown=tuple(walk.unknown), truncated=truncated,
        statistics=ScanStatistics(certificates=len(records), **walk.counts))


def _scan_root(walk: _Walk, root: ScanRoot) -> None:
    try:
        info = os.stat(root.path)
    except FileNotFoundError:
        return  # most hosts have only some of the default roots
    except OSError as exc:
        walk.problem(root.path, ProblemKind.UNREADABLE, exc.strerror or str(exc), unknown=True)
        return
    if stat.S_ISDIR(info.st_mode):
        if root.depth > walk.limits.max_depth:
            walk.problem(root.path, ProblemKind.LIMIT_REACHED,
                         f"deeper than {walk.limits.max_depth} directories; not scanned", unknown=True)
            return
        walk.directory(root.path, info, root.depth, frozenset(), recursive=root.recursive)
    elif stat.S_ISREG(info.st_mode):
        if root.path not in walk.files:
            walk.file(root.path, info, through_link=os.path.islink(root.path))
    else:
        walk.counts["special_files"] += 1
