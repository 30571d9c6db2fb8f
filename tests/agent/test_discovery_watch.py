"""Watching for certificate files that change behind the agent's back: a managed file
replaced by hand is drift, a certificate dropped into a root arrives as a delta, and
only what changed is scanned again."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import trio

from certfleet.agent.discovery import (
    DriftEvent,
    ScanRoot,
    check_drift,
    commit_delta,
    inventory_delta,
    scan,
    watch,
)
from certfleet.agent.discovery.watcher import rescan_roots
from certfleet.agent.state import AgentState
from tests.agent.discovery_tree import Factory, pem

DEADLINE = 60  # seconds: generous for a loaded machine; the test ends as soon as the event arrives


def _replace_by_hand(path: Path, content: bytes, staging: Path) -> None:
    """A new file renamed over the old one, as ``install`` or an editor does. It is
    written outside the watched tree first, so the change arrives as one event."""
    staging.mkdir(exist_ok=True)
    temp = staging / path.name
    temp.write_bytes(content)
    os.replace(temp, path)


def test_only_changed_paths_and_their_directories_are_scanned_again():
    roots = ["/etc/ssl", "/etc/nginx"]
    changed = ["/etc/ssl/private/site.key", "/etc/ssl/private/site.pem", "/etc/nginx/new", "/etc/nginx/new/a.pem",
               "/srv/elsewhere.pem", "/etc/ssl"]
    assert rescan_roots(changed, roots) == (
        ScanRoot("/etc/nginx", False, 0),
        ScanRoot("/etc/nginx/new", True, 1),
        ScanRoot("/etc/ssl", True, 0),
    )
    assert rescan_roots(["/etc/ssl/private/site.key"], roots) == (
        ScanRoot("/etc/ssl/private", False, 1),
        ScanRoot("/etc/ssl/private/site.key", True, 2),
    )
    assert rescan_roots(["/srv/x.pem"], roots) == ()


def test_drift_is_a_difference_from_what_the_agent_wrote(tmp_path):
    factory = Factory(with_rsa=False)
    deployed, replaced = pem(factory.issue("a.example.test")), pem(factory.issue("b.example.test"))
    path = tmp_path / "cert.pem"
    path.write_bytes(deployed)
    expected = hashlib.sha256(deployed).hexdigest()
    assert check_drift(str(path), expected) is None
    path.write_bytes(replaced)
    event = check_drift(str(path), expected)
    assert event == DriftEvent(str(path), expected, hashlib.sha256(replaced).hexdigest(),
                               scan([path]).certificates[0].fingerprint_sha256)
    path.unlink()
    assert check_drift(str(path), expected) == DriftEvent(str(path), expected, None, None)
    os.mkfifo(path)  # never opened for reading in a way that blocks
    assert check_drift(str(path), expected) == DriftEvent(str(path), expected, None, None)


async def test_a_managed_certificate_replaced_by_hand_is_reported_as_drift(tmp_path, nursery):
    factory = Factory(with_rsa=False)
    site = tmp_path / "etc" / "site"
    site.mkdir(parents=True)
    deployed = pem(factory.issue("www.example.test", issuer=factory.ca))
    (site / "fullchain.pem").write_bytes(deployed)
    managed = {str(site / "fullchain.pem"): hashlib.sha256(deployed).hexdigest()}
    drift_send, drift_receive = trio.open_memory_channel[DriftEvent](10)
    deltas = []

    async def on_change(delta):
        deltas.append(delta)

    state = AgentState(tmp_path / "state.db")
    with trio.fail_after(DEADLINE):
        await nursery.start(functools.partial(
            watch, [tmp_path / "etc"], on_change, state=state, managed=lambda: managed,
            on_drift=drift_send.send, debounce_ms=200))
    replacement = factory.issue("www.example.test", issuer=factory.ca)
    _replace_by_hand(site / "fullchain.pem", pem(replacement), tmp_path / "staging")
    with trio.fail_after(DEADLINE):
        event = await drift_receive.receive()
    assert event == DriftEvent(str(site / "fullchain.pem"), managed[str(site / "fullchain.pem")],
                               hashlib.sha256(pem(replacement)).hexdigest(),
                               replacement.fields["fingerprint_sha256"])


async def test_a_watch_outside_the_roots_reports_drift_of_a_managed_file(tmp_path, nursery):
    factory = Factory(with_rsa=False)
    service = tmp_path / "srv" / "app"
    service.mkdir(parents=True)
    deployed = pem(factory.issue("app.example.test"))
    (service / "cert.pem").write_bytes(deployed)
    managed = {str(service / "cert.pem"): hashlib.sha256(deployed).hexdigest()}
    drift_send, drift_receive = trio.open_memory_channel[DriftEvent](10)

    async def on_change(delta):
        raise AssertionError(f"nothing under a root changed, yet {delta}")

    with trio.fail_after(DEADLINE):
        await nursery.start(functools.partial(
            watch, [tmp_path / "etc"], on_change, state=AgentState(tmp_path / "state.db"), managed=managed,
            on_drift=drift_send.send, debounce_ms=200))
    (service / "cert.pem").unlink()
    with trio.fail_after(DEADLINE):
        event = await drift_receive.receive()
    assert (event.path, event.seen_sha256, event.fingerprint_sha256) == (str(service / "cert.pem"), None, None)


async def test_certificates_added_and_removed_under_a_root_arrive_as_deltas(tmp_path, nursery):
    factory = Factory(with_rsa=False)
    root = tmp_path / "etc"
    (root / "site").mkdir(parents=True)
    existing = factory.issue("old.example.test", issuer=factory.ca)
    (root / "site" / "old.pem").write_bytes(pem(existing))
    state = AgentState(tmp_path / "state.db")
    commit_delta(state, inventory_delta(state, scan([root])))
    deltas_send, deltas_receive = trio.open_memory_channel(10)

    async def on_change(delta):
        commit_delta(state, delta)  # as if the coordinator acknowledged it at once
        await deltas_send.send(delta)

    with trio.fail_after(DEADLINE):
        await nursery.start(functools.partial(watch, [root], on_change, state=state, debounce_ms=200))
    added = factory.issue("new.example.test", issuer=factory.ca)
    _replace_by_hand(root / "site" / "new.pem", pem(added), tmp_path / "staging")
    with trio.fail_after(DEADLINE):
        delta = await deltas_receive.receive()
    assert [(record.path, record.fingerprint_sha256) for record in delta.added] == [
        (str(root / "site" / "new.pem"), added.fields["fingerprint_sha256"])]
    assert delta.removed == ()
    # Only the changed file's directory was looked at again, and nothing was re-read.
    assert delta.scan.statistics.parsed == 1 and delta.scan.statistics.files == 2

    (root / "site" / "old.pem").unlink()
    with trio.fail_after(DEADLINE):
        delta = await deltas_receive.receive()
    assert delta.added == () and delta.removed == (
        (existing.fields["fingerprint_sha256"], str(root / "site" / "old.pem"), 0),)


async def test_a_delta_that_was_not_committed_is_offered_again(tmp_path, nursery):
    factory = Factory(with_rsa=False)
    root = tmp_path / "etc"
    root.mkdir()
    state = AgentState(tmp_path / "state.db")
    offers_send, offers_receive = trio.open_memory_channel(10)

    async def on_change(delta):  # the coordinator is unreachable: nothing is committed
        await offers_send.send(delta)

    with trio.fail_after(DEADLINE):
        await nursery.start(functools.partial(watch, [root], on_change, state=state, debounce_ms=200))
    first = factory.issue("first.example.test", issuer=factory.ca)
    _replace_by_hand(root / "first.pem", pem(first), tmp_path / "staging")
    with trio.fail_after(DEADLINE):
        offered = await offers_receive.receive()
    second = factory.issue("second.example.test", issuer=factory.ca)
    _replace_by_hand(root / "second.pem", pem(second), tmp_path / "staging")
    with trio.fail_after(DEADLINE):
        again = await offers_receive.receive()
    assert [r.fingerprint_sha256 for r in offered.added] == [first.fields["fingerprint_sha256"]]
    assert sorted(r.fingerprint_sha256 for r in again.added) == sorted(
        [first.fields["fingerprint_sha256"], second.fields["fingerprint_sha256"]])
