"""HTTP surface: routes mounted from the operation catalogue.

Everything an operation needs before its handler runs happens here, once, for all
operations: authentication by the operation's ``auth``, the permission gate, body
size and media type, strict decoding into the operation's input type, and turning
every error into ``application/problem+json`` (RFC 9457).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from certfleet.shared import wire
from certfleet.shared.agent_token import AUTH_SCHEME
from certfleet.shared.api import OPERATIONS, Auth, Operation

from . import errors, storage
from .openapi import openapi_document
from .principal import ANONYMOUS, Principal
from .service import MAX_POLL_WAIT, Call, Coordinator

__all__ = ["MAX_BODY_BYTES", "create_app"]

log = logging.getLogger("certfleet.http")

MAX_BODY_BYTES = 1024 * 1024
VERSION = "0.1.0"

Handler = Callable[[Call], Awaitable[Any]]


def _problem(error: errors.CertfleetError) -> Response:
    status, body = errors.problem_for(error)
    response = Response(msgspec.json.encode(body), status=status, content_type=errors.PROBLEM_CONTENT_TYPE)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="certfleet"'
    return response


def _http_problem(exc: HTTPException) -> errors.CertfleetError:
    mapping: dict[int, type[errors.CertfleetError]] = {
        400: errors.BadRequest, 404: errors.NotFound, 405: errors.MethodNotAllowed,
        413: errors.PayloadTooLarge, 415: errors.UnsupportedMediaType,
    }
    error_class = mapping.get(exc.code or 500, errors.CertfleetError)
    detail = {413: f"request bodies are limited to {MAX_BODY_BYTES} bytes"}.get(exc.code or 0, "")
    return error_class(detail)


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
        principal = await coordinator.authenticate_api_key(_credential("Bearer"))
        if op.permission not in principal.permissions:
            raise errors.Forbidden(f"this operation needs the {op.permission!r} permission")
        return principal
    return await coordinator.authenticate_agent(_credential(AUTH_SCHEME), op.method, request.path)


async def _decode_body(op: Operation) -> Any:
    if op.input is None:
        return None
    if request.mimetype != "application/json":
        raise errors.UnsupportedMediaType("send the request body as application/json")
    data = await request.get_data(cache=False)
    if len(data) > MAX_BODY_BYTES:
        raise errors.PayloadTooLarge(f"request bodies are limited to {MAX_BODY_BYTES} bytes")
    try:
        return wire.decode(data, op.input)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise errors.BadRequest(f"invalid request body: {exc}", slug="invalid-body") from exc


def _decode_query(op: Operation) -> dict[str, Any]:
    query: dict[str, Any] = {}
    for name, kind in op.query.items():
        raw = request.args.get(name)
        if raw is None:
            continue
        try:
            query[name] = kind(raw)
        except ValueError as exc:
            raise errors.BadRequest(f"query parameter {name!r} must be {kind.__name__}") from exc
    return query


def _view(op: Operation, handler: Handler, coordinator: Coordinator):
    async def view(**params: str) -> Response:
        try:
            principal = await _authenticate(op, coordinator)
            call = Call(principal, await _decode_body(op), params, _decode_query(op))
            result = await handler(call)
        except errors.CertfleetError as exc:
            return _problem(exc)
        except storage.NotFound as exc:
            return _problem(errors.NotFound(f"{exc} does not exist"))
        except storage.Conflict:
            return _problem(errors.Conflict("conflicts with an existing resource"))
        except HTTPException as exc:
            return _problem(_http_problem(exc))
        if isinstance(result, str):
            return Response(result, status=op.status, content_type=op.content_type)
        return Response(msgspec.json.encode(result), status=op.status, content_type=op.content_type)

    view.__name__ = handler_name(op)
    return view


def handler_name(op: Operation) -> str:
    return op.name.replace(".", "_").replace("-", "_")


def create_app(coordinator: Coordinator) -> QuartTrio:
    app = QuartTrio(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["BODY_TIMEOUT"] = 30
    app.config["RESPONSE_TIMEOUT"] = MAX_POLL_WAIT + 30
    document = openapi_document(VERSION)

    async def openapi(call: Call) -> dict[str, Any]:
        return document

    for op in OPERATIONS:
        handler = openapi if op.name == "openapi" else getattr(coordinator, handler_name(op))
        path = op.path.replace("{", "<").replace("}", ">")
        app.add_url_rule(path, endpoint=op.name, view_func=_view(op, handler, coordinator), methods=[op.method])

    @app.before_request
    async def assign_request_id() -> None:
        request.request_id = secrets.token_hex(8)  # type: ignore[attr-defined]

    @app.after_request
    async def security_headers(response: Response) -> Response:
        response.headers["X-Request-Id"] = getattr(request, "request_id", "-")
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        return _problem(_http_problem(exc))

    @app.errorhandler(Exception)
    async def internal_error(exc: Exception) -> Response:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return _problem(errors.CertfleetError())

    return app
