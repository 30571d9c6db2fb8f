"""nginx, Apache httpd and HAProxy targets against real private instances of each
server: what ``openssl s_client`` is shown after a deployment, a failed config test, a
failed reload and a failed post-deploy check, and that an identical certificate is
neither written nor reloaded; then a failed nginx deployment as the coordinator sees it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from certfleet.agent.deployers import Bundle, DeployError
from certfleet.shared import wire
from certfleet.shared.targets import NginxTarget
from tests.deployers.mail_servers import openssl_served, wait_served, write_script
from tests.deployers.web_servers import KINDS, SERVER_NAME, WebServer, running_web_server
from tests.support import admin_client, enroll_agent


@pytest.fixture(params=KINDS)
def server(request, tmp_path, issuer) -> Iterator[tuple[WebServer, Bundle]]:
    """A running server already serving a first certificate, and that certificate."""
    first = issuer.issue(SERVER_NAME)
    with running_web_server(request.param, tmp_path / "server", first) as running:
        yield running, first


async def served(server: WebServer, expected: str) -> str | None:
    """What ``openssl s_client`` sees, polling a moment for ``expected`` (a graceful
    reload may hand one more connection to an old worker)."""
    return await wait_served(server.port, expected, server_name=SERVER_NAME)


async def test_deployed_certificate_is_served(server, deployers, issuer):
    web, first = server
    assert await openssl_served(web.port, server_name=SERVER_NAME) == first.fingerprint_sha256
    ownership = web.ownership()
    new = issuer.issue(SERVER_NAME)

    outcome = await deployers.deploy("order-1", web.target(), new, server_name=SERVER_NAME)

    assert outcome.reloaded and not outcome.skipped
    assert outcome.served_fingerprint == new.fingerprint_sha256
    assert web.reloads() == 1
    if web.key is None:
        assert web.contents() == {web.certificate: new.certificate + new.chain + new.private_key}
    else:
        assert web.contents() == {web.certificate: new.certificate + new.chain, web.key: new.private_key}
    assert web.ownership() == ownership  # existing files keep their owner, group and mode
    assert await served(web, new.fingerprint_sha256) == new.fingerprint_sha256


async def test_failed_config_test_restores_files_and_keeps_serving(server, deployers, issuer):
    web, first = server
    before, ownership = web.contents(), web.ownership()
    web.break_config()

    with pytest.raises(DeployError) as failed:
        await deployers.deploy("order-1", web.target(), issuer.issue(SERVER_NAME), server_name=SERVER_NAME)

    assert failed.value.step == "config-test" and failed.value.rolled_back
    assert "previous files restored" in failed.value.detail
    assert "configuration itself is broken" in failed.value.detail  # so it was not reloaded
    assert web.contents() == before
    assert web.ownership() == ownership
    assert web.reloads() == 0
    assert await openssl_served(web.port, server_name=SERVER_NAME) == first.fingerprint_sha256


async def test_failed_reload_restores_files_and_keeps_serving(server, deployers, issuer, tmp_path):
    web, first = server
    before, ownership = web.contents(), web.ownership()
    reload = write_script(tmp_path / "reload-fails.sh", "echo 'reload refused by the test' >&2\nexit 3\n")

    with pytest.raises(DeployError) as failed:
        await deployers.deploy("order-1", web.target(reload_command=reload), issuer.issue(SERVER_NAME),
                               server_name=SERVER_NAME)

    assert failed.value.step == "reload" and failed.value.rolled_back
    assert "reload refused by the test" in failed.value.detail
    assert "previous files restored" in failed.value.detail
    assert web.contents() == before
    assert web.ownership() == ownership
    assert web.reloads() == 0
    assert await openssl_served(web.port, server_name=SERVER_NAME) == first.fingerprint_sha256


async def test_server_still_serving_the_old_certificate_fails_verification(server, deployers, issuer):
    web, first = server
    before, ownership = web.contents(), web.ownership()
    new = issuer.issue(SERVER_NAME)
    # A reload that does nothing: the server never loads the new files.
    target = web.target(reload_command=["/bin/true"], attempts=2)

    with pytest.raises(DeployError) as failed:
        await deployers.deploy("order-1", target, new, server_name=SERVER_NAME)

    assert failed.value.step == "verify" and failed.value.rolled_back
    assert failed.value.served_fingerprint == first.fingerprint_sha256
    assert new.fingerprint_sha256 in failed.value.detail
    assert web.contents() == before
    assert web.ownership() == ownership
    assert web.reloads() == 0
    assert await openssl_served(web.port, server_name=SERVER_NAME) == first.fingerprint_sha256


async def test_same_certificate_again_writes_and_reloads_nothing(server, deployers, issuer):
    web, _ = server
    new = issuer.issue(SERVER_NAME)
    await deployers.deploy("order-1", web.target(), new, server_name=SERVER_NAME)
    assert web.reloads() == 1
    written = web.identity()

    again = await deployers.deploy("order-2", web.target(), new, server_name=SERVER_NAME)

    assert again.skipped and not again.reloaded and again.changed == ()
    assert again.fingerprint_sha256 == new.fingerprint_sha256
    assert web.identity() == written
    assert web.reloads() == 1
    assert await served(web, new.fingerprint_sha256) == new.fingerprint_sha256


# --- through the coordinator ----------------------------------------------------------


async def test_coordinator_records_a_rolled_back_nginx_deployment(coordinator, tmp_path, issuer):
    first = issuer.issue(SERVER_NAME)
    with running_web_server("nginx", tmp_path / "server", first) as web:
        before = web.contents()
        web.break_config()
        api, _ = await admin_client(coordinator)
        agent = await enroll_agent(api, coordinator, tmp_path / "agent")
        target = web.target()
        assert isinstance(target, NginxTarget)
        created = await api.call("certificates.create", wire.CertificateCreate(
            common_name=SERVER_NAME, agent_id=agent.config.agent_id, target=target))

        await agent.poll_once()
        await agent.flush_outbox()

        info = await api.call("certificates.get", certificate_id=created.id)
        assert info.status == "failed", info
        assert "config test failed" in info.last_error
        assert "certfleet_no_such_directive" in info.last_error  # nginx's own words
        assert "previous files restored" in info.last_error
        (job,) = await api.call("jobs.list", query={"certificate_id": created.id})
        assert job.attempts == 1
        assert "config test failed" in job.last_error and "previous files restored" in job.last_error
        named = await api.call("targets.get", target_id=info.target_id)
        assert named.last_outcome == "rolled-back"
        assert (named.counters.attempts, named.counters.config_test_failures, named.counters.rollbacks) == (1, 1, 1)
        assert web.contents() == before
        assert await openssl_served(web.port, server_name=SERVER_NAME) == first.fingerprint_sha256
