"""Interop: a real nginx with ``ssl_stapling on`` staples the OCSP answer for a
``must-staple`` certificate (RFC 7633), fetched from the responder the certificate
names, and `openssl s_client -status` sees it. nginx fetches OCSP over plain http
only, which is why the links certfleet writes are http."""

from __future__ import annotations

import functools

import trio
from cryptography import x509

from certfleet.shared import wire
from tests.deployers.mail_servers import free_port
from tests.deployers.web_servers import SERVER_NAME, NginxServer
from tests.pki_support import issue_through_agent
from tests.support import BOOTSTRAP_TOKEN, admin_client, enroll_agent

STAPLE_TIMEOUT = 30


class StaplingNginx(NginxServer):
    """The deployer tests' private nginx, with OCSP stapling checked against the
    coordinator's root."""

    trusted: str = ""

    def write_config(self) -> None:
        super().write_config()
        config = self.config.read_text()
        config = config.replace("        return 200", f"""\
        ssl_stapling on;
        ssl_stapling_verify on;
        ssl_trusted_certificate {self.trusted};
        return 200""")
        self.config.write_text(config)


async def _stapled_status(port: int, root: str) -> str:
    # stdin at end of file: s_client closes once the handshake is done.
    completed = await trio.run_process(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername",
                                        SERVER_NAME, "-status", "-CAfile", root, "-verify_return_error"],
                                       stdin=b"", capture_stdout=True, capture_stderr=True, check=False)
    return (completed.stdout + completed.stderr).decode(errors="replace")


async def test_nginx_staples_the_ocsp_answer_of_a_must_staple_certificate(nursery, tmp_path):
    from certfleet.coordinator.server import run_coordinator
    from certfleet.coordinator.settings import Settings

    # A coordinator with nothing about its PKI configured: the links it writes by
    # default are the ones nginx must be able to use.
    settings = Settings(data_dir=tmp_path / "coordinator", listen="127.0.0.1:0", bootstrap_token=BOOTSTRAP_TOKEN,
                        maintenance_interval=None)
    coordinator = await nursery.start(functools.partial(run_coordinator, settings, announce_token=False))
    api, _ = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / "agent")
    await api.call("profiles.create", wire.ProfileCreate(name="stapled", policy=wire.ProfilePolicy(must_staple=True)))
    target = tmp_path / "target"
    info = await issue_through_agent(api, agent, [SERVER_NAME], target, profile="stapled")
    assert info.status == "deployed"
    leaf = x509.load_pem_x509_certificate((target / "cert.pem").read_bytes())
    assert leaf.extensions.get_extension_for_class(x509.TLSFeature).value == x509.TLSFeature(
        [x509.TLSFeatureType.status_request])

    site = tmp_path / "nginx"
    site.mkdir()
    server = StaplingNginx("nginx", site, free_port(), target / "fullchain.pem", target / "privkey.pem")
    server.trusted = str(coordinator.ca_path)
    server.write_config()
    await trio.to_thread.run_sync(server.start)
    try:
        # nginx fetches the answer on the first handshake, in the background, and
        # staples it from the next one on: ask again until it is there.
        with trio.move_on_after(STAPLE_TIMEOUT) as waiting:
            while "OCSP Response Status: successful" not in (output := await _stapled_status(server.port,
                                                                                               server.trusted)):
                assert "OCSP response: no response sent" in output, output
                await trio.sleep(0.05)
        assert not waiting.cancelled_caught, f"nginx stapled nothing:\n{output}\n{server.log.read_text()[-3000:]}"
        assert "Cert Status: good" in output, output
        assert "Verify return code: 0 (ok)" in output, output
    finally:
        await trio.to_thread.run_sync(server.stop)
    assert "[error]" not in server.log.read_text(errors="replace"), server.log.read_text(errors="replace")
