"""Reaching the coordinator: over https only, and failures a person can act on.

Every client of the coordinator sends a secret with its requests: the operator CLI
an API key, ``certfleet-agent enroll`` an enrollment token, the running agent signed
request tokens. So no client speaks to a URL that is not ``https://``, and the check
comes before any connection is opened (a typo in a URL must not leak a key).

:func:`describe_failure` turns what a failed connection raised (the standard
library's socket and TLS errors, however deeply an HTTP library wrapped them) into
one line naming the URL, what failed and what to do. Plain standard library: the
HTTP client stays the caller's business.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from urllib.parse import urlsplit

__all__ = ["InsecureUrl", "describe_failure", "display_url", "require_https"]


class InsecureUrl(ValueError):
    """The coordinator URL is not ``https://HOST…``; nothing was sent."""


def display_url(url: str) -> str:
    """``url`` as it is safe to print: without user information (which could be a
    password) and with control characters escaped."""
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        url = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    return url.encode("unicode_escape").decode("ascii")


def require_https(url: str, *, setting: str) -> str:
    """Return ``url`` if it is ``https://`` with a host; raise :class:`InsecureUrl`
    naming ``setting`` (the option or variable the URL came from) otherwise."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
    except ValueError:
        raise InsecureUrl(f"{setting} {display_url(url)!r} is not a URL: use https://HOST:PORT") from None
    if parts.scheme.lower() != "https":
        raise InsecureUrl(f"refusing {setting} {display_url(url)!r}: the coordinator is reached over https://"
                          " only (over plain http the credential would cross the network in clear):"
                          " use https://HOST:PORT")
    if not host:
        raise InsecureUrl(f"{setting} {display_url(url)!r} has no host: use https://HOST:PORT")
    return url.strip()


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything it was raised from, exception groups included."""
    pending, seen = [exc], set()
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                pending.append(linked)


# OpenSSL's reasons when the other side does not speak TLS at all (most often: an
# https:// URL aimed at a plain-HTTP port).
_NOT_TLS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "HTTP_REQUEST", "PACKET_LENGTH_TOO_LONG",
            "UNKNOWN_PROTOCOL")


def describe_failure(url: str, exc: BaseException, *, trust_hint: str,
                     timeouts: tuple[type[BaseException], ...] = ()) -> str:
    """One line for a connection to ``url`` that failed with ``exc``: DNS, refused,
    TLS verification, a protocol mismatch or no answer in time, and what to do.
    ``trust_hint`` says how to fix the trust anchor when the coordinator's certificate
    does not verify; ``timeouts`` names the caller's I/O library's timeout errors
    (under trio an HTTP timeout is not a :class:`TimeoutError`)."""
    shown = display_url(url)
    parts = urlsplit(url)
    host = parts.hostname or "?"
    try:
        port = parts.port or 443
    except ValueError:
        port = "?"
    for cause in _causes(exc):
        if isinstance(cause, socket.gaierror):
            return (f"cannot reach {shown}: DNS lookup of {host} failed ({cause.strerror}):"
                    " check the host name in the URL")
        if isinstance(cause, ConnectionRefusedError):
            return (f"cannot reach {shown}: connection refused by {host} port {port}:"
                    " is the coordinator running and listening on that address?")
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (f"cannot reach {shown}: TLS certificate verification failed"
                    f" ({cause.verify_message or cause.reason}): {trust_hint}")
        if isinstance(cause, ssl.SSLError) and (cause.reason or "") in _NOT_TLS:
            return (f"cannot reach {shown}: protocol error, the server did not answer in TLS"
                    f" ({cause.reason}): is {port} the coordinator's https port (not its plain-HTTP PKI port)?")
        if isinstance(cause, ssl.SSLError):
            return (f"cannot reach {shown}: TLS handshake failed ({cause.reason or cause}):"
                    " the coordinator speaks TLS 1.3; check that the URL names it")
        if isinstance(cause, (TimeoutError, socket.timeout, *timeouts)):
            return f"cannot reach {shown}: no answer in time: check the address and any firewall in between"
    for cause in _causes(exc):
        if isinstance(cause, OSError) and cause.strerror:
            return f"cannot reach {shown}: {cause.strerror}: check the address and the network"
    detail = str(exc) or type(exc).__name__
    return f"cannot reach {shown}: {detail}"
