"""A running agent says in one line why it cannot reach its coordinator (refused,
not TLS), not httpx's often empty text."""

from __future__ import annotations

import logging
import socket

import trio

from certfleet.agent.daemon import Agent
from tests.support import admin_client, enroll_agent


class _StopOnWarning(logging.Handler):
    """Remembers the first poll warning and stops the agent, so the loop ends without waiting out its backoff."""

    def __init__(self, agent: Agent) -> None:
        super().__init__(logging.WARNING)
        self.agent, self.messages = agent, []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self.agent._stopping.set()


async def _first_poll_warning(agent: Agent) -> str:
    handler = _StopOnWarning(agent)
    logger = logging.getLogger("certfleet.agent")
    logger.addHandler(handler)
    try:
        with trio.fail_after(30):
            await agent._poll_loop()
    finally:
        logger.removeHandler(handler)
    return handler.messages[0]


async def test_a_refused_connection_is_named_in_the_poll_warning(coordinator, tmp_path):
    api, _ = await admin_client(coordinator)
    enrolled = await enroll_agent(api, coordinator, tmp_path / "agent")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    agent = Agent(enrolled.paths, coordinator=f"https://127.0.0.1:{port}", poll_wait=0)
    warning = await _first_poll_warning(agent)
    assert f"127.0.0.1:{port}" in warning and "refused" in warning, warning


async def test_a_plain_http_port_is_named_in_the_poll_warning(coordinator, tmp_path):
    api, _ = await admin_client(coordinator)
    enrolled = await enroll_agent(api, coordinator, tmp_path / "agent")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    async def answer_plain_http() -> None:
        connection, _ = await trio.to_thread.run_sync(listener.accept)
        with connection:
            await trio.to_thread.run_sync(connection.recv, 4096)
            connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    agent = Agent(enrolled.paths, coordinator=f"https://127.0.0.1:{port}", poll_wait=0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer_plain_http)
        warning = await _first_poll_warning(agent)
    listener.close()
    assert f"127.0.0.1:{port}" in warning and "did not answer in TLS" in warning, warning
