"""Post-deploy verification: is the certificate we just deployed the one being served?

The agent connects to the target's listening address the way a client would (SNI set,
STARTTLS spoken where the protocol needs it: RFC 3207 for SMTP, RFC 9051 §6.2.1 for
IMAP), reads the leaf the server presents and compares its SHA-256 with the one it
deployed. Trust is not the question here (the chain is checked at issuance), so the
peer is not validated; only the fingerprint matters.

Servers take a moment to finish a graceful reload, so a mismatch is retried a few
times with doubling delays before it counts.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from dataclasses import dataclass

import trio

from certfleet.shared.targets import TlsCheck

__all__ = ["Served", "served_fingerprint", "verify_served"]

log = logging.getLogger("certfleet.agent.verify")

CONNECT_TIMEOUT = 10.0
LINE_LIMIT = 8192


@dataclass(frozen=True)
class Served:
    matched: bool
    fingerprint: str | None
    """The SHA-256 of the leaf seen, or ``None`` when nothing could be read."""
    detail: str


def _client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # we compare the fingerprint, not the trust
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class _Lines:
    """Line reads over a plain stream, for the STARTTLS preamble."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            if len(self.buffer) > LINE_LIMIT:
                raise ConnectionError("the server sent an over-long line")
            chunk = await self.stream.receive_some(4096)
            if not chunk:
                raise ConnectionError("the server closed the connection during STARTTLS")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    async def smtp_reply(self) -> bytes:
        """A whole SMTP reply (RFC 5321 §4.2: ``250-`` continues, ``250 `` ends)."""
        while True:
            line = await self.line()
            if not (line[:3].isdigit() and line[3:4] == b"-"):
                return line


def _code(reply: bytes) -> str:
    """Only the reply code: whatever else a server says (an SSH banner, say, if the
    port is not what the target claims) does not travel to the coordinator."""
    code = reply[:3]
    return code.decode() if code.isdigit() else "something else"


async def _starttls(stream: trio.SocketStream, protocol: str) -> None:
    lines = _Lines(stream)
    if protocol == "smtp":
        greeting = await lines.smtp_reply()
        if not greeting.startswith(b"220"):
            raise ConnectionError(f"no SMTP greeting (the server answered with {_code(greeting)})")
        await stream.send_all(b"EHLO certfleet-agent.invalid\r\n")
        if not (await lines.smtp_reply()).startswith(b"250"):
            raise ConnectionError("the SMTP server refused EHLO")
        await stream.send_all(b"STARTTLS\r\n")
        answer = await lines.smtp_reply()
        if not answer.startswith(b"220"):
            raise ConnectionError(f"the SMTP server refused STARTTLS (reply {_code(answer)})")
    elif protocol == "imap":
        greeting = await lines.line()
        if not greeting.startswith(b"* OK"):
            raise ConnectionError("no IMAP greeting (the server did not answer '* OK')")
        await stream.send_all(b"c1 STARTTLS\r\n")
        while True:
            answer = await lines.line()
            if answer.startswith(b"c1 "):
                break
        if not answer.startswith(b"c1 OK"):
            raise ConnectionError("the IMAP server refused STARTTLS")
    if lines.buffer:
        raise ConnectionError("the server sent data before the TLS handshake")


async def served_fingerprint(check: TlsCheck, server_name: str) -> str:
    """Connect once and return the SHA-256 (hex) of the leaf the server presents."""
    with trio.fail_after(CONNECT_TIMEOUT):
        stream = await trio.open_tcp_stream(check.host, check.port)
        try:
            if check.protocol != "tls":
                await _starttls(stream, check.protocol)
            tls = trio.SSLStream(stream, _client_context(), server_hostname=server_name.rstrip("."))
            await tls.do_handshake()
            der = tls.getpeercert(binary_form=True)
            await tls.aclose()
        finally:
            await stream.aclose()
    if not der:
        raise ConnectionError("the server presented no certificate")
    return hashlib.sha256(der).hexdigest()


async def verify_served(check: TlsCheck, *, expected: str, default_name: str,
                        first_delay: float = 0.2) -> Served:
    """Try up to ``check.attempts`` times to see ``expected`` served."""
    name = check.server_name or default_name
    seen: str | None = None
    problem = ""
    delay = first_delay
    for attempt in range(check.attempts):
        if attempt:
            await trio.sleep(delay)
            delay *= 2
        try:
            seen = await served_fingerprint(check, name)
        except (OSError, ConnectionError, ssl.SSLError, trio.BrokenResourceError, trio.TooSlowError) as exc:
            problem = f"cannot read the served certificate from {check.host}:{check.port}: {str(exc) or type(exc).__name__}"
            continue
        if seen == expected:
            return Served(True, seen, f"{check.host}:{check.port} serves {seen}")
        problem = f"{check.host}:{check.port} (SNI {name}) serves {seen}, not the deployed {expected}"
    log.warning("verification failed after %d attempts: %s", check.attempts, problem)
    return Served(False, seen, problem)
