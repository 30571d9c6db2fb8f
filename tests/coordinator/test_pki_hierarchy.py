"""The CA hierarchy as a PKI engineer checks it: with openssl."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certfleet.coordinator.ca.authority import build_ca_csr
from certfleet.coordinator.client import ApiError
from certfleet.shared import wire
from tests.pki_support import issue_through_agent, openssl_root, openssl_sign_ca, run_openssl
from tests.support import admin_client, enroll_agent


async def _problem(call) -> dict:
    with pytest.raises(ApiError) as refused:
        await call
    return {"status": refused.value.status, **refused.value.problem}


async def _three_levels(api):
    root = await api.call("issuers.create-root", wire.RootCreate(name="corp-root", path_length=2))
    middle = await api.call("issuers.create-intermediate", wire.IntermediateCreate(
        name="corp-middle", parent=root.id, path_length=1))
    issuing = await api.call("issuers.create-intermediate", wire.IntermediateCreate(
        name="corp-issuing", parent=middle.id, path_length=0,
        name_constraints=wire.NameConstraints(permitted_dns=["example.test"], permitted_ip=["10.0.0.0/8"],
                                              excluded_dns=["secret.example.test"])))
    await api.call("profiles.create", wire.ProfileCreate(name="corp", issuer=issuing.id))
    return root, middle, issuing


async def test_three_level_chain_verifies_with_openssl(coordinator, tmp_path):
    api, _ = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / "agent")
    root, _, _ = await _three_levels(api)
    target = tmp_path / "target"
    info = await issue_through_agent(api, agent, ["www.example.test", "10.1.2.3"], target, profile="corp")
    assert info.status == "deployed"
    (tmp_path / "root.pem").write_text(root.certificate_pem)
    assert len(x509.load_pem_x509_certificates((target / "chain.pem").read_bytes())) == 2
    verified = run_openssl("verify", "-x509_strict", "-CAfile", str(tmp_path / "root.pem"), "-untrusted",
                           str(target / "chain.pem"), str(target / "cert.pem"))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    text = run_openssl("x509", "-in", str(target / "cert.pem"), "-noout", "-text").stdout.decode()
    assert "CRL Distribution Points" in text and "OCSP - URI:http://127.0.0.1" in text
    assert "CA Issuers - URI:http://127.0.0.1" in text and "Authority Key Identifier" in text
    leaf = x509.load_pem_x509_certificate((target / "cert.pem").read_bytes())
    assert leaf.serial_number.bit_length() >= 64


async def test_names_outside_the_constraints_are_refused_and_would_not_verify(coordinator, tmp_path):
    api, _ = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / "agent")
    root, _, issuing = await _three_levels(api)
    for names in (["www.other.test"], ["secret.example.test"], ["www.example.test", "192.168.1.1"]):
        problem = await _problem(api.call("certificates.create", wire.CertificateCreate(
            common_name=names[0], sans=names[1:], agent_id=agent.config.agent_id, profile="corp",
            target=wire.FileTarget(directory=str(tmp_path / "t")))))
        assert problem["status"] == 422 and problem["type"].endswith("name-constraints"), problem
        assert problem["rule"] == "name_constraints"

    # A leaf built by hand with the issuing CA's key, outside its constraints, fails
    # openssl's path validation: the constraint is real, not only our own check.
    database = coordinator.coordinator.database
    row = await database.transact(lambda tx: tx.one("SELECT * FROM issuers WHERE id = ?", (issuing.id,)))
    authority = coordinator.coordinator.authorities.authority(row)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    rogue = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "www.other.test")]))
             .issuer_name(authority.certificate.subject).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
             .add_extension(x509.SubjectAlternativeName([x509.DNSName("www.other.test")]), critical=False)
             .sign(authority.key, hashes.SHA256()))
    (tmp_path / "rogue.pem").write_bytes(rogue.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "root.pem").write_text(root.certificate_pem)
    (tmp_path / "chain.pem").write_text(row["chain_pem"])
    verified = run_openssl("verify", "-CAfile", str(tmp_path / "root.pem"), "-untrusted", str(tmp_path / "chain.pem"),
                           str(tmp_path / "rogue.pem"))
    assert verified.returncode != 0
    assert b"permitted subtree violation" in verified.stdout + verified.stderr


async def test_path_length_is_enforced_when_building_the_hierarchy(coordinator):
    api, _ = await admin_client(coordinator)
    _, _, issuing = await _three_levels(api)
    problem = await _problem(api.call("issuers.create-intermediate", wire.IntermediateCreate(
        name="too-deep", parent=issuing.id)))
    assert problem["status"] == 422 and problem["type"].endswith("path-length")


async def test_sub_ca_signed_by_an_external_openssl_root(coordinator, tmp_path):
    api, _ = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / "agent")
    pending = await api.call("issuers.create-external", wire.ExternalSubordinateCreate(name="enterprise-sub"))
    assert pending.status == "pending" and "CERTIFICATE REQUEST" in pending.csr_pem
    root_cert, root_key = openssl_root(tmp_path / "ext")
    signed = openssl_sign_ca(tmp_path / "ext", pending.csr_pem, root_cert, root_key)

    # Refused: another key's certificate; a chain that does not reach a root.
    other_root, other_key = openssl_root(tmp_path / "other", name="Other Root")
    _, other_csr = build_ca_csr("someone else")
    wrong = openssl_sign_ca(tmp_path / "other", other_csr.decode(), other_root, other_key)
    assert (await _problem(api.call("issuers.import", wire.IssuerCertificateImport(
        certificate=wrong, chain=other_root.read_text()), issuer_id=pending.id)))["type"].endswith("key-mismatch")
    assert (await _problem(api.call("issuers.import", wire.IssuerCertificateImport(
        certificate=signed, chain=other_root.read_text()), issuer_id=pending.id)))["type"].endswith("invalid-chain")

    active = await api.call("issuers.import", wire.IssuerCertificateImport(
        certificate=signed, chain=root_cert.read_text()), issuer_id=pending.id)
    assert active.status == "active"
    await api.call("profiles.create", wire.ProfileCreate(name="enterprise", issuer=active.id))
    target = tmp_path / "target"
    info = await issue_through_agent(api, agent, ["app.corp.test"], target, profile="enterprise")
    assert info.status == "deployed"
    verified = run_openssl("verify", "-CAfile", str(root_cert), "-untrusted", str(target / "chain.pem"),
                           str(target / "cert.pem"))
    assert verified.returncode == 0, verified.stdout + verified.stderr


async def test_a_retiring_issuer_stops_issuing_but_keeps_publishing(coordinator, tmp_path):
    import httpx

    api, _ = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / "agent")
    root = await api.call("issuers.create-root", wire.RootCreate(name="old-root"))
    await api.call("profiles.create", wire.ProfileCreate(name="old", issuer=root.id))
    info = await issue_through_agent(api, agent, ["legacy.example.test"], tmp_path / "t", profile="old")
    assert info.status == "deployed"
    retired = await api.call("issuers.retire", issuer_id=root.id)
    assert retired.status == "retiring"  # it still has an unexpired certificate
    problem = await _problem(api.call("certificates.create", wire.CertificateCreate(
        common_name="new.example.test", agent_id=agent.config.agent_id, profile="old",
        target=wire.FileTarget(directory=str(tmp_path / "t2")))))
    assert problem["status"] == 409 and problem["type"].endswith("issuer-not-active")
    async with httpx.AsyncClient(base_url=coordinator.coordinator.pki_url) as http:
        crl = await http.get(f"/.well-known/pki/crl/{root.id}")
    assert crl.status_code == 200 and crl.headers["content-type"] == "application/pkix-crl"


async def test_retirement_completes_when_the_last_certificate_expires(coordinator, tmp_path):
    import time

    api, _ = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / "agent")
    root = await api.call("issuers.create-root", wire.RootCreate(name="brief-root"))
    await api.call("profiles.create", wire.ProfileCreate(name="brief", issuer=root.id))
    await issue_through_agent(api, agent, ["b.example.test"], tmp_path / "t", profile="brief", lifetime_seconds=3600)
    assert (await api.call("issuers.retire", issuer_id=root.id)).status == "retiring"
    assert await coordinator.coordinator.finish_drained_retirements() == []
    coordinator.coordinator._clock = lambda: time.time() + 7200
    assert await coordinator.coordinator.finish_drained_retirements() == [root.id]
    assert (await api.call("issuers.get", issuer_id=root.id)).status == "retired"
