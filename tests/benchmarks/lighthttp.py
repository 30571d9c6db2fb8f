"""A light HTTP/1.1 client over trio: one keep-alive connection, h11 for framing.

The benchmarks hold up to tens of thousands of connections from one process on two
cores, where a full client (httpx: a pool, timeouts and an SSL context per client)
would measure itself more than the server. This one does what a client must do on
the wire — a TLS 1.3 handshake that verifies the server against a pinned CA, HTTP/1.1
framing, keep-alive — and nothing else.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import h11
import trio

__all__ = ["Connection", "ConnectionLost", "Response", "Url", "tls13_context"]

READ_SIZE = 65536


class ConnectionLost(Exception):
    """The server closed the connection before a whole response arrived."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Url:
    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> Url:
        parts = urlsplit(url)
        return cls(parts.scheme, parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80))

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"


def tls13_context(ca_path: Path) -> ssl.SSLContext:
    """Trust only ``ca_path``; TLS 1.3 only (what the agent and the CLI do)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_verify_locations(cafile=str(ca_path))
    context.set_alpn_protocols(["http/1.1"])
    return context


class Connection:
    """One connection, reopened when the server closes it. Not for concurrent use:
    one request at a time, as HTTP/1.1 without pipelining allows."""

    def __init__(self, url: Url, context: ssl.SSLContext | None) -> None:
        self.url = url
        self.context = context if url.scheme == "https" else None
        self._stream: trio.abc.Stream | None = None
        self._h11: h11.Connection | None = None
        self.connects = 0

    @property
    def open(self) -> bool:
        return self._stream is not None

    async def connect(self) -> None:
        """Open the connection; raises :class:`ConnectionLost` if the server refuses or
        drops it (a full listen backlog resets connections)."""
        try:
            tcp = await trio.open_tcp_stream(self.url.host, self.url.port)
        except OSError as exc:
            raise ConnectionLost(f"connect: {exc}") from exc
        stream: trio.abc.Stream = tcp
        if self.context is not None:
            tls = trio.SSLStream(tcp, self.context, server_hostname=self.url.host, https_compatible=True)
            try:
                await tls.do_handshake()
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                await trio.aclose_forcefully(tcp)
                raise ConnectionLost(f"TLS handshake: {exc}") from exc
            except BaseException:
                await trio.aclose_forcefully(tcp)
                raise
            stream = tls
        self._stream, self._h11 = stream, h11.Connection(h11.CLIENT)
        self.connects += 1

    async def aclose(self) -> None:
        stream, self._stream, self._h11 = self._stream, None, None
        if stream is not None:
            await trio.aclose_forcefully(stream)

    async def request(self, method: str, target: str, *, headers: list[tuple[str, str]] | None = None,
                      body: bytes = b"", content_type: str | None = None) -> Response:
        if self._stream is None:
            await self.connect()
        assert self._stream is not None and self._h11 is not None
        conn = self._h11
        all_headers = [("Host", self.url.authority), *(headers or [])]
        if content_type is not None:
            all_headers.append(("Content-Type", content_type))
        if body or method in ("POST", "PUT", "PATCH"):
            all_headers.append(("Content-Length", str(len(body))))
        data = conn.send(h11.Request(method=method, target=target, headers=all_headers))
        if body:
            data += conn.send(h11.Data(data=body))
        data += conn.send(h11.EndOfMessage())
        try:
            await self._stream.send_all(data)
            response: h11.Response | None = None
            chunks: list[bytes] = []
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await self._stream.receive_some(READ_SIZE))
                elif isinstance(event, h11.Response):
                    response = event
                elif isinstance(event, h11.Data):
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise ConnectionLost(f"{method} {target}: the server closed the connection")
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError, ConnectionLost) as exc:
            await self.aclose()
            raise ConnectionLost(str(exc) or type(exc).__name__) from exc
        except BaseException:
            # A cancelled request leaves the connection mid-message: never reuse it.
            with trio.CancelScope(shield=True):
                await self.aclose()
            raise
        assert response is not None
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            await self.aclose()
        else:
            conn.start_next_cycle()
        return Response(response.status_code,
                        {k.decode().lower(): v.decode() for k, v in response.headers}, b"".join(chunks))
