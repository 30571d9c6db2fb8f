"""Executing work orders: verify, record, act, report.

Order of things, each step durable before the next:

1. verify the signed order (pinned key, audience = this agent, validity window) and
   refuse anything that fails, or that this agent already executed (replay);
2. record it in the state database;
3. generate the private key locally (0600) — ``received → key-ready``;
4. send only the CSR; check the certificate that comes back matches the key and the
   order — ``key-ready → issued``;
5. deploy — ``issued → deployed`` or ``failed``, with the result queued in the
   outbox in the same transaction.

A crash between any two steps is resumed from the recorded state: the key is
reloaded, the coordinator hands back the same certificate for the same key, and
the deployer starts again from the order's snapshot.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

import httpx
import msgspec
from cryptography import x509

from certfleet.shared import wire
from certfleet.shared.api import operation
from certfleet.shared.pki import (
    build_csr,
    certificate_fingerprint,
    load_certificates,
    normalize_names,
    private_key_pem,
    public_key_matches,
)
from certfleet.shared.targets import kind_of
from certfleet.shared.workorder import (
    OrderKind,
    VerifiedOrder,
    WorkOrderRefused,
    unverified_order_id,
    verify_work_order,
)

from .client import CoordinatorClient, CoordinatorError
from .config import AgentConfig
from .deployers import Bundle, DeployError, Deployers
from .discovery.service import DiscoveryRefused, DiscoveryService
from .keystore import KeyStore
from .policy import HostPolicy
from .secrets import Secrets
from .state import TERMINAL, AgentState, OrderEvent, OrderState

__all__ = ["Executor"]

log = logging.getLogger("certfleet.agent.executor")

REDELIVERY_WINDOW = 120
"""Seconds after a result was acknowledged during which the same order coming back
is taken for a poll that raced the result (see ``_benign_redelivery``)."""


class Executor:
    def __init__(self, config: AgentConfig, state: AgentState, keystore: KeyStore,
                 client: CoordinatorClient, *, clock: Callable[[], float] = time.time,
                 on_outbox: Callable[[], None] = lambda: None, secrets: Secrets,
                 policy: HostPolicy | None = None, discovery: DiscoveryService | None = None) -> None:
        self.config = config
        self.state = state
        self.keystore = keystore
        self.client = client
        self.deployers = Deployers(state, secrets, policy)
        self.discovery = discovery
        self._keys = config.pinned_keys()
        self._clock = clock
        self._on_outbox = on_outbox

    # --- intake -------------------------------------------------------------------------

    def _refuse(self, delivery: wire.Delivery, reason: str, detail: str) -> None:
        with self.state.atomic():
            if not self.state.record_refusal(token=delivery.token, delivery_id=delivery.id,
                                             reason=reason, detail=detail):
                return
            log.warning("refused work order %s (%s): %s", delivery.id, reason, detail)
            report = wire.AgentReport(event="work-order-refused", reason=reason,
                                      order_id=delivery.id, detail=detail)
            self.state.enqueue(operation("agent.report").path, wire.encode(report))
        self._on_outbox()

    def admit(self, delivery: wire.Delivery) -> VerifiedOrder | None:
        """Verify and record a delivered order; ``None`` if it is refused or already done."""
        try:
            order = verify_work_order(delivery.token, keys=self._keys, agent_id=self.config.agent_id,
                                      now=self._clock())
        except WorkOrderRefused as refusal:
            self._refuse(delivery, refusal.reason, refusal.detail)
            return None
        known = self.state.order(order.id)
        if known is not None and known["status"] in TERMINAL:
            result_path = operation("agent.result").url_path(order_id=order.id)
            if not self.state.outbox_pending(result_path) and not self._benign_redelivery(delivery, result_path):
                self._refuse(delivery, "replay", f"work order {order.id} was already executed")
            return None
        if known is None:
            self.state.record_order(order_id=order.id, token=order.token, kind=str(order.kind),
                                    payload=msgspec.to_builtins(order.payload))
        return order

    def _benign_redelivery(self, delivery: wire.Delivery, result_path: str) -> bool:
        """With several coordinators, a poll answered by one can carry an order whose
        result another has just acknowledged. The same order, under its own id, within
        a short while of the acknowledgement is that race, not a replay: it is not
        executed again either way, but it is not reported as an attack."""
        if delivery.id != unverified_order_id(delivery.token):
            return False
        acknowledged = self.state.last_acknowledged_at(result_path)
        return acknowledged is not None and self._clock() - acknowledged <= REDELIVERY_WINDOW

    async def handle(self, delivery: wire.Delivery) -> None:
        order = self.admit(delivery)
        if order is not None:
            await self.execute(order)

    async def resume_unfinished(self) -> None:
        """After a restart: re-verify and continue every order that did not finish."""
        for row in self.state.unfinished_orders():
            log.info("resuming work order %s from %s", row["id"], row["status"])
            await self.handle(wire.Delivery(id=row["id"], token=row["token"]))

    # --- steps --------------------------------------------------------------------------

    def _finish(self, order: VerifiedOrder, event: OrderEvent, result: wire.OrderResult) -> None:
        with self.state.atomic():
            self.state.transition(order.id, event, detail=result.detail)
            self.state.enqueue(operation("agent.result").url_path(order_id=order.id), wire.encode(result))
        self._on_outbox()

    def _fail(self, order: VerifiedOrder, detail: str, *, retryable: bool = True,
              deployment: wire.DeploymentFacts | None = None) -> None:
        log.error("work order %s failed: %s", order.id, detail)
        self._finish(order, OrderEvent.FAILED, wire.OrderResult(status="failed", detail=detail[:8192],
                                                                retryable=retryable, deployment=deployment))

    async def execute(self, order: VerifiedOrder) -> None:
        if order.kind is OrderKind.CHECK_TARGET:
            await self._check_target(order)
            return
        if order.kind in (OrderKind.SCAN, OrderKind.PROBE):
            await self._discover(order)
            return
        payload = order.payload
        row = self.state.order(order.id)
        assert row is not None
        status = OrderState(row["status"])
        if status is OrderState.RECEIVED:
            self.keystore.key_for_order(order.id, payload.key_type, reuse_from=payload.reuse_key_of)
            status = self.state.transition(order.id, OrderEvent.KEY_GENERATED)
        key = self.keystore.load(order.id)
        if status is OrderState.KEY_READY:
            csr = build_csr(key, payload.names)
            try:
                bundle: wire.CertificateBundle = await self.client.call(
                    "agent.csr", wire.CsrSubmission(csr=csr.decode()), order_id=order.id)
            except CoordinatorError as exc:
                if exc.status >= 500:
                    raise
                self._fail(order, f"the coordinator refused the CSR: {exc}", retryable=False)
                return
            problem = self._check_certificate(bundle, key, payload.names)
            if problem:
                self._fail(order, problem)
                return
            status = self.state.transition(order.id, OrderEvent.CERTIFICATE_RECEIVED,
                                           certificate_pem=bundle.certificate, chain_pem=bundle.chain)
            row = self.state.order(order.id)
            assert row is not None
        if status is OrderState.ISSUED:
            leaf = load_certificates(row["certificate_pem"])[0]
            deploy_bundle = Bundle(certificate=row["certificate_pem"].encode(), chain=row["chain_pem"].encode(),
                                   private_key=private_key_pem(key),
                                   fingerprint_sha256=certificate_fingerprint(leaf))
            kind = kind_of(payload.target)
            try:
                # Under the discovery lock: the change watcher must not take a
                # deployment's own writes for someone else's (drift).
                async with self.discovery.lock if self.discovery else contextlib.nullcontext():
                    outcome = await self.deployers.deploy(order.id, payload.target, deploy_bundle,
                                                          server_name=payload.names[0])
            except DeployError as exc:
                self._fail(order, exc.detail, deployment=wire.DeploymentFacts(
                    kind=kind, failed_step=exc.step, rolled_back=exc.rolled_back,
                    served_fingerprint=exc.served_fingerprint))
                return
            except Exception as exc:  # a bug must fail this order, not stop the agent in a crash loop
                log.exception("work order %s: unexpected error while deploying", order.id)
                self._fail(order, f"the agent failed unexpectedly while deploying: {type(exc).__name__}: {exc}",
                           retryable=False, deployment=wire.DeploymentFacts(kind=kind, failed_step="prepare"))
                return
            log.info("work order %s deployed certificate %s", order.id, outcome.fingerprint_sha256)
            self._forget_superseded(order.id, payload.certificate_id)
            written = ", ".join(outcome.changed) or "nothing (unchanged)"
            self._finish(order, OrderEvent.DEPLOYED, wire.OrderResult(
                status="succeeded", fingerprint_sha256=outcome.fingerprint_sha256,
                detail=f"wrote {written}{'; reloaded' if outcome.reloaded else ''}"
                       f"{'; served ' + outcome.served_fingerprint if outcome.served_fingerprint else ''}",
                deployment=wire.DeploymentFacts(kind=kind, skipped=outcome.skipped,
                                                served_fingerprint=outcome.served_fingerprint)))

    def _forget_superseded(self, order_id: str, certificate_id: str) -> None:
        """Once a certificate is deployed, the keys and snapshots of its earlier orders
        are old private keys kept for nothing: delete them. This order's key (renewal
        may reuse it) and snapshot (``certfleet-agent rollback``) stay."""
        for old in self.state.superseded_orders(order_id, certificate_id):
            self.keystore.forget(old)
            self.state.forget_snapshots(old)

    async def _check_target(self, order: VerifiedOrder) -> None:
        """Run the target's config test and read what it serves; write nothing."""
        payload = order.payload
        try:
            found = await self.deployers.check(payload.target, server_name=payload.server_name,
                                               expected=payload.expected_fingerprint)
            result = wire.OrderResult(status="succeeded", detail=found[:8192])
        except DeployError as exc:
            result = wire.OrderResult(status="failed", detail=exc.detail[:8192], retryable=False)
        log.info("checked target %s: %s", payload.target_id, result.detail)
        self._finish(order, OrderEvent.CHECKED, result)

    async def _discover(self, order: VerifiedOrder) -> None:
        """Scan files or probe the network, and report what was found; the order's
        result is a summary (the finds themselves went in discovery reports)."""
        if self.discovery is None:
            self._fail(order, "discovery is not set up on this agent", retryable=False)
            return
        try:
            if order.kind is OrderKind.SCAN:
                summary = await self.discovery.scan_files(order.id, order.payload.roots)
            else:
                summary = await self.discovery.probe_network(order.id, order.payload)
        except DiscoveryRefused as exc:
            self._fail(order, str(exc), retryable=False)
            return
        except (httpx.HTTPError, CoordinatorError) as exc:
            # Nothing was recorded locally: the next scan sends the same delta again.
            self._fail(order, f"the discovery report did not reach the coordinator: {exc}")
            return
        log.info("work order %s: %s", order.id, summary)
        self._finish(order, OrderEvent.CHECKED, wire.OrderResult(status="succeeded", detail=summary[:8192]))

    @staticmethod
    def _check_certificate(bundle: wire.CertificateBundle, key, names: list[str]) -> str | None:
        """Never deploy a certificate that is not for our key and our names."""
        try:
            leaf = load_certificates(bundle.certificate)[0]
            if bundle.chain.strip():  # a leaf straight under a root has no intermediates
                load_certificates(bundle.chain)
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except (ValueError, IndexError, x509.ExtensionNotFound) as exc:
            return f"the coordinator returned an unusable certificate: {exc}"
        if not public_key_matches(leaf, key):
            return "the returned certificate is not for this order's key"
        served = {str(n) for n in san.get_values_for_type(x509.DNSName)}
        served |= {str(n) for n in san.get_values_for_type(x509.IPAddress)}
        served |= set(san.get_values_for_type(x509.UniformResourceIdentifier))
        if served != set(normalize_names(names)):
            return f"the returned certificate names {sorted(served)}, the order asked for {sorted(names)}"
        return None
