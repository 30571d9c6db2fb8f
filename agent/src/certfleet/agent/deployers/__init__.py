"""Deployers: one module per target kind, all run by one procedure (``pipeline``).

A file-based kind contributes only a ``plan`` (what to write, how to test, reload and
verify); :class:`Deployers` picks the kind's planner and hands the plan to the
pipeline. Targets that are not local files (Kubernetes Secrets, and the devices a proxy
agent reaches over SSH or F5 iControl REST) bring their own procedure with the same
snapshot, idempotency and rollback rules.

The host policy (``commands.allow``, ``paths.allow``) governs what runs and is written
on this host; the ``ssh`` and ``f5`` kinds run and write nothing here (an F5 target's
``ca_bundle``, a file it reads, is still held to ``paths.allow``): their devices are
named, and pinned, in the target itself.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from certfleet.shared import targets as t

from ..commands import run_argv
from ..policy import HostPolicy, PolicyRefused
from ..secrets import SecretError, Secrets
from ..state import AgentState
from . import apache, caddy, dovecot, envoy, file, haproxy, nginx, postfix, traefik
from .base import Bundle, DeployError, DeployOutcome, describe_served
from .pipeline import MasterSocketReload, Pipeline, Plan

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
    def __init__(self, state: AgentState, secrets: Secrets, policy: HostPolicy | None = None) -> None:
        self.state = state
        self.secrets = secrets
        self.policy = policy
        self.pipeline = Pipeline(state)

    def _permit(self, *argvs: tuple[str, ...] | list[str] | None, paths: tuple[Path, ...] = ()) -> None:
        """Refuse a program or a path the host's policy does not allow."""
        if self.policy is None:
            return
        try:
            self.policy.check_commands(*argvs)
            self.policy.check_paths(*paths)
        except PolicyRefused as exc:
            raise DeployError(f"refused by this host's policy: {exc}", step="prepare") from exc

    def _permit_device(self, target: t.SshTarget | t.F5Target) -> None:
        if self.policy is None:
            return
        try:
            self.policy.check_device(t.kind_of(target), target)
        except PolicyRefused as exc:
            raise DeployError(f"refused by this host's policy: {exc}", step="prepare") from exc

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
            plan = planner(target, bundle)
        elif isinstance(target, t.KeystoreTarget):
            from . import keystore

            self._permit(target.reload_command, paths=(Path(target.path),))  # before keytool runs
            try:
                plan = await keystore.plan(target, bundle, self.secrets)
            except SecretError as exc:
                raise DeployError(str(exc), step="prepare") from exc
        else:
            raise DeployError(f"{type(target).__name__} targets are not written as files", step="prepare")
        socket = (plan.reload.socket,) if isinstance(plan.reload, MasterSocketReload) else ()
        self._permit(plan.test, plan.reload if isinstance(plan.reload, tuple) else None,
                     paths=(*(f.path for f in plan.files), *socket))
        return plan

    async def deploy(self, order_id: str, target: t.Target, bundle: Bundle, *, server_name: str) -> DeployOutcome:
        if isinstance(target, t.SshTarget):
            from .ssh import SshDeployer

            self._validate(target)
            self._permit_device(target)
            return await SshDeployer(self.state, self.secrets).deploy(order_id, target, bundle,
                                                                      server_name=server_name)
        if isinstance(target, t.F5Target):
            from .f5 import F5Deployer

            self._validate(target)
            self._permit_device(target)
            if target.ca_bundle:
                self._permit(paths=(Path(target.ca_bundle),))
            return await F5Deployer(self.state, self.secrets).deploy(order_id, target, bundle,
                                                                     server_name=server_name)
        if isinstance(target, t.KubernetesSecretTarget):
            from .kubernetes import KubernetesDeployer

            self._validate(target)
            if target.kubeconfig:
                self._permit(paths=(Path(target.kubeconfig),))
            return await KubernetesDeployer(self.state, self.secrets).deploy(order_id, target, bundle)
        return await self.pipeline.deploy(order_id, await self.plan(target, bundle), bundle, server_name=server_name)

    async def check(self, target: t.Target, *, server_name: str, expected: str | None) -> str:
        """A ``targets test``: the config test as it stands and, with a listening
        address, the leaf served there (compared with ``expected``, the certificate
        certfleet last deployed, if any). Writes nothing. Raises DeployError on a
        failed test, an unreachable server or an unexpected leaf."""
        self._validate(target)
        if isinstance(target, (t.SshTarget, t.F5Target)):
            self._permit_device(target)
        if isinstance(target, t.SshTarget):  # its test runs on the device, not here
            from .ssh import SshDeployer

            return await SshDeployer(self.state, self.secrets).check(target, server_name=server_name,
                                                                     expected=expected)
        if isinstance(target, t.F5Target):
            from .f5 import F5Deployer

            if target.ca_bundle:
                self._permit(paths=(Path(target.ca_bundle),))
            return await F5Deployer(self.state, self.secrets).check(target, server_name=server_name,
                                                                    expected=expected)
        found = []
        effective_test = getattr(target, "effective_test", None)
        test = effective_test() if effective_test else None
        self._permit(test)
        if test:
            tested = await run_argv(test)
            if not tested.ok:
                raise DeployError(f"config test failed: {tested.describe()}", step="config-test")
            found.append(f"config test passed: `{' '.join(test)}`")
        check = getattr(target, "verify", None)
        if check is not None:
            found.append(await describe_served(check, expected=expected, server_name=server_name))
        if not found:
            raise DeployError(f"a {t.kind_of(target)} target has no config test and no listening"
                              " address to check", step="prepare")
        return "; ".join(found)
