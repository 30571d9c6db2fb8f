"""The agent protocol: enrollment, the work orders an agent carries out, and what it
sends back (CSRs, results, reports)."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

import msgspec

from ..pki import KeyType
from ..targets import Target
from .types import Fingerprint, Message, Name

# --- work orders --------------------------------------------------------------------


class IssueOrder(Message):
    """What an ``issue`` work order asks: a new key, a CSR for these names, a deploy."""

    certificate_id: str
    names: list[str]
    key_type: KeyType
    target: Target
    reuse_key_of: str | None = None
    """Renew with the key of this earlier order instead of a new one (opt-in)."""
    target_id: str | None = None
    """The coordinator's id of ``target``, so the host can name it (``rollback``)."""


class CheckTargetOrder(Message):
    """What a ``check-target`` work order asks: run the target's config test and, if it
    has a listening address, read the certificate served there. Nothing is written."""

    target_id: str
    target: Target
    server_name: Annotated[str, msgspec.Meta(min_length=1, max_length=253)]
    expected_fingerprint: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    """The leaf certfleet last deployed there, if any: a different served leaf is reported."""


class ScanOrder(Message):
    """What a ``scan`` work order asks: look for certificates in files. ``roots``
    narrows the scan to these directories, each inside a root the agent's operator
    configured; empty, the agent scans its configured (or default) roots."""

    roots: Annotated[list[Annotated[str, msgspec.Meta(min_length=1, max_length=4096, pattern=r"^/")]],
                     msgspec.Meta(max_length=64)] = []


class ProbeOrder(Message):
    """What a ``probe`` work order asks: TLS handshakes with ``ranges`` × ``ports``, each
    without SNI and once per name in ``server_names``. The agent probes only inside the
    ranges its operator allowed it and refuses the whole order otherwise."""

    ranges: Annotated[list[Annotated[str, msgspec.Meta(min_length=1, max_length=64)]],
                      msgspec.Meta(min_length=1, max_length=64)]
    ports: Annotated[list[Annotated[int, msgspec.Meta(ge=1, le=65535)]], msgspec.Meta(min_length=1, max_length=64)]
    server_names: Annotated[list[Annotated[str, msgspec.Meta(min_length=1, max_length=253)]],
                            msgspec.Meta(max_length=32)] = []
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=60)] = 3.0
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=512)] = 64

    def validate(self) -> None:
        for text in self.ranges:
            try:
                ipaddress.ip_network(text, strict=True)
            except ValueError as exc:
                raise msgspec.ValidationError(f"ranges: {exc}") from None


# --- enrollment ---------------------------------------------------------------------


class EnrollmentTokenCreate(Message):
    uses: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1
    ttl_seconds: Annotated[int, msgspec.Meta(ge=60, le=30 * 86400)] = 3600
    labels: Annotated[dict[AgentLabelKey, AgentLabelValue], msgspec.Meta(max_length=32)] = {}
    """Given to every agent enrolled with the token: the same keys and values an agent
    may give itself (``EnrollRequest.labels``)."""


class EnrollmentTokenInfo(Message):
    id: str
    uses_left: int
    expires_at: int
    token: str | None = None
    labels: dict[str, str] = {}


AgentLabelKey = Annotated[str, msgspec.Meta(max_length=63, pattern=r"^[a-z0-9][a-z0-9._/-]{0,62}\Z")]
AgentLabelValue = Annotated[str, msgspec.Meta(max_length=128, pattern=r"^[A-Za-z0-9._:/@-]*\Z")]


class EnrollRequest(Message):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    name: Name
    public_key: Annotated[str, msgspec.Meta(min_length=43, max_length=44)]
    labels: Annotated[dict[AgentLabelKey, AgentLabelValue], msgspec.Meta(max_length=32)] = {}
    """Labels the host gives itself (``--label`` at install); the enrollment token's
    labels, set by an operator, win where both name the same key."""


class WorkOrderKey(Message):
    kid: str
    public_key: str


class EnrollResponse(Message):
    agent_id: str
    work_order_keys: list[WorkOrderKey]


class AgentInfo(Message):
    id: str
    name: str
    created_at: int
    last_seen_at: int | None
    labels: dict[str, str] = {}
    liveness: Literal["online", "late", "offline", "never-seen", "retired"] = "never-seen"
    """From polls alone: online within a minute, late within five, offline after."""
    retired_at: int | None = None


# --- delivery and results -----------------------------------------------------------


class Delivery(Message):
    """One work order as delivered: the coordinator's delivery id (for bookkeeping,
    e.g. to report a refusal) and the signed token, the only part the agent trusts."""

    id: str
    token: str


class WorkBatch(Message):
    orders: list[Delivery]


class CsrSubmission(Message):
    csr: Annotated[str, msgspec.Meta(min_length=1, max_length=65536)]


class CertificateBundle(Message):
    certificate: str
    chain: str
    serial: str
    not_after: int


class DeploymentFacts(Message):
    """How one deployment attempt went, for per-target metrics on the coordinator."""

    kind: Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^[a-z0-9-]+$")]
    skipped: bool = False
    """Identical content was already in place: nothing written, no reload."""
    failed_step: Literal["prepare", "write", "config-test", "reload", "verify", "apply"] | None = None
    rolled_back: bool = False
    served_fingerprint: Fingerprint | None = None
    """The leaf the post-deploy check saw being served."""


MAX_RESULT_DETAIL = 8192
"""Characters of an order result's ``detail``."""
MAX_RESULT_FINGERPRINT = 64
"""Characters of an order result's ``fingerprint_sha256``."""
MAX_REPORT_REASON = 64
"""Characters of an agent report's ``reason``."""
MAX_REPORT_ORDER_ID = 128
"""Characters of an agent report's ``order_id``."""
MAX_REPORT_DETAIL = 2048
"""Characters of an agent report's ``detail``."""


class OrderResult(Message):
    status: Literal["succeeded", "failed"]
    detail: Annotated[str, msgspec.Meta(max_length=MAX_RESULT_DETAIL)] = ""
    fingerprint_sha256: Annotated[str, msgspec.Meta(max_length=MAX_RESULT_FINGERPRINT)] | None = None
    retryable: bool = True
    """False when trying again cannot help (the coordinator refused the CSR)."""
    deployment: DeploymentFacts | None = None


class AgentReport(Message):
    """Something the agent noticed that is not the result of a valid order, such as a
    work order it refused."""

    event: Literal["work-order-refused", "certificate-drift"]
    """``certificate-drift``: a file certfleet deployed was changed by something else
    (``detail`` names the file, the expected and the seen SHA-256)."""
    reason: Annotated[str, msgspec.Meta(max_length=MAX_REPORT_REASON)]
    order_id: Annotated[str, msgspec.Meta(max_length=MAX_REPORT_ORDER_ID)] | None = None
    detail: Annotated[str, msgspec.Meta(max_length=MAX_REPORT_DETAIL)] = ""


class ResultAck(Message):
    accepted: bool
