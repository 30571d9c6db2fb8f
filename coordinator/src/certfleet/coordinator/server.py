"""Serving the coordinator: hypercorn's trio worker, HTTPS with TLS 1.3 only."""

from __future__ import annotations

import errno
import functools
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from hypercorn.utils import repr_socket_addr

from certfleet.shared.pki import certificate_fingerprint

from .agent_installer import AgentInstaller, checkout_root
from .http import create_app
from .initialize import InitializationError, announce_bootstrap_token, bootstrap_pending, ensure_tls, initialize
from .leadership import Leadership
from .service import Coordinator
from .settings import Settings, split_host_port
from .storage import open_database

__all__ = ["Running", "TLS13Config", "run_coordinator"]

log = logging.getLogger("certfleet.server")


class _AlertFlushingSSLObject(ssl.SSLObject):
    """A server-side TLS object whose failed handshake lets its fatal alert out.

    When OpenSSL refuses a handshake (a TLS 1.2-only client gets ``protocol_version``,
    RFC 8446 §6.2) it writes the alert into the outgoing memory BIO and then raises.
    trio's ``SSLStream`` marks the stream broken on that raise without sending what
    the BIO holds, so the client saw the connection close with no reason given. Here
    the failure is first reported as "want read": trio sends the pending alert, calls
    again, and then gets the error."""

    _outgoing: ssl.MemoryBIO | None = None
    _failure: ssl.SSLError | None = None

    def do_handshake(self) -> None:
        if self._failure is not None:
            raise self._failure
        try:
            super().do_handshake()
        except ssl.SSLWantReadError:
            raise
        except ssl.SSLError as exc:
            if self._outgoing is None or not self._outgoing.pending:
                raise
            self._failure = exc
            raise ssl.SSLWantReadError("a fatal alert to send before failing") from exc


class _AlertFlushingContext(ssl.SSLContext):
    """Hands :class:`_AlertFlushingSSLObject` its outgoing BIO (``wrap_bio`` is how
    trio makes each connection's TLS object)."""

    sslobject_class = _AlertFlushingSSLObject

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, *args: object,
                 **kwargs: object) -> ssl.SSLObject:
        wrapped = super().wrap_bio(incoming, outgoing, *args, **kwargs)  # type: ignore[arg-type]
        wrapped._outgoing = outgoing  # type: ignore[attr-defined]  # sslobject_class above
        return wrapped


class TLS13Config(Config):
    """Hypercorn pins TLS 1.2 as its minimum; certfleet accepts TLS 1.3 only."""

    def create_ssl_context(self) -> ssl.SSLContext | None:
        if not self.ssl_enabled:
            return None
        context = _AlertFlushingContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.options |= ssl.OP_NO_COMPRESSION
        context.set_alpn_protocols(self.alpn_protocols)
        context.load_cert_chain(certfile=self.certfile, keyfile=self.keyfile)
        return context


@dataclass(frozen=True)
class Running:
    url: str
    ca_path: Path
    coordinator: Coordinator


async def _maintenance(coordinator: Coordinator, leadership: Leadership, interval: float) -> None:
    """Periodic upkeep, on the leader only: CRLs that are due (debounced after
    revocations, refreshed before they go stale), approvals that expired,
    retirements that drained, spent agent token ids, renewals that are due."""
    async with leadership.held():
        while True:
            await leadership.wait_leadership()
            while await leadership.still_leading():
                try:
                    await coordinator.refresh_crls()
                    await coordinator.expire_pending_approvals()
                    await coordinator.finish_drained_retirements()
                    await coordinator.prune_used_token_ids()
                    await coordinator.start_due_renewals()
                    await coordinator.queue_scheduled_scans()
                    await coordinator.advance_jobs()
                    await coordinator.scan_for_alerts()
                    await coordinator.deliver_notifications()
                except Exception:  # keep the loop alive; the next round retries
                    log.exception("maintenance round failed")
                await trio.sleep(interval)


def _bind(address: str, *, malformed: str, cannot: Callable[[str], str],
          in_use: str | None = None) -> socket.socket:
    """A listener's socket for ``address`` (``HOST:PORT``), bound (not yet listening)
    as hypercorn would bind it.

    Raises :class:`InitializationError` in one line: ``malformed`` when the address is
    not ``HOST:PORT``, ``in_use`` (if given) when the port is taken, else
    ``cannot(reason)`` when it cannot be bound."""
    host, port_text = split_host_port(address)
    try:
        port = int(port_text)
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    except (ValueError, OSError):
        raise InitializationError(malformed) from None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if in_use is not None and exc.errno == errno.EADDRINUSE:
            raise InitializationError(in_use) from None
        raise InitializationError(cannot(str(exc.strerror or exc))) from None
    return sock


def _bind_api(listen: str) -> socket.socket:
    """The HTTPS listener's bound socket (see :func:`_bind`)."""
    return _bind(listen, malformed=f"--listen {listen!r} is not HOST:PORT (e.g. 127.0.0.1:8443)",
                 in_use=f"{listen} is in use", cannot=lambda reason: f"cannot listen on {listen}: {reason}")


async def run_coordinator(
    settings: Settings,
    *,
    announce_token: bool = True,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Initialize (first start) or load, then serve until cancelled.

    ``task_status.started`` receives the bound URL, so callers may listen on port 0.
    When ``shutdown_trigger`` returns, the server stops accepting connections and
    gives requests in flight ``graceful_timeout`` seconds to finish.
    """
    # The listeners are bound before anything is created or printed: a busy port stops
    # the start with nothing to undo, and no bootstrap token is announced and lost.
    api_socket: socket.socket | None = _bind_api(settings.listen)
    pki_socket = database = None
    try:
        # The PKI listener's address goes into the CA certificates made on first
        # start, so it is bound before them (port 0 tells its port only once bound).
        pki_socket, pki_url = _bind_pki(settings)
        public_url = settings.public_url or f"https://{repr_socket_addr(api_socket.family, api_socket.getsockname())}"
        database = await trio.to_thread.run_sync(open_database, settings.database_url, settings.data_dir)
        now = int(time.time())
        # The rule of Coordinator.pki_base(), which has no coordinator to ask yet.
        keys = await initialize(settings, database, now=now, pki_base=(pki_url or public_url).rstrip("/"))
        cert_path, key_path = ensure_tls(settings, keys, now)
        coordinator = Coordinator(database, keys, work_order_ttl=settings.work_order_ttl)
        coordinator.scan_interval = settings.discovery_scan_interval
        config = TLS13Config()
        # Hypercorn owns the socket from here and closes it.
        config.bind = [f"fd://{api_socket.detach()}"]
        api_socket = None
        # HTTP/1.1 only: nothing here needs HTTP/2, and hypercorn's HTTP/2 stream
        # handling fails the whole server when a client keeps sending a body the
        # application already refused (an oversized upload).
        config.alpn_protocols = ["http/1.1"]
        config.certfile, config.keyfile = str(cert_path), str(key_path)
        config.accesslog = None
        config.errorlog = logging.getLogger("hypercorn.error")
        config.graceful_timeout = 5
        # One trigger for both listeners: a single SIGTERM stops them all.
        stopping = trio.Event()
        trigger = None if shutdown_trigger is None else stopping.wait
        async with trio.open_nursery() as upkeep:
            if shutdown_trigger is not None:
                async def stop_on_trigger() -> None:
                    await shutdown_trigger()
                    stopping.set()

                upkeep.start_soon(stop_on_trigger)
            upkeep.start_soon(coordinator.wake_polls_for_queued_orders)
            if settings.maintenance_interval is not None:
                upkeep.start_soon(_maintenance, coordinator, Leadership(database, settings.database_url),
                                  settings.maintenance_interval)
            async with trio.open_nursery() as servers:
                coordinator.pki_url = pki_url
                if pki_socket is not None:
                    pki_config = Config()
                    # Hypercorn owns the socket from here and closes it.
                    pki_config.bind = [f"fd://{pki_socket.detach()}"]
                    pki_socket = None
                    pki_config.accesslog = None
                    pki_config.errorlog = config.errorlog
                    pki_config.graceful_timeout = 5
                    pki_binds = await servers.start(functools.partial(
                        serve, closing_after_response(create_app(coordinator, plain_http=True)), pki_config,
                        shutdown_trigger=trigger))
                    log.info("PKI endpoints (CRL, OCSP, CA certificates) also on %s", pki_binds[0])
                installer = AgentInstaller(settings.data_dir, ca_fingerprint=certificate_fingerprint(keys.root),
                                           checkout=checkout_root(), public_url=settings.public_url)
                binds = await servers.start(functools.partial(
                    serve, closing_after_response(create_app(coordinator, cors_origins=settings.cors_origins,
                                                             installer=installer)),
                    config, shutdown_trigger=trigger))
                url = binds[0]
                coordinator.public_url = public_url
                log.info("coordinator listening on %s", url)
                # Printed only now that the start can no longer fail before it is usable.
                if keys.bootstrap_token and announce_token:
                    announce_bootstrap_token(keys.bootstrap_token)
                elif announce_token and not settings.bootstrap_token and await bootstrap_pending(database):
                    log.info("no admin yet: exchange the bootstrap token printed at first start with"
                             " `certfleet bootstrap`; lost it? `certfleet bootstrap --reissue` on this host"
                             " prints a new one")
                task_status.started(Running(url, settings.tls_dir / "ca.pem", coordinator))
            # The servers return only after a graceful shutdown; upkeep stops with them.
            upkeep.cancel_scope.cancel()
    finally:
        for unserved in (api_socket, pki_socket):
            if unserved is not None:
                unserved.close()
        if database is not None:
            with trio.CancelScope(shield=True):
                await database.close()


def closing_after_response(app: Any) -> Any:
    """The ASGI ``app`` with each ``send`` shielded from the app's own cancellation.

    quart-trio cancels a request's task as soon as the server reports the client
    gone, and hypercorn reports that from inside the last ``send`` of a response
    that must close the connection (HTTP/1.0, ``Connection: close``) — before it
    closes the socket. Cancelled there, the close never happens, and a client that
    reads to end of file hangs: nginx fetching an OCSP answer to staple does.
    """

    async def shielded(scope: Any, receive: Any, send: Any) -> None:
        async def send_shielded(message: Any) -> None:
            with trio.CancelScope(shield=True):
                await send(message)

        await app(scope, receive, send_shielded)

    return shielded


def _bind_pki(settings: Settings) -> tuple[socket.socket | None, str | None]:
    """The bound (not yet listening) socket of the plain-HTTP PKI listener and the
    base URL relying parties use for it; ``(None, pki_public_url)`` when it is off.
    Raises :class:`InitializationError` when the address cannot be bound."""
    bind = settings.pki_bind
    if bind is None:
        return None, settings.pki_public_url
    sock = _bind(bind, malformed=f"CERTFLEET_PKI_LISTEN {bind!r} is not HOST:PORT",
                 cannot=lambda reason: f"cannot listen for CRL and OCSP requests on {bind} ({reason}):"
                                       " set CERTFLEET_PKI_LISTEN to a free HOST:PORT, or to off")
    host, _ = split_host_port(bind)
    bound_port = sock.getsockname()[1]
    url_host = f"[{host}]" if ":" in host else host
    return sock, (settings.pki_public_url or f"http://{url_host}:{bound_port}").rstrip("/")
