"""Discovered certificates: the inventory of what the agents found, and its triage.

Agents report what their scans find (certificate files on the host, TLS endpoints on
its network). Each find is one row per certificate per location per agent: seen again,
it is refreshed; reported gone, it is marked removed and kept, with its triage. A find
whose fingerprint is a certificate certfleet issued is ``managed`` from the start; the
others are ``unmanaged`` until an operator dismisses them (with a reason) or claims them.

Claiming makes a managed certificate bound to the agent that found it, and issues
nothing: the found certificate and its key stay where they are until the first renewal,
planned from the found certificate's validity like any other. That renewal deploys to
the claim's target; for a PEM file claimed as it lies, a ``file`` target writing back to
the path it was found at.

Unmanaged finds nearing expiry raise alerts (``scan_for_alerts``).
"""

from __future__ import annotations

import json
import posixpath
import random
from typing import Any

import msgspec
from cryptography import x509
from cryptography.x509.oid import NameOID

from certfleet.shared import wire
from certfleet.shared.pki import KeyType, NameError_, normalize_name, normalize_names

from .. import errors
from ..auth.rbac import GLOBAL
from ..ca.policy import SHORT_LIVED_MAX
from ..core import Call, new_id, printable
from ..lifecycle.planning import plan_renewal
from ..storage import Certificates, DiscoveredCertificates, RenewalPolicies, Tx
from .certificates import _check_policy, certificate_info, profile_policy
from .renewal import RenewalOperations, _policy

__all__ = ["MAX_FINDS_PER_AGENT", "DiscoveryOperations", "discovery_info", "names_of_find", "sibling_key_path"]

MAX_FINDS_PER_AGENT = 100_000
"""Present finds one agent may have: a broken or hostile agent cannot fill the database."""
PAGE_DEFAULT, PAGE_MAX = 100, 1000
STATUSES = ("unmanaged", "managed", "dismissed")
SOURCES = ("filesystem", "network")
_rng = random.SystemRandom()


def discovery_info(row: dict[str, Any]) -> wire.DiscoveredCertificateInfo:
    return wire.DiscoveredCertificateInfo(
        id=row["id"], agent_id=row["agent_id"], source=row["source"], status=row["status"],
        fingerprint_sha256=row["fingerprint_sha256"], subject=row["subject"], sans=json.loads(row["sans"]),
        issuer=row["issuer"], serial=row["serial"], not_before=row["not_before"], not_after=row["not_after"],
        key_algorithm=row["key_algorithm"], key_size=row["key_size"], is_ca=bool(row["is_ca"]), path=row["path"],
        position=row["position"], format=row["format"], has_private_key=bool(row["has_private_key"]),
        scan_id=row["scan_id"], first_seen=row["first_seen"], last_seen=row["last_seen"],
        present=row["removed_at"] is None, removed_at=row["removed_at"],
        managed_certificate_id=row["managed_certificate_id"], claimed_certificate_id=row["claimed_certificate_id"],
        dismiss_reason=row["dismiss_reason"], triaged_by=row["triaged_by"], triaged_at=row["triaged_at"])


def sibling_key_path(path: str) -> str:
    """Where the key of a certificate file usually lies: ``privkey.pem`` beside certbot's
    ``cert.pem`` or ``fullchain.pem``, ``NAME.key`` beside ``NAME.crt``, ``.pem``,
    ``.cer`` or ``.cert``, else the file's name with ``.key`` added."""
    directory, name = posixpath.split(path)
    if name in ("cert.pem", "fullchain.pem"):
        return posixpath.join(directory, "privkey.pem")
    stem, extension = posixpath.splitext(name)
    if extension.lower() in (".crt", ".pem", ".cer", ".cert") and stem:
        return posixpath.join(directory, stem + ".key")
    return path + ".key"


def names_of_find(row: dict[str, Any]) -> list[str]:
    """The names a renewal of the find must carry, canonical, the common name first
    when it is one of them. Raises :class:`errors.UnprocessableEntity` if certfleet
    cannot issue one of them: a renewal that dropped a name would break its clients."""
    unsupported, names = [], []
    for entry in json.loads(row["sans"]):
        kind, _, value = entry.partition(":")
        try:
            if kind.upper() in ("DNS", "IP") or (kind.upper() == "URI" and value.startswith("spiffe://")):
                names.append(normalize_name(value))
                continue
        except NameError_:
            pass
        unsupported.append(entry)
    if unsupported:
        raise errors.UnprocessableEntity(
            f"certfleet cannot issue these names of the find: {', '.join(unsupported[:10])}; create the"
            " certificate by hand with the names it should have", slug="unsupported-names")
    common_name = _common_name(row["subject"])
    if common_name is not None and (common_name in names or not names):
        names.insert(0, common_name)
    if not names:
        raise errors.UnprocessableEntity("the find has no DNS name, IP address or SPIFFE ID to renew it for",
                                         slug="unsupported-names")
    return list(normalize_names(names))


def _common_name(subject: str) -> str | None:
    try:
        attributes = x509.Name.from_rfc4514_string(subject).get_attributes_for_oid(NameOID.COMMON_NAME)
        return normalize_name(str(attributes[0].value)) if attributes else None
    except (ValueError, NameError_):
        return None


def _key_type_of_find(row: dict[str, Any]) -> KeyType | None:
    """The key type certfleet would make to match the found key, if it makes such keys."""
    algorithm, size = row["key_algorithm"].lower(), row["key_size"]
    if algorithm in ("rsa", "rsaencryption") and size in (2048, 3072, 4096):
        return KeyType(f"rsa-{size}")
    if algorithm in ("ec", "ecdsa") and size in (256, 384):
        return KeyType(f"ec-p{size}")
    if algorithm == "ed25519":
        return KeyType.ED25519
    return None


def _discovery_id(call: Call) -> int:
    raw = call.params["discovery_id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise errors.NotFound(f"no discovered certificate {raw[:40]!r}")
    return int(raw)


class DiscoveryOperations(RenewalOperations):
    # --- the agent reports ---------------------------------------------------------------

    async def agent_discoveries(self, call: Call) -> wire.DiscoveryReceipt:
        """Record a report from the calling agent; everything it names is the caller's."""
        agent_id = call.principal.id
        body: wire.DiscoveryReport = call.body
        finds = [(found, found.validity()) for found in body.added]
        now = self.now()

        def record(tx: Tx) -> int:
            store = DiscoveredCertificates(tx)
            certfleet = store.certfleet_versions(sorted({found.fingerprint_sha256 for found, _ in finds}))
            for found, (not_before, not_after) in finds:
                store.record(agent_id=agent_id, source=body.source, scan_id=body.scan_id,
                             fingerprint_sha256=found.fingerprint_sha256, path=printable(found.path),
                             position=found.position, subject=printable(found.subject),
                             sans=[printable(name) for name in found.sans], issuer=printable(found.issuer),
                             serial=found.serial.lower(), not_before=not_before, not_after=not_after,
                             key_algorithm=printable(found.key_algorithm), key_size=found.key_size, is_ca=found.is_ca,
                             format=found.format, has_private_key=found.has_private_key,
                             managed_certificate_id=certfleet.get(found.fingerprint_sha256), now=now)
            removed = sum(store.mark_removed(agent_id=agent_id, fingerprint_sha256=gone.fingerprint_sha256,
                                             path=printable(gone.path), position=gone.position, now=now)
                          for gone in body.removed)
            if body.complete:
                store.seen_in_full_scan(agent_id=agent_id, source=body.source, now=now)
            if store.present_count(agent_id) > MAX_FINDS_PER_AGENT:
                raise errors.UnprocessableEntity(
                    f"an agent may have at most {MAX_FINDS_PER_AGENT} present finds; report removals, or"
                    " narrow the scan", slug="discovery-limit")
            self.record(tx, call, resource_type="discovery-scan", resource_id=body.scan_id,
                        details={"source": body.source, "added": len(finds), "removed": removed,
                                 "complete": body.complete})
            return removed

        removed = await self.database.transact(record)
        return wire.DiscoveryReceipt(recorded=len(finds), removed=removed)

    # --- operators -----------------------------------------------------------------------

    async def discovery_list(self, call: Call) -> wire.DiscoveryPage:
        query = call.query
        for name, allowed in (("status", STATUSES), ("source", SOURCES)):
            if name in query and query[name] not in allowed:
                raise errors.BadRequest(f"{name} is one of {', '.join(allowed)}")
        limit = max(1, min(query.get("limit", PAGE_DEFAULT), PAGE_MAX))
        expires_before = query.get("expires_before")
        if "expires_within_days" in query:
            within = self.now() + max(0, min(query["expires_within_days"], 100 * 365)) * 86400
            expires_before = within if expires_before is None else min(expires_before, within)
        rows = await self.database.transact(lambda tx: DiscoveredCertificates(tx).list(
            status=query.get("status"), agent_id=query.get("agent_id"), source=query.get("source"),
            issuer=query.get("issuer"), expires_before=expires_before,
            include_removed=bool(query.get("include_removed")), after=max(0, query.get("after", 0)), limit=limit))
        return wire.DiscoveryPage(certificates=[discovery_info(r) for r in rows],
                                  next_after=rows[-1]["id"] if len(rows) == limit else None)

    async def discovery_get(self, call: Call) -> wire.DiscoveredCertificateInfo:
        discovery_id = _discovery_id(call)
        return discovery_info(await self.database.transact(lambda tx: DiscoveredCertificates(tx).get(discovery_id)))

    async def discovery_dismiss(self, call: Call) -> wire.DiscoveredCertificateInfo:
        discovery_id = _discovery_id(call)
        reason = call.body.reason.strip()

        def dismiss(tx: Tx) -> dict[str, Any]:
            finds = DiscoveredCertificates(tx)
            row = finds.get(discovery_id)
            if not finds.dismiss(discovery_id, reason=reason, by=call.principal.actor, now=self.now()):
                raise errors.Conflict(f"only an unmanaged find can be dismissed; this one is {row['status']}",
                                      slug="not-unmanaged")
            self.record(tx, call, resource_type="discovered-certificate", resource_id=str(discovery_id),
                        details={"reason": reason, "fingerprint_sha256": row["fingerprint_sha256"],
                                 "agent_id": row["agent_id"], "path": row["path"]})
            return finds.get(discovery_id)

        return discovery_info(await self.database.transact(dismiss))

    async def discovery_claim(self, call: Call) -> wire.CertificateInfo:
        discovery_id = _discovery_id(call)
        body: wire.DiscoveryClaim = call.body
        certificate_id = new_id("crt")

        def claim(tx: Tx) -> dict[str, Any]:
            finds = DiscoveredCertificates(tx)
            row = finds.get(discovery_id)
            if row["status"] == "managed":
                owner = row["claimed_certificate_id"] or row["managed_certificate_id"]
                raise errors.Conflict(f"already managed as certificate {owner}", slug="already-managed")
            if row["removed_at"] is not None:
                raise errors.Conflict("the agent reported this find gone; there is nothing in place to manage",
                                      slug="find-removed")
            if row["is_ca"]:
                raise errors.UnprocessableEntity("this is a CA certificate; certfleet renews end-entity"
                                                 " certificates only", slug="ca-certificate")
            names = names_of_find(row)
            profile = self.resolve_profile(tx, body.profile)
            self.require_on_profile(call, "cert.create", profile)
            policy = profile_policy(profile)
            key_type = body.key_type or next(
                (k for k in (_key_type_of_find(row), KeyType.EC_P256) if k in policy.key_types), policy.key_types[0])
            longest = min(policy.max_lifetime_seconds, SHORT_LIVED_MAX) if policy.short_lived \
                else policy.max_lifetime_seconds
            lifetime = body.lifetime_seconds or max(300, min(row["not_after"] - row["not_before"], longest))
            _check_policy(policy, key_type=key_type, names=names, lifetime=lifetime)
            self._check_constraints(tx, profile, names)
            renewal_policy_id = self.resolve_renewal_policy(tx, body.renewal_policy)
            target = self._claim_target(tx, call, row, body)
            certificates = Certificates(tx)
            # Deployed already: the found certificate is in place and in use. Its first
            # renewal comes from its own validity, since certfleet holds no version of it.
            certificates.insert(id=certificate_id, names=names, key_type=str(key_type), lifetime_seconds=lifetime,
                                agent_id=row["agent_id"], profile_id=profile["id"], target_id=target["id"],
                                now=self.now(), tags=body.tags, status="deployed",
                                renewal_policy_id=renewal_policy_id)
            renew_at = plan_renewal(row["not_before"], row["not_after"],
                                    _policy(RenewalPolicies(tx).find(renewal_policy_id or "")), now=self.now(),
                                    rng=_rng)
            certificates.set_renew_at(certificate_id, int(renew_at))
            if not finds.claim(discovery_id, certificate_id=certificate_id, by=call.principal.actor, now=self.now()):
                raise errors.Conflict("the find was claimed meanwhile", slug="already-managed")
            details = {"certificate_id": certificate_id, "target_id": target["id"], "profile_id": profile["id"],
                       "names": names, "agent_id": row["agent_id"], "path": row["path"],
                       "fingerprint_sha256": row["fingerprint_sha256"], "renew_at": int(renew_at)}
            self.record(tx, call, resource_type="discovered-certificate", resource_id=str(discovery_id),
                        details=details)
            self.record(tx, call, resource_type="certificate", resource_id=certificate_id,
                        details={"discovery_id": discovery_id, "names": names, "agent_id": row["agent_id"],
                                 "profile_id": profile["id"]})
            return certificates.get(certificate_id)

        return certificate_info(await self.database.transact(claim))

    def _claim_target(self, tx: Tx, call: Call, row: dict[str, Any], body: wire.DiscoveryClaim) -> dict[str, Any]:
        """The target a claim deploys to: the one named, one made from the given
        settings, or for a PEM file a ``file`` target writing back where it was found."""
        if body.target_id is not None:
            return self.resolve_target(tx, body.target_id, agent_id=row["agent_id"])
        self.require_scope(call, "target.edit", GLOBAL)
        settings = body.target
        if settings is None:
            if row["source"] != "filesystem" or row["format"] != "pem" or row["position"] != 0:
                where = ("a network find" if row["source"] == "network" else
                         f"a {row['format']} file" if row["format"] != "pem" else
                         f"certificate {row['position']} of a PEM bundle")
                raise errors.UnprocessableEntity(
                    f"this is {where}: give the target its renewals deploy to (target_id or target)",
                    slug="target-required")
            settings = wire.FileTarget(certificate_path=row["path"],
                                       key_path=body.key_path or sibling_key_path(row["path"]))
            try:
                settings.validate()
            except msgspec.ValidationError as exc:  # a path certfleet will not write to
                raise errors.UnprocessableEntity(f"cannot write back to the found file: {exc}; give a target",
                                                 slug="target-required") from exc
        return self.create_target(tx, call, name=body.target_name or f"discovered-{row['id']}",
                                  agent_id=row["agent_id"], settings=settings)
