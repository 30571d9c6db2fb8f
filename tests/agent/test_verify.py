"""Post-deploy verification against servers that are not what the target claims."""

from __future__ import annotations

import functools

import trio

from certfleet.agent.verify import verify_served
from certfleet.shared.targets import TlsCheck


async def _banner_server(banner: bytes, task_status=trio.TASK_STATUS_IGNORED) -> None:
    async def answer(stream: trio.SocketStream) -> None:
        await stream.send_all(banner)
        await trio.sleep_forever()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(answer, listeners)


async def test_a_port_that_is_not_smtp_fails_without_echoing_what_it_said(nursery):
    port = await nursery.start(functools.partial(_banner_server, b"SSH-2.0-OpenSSH_9.2 internal-host-7\r\n"))
    with trio.fail_after(30):
        served = await verify_served(TlsCheck(port=port, protocol="smtp", attempts=2), expected="0" * 64,
                                     default_name="mail.example.test", first_delay=0.01)
    assert not served.matched and served.fingerprint is None
    assert "no SMTP greeting" in served.detail and "OpenSSH" not in served.detail


async def test_a_silent_server_cannot_hold_the_agent_beyond_the_connect_timeout(nursery, autojump_clock):
    port = await nursery.start(functools.partial(_banner_server, b""))
    served = await verify_served(TlsCheck(port=port, protocol="imap", attempts=1), expected="0" * 64,
                                 default_name="mail.example.test")
    assert not served.matched and "TooSlowError" in served.detail
