"""What the operator CLI prints for a person (without ``--json``): dates in ISO 8601
UTC, modes in octal, serials as openssl prints them, lists comma-separated, one line
per table row, and no control character from the data reaching the terminal."""

from __future__ import annotations

import argparse
import datetime
import re

import msgspec
import pytest

from certfleet.coordinator import cli
from certfleet.shared import wire
from certfleet.shared.pki import KeyType
from tests.pki_support import openssl_root, run_openssl

NOW = int(datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.UTC).timestamp())
DAY = 86400
ESCAPES = ["\x1b]0;owned\x07", "\x1b[2J", "\x9b31m", "\u202e", "\r"]


@pytest.fixture
def printed(capsys, monkeypatch):
    """Print ``value`` (a wire message or a list of them) as the CLI does, at ``NOW``."""
    monkeypatch.setattr(cli.time, "time", lambda: NOW)

    def show(value, columns: list[str]) -> str:
        cli._print(argparse.Namespace(json=False), value, columns)
        return capsys.readouterr().out

    return show


def _certificate(**changes) -> wire.CertificateInfo:
    fields = dict(id="cert-1", names=["app.example.com", "www.example.com"], key_type=KeyType.EC_P256,
                  lifetime_seconds=90 * DAY, agent_id="agent-1", profile_id="default",
                  target=wire.FileTarget(directory="/etc/ssl/app", mode=0o644, key_mode=0o600),
                  status="deployed", created_at=NOW - 10 * DAY, not_before=NOW - 10 * DAY,
                  not_after=NOW + 3 * DAY, serial="a1b2c3", tags=["edge"])
    return wire.CertificateInfo(**{**fields, **changes})


def _job(**changes) -> wire.JobInfo:
    fields = dict(id="job-1", certificate_id="cert-1", kind="issue", state="retry-wait", attempts=2,
                  max_attempts=5, created_at=NOW - 60, updated_at=NOW - 30, next_attempt_at=NOW + 5 * 60)
    return wire.JobInfo(**{**fields, **changes})


def test_a_list_prints_names_comma_separated_and_expiry_as_an_iso_date_with_the_distance(printed):
    out = printed([_certificate()], cli.CERTIFICATE_COLUMNS)

    assert "app.example.com, www.example.com" in out and "[" not in out
    assert "2026-03-04T12:00:00Z (in 3 days)" in out
    assert str(NOW + 3 * DAY) not in out


def test_past_times_say_how_long_ago(printed):
    out = printed([wire.ApiKeyInfo(id="key-1", name="ci", user=None, created_at=NOW - DAY,
                                   last_used_at=NOW - 2 * 3600, expires_at=NOW + 30 * DAY)], cli.KEY_COLUMNS)

    assert "2026-03-01T10:00:00Z (2 hours ago)" in out
    assert "2026-03-31T12:00:00Z (in 30 days)" in out


def test_one_object_prints_modes_in_octal_and_nested_settings_as_pairs(printed):
    out = printed(_certificate(), [*cli.CERTIFICATE_COLUMNS, "target", "tags"])

    assert "mode=0644" in out and "key_mode=0600" in out
    assert "420" not in out and "384" not in out and "'" not in out
    assert re.search(r"^tags: +edge$", out, re.M), out


@pytest.mark.parametrize("serial", [0x0ABC, 0xA1B2C3, 0x01, 0x7F00FF, 2**159 + 5])
def test_serials_print_as_openssl_prints_them(printed, tmp_path, serial):
    root, key = openssl_root(tmp_path)
    certificate = tmp_path / "leaf.pem"
    made = run_openssl("req", "-x509", "-key", str(key), "-subj", "/CN=leaf", "-days", "1",
                       "-set_serial", str(serial), "-out", str(certificate))
    assert made.returncode == 0, made.stderr
    by_openssl = run_openssl("x509", "-in", str(certificate), "-noout", "-serial").stdout.decode().strip()

    # The coordinator stores serials as lower-case hex without leading zeros.
    out = printed([{"id": "cert-1", "serial": format(serial, "x")}], ["id", "serial"])

    assert f"serial={out.splitlines()[1].split()[1]}" == by_openssl


def test_a_serial_in_a_list_keeps_its_leading_zero(printed):
    out = printed([{"certificate_id": "cert-1", "status": "revoked", "serials": ["abc", "1234"]}],
                  ["certificate_id", "status", "serials"])

    assert "0ABC, 1234" in out


def test_a_multi_line_error_keeps_its_row_on_one_line(printed):
    jobs = [_job(last_error="deploy failed:\nnginx -t said\n  unknown directive"), _job(id="job-2")]

    out = printed(jobs, ["id", "state", "next_attempt_at", "last_error"])

    assert len(out.splitlines()) == 3, out
    assert "deploy failed:\\nnginx -t said\\n  unknown directive" in out
    assert "2026-03-01T12:05:00Z (in 5 minutes)" in out


def test_a_pem_in_one_object_prints_as_indented_lines(printed):
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\nAAAA\n-----END CERTIFICATE-----\n"
    issuer = wire.IssuerInfo(id="iss-1", name="root", kind="root", status="active", created_at=NOW,
                             certificate_pem=pem)

    out = printed(issuer, ["id", "name", "certificate_pem"])

    assert "certificate_pem:\n    -----BEGIN CERTIFICATE-----\n    MIIB\n    AAAA\n    -----END CERTIFICATE-----" in out


@pytest.mark.parametrize("escape", ESCAPES)
def test_control_characters_in_key_names_never_reach_the_terminal(printed, escape):
    keys = [wire.ApiKeyInfo(id="key-1", name=f"ci{escape}key", user=f"bob{escape}", created_at=NOW)]

    out = printed(keys, cli.KEY_COLUMNS)

    assert escape not in out
    assert escape.encode("unicode_escape").decode() in out


@pytest.mark.parametrize("escape", ESCAPES)
def test_control_characters_in_tags_and_agent_details_are_escaped(printed, escape):
    certificates = [_certificate(tags=[f"edge{escape}"], last_error=f"agent said{escape}")]
    jobs = [_job(last_error=f"result detail{escape}")]

    out = printed(certificates, [*cli.CERTIFICATE_COLUMNS, "tags"]) + printed(jobs, ["id", "last_error"])

    assert escape not in out
    assert not any(ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0 for char in out.replace("\n", "")), repr(out)


def test_role_descriptions_and_labels_are_escaped(printed):
    roles = [wire.RoleInfo(name="auditor", permissions=["audit.read", "cert.read"],
                           description="reads\x1b[8mhidden")]

    out = printed(roles, ["name", "builtin", "permissions", "description"])

    assert "audit.read, cert.read" in out and "\x1b" not in out and "no" in out


def test_audit_times_in_milliseconds_print_as_dates(printed):
    out = printed([{"id": 1, "at_ms": NOW * 1000 + 250, "action": "auth.keys.create"}], ["id", "at_ms", "action"])

    assert "2026-03-01T12:00:00Z" in out


def test_json_output_is_left_as_the_api_sent_it(capsys):
    cli._print(argparse.Namespace(json=True), [_certificate()], cli.CERTIFICATE_COLUMNS)

    assert msgspec.json.decode(capsys.readouterr().out)[0]["not_after"] == NOW + 3 * DAY


def test_the_distance_is_rounded_to_the_nearest_unit(printed):
    out = printed([_certificate(not_after=NOW + 3 * DAY - 3600)], cli.CERTIFICATE_COLUMNS)

    assert "(in 3 days)" in out
