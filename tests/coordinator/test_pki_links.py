"""Where certificates send relying parties: plain-http CRL, OCSP and CA-issuer links
from a coordinator started with no PKI settings at all, the same links in every CA
certificate below a root (the default issuing CA included), and sub-CA name
constraints that must overlap their parent's."""

from __future__ import annotations

import functools

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certfleet.coordinator.client import ApiError
from certfleet.coordinator.settings import DEFAULT_PKI_PORT, Settings
from certfleet.shared import wire
from tests.pki_support import issue_through_agent, run_openssl, run_openssl_async
from tests.support import BOOTSTRAP_TOKEN, admin_client, enroll_agent


def _links(certificate: x509.Certificate) -> dict[str, list[str]]:
    points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    access = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    return {
        "crl": [name.value for point in points for name in point.full_name],
        "ocsp": [d.access_location.value for d in access
                 if d.access_method == x509.AuthorityInformationAccessOID.OCSP],
        "ca_issuers": [d.access_location.value for d in access
                       if d.access_method == x509.AuthorityInformationAccessOID.CA_ISSUERS],
    }


def test_the_pki_listener_is_on_by_default_beside_the_api(tmp_path):
    def bind(**given) -> str | None:
        return Settings(data_dir=tmp_path, **given).pki_bind

    assert bind() == f"127.0.0.1:{DEFAULT_PKI_PORT}"
    assert bind(listen="0.0.0.0:443") == f"0.0.0.0:{DEFAULT_PKI_PORT}"
    assert bind(listen="[::]:8443") == f"[::]:{DEFAULT_PKI_PORT}"
    assert bind(listen="127.0.0.1:0") == "127.0.0.1:0"
    assert bind(pki_listen="10.0.0.5:80") == "10.0.0.5:80"
    assert bind(pki_listen="off") is None


async def test_a_default_coordinator_links_everything_over_plain_http(nursery, tmp_path):
    from certfleet.coordinator.server import run_coordinator

    # Nothing about the PKI configured: only the API's address, any free port.
    settings = Settings(data_dir=tmp_path / "coordinator", listen="127.0.0.1:0", bootstrap_token=BOOTSTRAP_TOKEN,
                        maintenance_interval=None)
    coordinator = await nursery.start(functools.partial(run_coordinator, settings, announce_token=False))
    pki_url = coordinator.coordinator.pki_url
    assert pki_url.startswith("http://127.0.0.1:") and pki_url != coordinator.url.replace("https", "http")
    api, _ = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / "agent")
    target = tmp_path / "target"
    info = await issue_through_agent(api, agent, ["www.example.test"], target)
    assert info.status == "deployed"

    leaf = x509.load_pem_x509_certificate((target / "cert.pem").read_bytes())
    issuing = x509.load_pem_x509_certificates((target / "chain.pem").read_bytes())[0]
    assert _links(leaf) == {"crl": [f"{pki_url}/.well-known/pki/crl/iss_issuing"],
                            "ocsp": [f"{pki_url}/.well-known/pki/ocsp/iss_issuing"],
                            "ca_issuers": [f"{pki_url}/.well-known/pki/ca/iss_issuing"]}
    # The default issuing CA points at its root the way an API-made intermediate does.
    assert _links(issuing) == {"crl": [f"{pki_url}/.well-known/pki/crl/iss_root"],
                               "ocsp": [f"{pki_url}/.well-known/pki/ocsp/iss_root"],
                               "ca_issuers": [f"{pki_url}/.well-known/pki/ca/iss_root"]}
    made = await api.call("issuers.create-intermediate", wire.IntermediateCreate(name="made", parent="iss_root"))
    made_certificate = x509.load_pem_x509_certificate(made.certificate_pem.encode())
    assert _links(made_certificate) == _links(issuing)
    assert {e.oid for e in made_certificate.extensions} == {e.oid for e in issuing.extensions}

    # Every link answers over plain HTTP, and openssl checks the whole chain with them.
    async with httpx.AsyncClient(timeout=30) as http:
        crls = [x509.load_der_x509_crl((await http.get(url)).content)
                for url in (_links(leaf)["crl"][0], _links(issuing)["crl"][0])]
        fetched_issuer = x509.load_der_x509_certificate((await http.get(_links(leaf)["ca_issuers"][0])).content)
        fetched_root = x509.load_der_x509_certificate((await http.get(_links(issuing)["ca_issuers"][0])).content)
    assert fetched_issuer == issuing and fetched_root.subject == issuing.issuer
    (tmp_path / "crls.pem").write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in crls))
    verified = run_openssl("verify", "-crl_check_all", "-CAfile", str(coordinator.ca_path), "-untrusted",
                           str(target / "chain.pem"), "-CRLfile", str(tmp_path / "crls.pem"), str(target / "cert.pem"))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    (tmp_path / "issuing.pem").write_bytes(issuing.public_bytes(serialization.Encoding.PEM))
    answer = await run_openssl_async("ocsp", "-issuer", str(coordinator.ca_path), "-cert", str(tmp_path / "issuing.pem"),
                                     "-url", _links(issuing)["ocsp"][0], "-CAfile", str(coordinator.ca_path))
    assert b"issuing.pem: good" in answer.stdout, answer.stdout + answer.stderr


async def test_with_the_pki_listener_off_every_ca_links_to_the_api_alike(nursery, tmp_path):
    from certfleet.coordinator.server import run_coordinator

    settings = Settings(data_dir=tmp_path / "coordinator", listen="127.0.0.1:0", pki_listen="off",
                        bootstrap_token=BOOTSTRAP_TOKEN, maintenance_interval=None)
    coordinator = await nursery.start(functools.partial(run_coordinator, settings, announce_token=False))
    assert coordinator.coordinator.pki_url is None
    api, _ = await admin_client(coordinator)
    issuing = x509.load_pem_x509_certificate((await api.call("issuers.get", issuer_id="iss_issuing"))
                                             .certificate_pem.encode())
    made = await api.call("issuers.create-intermediate", wire.IntermediateCreate(name="made", parent="iss_root"))
    assert _links(issuing) == _links(x509.load_pem_x509_certificate(made.certificate_pem.encode())) == {
        "crl": [f"{coordinator.url}/.well-known/pki/crl/iss_root"],
        "ocsp": [f"{coordinator.url}/.well-known/pki/ocsp/iss_root"],
        "ca_issuers": [f"{coordinator.url}/.well-known/pki/ca/iss_root"]}


async def _problem(call) -> dict:
    with pytest.raises(ApiError) as refused:
        await call
    return {"status": refused.value.status, **refused.value.problem}


async def test_a_sub_ca_must_permit_names_its_parent_permits(coordinator):
    api, _ = await admin_client(coordinator)
    parent = await api.call("issuers.create-intermediate", wire.IntermediateCreate(
        name="corp", parent="iss_root", path_length=1,
        name_constraints=wire.NameConstraints(permitted_dns=["example.test"], permitted_ip=["10.0.0.0/8"])))
    for outside in (wire.NameConstraints(permitted_dns=["example.org"]),
                    wire.NameConstraints(permitted_ip=["192.168.0.0/16"]),
                    wire.NameConstraints(permitted_dns=["shop.example.test", "example.org"])):
        refused = await _problem(api.call("issuers.create-intermediate", wire.IntermediateCreate(
            name="stray", parent=parent.id, path_length=0, name_constraints=outside)))
        assert refused["status"] == 422 and refused["type"].endswith("name-constraints"), refused
        assert "does not overlap" in refused["detail"] and "corp" in refused["detail"]
    assert [i.name for i in await api.call("issuers.list")].count("stray") == 0
    inside = await api.call("issuers.create-intermediate", wire.IntermediateCreate(
        name="shop", parent=parent.id, path_length=0,
        name_constraints=wire.NameConstraints(permitted_dns=["shop.example.test"], permitted_ip=["10.1.0.0/16"],
                                              excluded_dns=["admin.shop.example.test"])))
    assert inside.status == "active"
    # A type the parent does not constrain is the child's own business.
    emails = await api.call("issuers.create-intermediate", wire.IntermediateCreate(
        name="mail", parent=parent.id, path_length=0,
        name_constraints=wire.NameConstraints(permitted_email=["example.org"])))
    assert emails.status == "active"


async def test_an_answer_that_closes_the_connection_closes_it(coordinator):
    """HTTP/1.0 clients and ``Connection: close`` read the answer to end of file
    (nginx fetching an OCSP answer to staple does): the coordinator must close."""
    import urllib.parse

    import trio

    pki = urllib.parse.urlsplit(coordinator.coordinator.pki_url)
    for request in (b"GET /.well-known/pki/crl/iss_issuing HTTP/1.0\r\nHost: pki\r\n\r\n",
                    b"GET /.well-known/pki/ca/iss_root HTTP/1.1\r\nHost: pki\r\nConnection: close\r\n\r\n"):
        stream = await trio.open_tcp_stream(pki.hostname, pki.port)
        await stream.send_all(request)
        answer = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                answer += chunk
        await stream.aclose()
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


async def test_a_busy_pki_port_stops_the_start_in_one_line_with_nothing_created(tmp_path):
    import socket

    from certfleet.coordinator.initialize import InitializationError
    from certfleet.coordinator.server import run_coordinator

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        busy = f"127.0.0.1:{held.getsockname()[1]}"
        settings = Settings(data_dir=tmp_path / "coordinator", listen="127.0.0.1:0", pki_listen=busy,
                            bootstrap_token=BOOTSTRAP_TOKEN, maintenance_interval=None)
        with pytest.raises(InitializationError) as refused:
            await run_coordinator(settings, announce_token=False)
    message = str(refused.value)
    assert "\n" not in message and busy in message and "CERTFLEET_PKI_LISTEN" in message, message
    assert not (tmp_path / "coordinator").exists()
