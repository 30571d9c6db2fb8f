"""The plain-HTTP PKI listener beside the HTTPS API: the links written into issued
certificates, and one SIGTERM stopping both listeners."""

from __future__ import annotations

import re

import httpx
import pytest
from cryptography import x509

from tests.e2e.processes import AgentHost, Coordinator, wait_until

pytestmark = [pytest.mark.e2e]


def test_pki_public_url_is_written_into_certificates_and_sigterm_stops_both_listeners(tmp_path):
    coordinator = Coordinator(tmp_path, None, CERTFLEET_PKI_LISTEN="127.0.0.1:0",
                              CERTFLEET_PKI_PUBLIC_URL="http://pki.example.test:8080")
    try:
        bound = re.search(r"also on (http://\S+)", coordinator.process.output).group(1)
        agent = AgentHost(tmp_path, coordinator)
        process = agent.start()
        try:
            created = coordinator.cli("certificates", "create", "--cn", "app.example.test", "--agent",
                                      agent.agent_id, "--target-dir", str(tmp_path / "t"))
            wait_until(lambda: coordinator.certificate(created["id"])["status"] == "deployed", what="deployment")
        finally:
            process.stop()
        leaf = x509.load_pem_x509_certificate((tmp_path / "t" / "cert.pem").read_bytes())
        points = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        crl_urls = [name.value for point in points for name in point.full_name]
        access = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        assert all(url.startswith("http://pki.example.test:8080/.well-known/pki/") for url in crl_urls), crl_urls
        assert all(d.access_location.value.startswith("http://pki.example.test:8080/") for d in access)
        # The listener itself still answers on its bound address.
        path = crl_urls[0].removeprefix("http://pki.example.test:8080")
        assert httpx.get(bound + path, timeout=10).headers["content-type"] == "application/pkix-crl"
    finally:
        coordinator.process.stop()
    assert coordinator.process.popen.returncode == 0, coordinator.process.output
    assert coordinator.process.output.count("SIGTERM received") == 1
