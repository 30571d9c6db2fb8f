"""The ``f5`` target: a BIG-IP client-ssl profile, through iControl REST, from a proxy
agent in the device's network zone.

The calls, and how the device is authenticated, are in :mod:`.icontrol`. The procedure
keeps the deployment rules of the file pipeline:

1. the management interface proves its identity before anything is sent: its TLS
   certificate must have the pinned SHA-256 fingerprint (checked right after the
   handshake, before the first request, so a wrong device never sees the password),
   or chain to the configured CA bundle;
2. a per-profile lock; the profile's ``certKeyChain`` as it was is kept in the agent's
   state, once per order;
3. idempotency: a profile already using this certificate's objects is left alone;
4. new objects, named after ``object_name`` and the certificate's fingerprint, so the
   objects in use are never overwritten; uploaded files are removed once installed
   (the key file especially);
5. the profile's first ``certKeyChain`` entry is switched inside a transaction;
6. on a failed commit, a failed call or a failed post-deploy check, rollback: the
   previous ``certKeyChain`` is put back unless the device already kept it, the objects
   this attempt installed are deleted, and the error reports both outcomes.

Passwords and tokens are never logged nor put in an error; proxies from the
environment are ignored (``trust_env=False``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from secrets import token_hex
from typing import Any

import httpx
import trio

from certfleet.shared.targets import F5Target, normalize_sha256_fingerprint

from ..secrets import SecretError, Secrets
from ..state import AgentState, Snapshot
from ..verify import verify_served
from .base import Bundle, DeployError, DeployOutcome, describe_served, is_cancellation
from .icontrol import DOWNLOADS, REQUEST_TIMEOUT, BigIp, DeviceRefused, F5Error, Trust

__all__ = ["F5Deployer"]

log = logging.getLogger("certfleet.agent.deploy")

_locks: dict[str, trio.Lock] = {}


# --- certKeyChain entries -----------------------------------------------------------------

_ESSENTIAL = ("name", "cert", "key", "chain")


def _essentials(chain: Any) -> list[tuple[str, ...]]:
    """What makes two ``certKeyChain`` lists the same configuration."""
    if not isinstance(chain, list):
        return []
    return [tuple(str(entry.get(k) or ("none" if k == "chain" else "")) for k in _ESSENTIAL)
            for entry in chain if isinstance(entry, Mapping)]


def _writable(chain: Any) -> list[dict[str, Any]]:
    """Entries as read, minus the ``…Reference`` links the device adds on reading."""
    if not isinstance(chain, list):
        return []
    return [{k: v for k, v in entry.items() if not k.endswith("Reference")}
            for entry in chain if isinstance(entry, Mapping)]


def _device_fingerprint(certificate_object: Mapping[str, Any] | None) -> str | None:
    """A certificate object's ``fingerprint`` (``SHA256/AB:CD:…``) as lowercase hex."""
    value = str((certificate_object or {}).get("fingerprint") or "")
    algorithm, _, digest = value.partition("/")
    return digest.replace(":", "").lower() if algorithm.upper() == "SHA256" else None


@dataclass(frozen=True)
class _Objects:
    """The objects one certificate is installed as: ``{object_name}_{fingerprint}``."""

    partition: str
    certificate: str
    key: str
    chain: str | None

    @classmethod
    def of(cls, target: F5Target, bundle: Bundle) -> _Objects:
        stem = f"{target.object_name}_{bundle.fingerprint_sha256[:16]}"
        return cls(target.partition, f"{stem}.crt", f"{stem}.key", f"{stem}_chain.crt" if bundle.chain.strip() else None)

    def full(self, name: str | None) -> str:
        return f"/{self.partition}/{name}" if name else "none"

    def entry(self, name: str) -> dict[str, Any]:
        return {"name": name, "cert": self.full(self.certificate), "key": self.full(self.key),
                "chain": self.full(self.chain)}


@dataclass
class _Installed:
    """Objects this attempt created (and so deletes if it rolls back)."""

    partition: str
    objects: list[tuple[str, str]] = field(default_factory=list)
    """(kind, name): ``cert`` or ``key``, and the name in the partition."""

    def describe(self) -> str:
        return ", ".join(f"/{self.partition}/{name} ({kind})" for kind, name in self.objects)


# --- the deployer -------------------------------------------------------------------------

_CALL_ERRORS = (F5Error, DeviceRefused)


class F5Deployer:
    def __init__(self, state: AgentState, secrets: Secrets) -> None:
        self.state = state
        self.secrets = secrets

    @staticmethod
    def snapshot_name(target: F5Target) -> str:
        return f"f5:{target.url.rstrip('/')}/{target.partition}/{target.profile}"

    @staticmethod
    def describe(target: F5Target) -> list[str]:
        """The plan in words, for ``certfleet-agent deploy --dry-run``; connects nowhere."""
        trust = (f"its TLS certificate must have SHA-256 fingerprint"
                 f" {normalize_sha256_fingerprint(target.server_fingerprint)}" if target.server_fingerprint
                 else "its TLS certificate must be the pinned PEM" if target.server_certificate
                 else f"its TLS certificate must chain to {target.ca_bundle} and name the host")
        lines = ["kind: f5",
                 f"connect to {target.url} ({trust}) and log in ({target.login_provider}) with the agent's secret"
                 f" {target.credentials_secret!r}",
                 f"upload and install certificate, key and chain objects {target.object_name}_<fingerprint>.crt,"
                 f" .key and _chain.crt in /{target.partition} (private key material; the uploaded files are"
                 " removed once installed)",
                 f"in one transaction, point the first certKeyChain entry of client-ssl profile"
                 f" /{target.partition}/{target.profile} at them"]
        if target.verify:
            lines.append(f"verify: {target.verify.protocol} {target.verify.host}:{target.verify.port}")
        lines.append("on failure: put the previous certKeyChain back and delete the new objects")
        return lines

    def _credentials(self, target: F5Target) -> tuple[str, str]:
        try:
            value = self.secrets.get(target.credentials_secret)
        except SecretError as exc:
            raise DeployError(str(exc), step="prepare") from None
        username, separator, password = value.partition(":")
        if not separator or not username or not password:
            raise DeployError(f"the secret {target.credentials_secret!r} must hold username:password",
                              step="prepare")
        return username, password

    @staticmethod
    def _client(target: F5Target, trust: Trust) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=target.url.rstrip("/"), verify=trust.context,
                                 timeout=httpx.Timeout(REQUEST_TIMEOUT), follow_redirects=False, trust_env=False)

    async def _session(self, api: BigIp, target: F5Target) -> None:
        """Log in. Raises :class:`DeployError` (step ``prepare``): nothing has changed."""
        username, password = self._credentials(target)
        try:
            await api.login(username, password, target.credentials_secret)
        except DeviceRefused as exc:
            raise DeployError(f"{exc}; nothing sent", step="prepare") from None
        except F5Error as exc:
            raise DeployError(f"{exc}; nothing changed", step="prepare") from None

    def _previous(self, order_id: str, target: F5Target, chain: list[dict[str, Any]]) -> None:
        """Keep the profile's certKeyChain as it was before this order, for
        ``certfleet-agent rollback``."""
        name = self.snapshot_name(target)
        if not any(s.name == name for s in self.state.snapshots(order_id) or []):
            self.state.save_snapshots(order_id, [Snapshot(name, True, json.dumps(chain).encode(), 0, 0, 0)])

    async def deploy(self, order_id: str, target: F5Target, bundle: Bundle, *, server_name: str) -> DeployOutcome:
        """Make the profile serve ``bundle``. Raises :class:`DeployError`: step
        ``prepare`` (secret, pin, login, missing profile), ``apply`` (a failed call or
        commit) or ``verify``, each with the rollback outcome."""
        trust = Trust.of(target)
        where = f"client-ssl profile /{target.partition}/{target.profile} on {target.url}"
        async with _locks.setdefault(self.snapshot_name(target), trio.Lock()), self._client(target, trust) as client:
            api = BigIp(client, target, trust)
            await self._session(api, target)
            try:
                return await self._deploy(order_id, target, bundle, api, where, server_name)
            finally:
                with trio.CancelScope(shield=True):
                    await api.logout()

    async def _deploy(self, order_id: str, target: F5Target, bundle: Bundle, api: BigIp, where: str,
                      server_name: str) -> DeployOutcome:
        objects = _Objects.of(target, bundle)
        try:
            profile = await api.get_profile()
            if profile is None:
                raise DeployError(f"there is no {where}: create it (certfleet changes a profile, it does not"
                                  " create one)", step="prepare")
            current = _writable(profile.get("certKeyChain"))
            self._previous(order_id, target, current)
            first_name = str(current[0].get("name") or "default") if current else "default"
            wanted = [objects.entry(first_name), *current[1:]]
            if _essentials(current) == _essentials(wanted) and \
                    _device_fingerprint(await api.get_object("cert", objects.certificate)) \
                    == bundle.fingerprint_sha256:
                log.info("%s already uses this certificate: nothing changed", where)
                return DeployOutcome((), False, bundle.fingerprint_sha256)
        except _CALL_ERRORS as exc:
            raise DeployError(f"cannot read {where}: {exc}; nothing changed", step="apply") from None

        installed = _Installed(target.partition)
        try:
            return await self._switch(target, bundle, api, where, server_name, objects, current, wanted, installed)
        except BaseException as exc:
            if not is_cancellation(exc):
                raise
            # The agent is stopping past its deadline: leave the profile as it was
            # rather than half-checked. The order runs again at the next start.
            log.warning("deployment to %s cancelled; undoing", where)
            await self._undo(api, current, installed)
            raise

    async def _switch(self, target: F5Target, bundle: Bundle, api: BigIp, where: str, server_name: str,
                      objects: _Objects, current: list[dict[str, Any]], wanted: list[dict[str, Any]],
                      installed: _Installed) -> DeployOutcome:
        """Install the objects, switch the profile in a transaction, check; each step
        undoes what came before when it fails."""
        try:
            await self._install(api, objects, bundle, installed)
        except _CALL_ERRORS as exc:
            outcome = await self._delete(api, installed)
            raise DeployError(f"cannot install the certificate on {target.url}: {exc}; {outcome}", step="apply",
                              rolled_back=bool(installed.objects)) from None

        transaction, committing = None, False
        try:
            transaction = await api.begin()
            await api.patch_profile(wanted, transaction)
            committing = True
            await api.commit(transaction)
        except _CALL_ERRORS as exc:
            log.warning("switching %s failed (%s); undoing", where, exc)
            if transaction is not None and not committing:  # a commit ends the transaction either way
                with trio.CancelScope(shield=True):
                    await api.abandon(transaction)
            outcome, restored = await self._undo(api, current, installed)
            raise DeployError(f"switching the {where} to the new certificate failed: {exc}; {outcome}",
                              step="apply", rolled_back=restored) from None

        served = None
        if target.verify is not None:
            seen = await verify_served(target.verify, expected=bundle.fingerprint_sha256, default_name=server_name)
            served = seen.fingerprint
            if not seen.matched:
                outcome, restored = await self._undo(api, current, installed)
                raise DeployError(f"verification failed: {seen.detail}; {outcome}", step="verify",
                                  rolled_back=restored, served_fingerprint=served)
        log.info("deployed to %s", where)
        changed = tuple(f"{objects.full(name)} ({kind})" for kind, name in installed.objects)
        return DeployOutcome((*changed, f"/{target.partition}/{target.profile} (client-ssl profile)"), False,
                             bundle.fingerprint_sha256, served)

    @staticmethod
    async def _install(api: BigIp, objects: _Objects, bundle: Bundle, installed: _Installed) -> None:
        """Upload and install what is missing. An object of that name already there (a
        retried order) is reused if it holds this certificate."""
        wanted = [("cert", objects.certificate, bundle.certificate, ".crt"),
                  ("key", objects.key, bundle.private_key, ".key")]
        if objects.chain:
            wanted.append(("cert", objects.chain, bundle.chain, ".crt"))
        for kind, name, data, suffix in wanted:
            existing = await api.get_object(kind, name)
            if existing is not None:
                if name == objects.certificate and _device_fingerprint(existing) != bundle.fingerprint_sha256:
                    raise F5Error(f"the certificate object {objects.full(name)} exists and holds another"
                                  " certificate; remove it or choose another object_name")
                continue
            file_name = f"certfleet-{token_hex(8)}{suffix}"
            await api.upload(file_name, data)
            try:
                await api.install(kind, name, file_name)
                installed.objects.append((kind, name))
            finally:
                with trio.CancelScope(shield=True):
                    try:
                        await api.remove_upload(file_name)
                    except _CALL_ERRORS as exc:
                        log.warning("could not remove the uploaded %s/%s on %s: %s", DOWNLOADS, file_name,
                                    api.target.url, exc)

    @staticmethod
    async def _delete(api: BigIp, installed: _Installed) -> str:
        """Delete what this attempt installed, key last (a certificate may not outlive
        the key it was installed beside on every version)."""
        if not installed.objects:
            return "nothing installed"
        failed = []
        with trio.CancelScope(shield=True):
            for kind, name in sorted(installed.objects, key=lambda item: item[0] == "key"):
                try:
                    await api.delete_object(kind, name)
                except _CALL_ERRORS as exc:
                    failed.append(f"{name} ({kind}): {exc}")
        if failed:
            return "could not delete the new objects " + "; ".join(failed)
        return f"new objects deleted: {installed.describe()}"

    async def _undo(self, api: BigIp, previous: list[dict[str, Any]], installed: _Installed) -> tuple[str, bool]:
        """Put the profile's previous certKeyChain back unless the device kept it, then
        delete the new objects. Shielded: a rollback that has started finishes."""
        with trio.CancelScope(shield=True):
            try:
                profile = await api.get_profile()
                if profile is not None and _essentials(profile.get("certKeyChain")) == _essentials(previous):
                    profile_outcome = "the profile still has its previous certKeyChain"
                else:
                    await api.patch_profile(previous)
                    profile_outcome = "the profile's previous certKeyChain restored"
            except _CALL_ERRORS as exc:
                return f"rollback FAILED: {exc}; the new objects are left in place", False
            return f"{profile_outcome}; {await self._delete(api, installed)}", True

    async def check(self, target: F5Target, *, server_name: str, expected: str | None) -> str:
        """A ``targets test``: authenticate the device, log in, read the profile and,
        with ``verify``, the served leaf. Changes nothing. Raises :class:`DeployError`."""
        trust = Trust.of(target)
        found = []
        async with self._client(target, trust) as client:
            api = BigIp(client, target, trust)
            await self._session(api, target)
            try:
                profile = await api.get_profile()
            except _CALL_ERRORS as exc:
                raise DeployError(f"cannot read the client-ssl profile: {exc}", step="apply") from None
            finally:
                with trio.CancelScope(shield=True):
                    await api.logout()
        if profile is None:
            raise DeployError(f"there is no client-ssl profile /{target.partition}/{target.profile} on"
                              f" {target.url}", step="prepare")
        chain = _essentials(profile.get("certKeyChain"))
        found.append(f"logged in to {target.url}; client-ssl profile /{target.partition}/{target.profile} uses"
                     f" {chain[0][1] if chain else 'no certificate'}")
        if target.verify is not None:
            found.append(await describe_served(target.verify, expected=expected, server_name=server_name))
        return "; ".join(found)

    async def roll_back_order(self, order_id: str, target: F5Target) -> str:
        """Put the profile's certKeyChain back as it was before ``order_id`` ran (an
        operator's ``certfleet-agent rollback``). The order's objects stay installed.
        Raises :class:`DeployError`."""
        name = self.snapshot_name(target)
        snapshot = next((s for s in self.state.snapshots(order_id) or [] if s.name == name), None)
        if snapshot is None:
            raise DeployError(f"work order {order_id} left no snapshot of {name}", step="prepare")
        previous = json.loads(snapshot.content)
        trust = Trust.of(target)
        async with _locks.setdefault(name, trio.Lock()), self._client(target, trust) as client:
            api = BigIp(client, target, trust)
            await self._session(api, target)
            try:
                profile = await api.get_profile()
                if profile is not None and _essentials(profile.get("certKeyChain")) == _essentials(previous):
                    return "the profile already has the certKeyChain it had before the order"
                await api.patch_profile(previous)
                return "the profile's previous certKeyChain restored"
            except _CALL_ERRORS as exc:
                raise DeployError(f"rollback of {name} FAILED: {exc}", step="apply") from None
            finally:
                with trio.CancelScope(shield=True):
                    await api.logout()
