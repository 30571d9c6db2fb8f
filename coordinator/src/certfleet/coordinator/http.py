"""HTTP surface: routes mounted from the operation catalogue.

Everything an operation needs before its handler runs happens here, once, for all
operations: the failed-authentication rate limit, authentication by the operation's
``auth``, the permission gate, body size and media type, strict decoding into the
operation's input type, the audit event for every refusal, and turning every error
into ``application/problem+json`` (RFC 9457).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import secrets
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
from quart import Response, current_app, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from certfleet.shared import wire
from certfleet.shared.agent_token import AUTH_SCHEME
from certfleet.shared.api import OPERATIONS, Auth, Operation

from . import errors, storage
from .agent_installer import AgentInstaller
from .auth.principal import ANONYMOUS, Principal, RequestMeta
from .auth.ratelimit import AuthFailureLimiter
from .auth.rbac import GLOBAL
from .core import CONTROL_CHARACTERS, Call, Page, RawResponse, printable
from .openapi import openapi_document
from .service import MAX_POLL_WAIT, Coordinator, handler_name

__all__ = ["MAX_BODY_BYTES", "create_app"]

log = logging.getLogger("certfleet.http")

MAX_BODY_BYTES = 1024 * 1024
BODY_TIMEOUT = 30
"""Seconds a request body may take to arrive (RFC 9110 §15.5.9: 408 after)."""
VERSION = "0.1.0"
SECURITY_HEADERS = {
    "Strict-Transport-Security": "max-age=63072000; includeSubDomains",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

Handler = Callable[[Call], Awaitable[Any]]


def _problem(error: errors.CertfleetError) -> Response:
    status, body = errors.problem_for(error)
    response = Response(msgspec.json.encode(body), status=status, content_type=errors.PROBLEM_CONTENT_TYPE)
    if status == 401:
        response.headers["WWW-Authenticate"] = f'Bearer realm="certfleet", {AUTH_SCHEME} realm="certfleet"'
    if status == 429:
        response.headers["Retry-After"] = str(error.extra.get("retry_after", 60))
    if status == 405 and getattr(error, "allow", None):
        response.headers["Allow"] = ", ".join(error.allow)  # type: ignore[attr-defined]
    if status in (408, 413):
        # The rest of the body is never read, so this connection cannot carry another
        # request; say so, or a client would reuse it and fail.
        response.headers["Connection"] = "close"
    return response


def _http_problem(exc: HTTPException) -> errors.CertfleetError:
    """Errors raised by routing and body handling, before any operation runs."""
    allowed = sorted(getattr(exc, "valid_methods", None) or [])
    details = {
        400: "the request could not be read",
        404: f"no operation at {request.path}" if request else "no such path",
        405: f"{request.method if request else 'this method'} is not allowed here; use {', '.join(allowed)}",
        408: f"the request body did not arrive within {current_app.config['BODY_TIMEOUT']:g} seconds; send it again",
        413: f"request bodies are limited to {MAX_BODY_BYTES} bytes",
        415: "unsupported media type",
    }
    mapping: dict[int, type[errors.CertfleetError]] = {
        400: errors.BadRequest, 404: errors.NotFound, 405: errors.MethodNotAllowed,
        408: errors.RequestTimeout, 413: errors.PayloadTooLarge, 415: errors.UnsupportedMediaType,
    }
    error_class = mapping.get(exc.code or 500, errors.CertfleetError)
    error = error_class(details.get(exc.code or 0, ""))
    if allowed:
        error.allow = allowed  # type: ignore[attr-defined]
    return error


def _credential(scheme: str) -> str:
    header = request.headers.get("Authorization", "")
    given, _, value = header.partition(" ")
    if given.lower() != scheme.lower() or not value.strip():
        raise errors.Unauthorized(f"this operation needs an `Authorization: {scheme} …` header")
    return value.strip()


async def _authenticate(op: Operation, coordinator: Coordinator) -> Principal:
    if op.auth is Auth.PUBLIC:
        return ANONYMOUS
    if op.auth is Auth.API_KEY:
        return await coordinator.authenticate_api_key(_credential("Bearer"))
    return await coordinator.authenticate_agent(_credential(AUTH_SCHEME), op.method, request.path, idle=op.idle)


async def _read_body(op: Operation) -> tuple[Any, str]:
    """The decoded body and the SHA-256 of its bytes (for the audit trail)."""
    if op.input is None:
        return None, "-"
    if request.mimetype != op.request_content_type:
        raise errors.UnsupportedMediaType(f"send the request body as {op.request_content_type}")
    data = await request.get_data(cache=False)
    if len(data) > MAX_BODY_BYTES:
        raise errors.PayloadTooLarge(f"request bodies are limited to {MAX_BODY_BYTES} bytes")
    digest = hashlib.sha256(data).hexdigest()
    if op.input is bytes:
        return data, digest
    try:
        return wire.decode(data, op.input), digest
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise errors.BadRequest(f"invalid request body: {exc}", slug="invalid-body") from exc


MAX_QUERY_TEXT = 1024


def _check_path(params: dict[str, str]) -> None:
    """No id or name holds a control character, so a path naming one names nothing
    (and PostgreSQL, which cannot compare with NUL, is never asked)."""
    for name, value in params.items():
        if CONTROL_CHARACTERS.search(value):
            raise errors.NotFound(f"{name} '{printable(value)}' does not exist")


def _decode_query(op: Operation) -> dict[str, Any]:
    """Query parameters as the operation declares them: integers from 0 to 2^63 - 1
    (both databases' 64-bit integers), text up to 1024 characters without control
    characters (PostgreSQL cannot compare with NUL)."""
    query: dict[str, Any] = {}
    for name, kind in op.query.items():
        raw = request.args.get(name)
        if raw is None:
            continue
        if kind is int:
            try:
                value = int(raw)
            except ValueError:
                value = -1
            if not 0 <= value <= wire.INT64_MAX:
                raise errors.BadRequest(f"query parameter {name!r} must be an integer from 0 to {wire.INT64_MAX}")
            query[name] = value
        elif len(raw) > MAX_QUERY_TEXT or CONTROL_CHARACTERS.search(raw):
            raise errors.BadRequest(f"query parameter {name!r} must be at most {MAX_QUERY_TEXT} characters,"
                                    " without control characters")
        else:
            query[name] = kind(raw)
    return query


def _next_page(after: str) -> str:
    """The URL of a paged list's next page: this request's with ``after`` moved on."""
    query = {**request.args.to_dict(), "after": after}
    return f"{request.path}?{urllib.parse.urlencode(query)}"


def _gate(op: Operation, principal: Principal) -> None:
    """The permission gate: held somewhere for an operation whose handler checks each
    resource's scope, held globally for every other."""
    if not principal.permissions.holds_anywhere(op.permission):
        raise errors.Forbidden(f"this operation needs the {op.permission!r} permission")
    if not op.scoped and not principal.permissions.holds(op.permission, GLOBAL):
        raise errors.Forbidden(f"this operation needs the {op.permission!r} permission globally; a grant on"
                               " a profile or issuer does not reach it", slug="scope-denied")


_OUTCOMES = {401: "unauthenticated", 403: "denied"}
_HANDLER_HEADERS = frozenset({"if-none-match"})


def _view(op: Operation, handler: Handler, coordinator: Coordinator, limiter: AuthFailureLimiter):
    async def view(**params: str) -> Response:
        source = request.remote_addr or "-"
        meta = RequestMeta(request_id=request.headers.get("X-Request-Id", "")[:64] or secrets.token_hex(8),
                           source_address=source, started=time.monotonic())
        request.request_id = meta.request_id  # type: ignore[attr-defined]
        call = Call(ANONYMOUS, params=params, operation=op.name, meta=meta)
        try:
            limiter.check(source)
            principal = await _authenticate(op, coordinator)
            call = dataclasses.replace(call, principal=principal)
            if op.auth is not Auth.PUBLIC:
                _gate(op, principal)
            _check_path(params)
            body, digest = await _read_body(op)
            call = dataclasses.replace(call, body=body, query=_decode_query(op),
                                       meta=dataclasses.replace(meta, body_sha256=digest),
                                       headers={k.lower(): v for k, v in request.headers.items()
                                                if k.lower() in _HANDLER_HEADERS})
            result = await handler(call)
        except storage.NotFound as exc:
            return await _refused(call, errors.NotFound(f"{exc} does not exist"))
        except storage.Conflict:
            return await _refused(call, errors.Conflict("conflicts with an existing resource"))
        except HTTPException as exc:
            return await _refused(call, _http_problem(exc))
        except errors.CertfleetError as exc:
            return await _refused(call, exc)
        if isinstance(result, Page):
            response = Response(msgspec.json.encode(result.items), status=op.status, content_type=op.content_type)
            if result.next_after is not None:
                response.headers["Link"] = f'<{_next_page(result.next_after)}>; rel="next"'
            return response
        if isinstance(result, RawResponse):
            return Response(result.body, status=result.status, content_type=result.content_type,
                            headers=result.headers)
        if isinstance(result, str):
            return Response(result, status=op.status, content_type=op.content_type)
        if isinstance(result, AsyncIterator):
            return Response(result, status=op.status, content_type=op.content_type)
        return Response(msgspec.json.encode(result), status=op.status, content_type=op.content_type)

    async def _refused(call: Call, error: errors.CertfleetError) -> Response:
        """Audit refusals: every failed authentication, every denial, every failed change."""
        outcome = _OUTCOMES.get(error.status, "failed")
        if error.status in _OUTCOMES or (op.mutating and error.status < 500):
            resource = printable("-".join(call.params.values())) or "-"
            failures = await coordinator.record_refusal(
                call, outcome=outcome, resource_type=op.name.split(".")[0], resource_id=resource,
                details={"problem": error.slug}, count_failure=error.status == 401)
            if error.status == 401:
                limiter.failed(call.meta.source_address, failures)
        return _problem(error)

    view.__name__ = handler_name(op.name)
    return view


def _mount_installer(app: QuartTrio, installer: AgentInstaller) -> None:
    """The agent one-liner's files (see :mod:`.agent_installer`): public, read-only,
    and outside the operation catalogue, since they are files for ``curl`` and
    ``pip`` rather than API operations."""

    def view(produce: Callable[..., Awaitable[RawResponse]]) -> Callable[..., Awaitable[Response]]:
        async def serve(**params: str) -> Response:
            try:
                result = await produce(**params)
            except errors.CertfleetError as exc:
                return _problem(exc)
            return Response(result.body, status=result.status, content_type=result.content_type,
                            headers=result.headers)

        return serve

    async def script() -> RawResponse:
        return await installer.script(f"{request.scheme}://{request.host}")

    routes = [("/install/agent.sh", "install.agent-script", script),
              ("/install/wheels/", "install.wheel-index", installer.wheel_index),
              ("/install/wheels/<name>", "install.wheel", installer.wheel)]
    for path, endpoint, produce in routes:
        app.add_url_rule(path, endpoint=endpoint, view_func=view(produce), methods=["GET"],
                         provide_automatic_options=False)


def create_app(coordinator: Coordinator, *, cors_origins: tuple[str, ...] = (),
               plain_http: bool = False, installer: AgentInstaller | None = None) -> QuartTrio:
    """The API application; with ``plain_http`` only the operations relying parties
    fetch over plain HTTP (CRL, OCSP, CA certificates). ``installer`` adds the agent
    one-liner's files under ``/install/`` (HTTPS only)."""
    app = QuartTrio(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["BODY_TIMEOUT"] = BODY_TIMEOUT
    app.config["RESPONSE_TIMEOUT"] = MAX_POLL_WAIT + 30
    document = openapi_document(VERSION)
    limiter = AuthFailureLimiter()

    async def openapi(call: Call) -> dict[str, Any]:
        return document

    for op in OPERATIONS:
        if plain_http and not op.plain_http:
            continue
        handler = openapi if op.name == "openapi" else getattr(coordinator, handler_name(op.name))
        path = re.sub(r"\{([a-z_]+):path\}", r"<path:\1>", op.path).replace("{", "<").replace("}", ">")
        app.add_url_rule(path, endpoint=op.name, view_func=_view(op, handler, coordinator, limiter),
                         methods=[op.method], provide_automatic_options=False)
    if installer is not None and not plain_http:
        _mount_installer(app, installer)

    @app.before_request
    async def cross_origin_preflight() -> Response | None:
        origin = request.headers.get("Origin")
        if request.method != "OPTIONS":
            return None
        if origin is None or origin not in cors_origins:
            return _problem(errors.Forbidden("cross-origin requests are not allowed from this origin"))
        return Response(b"", status=204)

    @app.after_request
    async def headers(response: Response) -> Response:
        response.headers["X-Request-Id"] = getattr(request, "request_id", "-")
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        origin = request.headers.get("Origin")
        if origin is not None and origin in cors_origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, PATCH, DELETE"
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Vary"] = "Origin"
        return response

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        return _problem(_http_problem(exc))

    @app.errorhandler(Exception)
    async def internal_error(exc: Exception) -> Response:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return _problem(errors.CertfleetError())

    return app
