"""The local inventory of discovered certificates, and what changed since the
coordinator last acknowledged it.

The flow is: ``previous = cached_files(state)``; scan (in a worker thread) with
``previous``; ``delta = inventory_delta(state, result)``; send the delta; and only once
the coordinator has acknowledged it, ``commit_delta(state, delta)``. Until then the
stored inventory is unchanged, so a delta that never arrived is computed again by the
next scan and nothing is lost.

Compute and commit one delta at a time (the agent serialises its scans): a delta is
the difference from the inventory as it stood when the delta was computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..state import AgentState
from .records import CertificateRecord, FileStamp, ParsedFile, ScannedFile, ScanResult

__all__ = ["Delta", "cached_files", "commit_delta", "inventory_delta", "remember_files"]

Location = tuple[str, str, int]
"""(fingerprint, path, position)"""

_record_encoder = msgspec.json.Encoder()
_parsed_decoder = msgspec.json.Decoder(ParsedFile)


@dataclass(frozen=True)
class Delta:
    """How ``scan`` differs from the acknowledged inventory, within what it covered.

    ``added`` holds every record the coordinator must store: new ones, and known ones
    whose fields changed (a key appeared beside the certificate, say) — an upsert by
    (fingerprint, path, position). ``removed`` lists locations that are gone. Records
    at paths the scan could not read are neither removed nor counted."""

    added: tuple[CertificateRecord, ...]
    removed: tuple[Location, ...]
    unchanged_count: int
    scan: ScanResult = field(repr=False, compare=False)

    @property
    def is_empty(self) -> bool:
        return not (self.added or self.removed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": [record.to_dict() for record in self.added],
            "removed": [{"fingerprint_sha256": fingerprint, "path": path, "position": position}
                        for fingerprint, path, position in self.removed],
            "unchanged_count": self.unchanged_count,
        }


def _encoded(record: CertificateRecord) -> str:
    return _record_encoder.encode(record).decode()


def inventory_delta(state: AgentState, scan: ScanResult) -> Delta:
    """Compare ``scan`` with the acknowledged inventory. Reads, never writes."""
    current = {record.location: record for record in scan.certificates}
    added: list[CertificateRecord] = []
    removed: list[Location] = []
    unchanged = 0
    stored_locations = set()
    for row in state.discovered():
        location = (row["fingerprint"], row["path"], row["position"])
        stored_locations.add(location)
        record = current.get(location)
        if record is not None:
            if _encoded(record) == row["record"]:
                unchanged += 1
            else:
                added.append(record)
        elif scan.knows(row["path"]):
            removed.append(location)
    added.extend(record for location, record in current.items() if location not in stored_locations)
    added.sort(key=lambda record: (record.path, record.position))
    return Delta(added=tuple(added), removed=tuple(sorted(removed, key=lambda loc: (loc[1], loc[2]))),
                 unchanged_count=unchanged, scan=scan)


def _file_rows(scan: ScanResult) -> list[dict[str, Any]]:
    return [{"path": path, "device": scanned.stamp.device, "inode": scanned.stamp.inode,
             "size": scanned.stamp.size, "mtime_ns": scanned.stamp.mtime_ns, "ctime_ns": scanned.stamp.ctime_ns,
             "parsed": msgspec.json.encode(scanned.parsed).decode()}
            for path, scanned in scan.files.items() if scanned.parsed.cacheable]


def _forgotten_files(state: AgentState, scan: ScanResult) -> list[str]:
    """Cached paths the scan covered and found gone (or no longer cacheable)."""
    return [row["path"] for row in state.discovery_files()
            if scan.knows(row["path"]) and not (row["path"] in scan.files and scan.files[row["path"]].parsed.cacheable)]


def cached_files(state: AgentState) -> dict[str, ScannedFile]:
    """The file cache to pass to ``scan(previous=...)``. A row that does not decode
    (written by another version) is left out, so that file is simply parsed again."""
    cache = {}
    for row in state.discovery_files():
        try:
            parsed = _parsed_decoder.decode(row["parsed"])
        except msgspec.DecodeError:
            continue
        stamp = FileStamp(row["device"], row["inode"], row["size"], row["mtime_ns"], row["ctime_ns"])
        cache[row["path"]] = ScannedFile(stamp, parsed)
    return cache


def remember_files(state: AgentState, scan: ScanResult) -> None:
    """Store the scan's file cache without touching the inventory: the next scan then
    skips unchanged files even if this one's delta was never acknowledged."""
    state.save_discovery_files(_file_rows(scan), _forgotten_files(state, scan))


def commit_delta(state: AgentState, delta: Delta) -> None:
    """Make ``delta`` the acknowledged inventory (call it once the coordinator has
    acknowledged the delta), together with the scan's file cache, in one transaction."""
    seen = [record.location for record in delta.scan.certificates]
    state.apply_discovery(
        upserts=[(*record.location, _encoded(record)) for record in delta.added],
        removals=list(delta.removed), seen=seen, files=_file_rows(delta.scan), forget=_forgotten_files(state, delta.scan))
