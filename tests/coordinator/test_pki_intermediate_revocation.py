"""Revoking an intermediate CA, as relying parties see it: the parent's OCSP
responder (`openssl ocsp`) and CRL (`openssl verify -crl_check`), issuance under it
and below it refused, and an alert for every certificate that relied on it."""

from __future__ import annotations

import json
import time

import httpx
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certfleet.coordinator.client import ApiError
from certfleet.shared import wire
from tests.pki_support import issue_through_agent, run_openssl, run_openssl_async
from tests.support import admin_client, enroll_agent


async def _problem(call) -> dict:
    with pytest.raises(ApiError) as refused:
        await call
    return {"status": refused.value.status, **refused.value.problem}


async def _openssl_ocsp(coordinator, tmp_path, issuer_id: str, issuer_pem: str, subject_pem: str) -> str:
    (tmp_path / "ocsp-issuer.pem").write_text(issuer_pem)
    (tmp_path / "ocsp-subject.pem").write_text(subject_pem)
    completed = await run_openssl_async(
        "ocsp", "-issuer", str(tmp_path / "ocsp-issuer.pem"), "-cert", str(tmp_path / "ocsp-subject.pem"),
        "-url", f"{coordinator.coordinator.pki_url}/.well-known/pki/ocsp/{issuer_id}",
        "-CAfile", str(coordinator.ca_path), "-resp_text")
    return (completed.stdout + completed.stderr).decode()


async def test_a_revoked_intermediate_is_on_its_parents_ocsp_and_crl_and_issues_nothing(coordinator, tmp_path):
    api, _ = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / "agent")
    await api.call("channels.create", wire.ChannelCreate(
        name="ops", kind="webhook", settings={"url": "https://hooks.example.test/x"},
        secrets={"secret": "s" * 32}, min_severity="info"))
    root = await api.call("issuers.get", issuer_id="iss_root")
    middle = await api.call("issuers.create-intermediate", wire.IntermediateCreate(
        name="middle", parent="iss_root", path_length=1))
    below = await api.call("issuers.create-intermediate", wire.IntermediateCreate(
        name="below", parent=middle.id, path_length=0))
    await api.call("profiles.create", wire.ProfileCreate(name="on-middle", issuer=middle.id))
    await api.call("profiles.create", wire.ProfileCreate(name="on-below", issuer=below.id))
    direct = await issue_through_agent(api, agent, ["direct.example.test"], tmp_path / "t1", profile="on-middle")
    deeper = await issue_through_agent(api, agent, ["deeper.example.test"], tmp_path / "t2", profile="on-below")
    elsewhere = await issue_through_agent(api, agent, ["elsewhere.example.test"], tmp_path / "t3")
    assert {direct.status, deeper.status, elsewhere.status} == {"deployed"}

    # The parent's responder speaks for the CA it signed: good before, not unknown.
    before = await _openssl_ocsp(coordinator, tmp_path, "iss_root", root.certificate_pem, middle.certificate_pem)
    assert "Response verify OK" in before and "ocsp-subject.pem: good" in before, before

    revoked = await api.call("issuers.revoke", wire.IssuerRevokeRequest(reason="key-compromise"),
                             issuer_id="middle")
    assert revoked.status == "revoked" and revoked.revocation_reason == "key-compromise"
    assert revoked.revoked_at is not None

    after = await _openssl_ocsp(coordinator, tmp_path, "iss_root", root.certificate_pem, middle.certificate_pem)
    assert "Response verify OK" in after and "ocsp-subject.pem: revoked" in after, after
    assert "Reason: keyCompromise" in after

    coordinator.coordinator._clock = lambda: time.time() + 10
    await coordinator.coordinator.refresh_crls()
    async with httpx.AsyncClient(base_url=coordinator.coordinator.pki_url) as http:
        crl = x509.load_der_x509_crl((await http.get("/.well-known/pki/crl/iss_root")).content)
    middle_certificate = x509.load_pem_x509_certificate(middle.certificate_pem.encode())
    entry = crl.get_revoked_certificate_by_serial_number(middle_certificate.serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
    (tmp_path / "root-crl.pem").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "middle.pem").write_text(middle.certificate_pem)
    verified = run_openssl("verify", "-crl_check", "-CAfile", str(coordinator.ca_path), "-CRLfile",
                           str(tmp_path / "root-crl.pem"), str(tmp_path / "middle.pem"))
    assert verified.returncode != 0 and b"certificate revoked" in verified.stdout + verified.stderr

    # Nothing more is issued under it, nor under the CA below it.
    for profile in ("on-middle", "on-below"):
        refused = await _problem(api.call("certificates.create", wire.CertificateCreate(
            common_name="new.example.test", agent_id=agent.config.agent_id, profile=profile,
            target=wire.FileTarget(directory=str(tmp_path / "new")))))
        assert refused["status"] == 409 and refused["type"].endswith("issuer-not-active"), refused

    # One alert for each certificate below it, none for the one under another CA.
    events = await coordinator.coordinator.database.transact(
        lambda tx: [json.loads(row["event"]) for row in tx.all("SELECT event FROM notifications")])
    alerted = sorted(e["subject"] for e in events if e["kind"] == "certificate.issuer-revoked")
    assert alerted == sorted([f"certificate:{direct.id}", f"certificate:{deeper.id}"])
    assert all(e["severity"] == "critical" for e in events if e["kind"] == "certificate.issuer-revoked")

    # The audit trail names the reason and what it reached.
    audit = await api.call("audit.list", query={"action": "issuers.revoke"})
    assert [e.details["reason"] for e in audit.events] == ["key-compromise"]
    assert audit.events[0].details["certificates_affected"] == 2


async def test_roots_cannot_be_revoked_and_a_revocation_is_not_repeated(coordinator, tmp_path):
    api, _ = await admin_client(coordinator)
    refused = await _problem(api.call("issuers.revoke", wire.IssuerRevokeRequest(reason="superseded"),
                                      issuer_id="iss_root"))
    assert refused["status"] == 409 and refused["type"].endswith("not-revocable")
    assert "retire it instead" in refused["detail"]
    middle = await api.call("issuers.create-intermediate", wire.IntermediateCreate(name="middle", parent="iss_root"))
    await api.call("issuers.revoke", wire.IssuerRevokeRequest(reason="superseded"), issuer_id=middle.id)
    again = await _problem(api.call("issuers.revoke", wire.IssuerRevokeRequest(reason="key-compromise"),
                                    issuer_id=middle.id))
    assert again["status"] == 409 and again["type"].endswith("already-revoked")
    assert (await api.call("issuers.get", issuer_id=middle.id)).revocation_reason == "superseded"
    # A hold is for leaves: a CA's revocation is final.
    bad = await _problem(api.call("issuers.revoke", wire.RevokeRequest(reason="certificate-hold"),
                                  issuer_id="iss_issuing"))
    assert bad["status"] == 400
    assert (await api.call("issuers.get", issuer_id="iss_issuing")).status == "active"


async def test_the_cli_revokes_an_intermediate_by_name(coordinator, capsys):
    from certfleet.coordinator import cli

    api, key = await admin_client(coordinator)
    await api.call("issuers.create-intermediate", wire.IntermediateCreate(name="retired-one", parent="iss_root"))
    argv = ["--url", coordinator.url, "--api-key", key, "--ca-bundle", str(coordinator.ca_path), "--json",
            "issuers", "revoke", "retired-one", "--reason", "cessation-of-operation"]
    assert await trio.to_thread.run_sync(cli.main, argv) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "revoked" and shown["revocation_reason"] == "cessation-of-operation"
    # A hold is not among the choices, and the root is refused in one line.
    with pytest.raises(SystemExit):
        cli.main([*argv[:-1], "certificate-hold"])
    capsys.readouterr()
    assert await trio.to_thread.run_sync(cli.main, [*argv[:9], "iss_root", "--reason", "superseded"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "retire it instead" in error, error
