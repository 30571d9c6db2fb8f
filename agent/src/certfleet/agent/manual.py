"""What an operator does by hand on an agent's host: see a deployment plan without
changing anything (``deploy --dry-run``), and put back the files a deployment
replaced (``rollback``).

Real deployments only ever come from signed work orders; these commands read the
agent's own state and files and need no coordinator.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from certfleet.shared import wire
from certfleet.shared.pki import KeyType, certificate_fingerprint, generate_private_key, private_key_pem

from .config import AgentPaths
from .deployers import Bundle, DeployError, Deployers
from .keystore import KeyStore
from .policy import HostPolicy
from .secrets import Secrets
from .state import AgentState

__all__ = ["ManualError", "dry_run", "latest_order_for", "roll_back"]


class ManualError(Exception):
    pass


def latest_order_for(state: AgentState, subject: str, *, deployed_only: bool = False) -> dict[str, Any]:
    """The most recent issue order for a certificate or a target (``subject`` is a
    certificate id or a target id) that got as far as a certificate."""
    statuses = ("deployed",) if deployed_only else ("issued", "deployed", "failed")
    rows = list(state.db.query(
        "SELECT * FROM orders WHERE kind = 'issue'"
        " AND (json_extract(payload, '$.certificate_id') = ? OR json_extract(payload, '$.target_id') = ?)"
        f" AND status IN ({', '.join('?' for _ in statuses)}) AND certificate_pem IS NOT NULL"
        " ORDER BY rowid DESC LIMIT 1", [subject, subject, *statuses]))  # rowid: the order they arrived in
    if not rows:
        raise ManualError(f"this agent has no deployment of certificate or target {subject}")
    return rows[0]


def _order_bundle(paths: AgentPaths, row: dict[str, Any]) -> Bundle:
    leaf = x509.load_pem_x509_certificate(row["certificate_pem"].encode())
    key = KeyStore(paths.keys).load(row["id"])
    return Bundle(row["certificate_pem"].encode(), (row["chain_pem"] or "").encode(), private_key_pem(key),
                  certificate_fingerprint(leaf))


def _placeholder_bundle(name: str) -> Bundle:
    """A throwaway self-signed certificate, only so that a plan has content sizes."""
    key = generate_private_key(KeyType.EC_P256)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    leaf = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(hours=1)).sign(key, hashes.SHA256()))
    return Bundle(leaf.public_bytes(Encoding.PEM), b"", private_key_pem(key), certificate_fingerprint(leaf))


def _deployers(paths: AgentPaths) -> tuple[AgentState, Deployers]:
    state = AgentState(paths.state)
    return state, Deployers(state, Secrets(paths.secrets), HostPolicy(paths.allowed_commands, paths.allowed_paths))


async def dry_run(paths: AgentPaths, *, certificate_id: str | None = None, target_json: bytes | None = None) -> str:
    """The plan for the certificate's target (with its current certificate), or for a
    target given as JSON (with a placeholder certificate). Nothing is written."""
    _, deployers = _deployers(paths)
    if certificate_id is not None:
        row = latest_order_for(deployers.state, certificate_id)
        target = msgspec.convert(json.loads(row["payload"])["target"], wire.Target)
        bundle = _order_bundle(paths, row)
    else:
        try:
            target = wire.decode(target_json or b"", wire.Target)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise ManualError(f"the target is not valid: {exc}") from None
        bundle = _placeholder_bundle("dry-run.invalid")
    if isinstance(target, wire.KubernetesSecretTarget):
        from .deployers.kubernetes import KubernetesDeployer

        return "\n".join(KubernetesDeployer(deployers.state, deployers.secrets).describe(target))
    try:
        plan = await deployers.plan(target, bundle)
    except DeployError as exc:
        raise ManualError(exc.detail) from None
    header = "dry run: nothing is written to the target, no test or reload runs"
    if isinstance(target, wire.KeystoreTarget) and target.format == "jks":
        header += " (keytool built the JKS keystore in a private temporary directory, now removed)"
    return "\n".join([header, *plan.describe()])


async def roll_back(paths: AgentPaths, subject: str) -> str:
    """Restore the files as they were before the latest deployment to a target (named
    by its id, or by a certificate deployed there), and reload; the coordinator learns
    of it at the next renewal, not from this command."""
    _, deployers = _deployers(paths)
    row = latest_order_for(deployers.state, subject, deployed_only=True)
    target = msgspec.convert(json.loads(row["payload"])["target"], wire.Target)
    if isinstance(target, wire.KubernetesSecretTarget):
        from .deployers.kubernetes import KubernetesDeployer

        return await KubernetesDeployer(deployers.state, deployers.secrets).roll_back_order(row["id"], target)
    try:
        plan = await deployers.plan(target, _order_bundle(paths, row))
        return f"work order {row['id']}: " + await deployers.pipeline.roll_back_order(row["id"], plan)
    except DeployError as exc:
        raise ManualError(exc.detail) from None
