"""Notifications: channels, routing by severity, and a delivery outbox.

Events are routed to every channel whose minimum severity they reach, and queued in
the same transaction as the change they report. Each (channel, dedup key) is queued
once: an expiry threshold notifies once per certificate and threshold, a failing job
once however many times it retries. Delivery happens outside any transaction,
retried with backoff; after the last attempt the delivery is dead-lettered, where an
operator can requeue it. Channel secrets are sealed under the master key.
"""

from __future__ import annotations

import json
import random
from typing import Any

import httpx

from certfleet.shared import wire

from .. import errors, notify
from ..core import Call, CoordinatorBase, Page, new_id, page_request, paged
from ..lifecycle.jobs import retry_delay
from ..metrics import liveness
from ..storage import Agents, Certificates, DiscoveredCertificates, Notifications, Tx

__all__ = ["EXPIRY_THRESHOLDS", "UNMANAGED_EXPIRY_THRESHOLDS", "NotificationOperations"]

MAX_DELIVERY_ATTEMPTS = 6
EXPIRY_THRESHOLDS = ((0.25, "warning"), (0.10, "critical"))
"""Fractions of the lifetime left at which an unrenewed certificate notifies: the
same rule works for a one-hour and a 398-day certificate."""
UNMANAGED_EXPIRY_THRESHOLDS = ((30 * 86400, "warning"), (7 * 86400, "critical"))
"""Time left at which a discovered certificate nobody manages notifies. Nothing says
when its owner renews it, so these are plain durations rather than fractions."""
_RANK = {severity: rank for rank, severity in enumerate(notify.SEVERITIES)}
_rng = random.SystemRandom()


def _event_json(event: notify.Event) -> str:
    return json.dumps({"kind": event.kind, "severity": event.severity, "summary": event.summary,
                       "subject": event.subject, "occurred_at": event.occurred_at, "details": dict(event.details),
                       "dedup_key": event.dedup_key})


def _channel_info(row: dict[str, Any], secret_names: list[str]) -> wire.ChannelInfo:
    return wire.ChannelInfo(id=row["id"], name=row["name"], kind=row["kind"], settings=json.loads(row["settings"]),
                            secret_names=secret_names, min_severity=row["min_severity"], created_at=row["created_at"])


def _notification_info(row: dict[str, Any]) -> wire.NotificationInfo:
    event = json.loads(row["event"])
    return wire.NotificationInfo(id=row["id"], channel_id=row["channel_id"], kind=event["kind"],
                                 severity=event["severity"], summary=event["summary"], subject=event["subject"],
                                 status=row["status"], attempts=row["attempts"], created_at=row["created_at"],
                                 last_error=row["last_error"], delivered_at=row["delivered_at"])


class NotificationOperations(CoordinatorBase):
    _http: httpx.AsyncClient | None = None

    def _secrets(self, row: dict[str, Any]) -> dict[str, str]:
        return json.loads(self.keys.master.open(row["sealed_secrets"], context=f"channel:{row['id']}"))

    def emit(self, tx: Tx, *, kind: str, severity: str, summary: str, subject: str, dedup_key: str,
             details: dict[str, Any] | None = None) -> int:
        """Queue an event for every channel it reaches; returns how many were queued."""
        event = notify.Event(kind=kind, severity=severity, summary=summary[:500], subject=subject,
                             occurred_at=self.now(), details=details or {}, dedup_key=dedup_key[:255])
        store, queued = Notifications(tx), 0
        for channel in store.channels():
            if _RANK[severity] >= _RANK[channel["min_severity"]]:
                queued += store.enqueue(id=new_id("ntf"), channel_id=channel["id"],
                                        event=_event_json(event), dedup_key=event.dedup_key,
                                        now=self.now())
        return queued

    async def deliver_notifications(self) -> dict[str, int]:
        """Send what is due; returns counts by outcome."""
        rows = await self.database.transact(lambda tx: Notifications(tx).due(self.now()))
        counts = {"delivered": 0, "retrying": 0, "dead": 0}
        if not rows:
            return counts
        if self._http is None:
            self._http = httpx.AsyncClient(follow_redirects=False)
        for row in rows:
            data = json.loads(row["event"])
            event = notify.Event(**data)
            try:
                await notify.deliver(row["kind"], json.loads(row["settings"]),
                                     self._secrets({"id": row["channel_id"], "sealed_secrets": row["sealed_secrets"]}),
                                     event, client=self._http)
            except notify.DeliveryError as exc:
                attempts = row["attempts"] + 1
                dead = not exc.retryable or attempts >= MAX_DELIVERY_ATTEMPTS
                fields = {"attempts": attempts, "last_error": str(exc)[:2000], "status": "dead" if dead else "pending",
                          "next_attempt_at": self.now() + int(retry_delay(attempts, _rng, base=30, cap=3600))}
                await self.database.transact(lambda tx, f=fields, i=row["id"]: Notifications(tx).update(i, **f))
                counts["dead" if dead else "retrying"] += 1
                self.telemetry.notifications.labels(outcome="dead" if dead else "retrying").inc()
                continue
            await self.database.transact(lambda tx, i=row["id"], a=row["attempts"] + 1: Notifications(tx).update(
                i, status="delivered", attempts=a, delivered_at=self.now(), last_error=None))
            counts["delivered"] += 1
            self.telemetry.notifications.labels(outcome="delivered").inc()
        return counts

    async def scan_for_alerts(self) -> int:
        """Expiry thresholds of unrenewed certificates, offline agents whose
        certificates near expiry, and unmanaged discovered certificates near expiry.
        Deduplicated, so running it often is cheap."""
        now = self.now()

        def scan(tx: Tx) -> int:
            queued, nearing_by_agent = 0, {}
            for row in Certificates(tx).nearing_expiry(now):
                lifetime = row["not_after"] - row["not_before"]
                left = row["not_after"] - now
                if lifetime <= 0 or left <= 0:
                    continue
                if left < lifetime / 3:
                    nearing_by_agent.setdefault(row["agent_id"], []).append(row["id"])
                for fraction, severity in EXPIRY_THRESHOLDS:
                    if left <= fraction * lifetime:
                        queued += self.emit(
                            tx, kind="certificate.expiring", severity=severity, subject=f"certificate:{row['id']}",
                            summary=f"{json.loads(row['names'])[0]} expires in {left // 60} minutes",
                            dedup_key=f"expiring:{row['serial']}:{fraction}",
                            details={"not_after": row["not_after"], "serial": row["serial"]})
            agents = Agents(tx)
            for agent in filter(None, map(agents.find, nearing_by_agent)):
                if liveness(agent["last_seen_at"], now) == "offline":
                    queued += self.emit(
                        tx, kind="agent.offline", severity="critical", subject=f"agent:{agent['id']}",
                        summary=f"agent {agent['name']} is offline with {len(nearing_by_agent[agent['id']])}"
                                " certificate(s) nearing expiry",
                        dedup_key=f"offline:{agent['id']}:{agent['last_seen_at']}",
                        details={"last_seen_at": agent["last_seen_at"]})
            return queued + self._alert_unmanaged_expiring(tx, now)

        return await self.database.transact(scan)

    def _alert_unmanaged_expiring(self, tx: Tx, now: int) -> int:
        """One event per unmanaged certificate (by fingerprint, wherever it was found)
        and threshold: the tightest threshold it has crossed, so a certificate first
        found already close to expiry notifies once, not once per threshold."""
        horizon = max(seconds for seconds, _ in UNMANAGED_EXPIRY_THRESHOLDS)
        places: dict[str, list[dict[str, Any]]] = {}
        for row in DiscoveredCertificates(tx).unmanaged_expiring(now + horizon):
            places.setdefault(row["fingerprint_sha256"], []).append(row)
        queued = 0
        for fingerprint, rows in places.items():
            first, left = rows[0], rows[0]["not_after"] - now
            seconds, severity = min((t for t in UNMANAGED_EXPIRY_THRESHOLDS if left <= t[0]), key=lambda t: t[0])
            when = (f"expires in {left // 86400} days" if left >= 86400 else
                    f"expires in {left // 3600} hours" if left > 0 else "has expired")
            queued += self.emit(
                tx, kind="discovery.unmanaged-expiring", severity=severity,
                subject=f"discovered-certificate:{first['id']}",
                summary=f"unmanaged certificate {first['subject']} {when}, found at {len(rows)} location(s)",
                dedup_key=f"unmanaged-expiring:{fingerprint}:{seconds}",
                details={"fingerprint_sha256": fingerprint, "not_after": first["not_after"], "issuer": first["issuer"],
                         "locations": ", ".join(f"{r['agent_id']}:{r['path']}" for r in rows[:20])})
        return queued

    # --- operators --------------------------------------------------------------------------

    async def channels_list(self, call: Call) -> Page:
        after, limit = page_request(call)
        rows, next_after = paged(await self.database.transact(
            lambda tx: Notifications(tx).channels(after=after, limit=limit)), limit)
        return Page([_channel_info(r, sorted(self._secrets(r))) for r in rows], next_after)

    async def channels_create(self, call: Call) -> wire.ChannelInfo:
        body: wire.ChannelCreate = call.body
        try:
            notify.validate(body.kind, body.settings, body.secrets)
        except ValueError as exc:
            raise errors.UnprocessableEntity(str(exc), slug="invalid-channel") from exc
        channel_id = new_id("chn")

        def create(tx: Tx) -> dict[str, Any]:
            store = Notifications(tx)
            if tx.one("SELECT id FROM notification_channels WHERE name = ?", (body.name,)):
                raise errors.Conflict(f"a channel named {body.name!r} exists")
            store.add_channel(id=channel_id, name=body.name, kind=body.kind, settings=json.dumps(body.settings),
                              sealed_secrets=self.keys.master.seal(json.dumps(body.secrets).encode(),
                                                                   context=f"channel:{channel_id}"),
                              min_severity=body.min_severity, now=self.now())
            self.record(tx, call, resource_type="channel", resource_id=channel_id,
                        details={"kind": body.kind, "secret_names": sorted(body.secrets)})
            return store.channel(channel_id)

        return _channel_info(await self.database.transact(create), sorted(body.secrets))

    async def channels_delete(self, call: Call) -> wire.ChannelInfo:
        def delete(tx: Tx) -> dict[str, Any]:
            store = Notifications(tx)
            row = store.channel(call.params["channel_id"])
            store.delete_channel(row["id"])
            self.record(tx, call, resource_type="channel", resource_id=row["id"])
            return row

        row = await self.database.transact(delete)
        return _channel_info(row, sorted(self._secrets(row)))

    async def channels_test(self, call: Call) -> wire.NotificationInfo:
        def queue(tx: Tx) -> str:
            store = Notifications(tx)
            channel = store.channel(call.params["channel_id"])
            notification_id = new_id("ntf")
            event = notify.Event(kind="channel.test", severity="info", summary="certfleet test notification",
                                 subject=f"channel:{channel['id']}", occurred_at=self.now(), details={},
                                 dedup_key=f"test:{notification_id}")
            store.enqueue(id=notification_id, channel_id=channel["id"], event=_event_json(event),
                          dedup_key=event.dedup_key, now=self.now())
            self.record(tx, call, resource_type="channel", resource_id=channel["id"])
            return notification_id

        notification_id = await self.database.transact(queue)
        await self.deliver_notifications()
        return _notification_info(await self.database.transact(lambda tx: Notifications(tx).get(notification_id)))

    async def notifications_list(self, call: Call) -> Page:
        after, limit = page_request(call)
        rows, next_after = paged(await self.database.transact(lambda tx: Notifications(tx).list(
            call.query.get("status"), after=after, limit=limit)), limit)
        return Page([_notification_info(r) for r in rows], next_after)

    async def notifications_requeue(self, call: Call) -> wire.NotificationInfo:
        def requeue(tx: Tx) -> dict[str, Any]:
            store = Notifications(tx)
            row = store.get(call.params["notification_id"])
            if row["status"] != "dead":
                raise errors.Conflict(f"only a dead-lettered delivery can be requeued; this one is {row['status']}",
                                      slug="not-dead")
            store.update(row["id"], status="pending", attempts=0, next_attempt_at=self.now())
            self.record(tx, call, resource_type="notification", resource_id=row["id"])
            return store.get(row["id"])

        return _notification_info(await self.database.transact(requeue))

