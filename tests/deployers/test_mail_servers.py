"""Postfix, Dovecot and Caddy targets against real private instances of each server:
what ``openssl s_client`` is shown after a deployment, a failed config test or a
failed reload, and that an identical certificate is neither written nor reloaded."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from certfleet.agent.deployers import Bundle, DeployError
from certfleet.shared.targets import CaddyTarget, DovecotTarget, PostfixTarget, TlsCheck
from tests.deployers.mail_servers import (
    counting_reload,
    openssl_served,
    reload_count,
    reload_failing_once,
    running_caddy,
    running_dovecot,
    running_postfix,
    wait_served,
)

MAIL_NAME = "mail.certfleet.test"
SITE_NAME = "www.certfleet.test"


@dataclass
class MailServer:
    """One running server and how to aim a target and the independent client at it."""

    certificate: Path
    key: Path
    target: Callable[..., PostfixTarget | DovecotTarget]
    reload_command: list[str]
    break_config: Callable[[], None]
    clients: list[dict]
    """``openssl_served`` options for every listener that should show the leaf."""

    def files(self) -> dict[Path, bytes]:
        return {path: path.read_bytes() for path in (self.certificate, self.key)}

    async def served(self, expected: str) -> list[str | None]:
        """What each listener shows, polling a moment for ``expected``."""
        return [await wait_served(expected=expected, **client) for client in self.clients]


@pytest.fixture(params=["postfix", "dovecot-imaps", "dovecot-imap-starttls"])
def mail(request, tmp_path, issuer) -> Iterator[tuple[MailServer, Bundle]]:
    """A running Postfix or Dovecot already serving a first certificate, and that
    certificate; the target's post-deploy check speaks the listener's protocol."""
    first = issuer.issue(MAIL_NAME)
    if request.param == "postfix":
        with running_postfix(tmp_path, first) as postfix:
            def target(**settings) -> PostfixTarget:
                return PostfixTarget(**{
                    "certificate_path": str(postfix.certificate), "key_path": str(postfix.key),
                    "test_command": postfix.test_command, "reload_command": postfix.reload_command,
                    "verify": TlsCheck(port=postfix.port, protocol="smtp"), **settings})

            yield MailServer(postfix.certificate, postfix.key, target, postfix.reload_command,
                             postfix.break_config, [{"port": postfix.port, "starttls": "smtp"}]), first
        return
    with running_dovecot(tmp_path, first) as dovecot:
        check = (TlsCheck(port=dovecot.imaps_port, protocol="tls") if request.param == "dovecot-imaps"
                 else TlsCheck(port=dovecot.imap_port, protocol="imap"))

        def target(**settings) -> DovecotTarget:
            return DovecotTarget(**{
                "certificate_path": str(dovecot.certificate), "key_path": str(dovecot.key),
                "test_command": dovecot.test_command, "reload_command": dovecot.reload_command,
                "verify": check, **settings})

        yield MailServer(dovecot.certificate, dovecot.key, target, dovecot.reload_command,
                         dovecot.break_config,
                         [{"port": dovecot.imaps_port}, {"port": dovecot.imap_port, "starttls": "imap"}]), first


async def test_deployed_certificate_is_served(mail, deployers, issuer):
    server, first = mail
    assert await server.served(first.fingerprint_sha256) == [first.fingerprint_sha256] * len(server.clients)
    new = issuer.issue(MAIL_NAME)

    outcome = await deployers.deploy("order-1", server.target(), new, server_name=MAIL_NAME)

    assert outcome.reloaded and not outcome.skipped
    assert outcome.served_fingerprint == new.fingerprint_sha256
    assert server.files() == {server.certificate: new.certificate + new.chain, server.key: new.private_key}
    assert server.key.stat().st_mode & 0o777 == 0o600
    assert await server.served(new.fingerprint_sha256) == [new.fingerprint_sha256] * len(server.clients)


async def test_failed_config_test_restores_files_and_keeps_serving(mail, deployers, issuer):
    server, first = mail
    before = server.files()
    server.break_config()

    with pytest.raises(DeployError) as failed:
        await deployers.deploy("order-1", server.target(), issuer.issue(MAIL_NAME), server_name=MAIL_NAME)

    assert failed.value.step == "config-test" and failed.value.rolled_back
    assert "previous files restored" in failed.value.detail
    assert server.files() == before
    assert server.key.stat().st_mode & 0o777 == 0o600
    assert await server.served(first.fingerprint_sha256) == [first.fingerprint_sha256] * len(server.clients)


async def test_failed_reload_restores_files_and_reloads_them(mail, deployers, issuer, tmp_path):
    server, first = mail
    before = server.files()
    # The reload applies the new files but reports failure, so rollback must reload again.
    reload = reload_failing_once(tmp_path / "reload.sh", server.reload_command)

    with pytest.raises(DeployError) as failed:
        await deployers.deploy("order-1", server.target(reload_command=reload), issuer.issue(MAIL_NAME),
                               server_name=MAIL_NAME)

    assert failed.value.step == "reload" and failed.value.rolled_back
    assert "reload after restore succeeded" in failed.value.detail
    assert server.files() == before
    assert await server.served(first.fingerprint_sha256) == [first.fingerprint_sha256] * len(server.clients)


async def test_same_certificate_again_writes_and_reloads_nothing(mail, deployers, issuer, tmp_path):
    server, _ = mail
    count = tmp_path / "reloads.txt"
    target = server.target(reload_command=counting_reload(tmp_path / "reload.sh", count, server.reload_command))
    new = issuer.issue(MAIL_NAME)
    await deployers.deploy("order-1", target, new, server_name=MAIL_NAME)
    assert reload_count(count) == 1
    written = {path: (path.stat().st_ino, path.stat().st_mtime_ns) for path in (server.certificate, server.key)}

    again = await deployers.deploy("order-2", target, new, server_name=MAIL_NAME)

    assert again.skipped and not again.reloaded and again.changed == ()
    assert reload_count(count) == 1
    assert {path: (path.stat().st_ino, path.stat().st_mtime_ns) for path in written} == written
    assert await server.served(new.fingerprint_sha256) == [new.fingerprint_sha256] * len(server.clients)


# --- Caddy ----------------------------------------------------------------------------


@pytest.fixture
def caddy(tmp_path, issuer):
    first = issuer.issue(SITE_NAME)
    with running_caddy(tmp_path, first, SITE_NAME) as server:
        yield server, first


def caddy_target(server, **settings) -> CaddyTarget:
    """The kind's default commands, aimed at this Caddyfile and admin address."""
    test = [str(server.caddyfile) if word == "/etc/caddy/Caddyfile" else word for word in CaddyTarget.DEFAULT_TEST]
    reload = [str(server.caddyfile) if word == "/etc/caddy/Caddyfile" else word
              for word in CaddyTarget.DEFAULT_RELOAD] + ["--address", server.admin]
    return CaddyTarget(**{"certificate_path": str(server.certificate), "key_path": str(server.key),
                          "test_command": test, "reload_command": reload, "verify": TlsCheck(port=server.port),
                          **settings})


async def test_caddy_serves_deployed_certificate(caddy, deployers, issuer):
    server, first = caddy
    assert await openssl_served(server.port, server_name=SITE_NAME) == first.fingerprint_sha256
    new = issuer.issue(SITE_NAME)

    # The Caddyfile does not change, only the files it names: the reload must still load them.
    outcome = await deployers.deploy("order-1", caddy_target(server), new, server_name=SITE_NAME)

    assert outcome.reloaded and outcome.served_fingerprint == new.fingerprint_sha256
    assert server.certificate.read_bytes() == new.certificate + new.chain
    assert await wait_served(server.port, new.fingerprint_sha256, server_name=SITE_NAME) == new.fingerprint_sha256


async def test_caddy_same_certificate_again_writes_and_reloads_nothing(caddy, deployers, issuer, tmp_path):
    server, _ = caddy
    count = tmp_path / "reloads.txt"
    real_reload = list(caddy_target(server).reload_command)
    target = caddy_target(server, reload_command=counting_reload(tmp_path / "reload.sh", count, real_reload))
    new = issuer.issue(SITE_NAME)
    await deployers.deploy("order-1", target, new, server_name=SITE_NAME)
    written = {path: (path.stat().st_ino, path.stat().st_mtime_ns) for path in (server.certificate, server.key)}

    again = await deployers.deploy("order-2", target, new, server_name=SITE_NAME)

    assert again.skipped and not again.reloaded
    assert reload_count(count) == 1
    assert {path: (path.stat().st_ino, path.stat().st_mtime_ns) for path in written} == written
    assert await openssl_served(server.port, server_name=SITE_NAME) == new.fingerprint_sha256
