"""The OpenAPI 3.1 document, generated from the operation catalogue."""

from __future__ import annotations

from typing import Any

import msgspec

from certfleet.shared.agent_token import AUTH_SCHEME
from certfleet.shared.api import OPERATIONS, Auth

from .errors import PROBLEM_CONTENT_TYPE

__all__ = ["openapi_document"]

_PROBLEM = {
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
    },
    "required": ["type", "title", "status"],
}


def openapi_document(version: str) -> dict[str, Any]:
    typed = [(op, t) for op in OPERATIONS for t in (op.input, op.output) if t not in (None, dict, bytes)]
    schemas, components = msgspec.json.schema_components(
        [t for _, t in typed], ref_template="#/components/schemas/{name}"
    )
    schema_of = {id(t): s for (_, t), s in zip(typed, schemas, strict=True)}
    components["Problem"] = _PROBLEM
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        entry: dict[str, Any] = {
            "operationId": op.name,
            "summary": op.summary,
            "x-permission": op.permission,
            "security": {
                Auth.PUBLIC: [],
                Auth.API_KEY: [{"apiKey": []}],
                Auth.AGENT: [{"agentToken": []}],
            }[op.auth],
            "responses": {
                str(op.status): {
                    "description": "success",
                    "content": {
                        op.content_type: {"schema": schema_of.get(id(op.output), {"type": "string"} if op.output is None else {"type": "object"})}
                    },
                },
                "default": {
                    "description": "an RFC 9457 problem",
                    "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
                },
            },
        }
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in op.path_params
        ] + [
            {"name": name, "in": "query", "required": False,
             "schema": {"type": "integer" if kind is int else "string"}}
            for name, kind in op.query.items()
        ]
        if parameters:
            entry["parameters"] = parameters
        if op.input is bytes:
            entry["requestBody"] = {"required": True, "content": {op.request_content_type: {
                "schema": {"type": "string", "format": "binary"}}}}
        elif op.input is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema_of[id(op.input)]}},
            }
        paths.setdefault(op.path.replace(":path}", "}"), {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": "certfleet coordinator API", "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "certfleet API key (cfk_…)"},
                "agentToken": {
                    "type": "http",
                    "scheme": AUTH_SCHEME,
                    "description": "EdDSA request token signed by the agent's identity key",
                },
            },
        },
    }
