"""The operation catalogue: every API operation, declared once.

From this list come the coordinator's routes and their permission gates, the OpenAPI
document at ``/api/v1/openapi.json``, and the operator CLI's requests. Nothing is
listed twice, so nothing can drift.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any

from . import wire

__all__ = ["API_BASE", "OPERATIONS", "Auth", "Operation", "operation"]

API_BASE = "/api/v1"


class Auth(enum.StrEnum):
    """Who may call: anyone (the body may carry a one-time token), an operator with
    an API key, or an enrolled agent with a signed request token."""

    PUBLIC = "public"
    API_KEY = "api-key"
    AGENT = "agent"


@dataclass(frozen=True)
class Operation:
    name: str
    method: str
    path: str
    permission: str
    auth: Auth
    summary: str
    input: type | None = None
    output: Any = None
    query: dict[str, type] = field(default_factory=dict)
    status: int = 200
    content_type: str = "application/json"

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z-]*(\.[a-z][a-z-]*)+", self.permission):
            raise ValueError(f"{self.name}: permission {self.permission!r} is not namespace.verb")
        if self.method not in {"GET", "POST", "PUT", "PATCH", "DELETE"}:
            raise ValueError(f"{self.name}: unsupported method {self.method}")

    @property
    def path_params(self) -> tuple[str, ...]:
        return tuple(re.findall(r"\{([a-z_]+)\}", self.path))

    def url_path(self, **params: str) -> str:
        path = self.path
        for name in self.path_params:
            path = path.replace("{" + name + "}", params[name])
        return path


OPERATIONS: tuple[Operation, ...] = (
    Operation("health", "GET", "/health", "system.health", Auth.PUBLIC,
              "Liveness with a database round-trip.", output=wire.Health),
    Operation("openapi", "GET", f"{API_BASE}/openapi.json", "system.openapi", Auth.PUBLIC,
              "This API's OpenAPI 3.1 document.", output=dict),
    Operation("pki.ca-bundle", "GET", "/.well-known/certfleet/ca.pem", "pki.ca.read", Auth.PUBLIC,
              "The coordinator's root CA certificate (PEM), to be pinned by fingerprint.",
              content_type="application/pem-certificate-chain"),
    Operation("auth.bootstrap", "POST", f"{API_BASE}/auth/bootstrap", "auth.bootstrap", Auth.PUBLIC,
              "Exchange the one-time bootstrap token for the first admin API key.",
              input=wire.BootstrapRequest, output=wire.BootstrapResponse, status=201),
    Operation("agents.enrollment-token.create", "POST", f"{API_BASE}/agents/enrollment-tokens",
              "agent.enroll-token.create", Auth.API_KEY,
              "Mint an enrollment token (shown once) for N agents, expiring.",
              input=wire.EnrollmentTokenCreate, output=wire.EnrollmentTokenInfo, status=201),
    Operation("agents.list", "GET", f"{API_BASE}/agents", "agent.read", Auth.API_KEY,
              "List enrolled agents.", output=list[wire.AgentInfo]),
    Operation("agents.get", "GET", f"{API_BASE}/agents/{{agent_id}}", "agent.read", Auth.API_KEY,
              "Show one agent.", output=wire.AgentInfo),
    Operation("certificates.create", "POST", f"{API_BASE}/certificates", "cert.create", Auth.API_KEY,
              "Create a managed certificate bound to an agent and a target; queues an issue order.",
              input=wire.CertificateCreate, output=wire.CertificateInfo, status=201),
    Operation("certificates.list", "GET", f"{API_BASE}/certificates", "cert.read", Auth.API_KEY,
              "List managed certificates.", output=list[wire.CertificateInfo]),
    Operation("certificates.get", "GET", f"{API_BASE}/certificates/{{certificate_id}}", "cert.read",
              Auth.API_KEY, "Show one managed certificate.", output=wire.CertificateInfo),
    Operation("agent.enroll", "POST", f"{API_BASE}/agent/enroll", "agent.enroll", Auth.PUBLIC,
              "Register an agent's identity key with an enrollment token.",
              input=wire.EnrollRequest, output=wire.EnrollResponse, status=201),
    Operation("agent.work", "GET", f"{API_BASE}/agent/work", "agent.work.poll", Auth.AGENT,
              "Long-poll for signed work orders addressed to the calling agent.",
              output=wire.WorkBatch, query={"wait": int}),
    Operation("agent.csr", "POST", f"{API_BASE}/agent/orders/{{order_id}}/csr", "agent.order.csr",
              Auth.AGENT, "Submit the CSR for an issue order; returns the signed certificate.",
              input=wire.CsrSubmission, output=wire.CertificateBundle),
    Operation("agent.result", "POST", f"{API_BASE}/agent/orders/{{order_id}}/result",
              "agent.order.report", Auth.AGENT, "Report the outcome of a work order (idempotent).",
              input=wire.OrderResult, output=wire.ResultAck),
    Operation("agent.report", "POST", f"{API_BASE}/agent/reports", "agent.report", Auth.AGENT,
              "Report an event, such as a refused work order.",
              input=wire.AgentReport, output=wire.ResultAck),
)

_BY_NAME = {op.name: op for op in OPERATIONS}


def operation(name: str) -> Operation:
    return _BY_NAME[name]
