"""Discovery: the certificates on this host, found by scanning the filesystem and by
watching it for changes.

What leaves the host is :class:`CertificateRecord` (fields of the certificate and where
it is) and :class:`ScanProblem`; private keys are read only to compare their public
halves with certificates, and never leave the process.
"""

from .filesystem import scan
from .inventory import Delta, cached_files, commit_delta, inventory_delta, remember_files
from .records import (
    DEFAULT_LIMITS,
    DEFAULT_ROOTS,
    CertificateRecord,
    ProblemKind,
    ScanLimits,
    ScannedFile,
    ScanProblem,
    ScanResult,
    ScanRoot,
    ScanStatistics,
)
from .watcher import DriftEvent, check_drift, watch

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_ROOTS",
    "CertificateRecord",
    "Delta",
    "DriftEvent",
    "ProblemKind",
    "ScanLimits",
    "ScanProblem",
    "ScanResult",
    "ScanRoot",
    "ScanStatistics",
    "ScannedFile",
    "cached_files",
    "check_drift",
    "commit_delta",
    "inventory_delta",
    "remember_files",
    "scan",
    "watch",
]
