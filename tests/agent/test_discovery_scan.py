"""Scanning the filesystem for certificates: every certificate in a tree of a few
thousand files is found exactly once with the right fields, junk and traps (a FIFO, a
50 MB file, symlink loops, unreadable paths) never stop or stall the scan, and the
local inventory turns rescans into exact deltas."""

from __future__ import annotations

import datetime
import functools
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import msgspec
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

import certfleet.agent.discovery as discovery
from certfleet.agent.discovery import (
    ProblemKind,
    ScanLimits,
    cached_files,
    commit_delta,
    inventory_delta,
    remember_files,
    scan,
)
from certfleet.agent.state import AgentState
from certfleet.shared import wire
from tests.agent.discovery_tree import (
    KNOWN_PASSWORD,
    Factory,
    Tree,
    build_tree,
    copy_tree,
    key_pem,
    pem,
)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Tree:
    return build_tree(tmp_path_factory.mktemp("discovery") / "etc", with_keystore=shutil.which("keytool") is not None)


@pytest.fixture(scope="module")
def scanned(tree):
    """One full scan of the tree, shared by the tests that only read it. It runs in a
    thread with a deadline: a scan that opened the FIFO would block, not pass."""
    outcome = []
    worker = threading.Thread(target=lambda: outcome.append(_scan(tree.root)), daemon=True)
    worker.start()
    worker.join(timeout=300)
    assert outcome, "the scan did not finish"
    return outcome[0]


@pytest.fixture
def own_tree(tree, tmp_path) -> Tree:
    """A copy of the tree that a test may change."""
    return copy_tree(tree, tmp_path / "etc")


def _scan(root: Path, state: AgentState | None = None, **options):
    previous = cached_files(state) if state is not None else None
    return scan([root], passwords=[KNOWN_PASSWORD], previous=previous, **options)


def _by_location(result) -> dict[tuple[str, int], dict]:
    return {(record.path, record.position): record.to_dict() for record in result.certificates}


def test_the_package_exports_what_it_lists():
    assert sorted(discovery.__all__) == sorted(set(discovery.__all__))
    for name in discovery.__all__:
        assert getattr(discovery, name) is not None


def test_every_certificate_in_the_tree_is_found_exactly_once_with_its_fields(tree, scanned):
    result = scanned
    assert result.statistics.files > 3000
    locations = [(record.path, record.position) for record in result.certificates]
    assert len(locations) == len(set(locations))
    found = _by_location(result)
    assert found.keys() == tree.expected.keys()
    for location, expected in tree.expected.items():
        assert found[location] == expected, location
    assert {record["format"] for record in found.values()} >= {"pem", "der", "pkcs12"}
    assert all(set(record) == set(next(iter(tree.expected.values()))) for record in found.values())


def test_junk_is_counted_as_not_a_certificate_and_only_real_trouble_is_reported(tree, scanned):
    result = scanned
    assert {(problem.path, problem.kind.value) for problem in result.problems} == tree.problems
    junk = set(tree.junk)
    assert not [problem for problem in result.problems if problem.path in junk]
    assert all(result.files[path].parsed.is_empty for path in junk)
    assert result.statistics.not_certificates >= len(junk)
    assert result.statistics.special_files == 1  # the FIFO, skipped without being opened
    assert not result.unknown and not result.truncated


def test_a_file_above_the_size_limit_is_reported_and_not_read(tree, scanned):
    result = scanned
    huge = str(tree.root / "special" / "huge.pem")
    (problem,) = [problem for problem in result.problems if problem.path == huge]
    assert problem.kind is ProblemKind.TOO_LARGE and "50.0 MiB" in problem.detail and "10.0 MiB" in problem.detail
    # It begins with a valid certificate, so reading it would have found one.
    assert not [record for record in result.certificates if record.path == huge]


def test_symlink_loops_end_and_a_linked_file_is_reported_where_it_was_found(tree, scanned):
    result = scanned
    loops = {problem.path for problem in result.problems if problem.kind is ProblemKind.SYMLINK_LOOP}
    assert loops == {str(tree.root / "sites" / "site0000" / "up"), str(tree.root / "links" / "self")}
    linked = [record for record in result.certificates if record.path == str(tree.root / "links" / "current.pem")]
    original = [record for record in result.certificates
                if record.path == str(tree.root / "sites" / "site0002" / "cert.pem")]
    assert len(linked) == 1 and linked[0].fingerprint_sha256 == original[0].fingerprint_sha256


def test_private_keys_never_enter_a_record(tree, scanned):
    result = scanned
    text = json.dumps([record.to_dict() for record in result.certificates])
    assert "PRIVATE KEY" not in text and tree.changeable_key.decode().splitlines()[1] not in text


def test_every_record_is_a_valid_discovery_message(scanned):
    for record in scanned.certificates:
        found = wire.decode(msgspec.json.encode(record.to_dict()), wire.DiscoveredCertificate)
        found.validate_for("filesystem")


def test_a_certificate_with_oversized_names_still_gives_a_valid_record(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"unit {i:03d} " + "x" * 50)
                         for i in range(100)])
    names = [x509.DNSName(f"host{i:04d}." + "y" * 900 + ".example") for i in range(1500)]
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                   .serial_number(1 << 158).not_valid_before(datetime.datetime(2026, 1, 1))
                   .not_valid_after(datetime.datetime(2027, 1, 1))
                   .add_extension(x509.SubjectAlternativeName(names), critical=False)
                   .sign(key, hashes.SHA256()))
    (tmp_path / "wide.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (record,) = scan([tmp_path]).certificates
    assert len(record.subject) == 4096 and record.subject.endswith("…")
    assert len(record.sans) == 1000 and all(len(name) <= 1024 for name in record.sans)
    wire.decode(msgspec.json.encode(record.to_dict()), wire.DiscoveredCertificate).validate_for("filesystem")


def test_password_protected_files_open_only_with_a_password_the_agent_holds(tmp_path):
    factory = Factory(with_rsa=False)
    leaf = factory.issue("pfx.example.test", issuer=factory.ca)
    (tmp_path / "store.pfx").write_bytes(pkcs12.serialize_key_and_certificates(
        b"site", leaf.key, leaf.certificate, None, serialization.BestAvailableEncryption(b"s3cret-value")))
    without = scan([tmp_path])
    assert not without.certificates
    assert [(p.kind, p.detail) for p in without.problems] == [
        (ProblemKind.ENCRYPTED, "PKCS#12 file is encrypted, no matching password")]
    opened = scan([tmp_path], passwords=["wrong", "s3cret-value"], previous=without.files)
    assert [(r.fingerprint_sha256, r.has_private_key) for r in opened.certificates] == [
        (leaf.fields["fingerprint_sha256"], True)]
    assert opened.statistics.parsed == 1  # the cached outcome was for other passwords
    assert scan([tmp_path], passwords=["s3cret-value", "wrong"], previous=opened.files).statistics.parsed == 0


def test_a_java_keystore_without_keytool_is_a_problem_not_a_failure(tmp_path, monkeypatch):
    (tmp_path / "app.jks").write_bytes(b"\xfe\xed\xfe\xed\x00\x00\x00\x02" + b"\x00" * 64)
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    result = scan([tmp_path])
    assert [(p.kind, p.path) for p in result.problems] == [(ProblemKind.KEYTOOL_MISSING, str(tmp_path / "app.jks"))]
    # Installing keytool later must not find a stale outcome in the cache.
    assert scan([tmp_path], previous=result.files).statistics.parsed == 1


async def test_hostile_pem_is_read_in_one_pass(tmp_path):
    certificate = pem(Factory(with_rsa=False).ca)
    (tmp_path / "unterminated.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\n" * 300_000 + certificate)
    (tmp_path / "damaged.pem").write_bytes(
        b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n" * 100_000 + certificate)
    with trio.fail_after(120):
        result = await trio.to_thread.run_sync(functools.partial(scan, [tmp_path]), abandon_on_cancel=True)
    assert [(Path(r.path).name, r.position) for r in result.certificates] == [
        ("damaged.pem", 100_000), ("unterminated.pem", 0)]
    damaged = [p for p in result.problems if p.path.endswith("damaged.pem")]
    assert len(damaged) == 11 and "99990 more certificates" in damaged[-1].detail


_UNPRIVILEGED_SCAN = r"""
import json, os, sys
from certfleet.agent.discovery import scan
if os.geteuid() == 0:  # root reads everything: scan as nobody, as a non-root agent would
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
result = scan([sys.argv[1]])
print(json.dumps({"found": [r.path for r in result.certificates],
                  "problems": sorted([p.path, p.kind] for p in result.problems),
                  "unknown": sorted(result.unknown)}))
"""


def test_unreadable_files_and_directories_are_problems_and_the_scan_goes_on():
    # Not under pytest's tmp_path: its parents are private to root, and the scan runs
    # as an unprivileged user so that file modes apply.
    base = Path(tempfile.mkdtemp(prefix="certfleet-discovery-"))
    try:
        base.chmod(0o755)
        factory = Factory(with_rsa=False)
        (base / "readable.pem").write_bytes(pem(factory.ca))
        (base / "secret.pem").write_bytes(pem(factory.intermediate))
        (base / "closed").mkdir()
        (base / "closed" / "inner.pem").write_bytes(pem(factory.intermediate))
        for path in (base / "readable.pem", base / "closed" / "inner.pem"):
            path.chmod(0o644)
        (base / "secret.pem").chmod(0)
        (base / "closed").chmod(0)
        completed = subprocess.run([sys.executable, "-c", _UNPRIVILEGED_SCAN, str(base)], capture_output=True,
                                   text=True, timeout=120, check=False)
        assert completed.returncode == 0, completed.stderr
        outcome = json.loads(completed.stdout)
        assert outcome["found"] == [str(base / "readable.pem")]
        assert outcome["problems"] == [[str(base / "closed"), "unreadable"], [str(base / "secret.pem"), "unreadable"]]
        assert outcome["unknown"] == [str(base / "closed"), str(base / "secret.pem")]
    finally:
        (base / "closed").chmod(stat.S_IRWXU)
        shutil.rmtree(base)


# --- the inventory --------------------------------------------------------------------------

def test_a_rescan_of_an_unchanged_tree_reads_no_file_and_yields_an_empty_delta(tree, scanned, tmp_path):
    state = AgentState(tmp_path / "state.db")
    first = inventory_delta(state, scanned)
    assert len(first.added) == len(tree.expected) and not first.removed and first.unchanged_count == 0
    commit_delta(state, first)
    rescan = _scan(tree.root, state)
    assert rescan.statistics.parsed == 0 and rescan.statistics.from_cache == rescan.statistics.files
    again = inventory_delta(state, rescan)
    assert again.is_empty and again.unchanged_count == len(tree.expected)
    assert again.to_dict() == {"added": [], "removed": [], "unchanged_count": len(tree.expected)}


def test_changing_one_file_yields_exactly_that_files_delta(own_tree, tmp_path):
    state = AgentState(tmp_path / "state.db")
    commit_delta(state, inventory_delta(state, _scan(own_tree.root, state)))
    path = own_tree.changeable
    old = own_tree.expected[(path, 0)]
    replacement = Factory(with_rsa=False).issue("renewed.example.test")
    Path(path).write_bytes(pem(replacement))

    result = _scan(own_tree.root, state)
    assert result.statistics.parsed == 1
    delta = inventory_delta(state, result)
    assert [record.to_dict() for record in delta.added] == [
        {**replacement.fields, "path": path, "position": 0, "format": "pem", "has_private_key": False}]
    assert delta.removed == ((old["fingerprint_sha256"], path, 0),)
    assert delta.unchanged_count == len(own_tree.expected) - 1

    # Not acknowledged yet: the next scan finds the same delta, so nothing is lost.
    remember_files(state, result)
    unsent = inventory_delta(state, _scan(own_tree.root, state))
    assert (unsent.added, unsent.removed) == (delta.added, delta.removed)
    commit_delta(state, unsent)
    assert inventory_delta(state, _scan(own_tree.root, state)).is_empty

    Path(path).unlink()
    gone = inventory_delta(state, _scan(own_tree.root, state))
    assert gone.added == () and gone.removed == ((replacement.fields["fingerprint_sha256"], path, 0),)


def test_a_key_placed_beside_a_certificate_updates_its_record(tmp_path):
    factory = Factory(with_rsa=False)
    site, other = tmp_path / "etc" / "site", tmp_path / "etc" / "other"
    site.mkdir(parents=True)
    other.mkdir()
    leaf = factory.issue("site.example.test", issuer=factory.ca)
    (site / "cert.pem").write_bytes(pem(leaf))
    (other / "cert.pem").write_bytes(pem(leaf))
    state = AgentState(tmp_path / "state.db")
    commit_delta(state, inventory_delta(state, _scan(tmp_path / "etc", state)))
    (site / "privkey.pem").write_bytes(key_pem(leaf.key))
    delta = inventory_delta(state, _scan(tmp_path / "etc", state))
    # Only the certificate in the key's own directory has its key beside it.
    assert [(record.path, record.has_private_key) for record in delta.added] == [(str(site / "cert.pem"), True)]
    assert delta.removed == () and delta.unchanged_count == 1


def test_records_where_the_scan_could_not_look_are_kept(tree, scanned, tmp_path):
    state = AgentState(tmp_path / "state.db")
    commit_delta(state, inventory_delta(state, scanned))
    shallow = _scan(tree.root, state, limits=ScanLimits(max_depth=3))
    assert [(p.kind, Path(p.path).name) for p in shallow.problems if p.kind is ProblemKind.LIMIT_REACHED] == [
        (ProblemKind.LIMIT_REACHED, "c")]
    delta = inventory_delta(state, shallow)
    assert delta.is_empty and delta.unchanged_count == len(tree.expected) - 1


def test_the_inventory_survives_a_restart(tree, scanned, tmp_path):
    state = AgentState(tmp_path / "state.db")
    commit_delta(state, inventory_delta(state, scanned))
    state.db.conn.close()
    reopened = AgentState(tmp_path / "state.db")
    rows = reopened.discovered()
    assert len(rows) == len(tree.expected)
    assert all(row["first_seen"] == row["last_seen"] for row in rows)
    rescan = _scan(tree.root, reopened)
    assert rescan.statistics.parsed == 0 and inventory_delta(reopened, rescan).is_empty
    assert os.stat(tmp_path / "state.db").st_mode & 0o077 == 0
