"""Database engines: SQLite (the embedded default) and PostgreSQL (for scale).

Repositories are written once against :class:`Tx`, a minimal cursor facade with ``?``
placeholders; each engine adapts it to its driver and translates driver errors once,
at this edge (a unique violation becomes :class:`Conflict`).

Both drivers block, so a transaction body is a plain function run in a thread: on
SQLite the one writer thread (which commits waiting bodies in groups), on PostgreSQL
a worker thread (``trio.to_thread``) under a capacity limiter per pooled connection;
psycopg's async API is asyncio-only.
"""

from __future__ import annotations

import contextlib
import functools
import math
import sqlite3
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import trio

__all__ = ["AppendOnly", "Conflict", "Database", "NotFound", "StorageError", "Tx", "open_database"]

T = TypeVar("T")
Params = Sequence[Any]


class StorageError(Exception):
    pass


class NotFound(StorageError):
    pass


class Conflict(StorageError):
    """A uniqueness or optimistic-concurrency violation."""


class AppendOnly(StorageError):
    """The database refused to change or delete an audit event."""


class Tx(Protocol):
    dialect: str

    def execute(self, sql: str, params: Params = ()) -> int:
        """Run a statement; return the number of rows it changed."""

    def execute_many(self, sql: str, rows: Sequence[Params]) -> None:
        """Run one statement once per row of parameters, sent together (PostgreSQL:
        pipeline mode, one wait for the server instead of one per row)."""

    def one(self, sql: str, params: Params = ()) -> dict[str, Any] | None: ...

    def all(self, sql: str, params: Params = ()) -> list[dict[str, Any]]: ...

    def at_end(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` as the transaction's last work, after the body returned and just
        before COMMIT (writes behind a lock that is held until COMMIT go here)."""

    def collect_at_end(self, name: str, flush: Callable[[list[Any]], None]) -> list[Any]:
        """A list, the same for every call with ``name`` until it is flushed: at the end
        of the body ``flush`` gets everything appended to it in one call (a hundred
        deferred writes become one statement instead of a hundred round trips)."""


class _Ending:
    """What every engine's Tx shares: the work deferred to the end of the body."""

    def __init__(self) -> None:
        self._at_end: list[Callable[[], None]] = []
        self._collected: dict[str, list[Any]] = {}

    def at_end(self, fn: Callable[[], None]) -> None:
        self._at_end.append(fn)

    def collect_at_end(self, name: str, flush: Callable[[list[Any]], None]) -> list[Any]:
        items = self._collected.get(name)
        if items is None:
            items = self._collected[name] = []
            # Popped before the flush: whatever is collected while it runs starts a new list.
            self.at_end(lambda: flush(self._collected.pop(name)))
        return items

    def _run_at_end(self) -> None:
        # Deferred work may defer more; it runs in the order it was asked for.
        while self._at_end:
            self._at_end.pop(0)()


def _run_body(fn: Callable[[Any], T], tx: _Ending) -> T:
    result = fn(tx)
    tx._run_at_end()
    return result


class Database(Protocol):
    dialect: str

    async def transact(self, fn: Callable[[Tx], T], *, ahead: bool = False, idle: bool = False) -> T:
        """Run ``fn`` in one transaction: committed if it returns, rolled back if it raises.

        ``ahead`` lets the coordinator's own upkeep (one transaction at a time) pass the
        requests waiting for the database: under a flood of agent requests a renewal
        round would otherwise wait its turn behind hundreds of them, batch after batch.

        ``idle`` marks a transaction that most likely finds nothing to do: an agent's
        long poll before it has found an order. It waits while any other transaction
        waits, so when more polls arrive than the database keeps up with, operators'
        calls, orders being delivered, CSRs and results still go first and only the
        idle polls queue."""

    async def close(self) -> None: ...


# --- SQLite ------------------------------------------------------------------------


class _SqliteTx(_Ending):
    dialect = "sqlite"

    def __init__(self, connection: sqlite3.Connection) -> None:
        super().__init__()
        self._connection = connection

    def execute(self, sql: str, params: Params = ()) -> int:
        with self._translated():
            return self._connection.execute(sql, tuple(params)).rowcount

    def execute_many(self, sql: str, rows: Sequence[Params]) -> None:
        with self._translated():
            self._connection.executemany(sql, [tuple(row) for row in rows])

    @staticmethod
    @contextlib.contextmanager
    def _translated() -> Iterator[None]:
        try:
            yield
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc) or "PRIMARY KEY" in str(exc):
                raise Conflict(str(exc)) from exc
            if "append-only" in str(exc):
                raise AppendOnly(str(exc)) from exc
            raise

    def one(self, sql: str, params: Params = ()) -> dict[str, Any] | None:
        row = self._connection.execute(sql, tuple(params)).fetchone()
        return dict(row) if row is not None else None

    def all(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        return [dict(row) for row in self._connection.execute(sql, tuple(params)).fetchall()]


@dataclass(eq=False)
class _Unit:
    """One caller's transaction body, waiting in the SQLite writer's queue."""

    fn: Callable[[Tx], Any]
    token: trio.lowlevel.TrioToken
    done: trio.Event = field(default_factory=trio.Event)
    result: Any = None
    error: BaseException | None = None


class SqliteDatabase:
    """One connection in WAL mode, used by one writer thread (SQLite has one writer).

    Callers' transactions are committed in groups: the writer takes every body waiting
    in its queue (at most :attr:`GROUP_LIMIT`, idle ones last), runs each inside a
    savepoint of one ``BEGIN IMMEDIATE`` transaction, and commits once. A body that
    raises is rolled back to its savepoint alone; no caller hears its result before the
    group's COMMIT is durable, so each body still commits exactly when its caller is
    told it did. Run one at a time, every transaction paid a thread handoff and a
    COMMIT of its own, and under load the scheduler's transactions queued behind
    hundreds of agents'.
    """

    dialect = "sqlite"
    GROUP_LIMIT = 256

    def __init__(self, path: Path) -> None:
        # Private from its creation: the data dir holds the master key and the database.
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._connection = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=30
        )
        self._connection.row_factory = sqlite3.Row
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA foreign_keys=ON")
        self._connection.execute("PRAGMA synchronous=FULL")
        path.chmod(0o600)
        self._queue: deque[_Unit] = deque()
        self._idle: deque[_Unit] = deque()
        """Idle units: a group takes them after every other unit waiting."""
        self._wakeup = threading.Condition()
        self._closed = False
        self._writer = threading.Thread(target=self._write_loop, name="certfleet-sqlite-writer", daemon=True)
        self._writer.start()

    async def transact(self, fn: Callable[[Tx], T], *, ahead: bool = False, idle: bool = False) -> T:
        _check_priority(ahead, idle)
        unit = _Unit(fn, trio.lowlevel.current_trio_token())
        with self._wakeup:
            if self._closed:
                raise StorageError("the database is closed")
            if ahead:
                self._queue.appendleft(unit)
            elif idle:
                self._idle.append(unit)
            else:
                self._queue.append(unit)
            self._wakeup.notify()
        # Once queued the body runs to its end, as it did in a worker thread: a
        # cancellation takes effect after the caller has its result.
        with trio.CancelScope(shield=True):
            await unit.done.wait()
        await trio.lowlevel.checkpoint_if_cancelled()
        if unit.error is not None:
            raise unit.error
        return unit.result

    def _write_loop(self) -> None:
        while True:
            with self._wakeup:
                while not self._queue and not self._idle and not self._closed:
                    self._wakeup.wait()
                if not self._queue and not self._idle:
                    return
                group = [self._queue.popleft() for _ in range(min(len(self._queue), self.GROUP_LIMIT))]
                group += [self._idle.popleft() for _ in range(min(len(self._idle), self.GROUP_LIMIT - len(group)))]
            try:
                self._run_group(group)
            except BaseException as exc:  # BEGIN or a savepoint failed (locked by another process…)
                with contextlib.suppress(sqlite3.Error):
                    if self._connection.in_transaction:
                        self._connection.execute("ROLLBACK")
                _fail(group, StorageError(f"the transaction could not run: {exc}"))
            for token in {unit.token for unit in group}:
                mine = [unit for unit in group if unit.token is token]
                try:
                    token.run_sync_soon(_finish, mine)
                except trio.RunFinishedError:  # the caller's event loop is gone
                    pass

    def _run_group(self, group: list[_Unit]) -> None:
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        committed: list[_Unit] = []
        for unit in group:
            if not connection.in_transaction:  # an error ended the group's transaction
                connection.execute("BEGIN IMMEDIATE")
            connection.execute("SAVEPOINT unit")
            try:
                unit.result = _run_body(unit.fn, _SqliteTx(connection))
            except BaseException as exc:
                unit.error = exc
                if connection.in_transaction:
                    connection.execute("ROLLBACK TO unit")
                    connection.execute("RELEASE unit")
                else:
                    # SQLite rolled the whole transaction back (disk full, I/O
                    # error): the bodies before this one were lost with it.
                    _fail(committed, StorageError(f"the transaction was rolled back: {exc}"))
                    committed = []
                continue
            connection.execute("RELEASE unit")
            committed.append(unit)
        if connection.in_transaction:
            self._commit(committed)

    def _commit(self, units: list[_Unit]) -> None:
        try:
            self._connection.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                if self._connection.in_transaction:
                    self._connection.execute("ROLLBACK")
            _fail(units, StorageError(f"COMMIT failed: {exc}"))

    async def close(self) -> None:
        with self._wakeup:
            self._closed = True
            self._wakeup.notify()
        await trio.to_thread.run_sync(self._writer.join)
        self._connection.close()


def _check_priority(ahead: bool, idle: bool) -> None:
    if ahead and idle:
        raise ValueError("a transaction goes ahead or waits as idle, not both")


def _fail(units: list[_Unit], error: StorageError) -> None:
    for unit in units:
        if unit.error is None:
            unit.result, unit.error = None, error


def _finish(units: list[_Unit]) -> None:
    for unit in units:
        unit.done.set()


# --- PostgreSQL --------------------------------------------------------------------


class _PostgresTx(_Ending):
    dialect = "postgresql"

    def __init__(self, connection: Any) -> None:
        super().__init__()
        self._connection = connection

    @staticmethod
    @functools.lru_cache(maxsize=1024)
    def _sql(sql: str) -> str:
        """``?`` placeholders to psycopg's ``%s``; ``%`` doubled everywhere (psycopg
        reads it as a placeholder even inside a literal), ``?`` kept inside literals."""
        out, in_literal = [], False
        for char in sql:
            if char == "'":
                in_literal = not in_literal
            if char == "%":
                out.append("%%")
            elif char == "?" and not in_literal:
                out.append("%s")
            else:
                out.append(char)
        return "".join(out)

    def execute(self, sql: str, params: Params = ()) -> int:
        with self._translated():
            return self._run(sql, params).rowcount

    def execute_many(self, sql: str, rows: Sequence[Params]) -> None:
        if len(rows) == 1:
            # For one row a pipeline costs more than it saves (about 1.5x a plain statement
            # here; 200 rows went 2.5-3.4x faster than 200 statements).
            self.execute(sql, rows[0])
        elif rows:
            with self._translated(), self._connection.cursor() as cursor:
                cursor.executemany(self._sql(sql), [tuple(row) for row in rows])

    @staticmethod
    @contextlib.contextmanager
    def _translated() -> Iterator[None]:
        import psycopg.errors

        # A failed statement aborts a PostgreSQL transaction, so a Conflict ends the
        # unit of work on both engines; callers that expect duplicates write
        # ``ON CONFLICT DO NOTHING`` instead of catching.
        try:
            yield
        except psycopg.errors.UniqueViolation as exc:
            raise Conflict(str(exc).splitlines()[0]) from exc
        except psycopg.errors.RaiseException as exc:
            if "append-only" in str(exc):
                raise AppendOnly(str(exc).splitlines()[0]) from exc
            raise

    def _run(self, sql: str, params: Params) -> Any:
        # Without parameters the SQL goes as written: a `?` or `%` in a string
        # literal must not be taken for a placeholder.
        if not params:
            return self._connection.execute(sql)
        return self._connection.execute(self._sql(sql), tuple(params))

    def one(self, sql: str, params: Params = ()) -> dict[str, Any] | None:
        return self._run(sql, params).fetchone()

    def all(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        return self._run(sql, params).fetchall()


class _Slots:
    """The requests' share of the pool's connections, in two classes: an idle
    transaction gets a connection only while no other transaction waits for one.
    First come, first served within a class; a released connection is handed to the
    next waiter directly, so nobody can take it in between."""

    def __init__(self, total: int) -> None:
        self._free = total
        self._waiting = (trio.lowlevel.ParkingLot(), trio.lowlevel.ParkingLot())
        """Parked tasks: other transactions first, then idle ones."""

    @contextlib.asynccontextmanager
    async def held(self, *, idle: bool) -> AsyncIterator[None]:
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._free and not any(self._waiting[: idle + 1]):
            self._free -= 1
            await trio.lowlevel.cancel_shielded_checkpoint()
        else:
            await self._waiting[idle].park()  # woken holding the connection released
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        for lot in self._waiting:
            if lot:
                lot.unpark()
                return
        self._free += 1


class PostgresDatabase:
    """A psycopg connection pool used from worker threads."""

    dialect = "postgresql"

    def __init__(self, url: str, *, max_size: int = 10) -> None:
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        _connect_once(url)
        self._pool = ConnectionPool(
            url,
            min_size=1,
            # One connection beyond the requests' share, kept for work that goes ahead.
            max_size=max_size + 1,
            kwargs={"row_factory": dict_row, "autocommit": False},
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=30)
        except Exception as exc:  # psycopg_pool raises PoolTimeout with the cause logged
            self._pool.close()
            raise StorageError(f"cannot connect to PostgreSQL: {exc}") from exc
        self._slots = _Slots(max_size)
        self._ahead_limiter = trio.CapacityLimiter(1)
        # The slots bound the threads already; trio's default limiter would add a
        # process-wide cap of its own.
        self._threads = trio.CapacityLimiter(math.inf)

    def transact_sync(self, fn: Callable[[Tx], T]) -> T:
        with self._pool.connection() as connection:
            with connection.transaction():
                return _run_body(fn, _PostgresTx(connection))

    async def transact(self, fn: Callable[[Tx], T], *, ahead: bool = False, idle: bool = False) -> T:
        _check_priority(ahead, idle)
        if ahead:
            return await trio.to_thread.run_sync(self.transact_sync, fn, limiter=self._ahead_limiter)
        async with self._slots.held(idle=idle):
            return await trio.to_thread.run_sync(self.transact_sync, fn, limiter=self._threads)

    async def close(self) -> None:
        await trio.to_thread.run_sync(self._pool.close)


_CONNECT_TIMEOUT = 10
"""Seconds the first connection may take (libpq's ``connect_timeout``) unless the URL sets its own."""


def _postgres_params(url: str) -> dict[str, Any]:
    """The URL's connection parameters; refuses one that names no host or no database,
    which libpq would fill in with defaults (a local socket, a database named after
    the user) and the schema would be created wherever that led."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        # The driver's message quotes the URL, and with it any password.
        raise StorageError("CERTFLEET_DATABASE_URL is not a valid PostgreSQL URL"
                           " (postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE)") from None
    for missing, names in (("host", ("host", "hostaddr")), ("database", ("dbname",))):
        if not any(params.get(name) for name in names):
            raise StorageError(f"CERTFLEET_DATABASE_URL names no {missing}"
                               " (postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE)")
    return params


def _connect_once(url: str) -> None:
    """One plain connection before the pool opens: the pool retries a failing connection
    until its timeout and then reports only that it timed out, while this fails at once
    with the server's or the network's reason."""
    import psycopg

    params = _postgres_params(url)
    where = f"{params.get('host') or params.get('hostaddr')}:{params.get('port') or 5432}/{params['dbname']}"
    timeout = {} if params.get("connect_timeout") else {"connect_timeout": _CONNECT_TIMEOUT}
    try:
        psycopg.connect(url, **timeout).close()
    except psycopg.Error as exc:
        # libpq's message spans lines ("connection to server at … failed: FATAL: …").
        reason = " ".join(str(exc).split())
        raise StorageError(f"cannot connect to PostgreSQL at {where}: {reason}") from None


def open_database(url: str | None, data_dir: Path, *, create: bool = True) -> SqliteDatabase | PostgresDatabase:
    """``postgresql://…`` selects PostgreSQL; anything else the SQLite file in the data dir.

    With ``create=False`` a SQLite file that does not exist is refused rather than
    created (a command that only reads must not leave an empty database behind).

    Raises :class:`StorageError` with the reason when the database cannot be opened.
    """
    if url and url.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(url)
    if url and url.startswith("sqlite:///"):
        if not url.removeprefix("sqlite:///").strip():
            raise StorageError("CERTFLEET_DATABASE_URL names no file (sqlite:///PATH)")
        path = Path(url.removeprefix("sqlite:///"))
    elif url:
        raise StorageError("CERTFLEET_DATABASE_URL must start with postgresql:// or sqlite:///")
    else:
        path = data_dir / "certfleet.db"
    if not create and not path.exists():
        raise StorageError(f"no database at {path}")
    return SqliteDatabase(path)
