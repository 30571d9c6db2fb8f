"""The coordinator's exception tree, and the one place that turns it into HTTP.

Handlers raise these; :func:`problem_for` chooses the status and writes an
``application/problem+json`` body (RFC 9457). Handlers never pick status codes. 4xx
problems carry a detail that helps the caller; a 5xx never carries internals.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BadRequest",
    "CertfleetError",
    "Conflict",
    "Forbidden",
    "Gone",
    "NotFound",
    "PayloadTooLarge",
    "RequestTimeout",
    "ServiceUnavailable",
    "TooManyRequests",
    "Unauthorized",
    "UnprocessableEntity",
    "UnsupportedMediaType",
    "problem_for",
]

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "urn:certfleet:problem:"


class CertfleetError(Exception):
    """Base of everything the API reports. ``slug`` names the problem type."""

    status = 500
    slug = "internal"
    title = "Internal error"

    def __init__(self, detail: str = "", *, slug: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        if slug is not None:
            self.slug = slug
        self.extra = extra


class BadRequest(CertfleetError):
    status, slug, title = 400, "bad-request", "Bad request"


class Unauthorized(CertfleetError):
    status, slug, title = 401, "unauthorized", "Authentication required"


class Forbidden(CertfleetError):
    status, slug, title = 403, "forbidden", "Not permitted"


class NotFound(CertfleetError):
    status, slug, title = 404, "not-found", "Not found"


class MethodNotAllowed(CertfleetError):
    status, slug, title = 405, "method-not-allowed", "Method not allowed"


class RequestTimeout(CertfleetError):
    status, slug, title = 408, "request-timeout", "Request body too slow"


class Conflict(CertfleetError):
    status, slug, title = 409, "conflict", "Conflict"


class Gone(CertfleetError):
    status, slug, title = 410, "gone", "Gone"


class PayloadTooLarge(CertfleetError):
    status, slug, title = 413, "payload-too-large", "Request body too large"


class UnsupportedMediaType(CertfleetError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


class UnprocessableEntity(CertfleetError):
    status, slug, title = 422, "unprocessable", "Request refused by policy"


class TooManyRequests(CertfleetError):
    status, slug, title = 429, "rate-limited", "Too many failed attempts"


class ServiceUnavailable(CertfleetError):
    status, slug, title = 503, "unavailable", "Not ready to serve"


def problem_for(error: CertfleetError) -> tuple[int, dict[str, Any]]:
    """The status and problem document for ``error`` (RFC 9457 §3.1 members)."""
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + error.slug,
        "title": error.title,
        "status": error.status,
    }
    if error.status < 500:
        if error.detail:
            body["detail"] = error.detail
        body.update(error.extra)
    return error.status, body
