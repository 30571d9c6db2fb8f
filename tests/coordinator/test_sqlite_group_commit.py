"""SQLite's writer commits waiting transactions in groups: each body keeps its own
outcome, and no caller hears of a commit that did not happen."""

from __future__ import annotations

import threading

import pytest
import trio

from certfleet.coordinator.storage import StorageError
from certfleet.coordinator.storage.engine import SqliteDatabase


@pytest.fixture
async def db(tmp_path):
    database = await trio.to_thread.run_sync(SqliteDatabase, tmp_path / "group.db")
    await database.transact(lambda tx: tx.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)"))
    await database.transact(lambda tx: tx.execute(
        "CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER"
        " REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"))
    await database.transact(lambda tx: tx.execute("CREATE TABLE item (name TEXT PRIMARY KEY)"))
    yield database
    await database.close()


def _count_commits(database: SqliteDatabase) -> list[str]:
    statements: list[str] = []
    database._connection.set_trace_callback(
        lambda sql: statements.append(sql) if sql.strip().upper() == "COMMIT" else None)
    return statements


async def _queued_behind_a_blocker(database: SqliteDatabase, bodies, results: dict) -> None:
    """Hold the writer inside one body until every other body has queued, so they run
    as one group; ``results`` gets each body's value or exception by index."""
    release = threading.Event()
    entered = threading.Event()

    def blocker(tx):
        entered.set()
        release.wait(10)
        return "blocker"

    async def call(index, body):
        try:
            results[index] = await database.transact(body)
        except Exception as exc:  # recorded for the assertions
            results[index] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, "blocker", blocker)
        await trio.to_thread.run_sync(entered.wait, 10)
        for index, body in enumerate(bodies):  # one at a time: the queue keeps this order
            nursery.start_soon(call, index, body)
            await trio.testing.wait_all_tasks_blocked()
        assert len(database._queue) == len(bodies)
        release.set()


def _insert(name: str):
    return lambda tx: (tx.execute("INSERT INTO item (name) VALUES (?)", (name,)), name)[1]


def _fails_after_insert(name: str):
    def body(tx):
        tx.execute("INSERT INTO item (name) VALUES (?)", (name,))
        raise ValueError(f"{name} failed")
    return body


async def _names(database: SqliteDatabase) -> list[str]:
    return [r["name"] for r in await database.transact(lambda tx: tx.all("SELECT name FROM item ORDER BY name"))]


async def test_a_group_commits_once_and_a_failing_body_loses_only_its_own_writes(db):
    commits = _count_commits(db)
    results: dict = {}
    bodies = [_insert("a"), _fails_after_insert("b"), _insert("c"), _insert("a"), _insert("d")]
    await _queued_behind_a_blocker(db, bodies, results)

    assert results["blocker"] == "blocker"
    assert results[0] == "a" and results[2] == "c" and results[4] == "d"
    assert isinstance(results[1], ValueError) and str(results[1]) == "b failed"
    # The second "a" sees the first one's uncommitted row, as it would run after it.
    assert type(results[3]).__name__ == "Conflict"
    assert await _names(db) == ["a", "c", "d"]
    # The blocker ran alone; the five queued behind it committed together.
    assert len(commits) - 1 == 2


async def test_when_the_group_commit_fails_no_body_is_told_it_committed(db):
    results: dict = {}
    orphan = lambda tx: tx.execute("INSERT INTO child (id, parent_id) VALUES (1, 99)")  # noqa: E731
    await _queued_behind_a_blocker(db, [_insert("kept-back"), orphan, _insert("also-kept-back")], results)

    # The deferred foreign key fails only at COMMIT: every body of the group fails.
    for index in range(3):
        assert isinstance(results[index], StorageError), results[index]
        assert "COMMIT failed" in str(results[index])
    assert await _names(db) == []
    assert (await db.transact(lambda tx: tx.one("SELECT COUNT(*) AS n FROM child")))["n"] == 0
    # The writer carries on.
    assert await db.transact(_insert("after")) == "after"


async def test_a_cancelled_caller_gets_the_cancellation_after_its_body_committed(db):
    release = threading.Event()
    entered = threading.Event()

    def slow_insert(tx):
        entered.set()
        release.wait(10)
        tx.execute("INSERT INTO item (name) VALUES ('slow')")

    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def caller():
            with scope:
                await db.transact(slow_insert)
                raise AssertionError("the cancellation must be delivered after the body ran")

        nursery.start_soon(caller)
        await trio.to_thread.run_sync(entered.wait, 10)
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    assert scope.cancelled_caught
    assert await _names(db) == ["slow"]


async def test_a_closed_database_refuses_new_transactions(tmp_path):
    database = await trio.to_thread.run_sync(SqliteDatabase, tmp_path / "closed.db")
    await database.close()
    with pytest.raises(StorageError, match="closed"):
        await database.transact(lambda tx: tx.one("SELECT 1"))
