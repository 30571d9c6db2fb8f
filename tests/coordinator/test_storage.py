"""The storage contract: the same behaviour from SQLite and from PostgreSQL."""

from __future__ import annotations

import pytest

from certfleet.coordinator import storage
from certfleet.coordinator.storage import (
    Agents,
    ApiKeys,
    BootstrapTokens,
    EnrollmentTokens,
    Grants,
    RateLimits,
    WorkOrders,
    migrate,
    open_database,
)
from certfleet.coordinator.storage.migrations import MIGRATIONS


@pytest.fixture
async def db(tmp_path, database_url):
    import trio

    database = await trio.to_thread.run_sync(open_database, database_url, tmp_path)
    await migrate(database, now=1000)
    yield database
    await database.close()


def _agent(tx, id="agt_a", key="key-a"):
    Agents(tx).insert(id=id, name=id, public_key=key, labels={}, enrollment_token_id="t", now=1000)


async def test_migrations_are_recorded_and_idempotent(db):
    assert await migrate(db, now=2000) == []
    rows = await db.transact(lambda tx: tx.all("SELECT version, name FROM schema_migrations ORDER BY version"))
    assert [(r["version"], r["name"]) for r in rows] == [(v, n) for v, n, _ in MIGRATIONS]


async def test_a_failing_unit_of_work_leaves_nothing(db):
    def half_done(tx):
        _agent(tx)
        raise RuntimeError("crash in the middle")

    with pytest.raises(RuntimeError):
        await db.transact(half_done)
    assert await db.transact(lambda tx: Agents(tx).list()) == []


async def test_work_deferred_to_the_end_runs_in_order_before_commit_and_not_after_a_failure(db):
    order: list[str] = []

    def body(tx):
        tx.at_end(lambda: (order.append("first"), _agent(tx, id="agt_end", key="key-end")))
        tx.at_end(lambda: order.append("second"))
        order.append("body")
        return "done"

    assert await db.transact(body) == "done"
    assert order == ["body", "first", "second"]
    assert [a["id"] for a in await db.transact(lambda tx: Agents(tx).list())] == ["agt_end"]

    def failing(tx):
        tx.at_end(lambda: order.append("never"))
        raise RuntimeError("the body failed")

    with pytest.raises(RuntimeError):
        await db.transact(failing)
    assert "never" not in order

    def conflicting_at_end(tx):
        _agent(tx, id="agt_other", key="key-other")
        tx.at_end(lambda: _agent(tx, id="agt_end", key="key-again"))

    with pytest.raises(storage.Conflict):  # a failure at the end rolls back the whole body
        await db.transact(conflicting_at_end)
    assert [a["id"] for a in await db.transact(lambda tx: Agents(tx).list())] == ["agt_end"]


async def test_collected_work_is_flushed_once_with_everything_in_order(db):
    flushes: list[list[str]] = []

    def flusher(tx):
        def flush(items):
            flushes.append(items)
            if items == ["a", "b"]:
                # Collected while the flush runs: a list of its own, flushed after this one.
                tx.collect_at_end("names", flush).append("late")
        return flush

    def body(tx):
        flush = flusher(tx)
        tx.collect_at_end("names", flush).append("a")
        # Deferred work runs in the order it was asked for: after the first flush.
        tx.at_end(lambda: tx.collect_at_end("names", flush).append("c"))
        tx.collect_at_end("names", flush).append("b")
        return "done"

    assert await db.transact(body) == "done"
    assert flushes == [["a", "b"], ["late", "c"]]

    def failing(tx):
        tx.collect_at_end("names", flusher(tx)).append("never")
        raise RuntimeError("the body failed")

    with pytest.raises(RuntimeError):
        await db.transact(failing)
    assert flushes == [["a", "b"], ["late", "c"]]


def _holding(name, entered, release, finished):
    """A transaction body that signals ``entered``, holds the database until
    ``release`` is set, then records ``name`` as finished."""
    def body(tx):
        tx.one("SELECT 1 AS ok")
        entered.release()
        release.wait(30)
        finished.append(name)
    return body


async def test_a_transaction_going_ahead_passes_the_ones_waiting(db):
    import threading

    import trio
    import trio.testing

    release = threading.Event()
    entered = threading.Semaphore(0)
    finished: list[str] = []

    def request(name):
        return _holding(name, entered, release, finished)

    # Requests that hold the database until released: SQLite's one writer, or every
    # PostgreSQL connection of the requests' share; then two more that must wait.
    holding = 1 if db.dialect == "sqlite" else 10
    async with trio.open_nursery() as nursery:
        for n in range(holding):
            nursery.start_soon(db.transact, request(f"request-{n}"))
        for _ in range(holding):
            await trio.to_thread.run_sync(entered.acquire)
        for n in range(holding, holding + 2):
            nursery.start_soon(db.transact, request(f"request-{n}"))
        await trio.testing.wait_all_tasks_blocked()
        if db.dialect == "sqlite":
            nursery.start_soon(lambda: db.transact(lambda tx: finished.append("upkeep"), ahead=True))
            await trio.testing.wait_all_tasks_blocked()
            release.set()
        else:
            # A connection of its own: it commits while every request still waits.
            await db.transact(lambda tx: finished.append("upkeep"), ahead=True)
            release.set()
    expected_first = ["request-0", "upkeep"] if db.dialect == "sqlite" else ["upkeep"]
    assert finished[:len(expected_first)] == expected_first
    assert sorted(finished) == sorted(["upkeep", *(f"request-{n}" for n in range(holding + 2))])


async def test_idle_transactions_wait_while_any_other_waits(db):
    import threading

    import trio
    import trio.testing

    entered = threading.Semaphore(0)
    finished: list[str] = []

    def quick(name):
        return lambda tx: finished.append(name)

    # Hold the database (SQLite's one writer, or every PostgreSQL connection of the
    # requests' share); queue two idle polls, then a delivery; free one holder.
    holding = 1 if db.dialect == "sqlite" else 10
    releases = [threading.Event() for _ in range(holding)]
    delivered = trio.Event()

    async def deliver():
        await db.transact(quick("delivery"))
        delivered.set()

    async with trio.open_nursery() as nursery:
        for n, release in enumerate(releases):
            nursery.start_soon(db.transact, _holding(f"request-{n}", entered, release, finished))
        for _ in range(holding):
            await trio.to_thread.run_sync(entered.acquire)
        for n in range(2):
            nursery.start_soon(lambda n=n: db.transact(quick(f"idle-{n}"), idle=True))
            await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(deliver)
        await trio.testing.wait_all_tasks_blocked()
        releases[0].set()
        await delivered.wait()
        assert finished[:2] == ["request-0", "delivery"]
        if db.dialect == "postgresql":
            # The one connection freed went to the delivery; the idle polls still wait.
            assert "idle-0" not in finished and "idle-1" not in finished
        for release in releases:
            release.set()
    if db.dialect == "sqlite":
        # One group after the writer was freed: the delivery first, the idle polls after.
        assert finished == ["request-0", "delivery", "idle-0", "idle-1"]
    assert sorted(finished) == sorted(["delivery", "idle-0", "idle-1", *(f"request-{n}" for n in range(holding))])


async def test_a_transaction_is_not_both_ahead_and_idle(db):
    with pytest.raises(ValueError):
        await db.transact(lambda tx: None, ahead=True, idle=True)


async def test_unique_violations_are_conflicts_and_missing_rows_not_found(db):
    await db.transact(_agent)
    with pytest.raises(storage.Conflict):
        await db.transact(lambda tx: _agent(tx, id="agt_b", key="key-a"))
    with pytest.raises(storage.Conflict):
        await db.transact(lambda tx: _agent(tx, id="agt_a", key="key-b"))
    with pytest.raises(storage.NotFound):
        await db.transact(lambda tx: Agents(tx).get("agt_missing"))


async def test_one_time_and_counted_tokens(db):
    def setup(tx):
        BootstrapTokens(tx).insert(id="b", secret_hash="h", now=1000)
        EnrollmentTokens(tx).insert(id="e", secret_hash="h", uses=2, expires_at=2000, labels={}, created_by="x",
                                    now=1000)

    await db.transact(setup)
    assert await db.transact(lambda tx: BootstrapTokens(tx).mark_used("b", 1100)) is True
    assert await db.transact(lambda tx: BootstrapTokens(tx).mark_used("b", 1200)) is False
    consume = lambda now: db.transact(lambda tx: EnrollmentTokens(tx).consume("e", now))  # noqa: E731
    assert [await consume(1500), await consume(1500), await consume(1500)] == [True, True, False]
    await db.transact(lambda tx: tx.execute("UPDATE enrollment_tokens SET uses_left = 5"))
    assert await consume(2000) is False  # expired


async def test_agent_token_ids_are_single_use_and_pruned(db):
    await db.transact(_agent)
    use = lambda jti, exp: db.transact(lambda tx: Agents(tx).use_token_id("agt_a", jti, exp))  # noqa: E731
    assert await use("j1", 1060) is True
    assert await use("j1", 1060) is False
    assert await use("j2", 5000) is True
    assert await db.transact(lambda tx: Agents(tx).prune_token_ids(1360)) == 0  # j1 within the leeway
    assert await db.transact(lambda tx: Agents(tx).prune_token_ids(1361)) == 1
    left = await db.transact(lambda tx: tx.all("SELECT jti FROM agent_token_uses"))
    assert [r["jti"] for r in left] == ["j2"]


async def test_work_orders_delivery_and_status(db):
    def setup(tx):
        _agent(tx)
        _agent(tx, id="agt_b", key="key-b")
        orders = WorkOrders(tx)
        orders.insert(id="o1", agent_id="agt_a", certificate_id=None, kind="issue", token="t1", expires_at=5000,
                      now=1000)
        orders.insert(id="o2", agent_id="agt_a", certificate_id=None, kind="issue", token="t2", expires_at=1500,
                      now=1001)
        orders.insert(id="o3", agent_id="agt_b", certificate_id=None, kind="issue", token="t3", expires_at=5000,
                      now=1002)

    await db.transact(setup)
    deliverable = await db.transact(lambda tx: WorkOrders(tx).deliverable("agt_a", 1200))
    assert [r["id"] for r in deliverable] == ["o1", "o2"]
    assert [r["id"] for r in await db.transact(lambda tx: WorkOrders(tx).deliverable("agt_a", 2000))] == ["o1"]
    await db.transact(lambda tx: WorkOrders(tx).mark_dispatched(["o1"], 1300))
    await db.transact(lambda tx: WorkOrders(tx).set_status("o1", "succeeded", 1400, "done"))
    row = await db.transact(lambda tx: WorkOrders(tx).find_for_agent("o1", "agt_a"))
    assert (row["status"], row["dispatched_at"], row["completed_at"]) == ("succeeded", 1300, 1400)
    await db.transact(lambda tx: WorkOrders(tx).mark_dispatched(["o1"], 1500))
    assert (await db.transact(lambda tx: WorkOrders(tx).find_for_agent("o1", "agt_a")))["status"] == "succeeded"
    with pytest.raises(storage.NotFound):
        await db.transact(lambda tx: WorkOrders(tx).find_for_agent("o3", "agt_a"))


async def test_grants_expire_and_rate_limit_windows_reset(db):
    def setup(tx):
        ApiKeys(tx).insert(id="k", secret_hash="h", name="k", user_id="u", created_by="x", now=1000)
        Grants(tx).insert(id="g1", principal_type="api-key", principal_id="k", role="viewer", scope_type="global",
                          scope_id=None, expires_at=1500, created_by="x", now=1000)
        Grants(tx).insert(id="g2", principal_type="user", principal_id="u", role="operator", scope_type="profile",
                          scope_id="p", expires_at=None, created_by="x", now=1000)

    await db.transact(setup)
    live = lambda now: db.transact(lambda tx: Grants(tx).live_for([("api-key", "k"), ("user", "u")], now))  # noqa
    assert [g["id"] for g in await live(1200)] == ["g1", "g2"]
    assert [g["id"] for g in await live(1600)] == ["g2"]

    for _ in range(3):
        await db.transact(lambda tx: RateLimits(tx).hit("src", 60))
    assert await db.transact(lambda tx: RateLimits(tx).hits("src", 60)) == 3
    await db.transact(lambda tx: RateLimits(tx).hit("src", 120))
    assert await db.transact(lambda tx: RateLimits(tx).hits("src", 120)) == 1
    assert await db.transact(lambda tx: RateLimits(tx).hits("src", 60)) == 0
