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
from certfleet.shared.targets import F5Target, SshTarget

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
    remote = _remote_deployer(deployers, target)
    if remote is not None:
        return "\n".join(remote.describe(target))
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
    remote = _remote_deployer(deployers, target)
    if remote is not None:
        return await remote.roll_back_order(row["id"], target)
    try:
        plan = await deployers.plan(target, _order_bundle(paths, row))
        return f"work order {row['id']}: " + await deployers.pipeline.roll_back_order(row["id"], plan)
    except DeployError as exc:
        raise ManualError(exc.detail) from None


def _remote_deployer(deployers: Deployers, target: Any):
    """The deployer of a kind that does not write files on this host (a Kubernetes
    Secret, a device over SSH, an F5): it describes and rolls back on its own."""
    if isinstance(target, wire.KubernetesSecretTarget):
        from .deployers.kubernetes import KubernetesDeployer

        return KubernetesDeployer(deployers.state, deployers.secrets)
    if isinstance(target, SshTarget):
        from .deployers.ssh import SshDeployer

        return SshDeployer(deployers.state, deployers.secrets)
    if isinstance(target, F5Target):
        from .deployers.f5 import F5Deployer

        return F5Deployer(deployers.state, deployers.secrets)
    return None


async def scan_by_hand(paths: AgentPaths, *, roots: list[str], configured_roots, report: bool) -> dict[str, Any]:
    """``certfleet-agent scan``: scan now. With ``report`` (the default) the delta goes
    to the coordinator like a scheduled scan's and is recorded once acknowledged;
    without it nothing leaves the host and the local inventory is left as it was (the
    next real scan still sends everything new). Returns what was found."""
    from .client import CoordinatorClient
    from .config import AgentConfig, load_identity
    from .discovery.inventory import cached_files, inventory_delta
    from .discovery.service import DiscoveryService

    state = AgentState(paths.state)
    client = None
    if report:
        if not paths.config.exists():
            raise ManualError("this agent is not enrolled: pass --no-report to scan without a coordinator")
        config = AgentConfig.load(paths)
        client = CoordinatorClient(config.coordinator, ca_pem=paths.ca_bundle.read_bytes(),
                                   agent_id=config.agent_id, identity=load_identity(paths))
    service = DiscoveryService(state, client, Secrets(paths.secrets), roots=configured_roots)
    try:
        scan_roots = service.roots_for(roots)
    except ValueError as exc:
        raise ManualError(str(exc)) from None
    try:
        if report:
            summary = await service.scan_files(f"manual-{state.now()}", roots)
            return {"summary": summary, "reported": True}
        import functools

        import trio

        from .discovery.filesystem import scan

        result = await trio.to_thread.run_sync(functools.partial(
            scan, scan_roots, passwords=service.passwords(), previous=cached_files(state)))
        delta = inventory_delta(state, result)
        return {"summary": f"{result.statistics.certificates} certificate(s) in {', '.join(scan_roots)};"
                           f" {len(delta.added)} new or changed and {len(delta.removed)} gone since the last"
                           " reported scan (not reported)",
                "reported": False,
                "certificates": [record.to_dict() for record in result.certificates],
                "problems": [problem.to_dict() for problem in result.problems]}
    finally:
        if client is not None:
            await client.aclose()
