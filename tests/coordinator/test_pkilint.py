"""Interop: DigiCert's pkilint (RFC 5280 / RFC 6960 linters) finds no errors in
what certfleet's local CA produces: the root, intermediates (the default issuing
CA and one with name constraints), every kind of leaf (TLS server, SPIFFE-only with
an empty subject, must-staple, short-lived), the delegated OCSP responder, a CRL and
an OCSP response, and the issuer/subject pairs of the chain.

The CA/Browser Forum linter (lint_cabf_serverauth_cert) runs on the default leaf for
one family of findings only, the revocation links (CRL distribution point and
authority information access: present, ``http``). Its other findings are
requirements for publicly-trusted CAs (reserved policy OIDs, no internal names such
as .test or 127.0.0.1, country in CA subjects, EKU in CAs)."""

from __future__ import annotations

import functools
import json
import re
import sys
import time
from pathlib import Path

import httpx
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from certfleet.shared import wire
from tests.pki_support import issue_through_agent
from tests.support import admin_client, enroll_agent

# RFC 3986 §3 with the SPIFFE ID format's limits: a lowercase trust domain, no port,
# user info, query or fragment, and non-empty path segments.
SPIFFE_ID = re.compile(r"spiffe://[a-z0-9._-]+(/[A-Za-z0-9._-]+)+")

# pkilint's console scripts live next to the interpreter running the tests.
BIN = Path(sys.executable).parent
FAILING = {"FATAL", "ERROR"}


async def _pkilint(tool: str, *options: str, document: Path, subject: Path | None = None) -> list[dict]:
    """Run one pkilint linter; return its findings (severity INFO and up) as
    ``{"severity", "code", "message", "validator", "node_path"}`` dicts.

    pkilint exits with the number of findings at or above the ``-s`` threshold (any
    severity), so the exit status alone cannot tell a NOTICE from an ERROR: the JSON
    report is parsed instead, and checked against that count."""
    argv = [str(BIN / tool), "lint", *options, "-s", "INFO", "-f", "JSON", str(document)]
    if subject is not None:  # lint_pkix_signer_signee_cert_chain takes the issuer, then the subject
        argv.append(str(subject))
    completed = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
    output = (completed.stdout + completed.stderr).decode()
    try:
        report = json.loads(completed.stdout)
    except ValueError:
        pytest.fail(f"{tool} did not produce a report for {document.name} (exit {completed.returncode}):\n{output}")
    findings = [{**finding, "validator": result["validator"], "node_path": result["node_path"]}
                for result in report["results"] for finding in result["finding_descriptions"]]
    assert completed.returncode == min(len(findings), 255), f"{tool} {document.name}:\n{output}"
    return findings


def _errors(findings: list[dict]) -> list[dict]:
    return [finding for finding in findings if finding["severity"] in FAILING]


def _show(findings: list[dict]) -> str:
    return "\n".join(f'{f["severity"]} {f["code"]} ({f["validator"]} @ {f["node_path"]}){": " + f["message"] if f["message"] else ""}'
                     for f in findings) or "(no findings)"


@pytest.mark.parametrize("database_url", [None])
async def test_pkilint_finds_no_errors_in_the_local_ca_objects(coordinator, tmp_path):
    api, _ = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / "agent")
    target = tmp_path / "target"
    info = await issue_through_agent(api, agent, ["www.example.test", "api.example.test"], target)
    assert info.status == "deployed"

    files = tmp_path / "lint"
    files.mkdir()
    # The default root (path length unlimited) and the issuing CA that signed the leaf.
    root = files / "root.pem"
    root.write_bytes(coordinator.ca_path.read_bytes())
    assert len(x509.load_pem_x509_certificates(root.read_bytes())) == 1
    chain = x509.load_pem_x509_certificates((target / "chain.pem").read_bytes())
    issuing_cert, leaf_cert = chain[0], x509.load_pem_x509_certificate((target / "cert.pem").read_bytes())
    assert leaf_cert.issuer == issuing_cert.subject
    issuing = files / "issuing.pem"
    issuing.write_bytes(issuing_cert.public_bytes(serialization.Encoding.PEM))
    leaf = files / "leaf.pem"
    leaf.write_bytes((target / "cert.pem").read_bytes())

    # A second intermediate under the root, with path length 0 and name constraints.
    created = await api.call("issuers.create-intermediate", wire.IntermediateCreate(
        name="constrained", parent="iss_root", path_length=0,
        name_constraints=wire.NameConstraints(permitted_dns=["example.test"], excluded_dns=["secret.example.test"],
                                              permitted_ip=["10.0.0.0/8"], excluded_ip=["10.9.0.0/16"],
                                              permitted_email=["example.test"])))
    constrained = files / "constrained.pem"
    constrained.write_text((await api.call("issuers.get", issuer_id=created.id)).certificate_pem)
    x509.load_pem_x509_certificate(constrained.read_bytes()).extensions.get_extension_for_class(x509.NameConstraints)

    # The other kinds of leaf: SPIFFE-only (no subject), must-staple, short-lived.
    spiffe_info = await issue_through_agent(api, agent, ["spiffe://example.test/ns/prod/sa/web"], tmp_path / "spiffe")
    assert spiffe_info.status == "deployed"
    spiffe = files / "spiffe.pem"
    spiffe.write_bytes((tmp_path / "spiffe" / "cert.pem").read_bytes())
    spiffe_cert = x509.load_pem_x509_certificate(spiffe.read_bytes())
    assert len(spiffe_cert.subject) == 0
    assert spiffe_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical
    await api.call("profiles.create", wire.ProfileCreate(name="stapled", policy=wire.ProfilePolicy(must_staple=True)))
    await api.call("profiles.create", wire.ProfileCreate(name="brief", policy=wire.ProfilePolicy(
        short_lived=True, max_lifetime_seconds=7 * 86400)))
    stapled, brief = files / "stapled.pem", files / "brief.pem"
    for profile, path in (("stapled", stapled), ("brief", brief)):
        issued = await issue_through_agent(api, agent, [f"{profile}.example.test"], tmp_path / profile,
                                           profile=profile)
        assert issued.status == "deployed"
        path.write_bytes((tmp_path / profile / "cert.pem").read_bytes())

    # A CRL listing the revoked leaf.
    await api.call("certificates.revoke", wire.RevokeRequest(reason="key-compromise"), certificate_id=info.id)
    coordinator.coordinator._clock = lambda: time.time() + 10
    await coordinator.coordinator.refresh_crls()
    pki_url = coordinator.coordinator.pki_url
    ocsp_request = (ocsp.OCSPRequestBuilder().add_certificate(leaf_cert, issuing_cert, hashes.SHA1()).build()
                    .public_bytes(serialization.Encoding.DER))
    async with httpx.AsyncClient(base_url=pki_url, timeout=30) as http:
        crl_response = await http.get("/.well-known/pki/crl/iss_issuing")
        ocsp_response = await http.post("/.well-known/pki/ocsp/iss_issuing", content=ocsp_request,
                                         headers={"Content-Type": "application/ocsp-request"})
    assert crl_response.status_code == 200 and ocsp_response.status_code == 200
    crl = files / "crl.der"
    crl.write_bytes(crl_response.content)
    assert x509.load_der_x509_crl(crl.read_bytes()).get_revoked_certificate_by_serial_number(leaf_cert.serial_number)
    response = files / "ocsp.der"
    response.write_bytes(ocsp_response.content)
    assert ocsp.load_der_ocsp_response(response.read_bytes()).certificate_status == ocsp.OCSPCertStatus.REVOKED
    responder = files / "responder.pem"
    responder.write_bytes(ocsp.load_der_ocsp_response(response.read_bytes()).certificates[0].public_bytes(
        serialization.Encoding.PEM))

    results = {
        "root certificate": await _pkilint("lint_pkix_cert", document=root),
        "issuing intermediate": await _pkilint("lint_pkix_cert", document=issuing),
        "name-constrained intermediate": await _pkilint("lint_pkix_cert", document=constrained),
        "TLS server leaf": await _pkilint("lint_pkix_cert", document=leaf),
        "SPIFFE-only leaf": await _pkilint("lint_pkix_cert", document=spiffe),
        "must-staple leaf": await _pkilint("lint_pkix_cert", document=stapled),
        "short-lived leaf": await _pkilint("lint_pkix_cert", document=brief),
        "OCSP responder": await _pkilint("lint_pkix_cert", document=responder),
        "CRL": await _pkilint("lint_crl", "-t", "CRL", "-p", "PKIX", document=crl),
        "OCSP response": await _pkilint("lint_ocsp_response", document=response),
        "root -> issuing chain": await _pkilint("lint_pkix_signer_signee_cert_chain", document=root, subject=issuing),
        "root -> constrained chain": await _pkilint("lint_pkix_signer_signee_cert_chain", document=root,
                                                    subject=constrained),
        "issuing -> leaf chain": await _pkilint("lint_pkix_signer_signee_cert_chain", document=issuing, subject=leaf),
        "issuing -> SPIFFE-only chain": await _pkilint("lint_pkix_signer_signee_cert_chain", document=issuing,
                                                       subject=spiffe),
    }
    report = "\n\n".join(f"== {name}\n{_show(findings)}" for name, findings in results.items())
    print(report)
    assert not any(_errors(findings) for findings in results.values() if findings is not results["SPIFFE-only leaf"]), \
        report
    # pkilint checks URIs with the ``validators`` package, which knows a fixed list
    # of schemes (http, https, ftp, ...) and so rejects every spiffe:// URI; the
    # SPIFFE ID is checked against RFC 3986 and the SPIFFE ID format here instead.
    spiffe_errors = _errors(results["SPIFFE-only leaf"])
    assert [f["code"] for f in spiffe_errors] in ([], ["pkix.invalid_uri_syntax"]), report
    assert all("spiffe://example.test/ns/prod/sa/web" in f["message"] for f in spiffe_errors), report
    (uri,) = spiffe_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier)
    assert SPIFFE_ID.fullmatch(uri), uri



REVOCATION_LINK_WORDS = ("crl", "ocsp", "authority_information_access", "aia", "distribution", "uri", "http")


async def test_the_cabf_linter_finds_the_default_leafs_revocation_links_in_order(nursery, tmp_path):
    """A coordinator as deployed, with a public name for its PKI listener (the linter
    rightly calls 127.0.0.1 an internal name) and nothing else configured."""
    from certfleet.coordinator.server import run_coordinator
    from certfleet.coordinator.settings import Settings
    from tests.support import BOOTSTRAP_TOKEN

    settings = Settings(data_dir=tmp_path / "coordinator", listen="127.0.0.1:0", bootstrap_token=BOOTSTRAP_TOKEN,
                        pki_public_url="http://pki.example.com", maintenance_interval=None)
    coordinator = await nursery.start(functools.partial(run_coordinator, settings, announce_token=False))
    api, _ = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / "agent")
    info = await issue_through_agent(api, agent, ["www.example.test"], tmp_path / "target")
    assert info.status == "deployed"
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes((tmp_path / "target" / "cert.pem").read_bytes())
    findings = await _pkilint("lint_cabf_serverauth_cert", "-t", "DV-FINAL-CERTIFICATE", document=leaf)
    about_links = [f for f in _errors(findings)
                   if any(word in f"{f['code']} {f['validator']} {f['node_path']}".lower()
                          for word in REVOCATION_LINK_WORDS)]
    print(_show(findings))
    assert not about_links, _show(about_links)
    # The links themselves: plain http, as BR §7.1.2.7.7 and §7.1.2.11.2 ask.
    certificate = x509.load_pem_x509_certificate(leaf.read_bytes())
    points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    access = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    urls = [name.value for point in points for name in point.full_name] + [d.access_location.value for d in access]
    assert len(urls) == 3 and all(url.startswith("http://") for url in urls), urls
