"""Deployers: one module per target kind, all run by one procedure (``pipeline``).

A file-based kind contributes only a ``plan`` (what to write, how to test, reload and
verify); :class:`Deployers` picks the kind's planner and hands the plan to the
pipeline. Targets that are not files (Kubernetes Secrets) bring their own procedure
with the same snapshot, idempotency and rollback rules.
"""

from __future__ import annotations

from collections.abc import Callable

from certfleet.shared import targets as t

from ..secrets import SecretError, Secrets
from ..state import AgentState
from . import apache, caddy, dovecot, envoy, file, haproxy, nginx, postfix, traefik
from .base import Bundle, DeployError, DeployOutcome
from .pipeline import Pipeline, Plan

__all__ = ["Bundle", "DeployError", "DeployOutcome", "Deployers", "Plan"]

FILE_PLANNERS: dict[type, Callable[..., Plan]] = {
    t.FileTarget: file.plan,
    t.NginxTarget: nginx.plan,
    t.ApacheTarget: apache.plan,
    t.HaproxyTarget: haproxy.plan,
    t.PostfixTarget: postfix.plan,
    t.DovecotTarget: dovecot.plan,
    t.CaddyTarget: caddy.plan,
    t.TraefikTarget: traefik.plan,
    t.EnvoyTarget: envoy.plan,
}


class Deployers:
    def __init__(self, state: AgentState, secrets: Secrets) -> None:
        self.state = state
        self.secrets = secrets
        self.pipeline = Pipeline(state)

    @staticmethod
    def _validate(target: t.Target) -> None:
        import msgspec

        try:
            target.validate()
        except msgspec.ValidationError as exc:
            raise DeployError(f"the target settings are not acceptable: {exc}", step="prepare") from exc

    async def plan(self, target: t.Target, bundle: Bundle) -> Plan:
        """The file plan for ``target``; validated again here, whatever the coordinator said."""
        self._validate(target)
        planner = FILE_PLANNERS.get(type(target))
        if planner is not None:
            return planner(target, bundle)
        if isinstance(target, t.KeystoreTarget):
            from . import keystore

            try:
                return await keystore.plan(target, bundle, self.secrets)
            except SecretError as exc:
                raise DeployError(str(exc), step="prepare") from exc
        raise DeployError(f"{type(target).__name__} targets are not written as files", step="prepare")

    async def deploy(self, order_id: str, target: t.Target, bundle: Bundle, *, server_name: str) -> DeployOutcome:
        if isinstance(target, t.KubernetesSecretTarget):
            from .kubernetes import KubernetesDeployer

            self._validate(target)
            return await KubernetesDeployer(self.state, self.secrets).deploy(order_id, target, bundle)
        return await self.pipeline.deploy(order_id, await self.plan(target, bundle), bundle, server_name=server_name)
