"""Discovery messages: what an agent may report, and what an operator's claim may ask."""

from __future__ import annotations

import json

import msgspec
import pytest

from certfleet.shared import wire

FIND = {
    "fingerprint_sha256": "ab" * 32, "subject": "CN=www.example.com", "sans": ["DNS:www.example.com"],
    "issuer": "CN=Example CA", "serial": "-0a1B", "not_before": "2026-01-01T00:00:00Z",
    "not_after": "2026-04-01T00:00:00.5+00:00", "key_algorithm": "EC", "key_size": 256, "is_ca": False,
    "path": "/etc/ssl/www.pem", "position": 0, "format": "pem", "has_private_key": True,
}


def _report(**fields) -> bytes:
    return json.dumps({"source": "filesystem", "scan_id": "scan-1", "added": [FIND], **fields}).encode()


def test_a_report_decodes_and_its_times_become_unix_seconds():
    report = wire.decode(_report(), wire.DiscoveryReport)
    assert report.added[0].validity() == (1767225600, 1775001600)
    assert report.removed == [] and report.complete is False


def test_a_network_find_is_a_tls_endpoint():
    network = {**FIND, "path": "192.0.2.1:443", "format": "tls"}
    wire.decode(_report(source="network", added=[network]), wire.DiscoveryReport)
    with pytest.raises(msgspec.ValidationError, match="network finds are 'tls'"):
        wire.decode(_report(source="network"), wire.DiscoveryReport)


@pytest.mark.parametrize("change", [
    {"not_after": "2026-04-01T00:00:00"}, {"not_after": "2026-04-01 00:00:00Z"}, {"not_after": "2026-13-01T00:00:00Z"},
    {"serial": "0x1f"}, {"path": "relative/www.pem"}, {"position": 100_001}, {"key_size": 0},
    {"format": "tls"}, {"sans": ["DNS:a"] * 1001}, {"fingerprint_sha256": "AB" * 32},
], ids=repr)
def test_a_find_with_a_bad_field_refuses_the_whole_report(change):
    with pytest.raises(msgspec.ValidationError):
        wire.decode(_report(added=[{**FIND, **change}, FIND]), wire.DiscoveryReport)


def test_what_a_certificate_says_about_itself_is_taken_as_it_is():
    # Escaped by the coordinator when stored, never a reason to refuse the report.
    strange = {**FIND, "subject": "CN=a\x07b", "sans": ["DNS:a\nb"], "path": "/etc/ssl/www.pem\n"}
    report = wire.decode(_report(added=[strange]), wire.DiscoveryReport)
    assert report.added[0].subject == "CN=a\x07b"


def test_a_claim_names_one_target_at_most():
    wire.decode(b"{}", wire.DiscoveryClaim)
    wire.decode(b'{"target_id": "web", "profile": "internal"}', wire.DiscoveryClaim)
    wire.decode(b'{"key_path": "/etc/ssl/private/www.key", "target_name": "www"}', wire.DiscoveryClaim)
    for bad in ({"target_id": "web", "target": {"kind": "file", "directory": "/srv"}},
                {"target_id": "web", "target_name": "other"},
                {"target_id": "web", "key_path": "/etc/ssl/www.key"},
                {"target": {"kind": "file", "directory": "srv"}}):
        with pytest.raises(msgspec.ValidationError):
            wire.decode(json.dumps(bad).encode(), wire.DiscoveryClaim)


def test_a_dismissal_needs_a_reason():
    assert wire.decode(b'{"reason": "vendor managed"}', wire.DiscoveryDismiss).reason == "vendor managed"
    for bad in (b"{}", b'{"reason": ""}', b'{"reason": "  "}', b'{"reason": "a\\u001bb"}'):
        with pytest.raises(msgspec.ValidationError):
            wire.decode(bad, wire.DiscoveryDismiss)
