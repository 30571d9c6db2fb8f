"""What a discovery scan finds and reports: certificate records, problems, limits.

A :class:`CertificateRecord` is what leaves the host. It describes a certificate
(RFC 5280 fields) and where it sits; it never carries a private key, only the fact
that a matching one lies beside the certificate. Everything else in this module stays
on the agent: the per-file parse results kept as a cache so an unchanged file is not
read again, and the statistics of a scan.
"""

from __future__ import annotations

import enum
import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_ROOTS",
    "CertificateFacts",
    "CertificateRecord",
    "FileStamp",
    "ParsedFile",
    "ProblemKind",
    "ScanLimits",
    "ScanProblem",
    "ScanResult",
    "ScanRoot",
    "ScanStatistics",
    "ScannedFile",
    "digest_passwords",
]

DEFAULT_ROOTS: tuple[str, ...] = (
    "/etc/ssl", "/etc/pki", "/etc/nginx", "/etc/apache2", "/etc/haproxy", "/etc/letsencrypt", "/usr/local/etc",
)
"""Where certificates usually live on Linux and BSD hosts, and where ACME clients put them."""


class ProblemKind(enum.StrEnum):
    """Why a path could not be read completely. Files that hold no certificate are not
    problems: they are counted in :attr:`ScanStatistics.not_certificates`."""

    UNREADABLE = "unreadable"
    BROKEN_SYMLINK = "broken-symlink"
    SYMLINK_LOOP = "symlink-loop"
    TOO_LARGE = "too-large"
    ENCRYPTED = "encrypted"
    MALFORMED = "malformed"
    LIMIT_REACHED = "limit-reached"
    KEYTOOL_MISSING = "keytool-missing"
    KEYTOOL_FAILED = "keytool-failed"


class CertificateRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One certificate at one place on this host, as reported to the coordinator.

    ``position`` is the certificate's index inside the file (0 for the first certificate
    of a PEM bundle, of a PKCS#12 file or of a Java keystore listing). ``path`` is
    absolute and spelt as the scan found it, so a certificate reached through a symlink
    is reported at the symlink's path. ``has_private_key`` says that a private key whose
    public key equals the certificate's (RFC 5280 §4.1.2.7) is in the same file, the same
    PKCS#12 or keystore entry, or a sibling file in the same directory.
    """

    fingerprint_sha256: str
    subject: str
    sans: tuple[str, ...]
    issuer: str
    serial: str
    not_before: str
    not_after: str
    key_algorithm: str
    key_size: int | None
    is_ca: bool
    path: str
    position: int
    format: str
    has_private_key: bool

    @property
    def location(self) -> tuple[str, str, int]:
        """(fingerprint, path, position): what identifies this record in an inventory."""
        return (self.fingerprint_sha256, self.path, self.position)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: ``sans`` as a list, the rest as they are."""
        fields = msgspec.structs.asdict(self)
        fields["sans"] = list(self.sans)
        return fields


class CertificateFacts(msgspec.Struct, frozen=True, kw_only=True):
    """A certificate as parsed from a file, before its place on the host is known.

    ``spki_sha256`` (SHA-256 of the SubjectPublicKeyInfo, RFC 5280 §4.1.2.7) lets the
    scan match the certificate to a private key in a sibling file without parsing either
    again; ``key_in_file`` is set when the file itself holds the matching key."""

    fingerprint_sha256: str
    subject: str
    sans: tuple[str, ...]
    issuer: str
    serial: str
    not_before: str
    not_after: str
    key_algorithm: str
    key_size: int | None
    is_ca: bool
    position: int
    format: str
    spki_sha256: str | None
    key_in_file: bool = False

    def placed(self, path: str, *, has_private_key: bool) -> CertificateRecord:
        return CertificateRecord(
            fingerprint_sha256=self.fingerprint_sha256, subject=self.subject, sans=self.sans, issuer=self.issuer,
            serial=self.serial, not_before=self.not_before, not_after=self.not_after,
            key_algorithm=self.key_algorithm, key_size=self.key_size, is_ca=self.is_ca, path=path,
            position=self.position, format=self.format, has_private_key=has_private_key)


class ParsedFile(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a scan learnt from one file's content.

    ``key_spkis`` are the SHA-256 digests of the public halves of the private keys the
    file holds (never the keys). When the outcome depended on the passwords (an
    encrypted PKCS#12 file or key), ``passwords_digest`` names the set of passwords
    tried, and the outcome holds only while the agent has the same set. ``cacheable`` is
    false when it depended on something else that may change with the file unchanged
    (keytool missing or failing), so such a file is read again on every scan."""

    certificates: tuple[CertificateFacts, ...] = ()
    key_spkis: tuple[str, ...] = ()
    problems: tuple[tuple[ProblemKind, str], ...] = ()
    passwords_digest: str | None = None
    cacheable: bool = True

    @property
    def is_empty(self) -> bool:
        return not (self.certificates or self.key_spkis or self.problems)

    def still_valid(self, passwords_digest: str) -> bool:
        return self.cacheable and self.passwords_digest in (None, passwords_digest)


def digest_passwords(passwords: Iterable[bytes]) -> str:
    """Names a set of passwords in the file cache. The cache lives in the agent's state
    database, readable only by the agent's user, who can read the secrets file itself."""
    hasher = hashlib.sha256(b"certfleet discovery passwords")
    for password in sorted(set(passwords)):
        hasher.update(len(password).to_bytes(4, "big") + password)
    return hasher.hexdigest()


class FileStamp(msgspec.Struct, frozen=True):
    """What says a file is unchanged without reading it: identity, size and times.

    ``ctime_ns`` is part of it because tools that copy or restore files (``cp -p``,
    ``rsync -t``, ``touch -r``) set the modification time back, but no one can set the
    change time."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, info: os.stat_result) -> FileStamp:
        return cls(info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


class ScannedFile(msgspec.Struct, frozen=True):
    stamp: FileStamp
    parsed: ParsedFile


@dataclass(frozen=True)
class ScanRoot:
    """A place to scan. ``recursive=False`` scans the files directly inside a directory
    (the watcher's way to look again at one directory); ``depth`` is the root's own
    depth below the configured root it belongs to, so limits count the same way."""

    path: str
    recursive: bool = True
    depth: int = 0

    def covers(self, path: str) -> bool:
        if path == self.path:
            return True
        prefix = self.path.rstrip("/") + "/"
        if not path.startswith(prefix):
            return False
        return self.recursive or "/" not in path[len(prefix):]


@dataclass(frozen=True)
class ScanLimits:
    """Bounds that keep a hostile or enormous tree from stalling the agent.

    Raises ``ValueError`` for a limit below 1 (a zero limit would silently scan nothing).
    """

    max_file_bytes: int = 10 * 1024 * 1024
    max_depth: int = 32
    max_files: int = 200_000
    keytool_timeout: float = 60.0

    def __post_init__(self) -> None:
        for name in ("max_file_bytes", "max_depth", "max_files", "keytool_timeout"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


DEFAULT_LIMITS = ScanLimits()


class ScanProblem(msgspec.Struct, frozen=True):
    path: str
    kind: ProblemKind
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)


@dataclass(frozen=True)
class ScanStatistics:
    directories: int = 0
    files: int = 0
    parsed: int = 0
    from_cache: int = 0
    not_certificates: int = 0
    special_files: int = 0
    certificates: int = 0


@dataclass(frozen=True)
class ScanResult:
    """The outcome of :func:`~certfleet.agent.discovery.filesystem.scan`.

    ``files`` maps every regular file whose content is known (read now or unchanged
    since the cached scan) to its stamp and parse. ``unknown`` lists paths whose content
    could not be read (unreadable, beyond the depth limit): records previously found
    there are kept, not reported as removed. When ``truncated`` (the file limit was
    reached), only files in ``files`` count as known.
    """

    roots: tuple[ScanRoot, ...]
    certificates: tuple[CertificateRecord, ...]
    problems: tuple[ScanProblem, ...]
    files: Mapping[str, ScannedFile] = field(repr=False)
    unknown: tuple[str, ...] = ()
    truncated: bool = False
    statistics: ScanStatistics = ScanStatistics()

    def covers(self, path: str) -> bool:
        return any(root.covers(path) for root in self.roots)

    def knows(self, path: str) -> bool:
        """Whether this scan saw what is (or is not) at ``path`` now."""
        if path in self.files:
            return True
        if self.truncated or not self.covers(path):
            return False
        return not any(path == gap or path.startswith(gap.rstrip("/") + "/") for gap in self.unknown)
