"""Revocation as relying parties see it: `openssl ocsp`, `openssl verify -crl_check`."""

from __future__ import annotations

import base64
import time
import urllib.parse

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from certfleet.coordinator.client import ApiError
from certfleet.shared import wire
from tests.pki_support import issue_through_agent, run_openssl, run_openssl_async
from tests.support import admin_client, enroll_agent


async def _issued(coordinator, tmp_path, name="svc.example.test", **extra):
    api, _ = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / "agent")
    target = tmp_path / "target"
    info = await issue_through_agent(api, agent, [name], target, **extra)
    assert info.status == "deployed"
    return api, agent, target, info


def _later(coordinator, seconds: int) -> None:
    coordinator.coordinator._clock = lambda: time.time() + seconds


async def _openssl_ocsp(coordinator, target) -> str:
    completed = await run_openssl_async("ocsp", "-issuer", str(target / "chain.pem"), "-cert", str(target / "cert.pem"),
                            "-url", f"{coordinator.coordinator.pki_url}/.well-known/pki/ocsp/iss_issuing",
                            "-CAfile", str(coordinator.ca_path), "-verify_other", str(target / "chain.pem"),
                            "-resp_text")
    return (completed.stdout + completed.stderr).decode()


async def test_openssl_sees_good_then_revoked_with_reason(coordinator, tmp_path):
    api, _, target, info = await _issued(coordinator, tmp_path)
    before = await _openssl_ocsp(coordinator, target)
    assert "Response verify OK" in before and "cert.pem: good" in before, before

    await api.call("certificates.revoke", wire.RevokeRequest(reason="key-compromise"), certificate_id=info.id)
    after = await _openssl_ocsp(coordinator, target)  # at once: no CRL rebuild needed
    assert "Response verify OK" in after and "cert.pem: revoked" in after, after
    assert "Reason: keyCompromise" in after

    _later(coordinator, 10)
    assert await coordinator.coordinator.refresh_crls() >= 1
    async with httpx.AsyncClient(base_url=coordinator.coordinator.pki_url) as http:
        crl = (await http.get("/.well-known/pki/crl/iss_issuing")).content
    pem = x509.load_der_x509_crl(crl).public_bytes(serialization.Encoding.PEM)
    (tmp_path / "crl.pem").write_bytes(pem)
    (tmp_path / "bundle.pem").write_bytes(coordinator.ca_path.read_bytes() + (target / "chain.pem").read_bytes())
    verified = run_openssl("verify", "-crl_check", "-CAfile", str(tmp_path / "bundle.pem"), "-CRLfile",
                           str(tmp_path / "crl.pem"), str(target / "cert.pem"))
    assert verified.returncode != 0
    assert b"certificate revoked" in verified.stdout + verified.stderr


async def test_crl_number_grows_and_etag_answers_304(coordinator, tmp_path):
    api, _, _, info = await _issued(coordinator, tmp_path)
    async with httpx.AsyncClient(base_url=coordinator.coordinator.pki_url) as http:
        first = await http.get("/.well-known/pki/crl/iss_issuing")
        etag = first.headers["etag"]
        assert (await http.get("/.well-known/pki/crl/iss_issuing", headers={"If-None-Match": etag})).status_code == 304
        await api.call("certificates.revoke", wire.RevokeRequest(), certificate_id=info.id)
        unchanged = await http.get("/.well-known/pki/crl/iss_issuing")
        assert unchanged.headers["etag"] == etag, "a revoke must not rebuild the CRL inline"
        _later(coordinator, 10)
        await coordinator.coordinator.refresh_crls()
        second = await http.get("/.well-known/pki/crl/iss_issuing", headers={"If-None-Match": etag})
    assert second.status_code == 200 and second.headers["etag"] != etag
    old, new = x509.load_der_x509_crl(first.content), x509.load_der_x509_crl(second.content)
    number = lambda crl: crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number  # noqa: E731
    assert number(new) > number(old)
    assert new.next_update_utc > new.last_update_utc
    assert [r.serial_number for r in new] == [int(info.serial, 16)]


async def test_revoking_into_ten_thousand_revoked_builds_no_crl(coordinator, tmp_path):
    api, _, _, info = await _issued(coordinator, tmp_path)
    database = coordinator.coordinator.database
    now = int(time.time())

    def plant(tx):
        for i in range(10_000):
            tx.execute("INSERT INTO work_orders (id, agent_id, certificate_id, kind, token, status, created_at,"
                       " expires_at) VALUES (?, ?, ?, 'issue', '', 'succeeded', ?, ?)",
                       (f"ord_planted{i}", info.agent_id, info.id, now, now))
            tx.execute(
                "INSERT INTO certificate_versions (serial, certificate_id, order_id, issuer_id, certificate_pem,"
                " public_key_sha256, fingerprint_sha256, not_before, not_after, created_at, revoked_at,"
                " revocation_reason) VALUES (?, ?, ?, 'iss_issuing', '', '', '', ?, ?, ?, ?, 'superseded')",
                (format(0xABC00000 + i, "x"), info.id, f"ord_planted{i}", now, now + 86400, now, now))

    await database.transact(plant)
    await coordinator.coordinator.refresh_crls()  # every issuer has its first CRL
    builds = coordinator.coordinator.crl_builds
    result = await api.call("certificates.revoke", wire.RevokeRequest(reason="superseded"), certificate_id=info.id)
    assert result.status == "revoked"
    assert coordinator.coordinator.crl_builds == builds
    _later(coordinator, 10)
    await coordinator.coordinator.refresh_crls()
    assert coordinator.coordinator.crl_builds == builds + 1
    async with httpx.AsyncClient(base_url=coordinator.coordinator.pki_url) as http:
        crl = x509.load_der_x509_crl((await http.get("/.well-known/pki/crl/iss_issuing")).content)
    assert len(crl) == 10_001


def _ocsp_request(target, *, nonce: bool) -> bytes:
    leaf = x509.load_pem_x509_certificate((target / "cert.pem").read_bytes())
    issuer = x509.load_pem_x509_certificates((target / "chain.pem").read_bytes())[0]
    builder = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA1())
    if nonce:
        builder = builder.add_extension(x509.OCSPNonce(b"certfleet-nonce-1234"), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


async def test_ocsp_details_nonce_get_unknown_and_malformed(coordinator, tmp_path):
    _, _, target, _ = await _issued(coordinator, tmp_path)
    base = f"{coordinator.coordinator.pki_url}/.well-known/pki/ocsp/iss_issuing"
    async with httpx.AsyncClient() as http:
        with_nonce = await http.post(base, content=_ocsp_request(target, nonce=True),
                                     headers={"Content-Type": "application/ocsp-request"})
        answer = ocsp.load_der_ocsp_response(with_nonce.content)
        assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
        assert answer.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"certfleet-nonce-1234"
        responder = answer.certificates[0]
        assert responder.extensions.get_extension_for_class(x509.OCSPNoCheck)
        assert x509.oid.ExtendedKeyUsageOID.OCSP_SIGNING in responder.extensions.get_extension_for_class(
            x509.ExtendedKeyUsage).value

        encoded = urllib.parse.quote(base64.b64encode(_ocsp_request(target, nonce=False)).decode(), safe="")
        by_get = ocsp.load_der_ocsp_response((await http.get(f"{base}/{encoded}")).content)
        assert by_get.certificate_status == ocsp.OCSPCertStatus.GOOD

        issuer = x509.load_pem_x509_certificates((target / "chain.pem").read_bytes())[0]
        unknown_request = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
            _name_hash(issuer), _key_hash(issuer), 0x1234567, hashes.SHA1()).build()
        unknown = ocsp.load_der_ocsp_response((await http.post(
            base, content=unknown_request.public_bytes(serialization.Encoding.DER),
            headers={"Content-Type": "application/ocsp-request"})).content)
        assert unknown.certificate_status == ocsp.OCSPCertStatus.UNKNOWN

        garbage = await http.post(base, content=b"\x30\x03garbage", headers={"Content-Type": "application/ocsp-request"})
        assert ocsp.load_der_ocsp_response(garbage.content).response_status == \
            ocsp.OCSPResponseStatus.MALFORMED_REQUEST
        bad_get = await http.get(f"{base}/not%20base64!")
        assert ocsp.load_der_ocsp_response(bad_get.content).response_status == \
            ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def _name_hash(issuer: x509.Certificate) -> bytes:
    digest = hashes.Hash(hashes.SHA1())
    digest.update(issuer.subject.public_bytes())
    return digest.finalize()


def _key_hash(issuer: x509.Certificate) -> bytes:
    from certfleet.coordinator.ca.ocsp import _subject_public_key_bits

    digest = hashes.Hash(hashes.SHA1())
    digest.update(_subject_public_key_bits(issuer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)))
    return digest.finalize()


async def test_bulk_revoke_by_tag_reports_each_certificate(coordinator, tmp_path):
    api, _ = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / "agent")
    tagged = [await issue_through_agent(api, agent, [f"n{i}.example.test"], tmp_path / f"t{i}", tags=["edge"])
              for i in range(3)]
    untagged = await issue_through_agent(api, agent, ["keep.example.test"], tmp_path / "keep")
    result = await api.call("certificates.revoke-bulk", wire.BulkRevokeRequest(tag="edge", reason="superseded"))
    assert sorted((r.certificate_id, r.status) for r in result.results) == sorted(
        (c.id, "revoked") for c in tagged)
    assert all(len(r.serials) == 1 for r in result.results)
    again = await api.call("certificates.revoke-bulk", wire.BulkRevokeRequest(tag="edge"))
    assert {r.status for r in again.results} == {"already-revoked"}
    assert (await api.call("certificates.get", certificate_id=untagged.id)).status == "deployed"
    with pytest.raises(ApiError) as refused:
        await api.call("certificates.revoke-bulk", wire.BulkRevokeRequest())
    assert refused.value.status == 400


async def test_a_crl_build_cut_short_is_built_again_at_the_next_refresh(coordinator, tmp_path, monkeypatch):
    from certfleet.coordinator.operations import pki

    api, _, _, info = await _issued(coordinator, tmp_path)
    await coordinator.coordinator.refresh_crls()
    await api.call("certificates.revoke", wire.RevokeRequest(), certificate_id=info.id)
    _later(coordinator, 10)
    real_build = pki.build_crl

    def crash(*args, **kwargs):
        raise RuntimeError("the coordinator died while signing")

    monkeypatch.setattr(pki, "build_crl", crash)
    with pytest.raises(RuntimeError):
        await coordinator.coordinator.refresh_crls()
    monkeypatch.setattr(pki, "build_crl", real_build)
    # The dirty mark went with the CRL number taken; the number ahead of the stored
    # CRL's makes the issuer due all the same.
    assert await coordinator.coordinator.refresh_crls() == 1
    assert await coordinator.coordinator.refresh_crls() == 0
    async with httpx.AsyncClient(base_url=coordinator.coordinator.pki_url) as http:
        crl = x509.load_der_x509_crl((await http.get("/.well-known/pki/crl/iss_issuing")).content)
    assert [r.serial_number for r in crl] == [int(info.serial, 16)]


async def test_a_revocation_does_not_wait_for_a_crl_being_signed(coordinator, tmp_path, monkeypatch):
    import threading

    import trio

    from certfleet.coordinator.operations import pki

    api, agent, _, first = await _issued(coordinator, tmp_path)
    second = await issue_through_agent(api, agent, ["other.example.test"], tmp_path / "other")
    await coordinator.coordinator.refresh_crls()
    await api.call("certificates.revoke", wire.RevokeRequest(), certificate_id=first.id)
    _later(coordinator, 10)
    signing, release = threading.Event(), threading.Event()
    real_build = pki.build_crl

    def slow_build(*args, **kwargs):
        signing.set()
        release.wait(30)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(pki, "build_crl", slow_build)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(coordinator.coordinator.refresh_crls)
        await trio.to_thread.run_sync(signing.wait, 30)
        with trio.fail_after(10):  # the build is held until this revocation is done
            result = await api.call("certificates.revoke", wire.RevokeRequest(), certificate_id=second.id)
        assert result.status == "revoked" and not release.is_set()
        release.set()
    monkeypatch.setattr(pki, "build_crl", real_build)
    async with httpx.AsyncClient(base_url=coordinator.coordinator.pki_url) as http:
        built_during = x509.load_der_x509_crl((await http.get("/.well-known/pki/crl/iss_issuing")).content)
        assert [r.serial_number for r in built_during] == [int(first.serial, 16)]
        # The revocation made during the build marked the issuer dirty again.
        _later(coordinator, 20)
        assert await coordinator.coordinator.refresh_crls() == 1
        after = x509.load_der_x509_crl((await http.get("/.well-known/pki/crl/iss_issuing")).content)
    assert sorted(r.serial_number for r in after) == sorted([int(first.serial, 16), int(second.serial, 16)])


async def _crl(coordinator, seconds_later: int) -> x509.CertificateRevocationList:
    _later(coordinator, seconds_later)
    await coordinator.coordinator.refresh_crls()
    async with httpx.AsyncClient(base_url=coordinator.coordinator.pki_url) as http:
        return x509.load_der_x509_crl((await http.get("/.well-known/pki/crl/iss_issuing")).content)


async def test_a_hold_is_released_by_remove_from_crl(coordinator, tmp_path):
    api, _, target, info = await _issued(coordinator, tmp_path)
    held = await api.call("certificates.revoke", wire.RevokeRequest(reason="certificate-hold"), certificate_id=info.id)
    assert held.status == "revoked"
    on_hold = await _openssl_ocsp(coordinator, target)
    assert "cert.pem: revoked" in on_hold and "Reason: certificateHold" in on_hold, on_hold
    entry = (await _crl(coordinator, 10)).get_revoked_certificate_by_serial_number(int(info.serial, 16))
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.certificate_hold

    released = await api.call("certificates.revoke", wire.RevokeRequest(reason="remove-from-crl"),
                              certificate_id=info.id)
    assert released.status == "released" and released.serials == [info.serial]
    after = await _openssl_ocsp(coordinator, target)  # at once, like a revocation
    assert "Response verify OK" in after and "cert.pem: good" in after, after
    # RFC 5280 §5.3.1: a full CRL simply stops listing the released certificate.
    crl = await _crl(coordinator, 20)
    assert crl.get_revoked_certificate_by_serial_number(int(info.serial, 16)) is None
    (tmp_path / "crl.pem").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "bundle.pem").write_bytes(coordinator.ca_path.read_bytes() + (target / "chain.pem").read_bytes())
    verified = run_openssl("verify", "-crl_check", "-attime", str(int(time.time()) + 30), "-CAfile",
                           str(tmp_path / "bundle.pem"), "-CRLfile", str(tmp_path / "crl.pem"), str(target / "cert.pem"))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert (await api.call("certificates.get", certificate_id=info.id)).status == "deployed"


async def test_a_hold_becomes_a_final_revocation_keeping_its_date(coordinator, tmp_path):
    api, _, target, info = await _issued(coordinator, tmp_path)
    await api.call("certificates.revoke", wire.RevokeRequest(reason="certificate-hold"), certificate_id=info.id)
    held_at = (await _crl(coordinator, 10)).get_revoked_certificate_by_serial_number(
        int(info.serial, 16)).revocation_date_utc
    _later(coordinator, 30)
    final = await api.call("certificates.revoke", wire.RevokeRequest(reason="key-compromise"), certificate_id=info.id)
    assert final.status == "revoked" and final.serials == [info.serial]
    answer = await _openssl_ocsp(coordinator, target)
    assert "cert.pem: revoked" in answer and "Reason: keyCompromise" in answer, answer
    entry = (await _crl(coordinator, 40)).get_revoked_certificate_by_serial_number(int(info.serial, 16))
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
    assert entry.revocation_date_utc == held_at
    # A final revocation is not released, and is not revoked twice.
    refused = await api.call("certificates.revoke", wire.RevokeRequest(reason="remove-from-crl"),
                             certificate_id=info.id)
    assert refused.status == "not-on-hold"
    again = await api.call("certificates.revoke", wire.RevokeRequest(reason="superseded"), certificate_id=info.id)
    assert again.status == "already-revoked"
    assert "Reason: keyCompromise" in await _openssl_ocsp(coordinator, target)


async def test_ocsp_get_answers_are_cacheable_until_next_update(coordinator, tmp_path):
    api, _, target, info = await _issued(coordinator, tmp_path)
    base = f"{coordinator.coordinator.pki_url}/.well-known/pki/ocsp/iss_issuing"
    encoded = urllib.parse.quote(base64.b64encode(_ocsp_request(target, nonce=False)).decode(), safe="")
    async with httpx.AsyncClient() as http:
        first = await http.get(f"{base}/{encoded}")
        answer = ocsp.load_der_ocsp_response(first.content)
        assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD
        # RFC 5019 §6.2: max-age no later than nextUpdate, validators for revalidation.
        cache_control = {d.strip().split("=")[0]: d.strip() for d in first.headers["cache-control"].split(",")}
        assert "no-cache" not in cache_control and "no-store" not in cache_control, first.headers
        assert "public" in cache_control
        max_age = int(cache_control["max-age"].split("=")[1])
        until_next_update = (answer.next_update_utc - answer.this_update_utc).total_seconds()
        assert until_next_update - 60 <= max_age <= until_next_update
        assert first.headers["etag"] and first.headers["last-modified"] and first.headers["expires"]
        second = await http.get(f"{base}/{encoded}")
        assert second.content == first.content and second.headers["etag"] == first.headers["etag"]
        unchanged = await http.get(f"{base}/{encoded}", headers={"If-None-Match": first.headers["etag"]})
        assert unchanged.status_code == 304 and unchanged.content == b""

        # A revocation is a new answer with a new validator.
        await api.call("certificates.revoke", wire.RevokeRequest(reason="superseded"), certificate_id=info.id)
        revoked = await http.get(f"{base}/{encoded}", headers={"If-None-Match": first.headers["etag"]})
        assert revoked.status_code == 200
        assert ocsp.load_der_ocsp_response(revoked.content).certificate_status == ocsp.OCSPCertStatus.REVOKED

        # What only this client may see is never cached: a nonce's echo, an unknown.
        with_nonce = await http.post(base, content=_ocsp_request(target, nonce=True),
                                     headers={"Content-Type": "application/ocsp-request"})
        assert with_nonce.headers["cache-control"] == "no-cache"
        issuer = x509.load_pem_x509_certificates((target / "chain.pem").read_bytes())[0]
        unknown = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
            _name_hash(issuer), _key_hash(issuer), 0x1234567, hashes.SHA1()).build()
        quoted = urllib.parse.quote(base64.b64encode(unknown.public_bytes(serialization.Encoding.DER)).decode(),
                                    safe="")
        assert (await http.get(f"{base}/{quoted}")).headers["cache-control"] == "no-cache"
