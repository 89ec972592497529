"""Engine, sessions and the unit of work.

SQLite is the embedded engine: WAL, synchronous=FULL, foreign keys, a busy timeout, and
every write transaction opened with BEGIN IMMEDIATE so concurrent writers queue for the
write lock instead of failing with "database is locked" half-way through (a deferred
BEGIN that later upgrades to a write cannot wait: SQLite refuses it at once). Reads keep
a deferred BEGIN and never block writers under WAL.

PostgreSQL is the scale-out engine: rows are locked in a fixed order by the services and
a deadlock or serialization failure is retried a bounded number of times.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fcntl
import functools
import logging
import os
import random
import re
import sqlite3
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import aiosqlite
import anyio
import orjson
from sqlalchemy import event, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.settings import Settings

log = logging.getLogger(__name__)

WRITE_OPTION = "bank_write"
RETRYABLE_PG_CODES = {"40001", "40P01"}  # serialization_failure, deadlock_detected
MAX_ATTEMPTS = 8

P = ParamSpec("P")
T = TypeVar("T")


class Database:
    def __init__(self, settings: Settings, *, background_checkpoints: bool = False) -> None:
        """`background_checkpoints` (SQLite, for a server: see `checkpoint_loop`): commits
        never copy the WAL back into the database file themselves."""
        self.settings = settings
        self.is_sqlite = settings.is_sqlite
        self.path = _sqlite_path(settings.db_url) if self.is_sqlite else None
        self.background_checkpoints = background_checkpoints and self.path not in (None, ":memory:")
        self.engine: AsyncEngine = _create_engine(
            settings, autocheckpoint=not self.background_checkpoints
        )
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=False)
        # SQLite: writers of this process queue in the group commit, other processes on
        # the writer file lock. PostgreSQL: at most pool-size money movements of this
        # process hold a connection at once; a burst waits here instead of timing out in
        # the pool's checkout (30 s, then a 500).
        self.group_commit = GroupCommit(self) if self.is_sqlite else None
        self.admission = None if self.is_sqlite else asyncio.Semaphore(settings.db_pool_size)
        self.writer_file_lock = (
            WriterFileLock(Path(_sqlite_path(settings.db_url) + ".writer-lock"))
            if self.is_sqlite and _sqlite_path(settings.db_url) != ":memory:"
            else None
        )

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session:
            session.info["database"] = self
            yield session

    @asynccontextmanager
    async def checkpoints(self, every_s: float = 0.25) -> AsyncIterator[None]:
        """While open, copy committed WAL pages back into the database file from a thread
        of its own. SQLite's automatic checkpoint would do it inside a COMMIT every ~1,000
        pages, holding the write lock through several MB of writes and an fsync, and every
        writer of every worker stalls behind it. A PASSIVE checkpoint takes no write lock;
        when two workers' threads meet, one just finds it busy."""
        if not self.background_checkpoints:
            yield
            return
        assert self.path is not None
        thread = _Checkpointer(self.path, every_s)
        thread.start()
        try:
            yield
        finally:
            thread.stop.set()
            await anyio.to_thread.run_sync(thread.join)

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.writer_file_lock is not None:
            self.writer_file_lock.close()


class _Checkpointer(threading.Thread):
    """Owns its connection from open to close: nothing else ever touches it."""

    def __init__(self, path: str, every_s: float) -> None:
        super().__init__(name="wal-checkpoints", daemon=True)
        self.path, self.every_s = path, every_s
        self.stop = threading.Event()

    def run(self) -> None:
        connection = sqlite3.connect(self.path, isolation_level=None)
        try:
            while not self.stop.wait(self.every_s):
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.OperationalError as exc:  # another process is checkpointing
                    log.debug("checkpoint skipped: %s", exc)
                except Exception:  # keep going: SQLite's own checkpoint is the backstop
                    log.warning("checkpoint failed", exc_info=True)
        finally:
            connection.close()


class _InlineQueue:
    """Stands in for aiosqlite's queue to its worker thread: runs each call at once."""

    def put_nowait(self, item: tuple[asyncio.Future[Any] | None, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as exc:
            if future is not None:
                future.set_exception(exc)
            return
        if future is not None:
            future.set_result(result)


class InlineSQLiteConnection(aiosqlite.Connection):
    """aiosqlite's API with every call made on the event loop's thread.

    aiosqlite hands each call to a worker thread and back: SQLAlchemy makes about four
    such round trips per statement, which measured 1 ms per statement here, against
    10-50 microseconds for the SQLite call itself. SQLite calls never wait on the
    network, and the only long wait, another process holding the write lock, is taken
    out of them: writers queue on a file lock in a thread first (see `unit_of_work`), so
    BEGIN IMMEDIATE finds the database free."""

    def __init__(self, connector: Callable[[], sqlite3.Connection]) -> None:
        super().__init__(connector, iter_chunk_size=64)
        self._tx = _InlineQueue()  # type: ignore[assignment]

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        return fn(*args, **kwargs)

    async def _connect(self) -> InlineSQLiteConnection:
        if self._connection is None:
            self._connection = self._connector()
        return self

    def __await__(self) -> Any:
        return self._connect().__await__()

    async def commit(self) -> None:
        # The one call that waits on the disk (fsync, and a WAL checkpoint now and then):
        # done in a thread so the event loop keeps serving, and the writers that arrive
        # meanwhile join the next group commit.
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        await anyio.to_thread.run_sync(self._connection.commit)

    def stop(self) -> None:  # type: ignore[override]
        self._running = False
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class WriterFileLock:
    """Serialises SQLite writers across processes (several uvicorn workers, the CLI).

    Taken before BEGIN IMMEDIATE, so SQLite's busy handler, which polls with sleeps of up
    to 100 ms, never runs on the event loop. The kernel wakes the next waiter as soon as
    the holder releases it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def _descriptor(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        return self._fd

    async def acquire(self) -> None:
        fd = self._descriptor()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            await anyio.to_thread.run_sync(fcntl.flock, fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _sqlite_path(url: str) -> str:
    database = make_url(url).database or ":memory:"
    return database


def _create_engine(settings: Settings, *, autocheckpoint: bool = True) -> AsyncEngine:
    url = settings.db_url
    if not url.startswith("sqlite"):
        return create_async_engine(
            url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_pool_size,
            pool_pre_ping=False,
        )
    path = _sqlite_path(url)
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    busy_ms = settings.sqlite_busy_timeout_ms

    def connector() -> sqlite3.Connection:
        return sqlite3.connect(
            path, timeout=busy_ms / 1000, isolation_level=None, check_same_thread=False
        )

    engine = create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        async_creator=lambda: InlineSQLiteConnection(connector),
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when BEGIN is emitted.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "journal_mode=WAL",
            "synchronous=FULL",
            "foreign_keys=ON",
            f"busy_timeout={busy_ms}",
            # Servers checkpoint in the background (Database.checkpoints); SQLite's own
            # stays as a backstop at 10x its default should that thread ever stop.
            f"wal_autocheckpoint={1000 if autocheckpoint else 10_000}",
            f"cache_size=-{settings.sqlite_cache_mib * 1024}",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


async def end_reads(db: AsyncSession) -> None:
    """Close the read transaction a session opened on its own, keeping what it loaded
    (sessions never expire on commit). Nothing is pending: writes only happen inside
    unit_of_work."""
    if db.in_transaction():
        await db.commit()


def database_of(db: AsyncSession) -> Database:
    return db.info["database"]


class Sql:
    """One prebuilt statement for the hot path, written once with `?` placeholders;
    PostgreSQL's text numbers them ($1, $2, …) unless given explicitly."""

    __slots__ = ("postgresql", "sqlite")

    def __init__(self, sqlite: str, postgresql: str | None = None) -> None:
        self.sqlite = sqlite
        if postgresql is None:
            head, *rest = sqlite.split("?")
            postgresql = head + "".join(f"${n}{part}" for n, part in enumerate(rest, 1))
        self.postgresql = postgresql


def locking(query: str) -> Sql:
    """A SELECT that locks the rows it reads: FOR UPDATE on PostgreSQL; SQLite's writers
    take turns, so there the same text without it."""
    return Sql(query, Sql(query).postgresql + " FOR UPDATE")


Write = tuple[Sql, tuple[Any, ...]]
"""A statement and its parameters, for `Driver.write`."""


@functools.lru_cache(maxsize=256)
def _fused(statements: tuple[Sql, ...]) -> tuple[str, tuple[int, ...]]:
    """PostgreSQL text running `statements` as one: each a data-modifying WITH query
    (executed exactly once, whether or not anything reads it), parameters numbered on.
    Returns the text and how many parameters each statement takes. Refuses what it could
    not nest safely: a statement with a WITH of its own, a `$` in a string literal."""
    parts, counts = [], []
    taken = 0
    for n, statement in enumerate(statements):
        literals = statement.postgresql.split("'")[1::2]  # '' only splits one in two
        if statement.postgresql.lstrip()[:4].upper() == "WITH" or any("$" in x for x in literals):
            raise ValueError(f"cannot send together: {statement.postgresql[:60]}")
        numbers = [int(found) for found in re.findall(r"\$(\d+)", statement.postgresql)]
        text = re.sub(
            r"\$(\d+)", lambda m, at=taken: f"${int(m.group(1)) + at}", statement.postgresql
        )
        parts.append(f"w{n} AS ({text})")
        counts.append(max(numbers, default=0))
        taken += counts[-1]
    return "WITH " + ", ".join(parts) + " SELECT 1", tuple(counts)


class Driver:
    """The unit of work's own driver connection, for the few statements every money
    movement runs (sqlite3 cursor / asyncpg, prebuilt SQL, plain tuples back).

    Same connection and transaction as the session: through SQLAlchemy each statement
    cost 0.3-0.9 ms of Python on this machine, directly 10-50 microseconds (SQLite) or
    one network round trip (PostgreSQL). Only services use it, only inside a unit of
    work, and only for statements whose SQL is spelled out next to them."""

    is_sqlite: bool

    async def begin(self) -> None:
        """Make sure the transaction has started (SQLite: the unit of work began it)."""

    async def one(self, sql: Sql, *args: Any) -> Any: ...
    async def all(self, sql: Sql, *args: Any) -> list[Any]: ...

    async def write(self, *statements: Write) -> None:
        """Writes whose results nobody reads, in this transaction. SQLite runs them in
        turn (each a function call). PostgreSQL sends them as one statement, so one
        network round trip instead of one each: they then all see the statement's
        snapshot, not each other's rows, so pass only writes that do not read what
        another of them writes. Constraints still hold across them: foreign keys are
        checked at the end of the statement, deferred triggers at COMMIT."""
        raise NotImplementedError

    def timestamp(self, value: datetime) -> Any:
        """A UTC datetime as the engine stores it (the format SQLAlchemy uses)."""
        return value

    def json(self, value: Any) -> Any:
        """A JSON column's value as read (the asyncpg codec SQLAlchemy installs already
        decodes it; sqlite3 returns the text)."""
        return value


class _SQLiteDriver(Driver):
    is_sqlite = True

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    async def one(self, sql: Sql, *args: Any) -> Any:
        return self._connection.execute(sql.sqlite, args).fetchone()

    async def all(self, sql: Sql, *args: Any) -> list[Any]:
        return self._connection.execute(sql.sqlite, args).fetchall()

    async def write(self, *statements: Write) -> None:
        for sql, args in statements:
            self._connection.execute(sql.sqlite, args)

    def execute_plain(self, statement: str) -> None:
        self._connection.execute(statement)

    def in_transaction(self) -> bool:
        return self._connection.in_transaction

    def timestamp(self, value: datetime) -> Any:
        if value.tzinfo is None:  # as UTCDateTime does: never guess a naive time's zone
            raise ValueError("naive datetime given to a UTC column")
        # "%Y-%m-%d %H:%M:%S.%f", the format SQLAlchemy stores, at half strftime's cost
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")

    def json(self, value: Any) -> Any:
        return orjson.loads(value)


class _PostgresDriver(Driver):
    is_sqlite = False

    def __init__(self, adapted: Any) -> None:
        self._adapted = adapted  # SQLAlchemy's asyncpg adapter: it tracks the transaction
        self._connection = adapted.driver_connection

    async def begin(self) -> None:
        # SQLAlchemy's adapter sends BEGIN lazily, with its first statement; a unit of
        # work whose first statement goes through here must start it the same way.
        if self._adapted._transaction is None:
            await self._adapted._start_transaction()

    async def one(self, sql: Sql, *args: Any) -> Any:
        return await self._connection.fetchrow(sql.postgresql, *args)

    async def all(self, sql: Sql, *args: Any) -> list[Any]:
        return await self._connection.fetch(sql.postgresql, *args)

    async def write(self, *statements: Write) -> None:
        if len(statements) == 1:
            ((sql, args),) = statements
            await self._connection.execute(sql.postgresql, *args)
            return
        text, counts = _fused(tuple(sql for sql, _ in statements))
        if tuple(len(values) for _, values in statements) != counts:
            raise ValueError(f"parameters given do not match the placeholders {counts}")
        await self._connection.execute(
            text, *[value for _, values in statements for value in values]
        )


_DRIVER_KEY = "bank_driver"


async def driver(db: AsyncSession) -> Driver:
    """The `Driver` of the session's current transaction (opened if need be)."""
    return await _driver_of(await db.connection())


async def _driver_of(connection: AsyncConnection) -> Driver:
    found = connection.info.get(_DRIVER_KEY)
    if found is None:
        raw = await connection.get_raw_connection()
        if connection.dialect.name == "sqlite":
            found = _SQLiteDriver(raw.driver_connection._connection)
        else:
            found = _PostgresDriver(raw.dbapi_connection)
        connection.info[_DRIVER_KEY] = found
    await found.begin()
    return found


@asynccontextmanager
async def unit_of_work(db: AsyncSession) -> AsyncIterator[AsyncSession]:
    """One write transaction: everything inside commits together or not at all."""
    await end_reads(db)
    database = database_of(db)
    if database.group_commit is None:
        async with db.begin():
            await db.connection(execution_options={WRITE_OPTION: True})
            yield db
        return
    async with database.group_commit.unit(db):
        yield db


async def movement(database: Database, body: Callable[[Driver], Coroutine[Any, Any, T]]) -> T:
    """The money path's unit of work: `body` runs in one write transaction, all or
    nothing, like `unit_of_work`, but driven only through the `Driver` (no ORM state to
    flush, no session at all). On SQLite it runs in a savepoint of the group commit's
    batch, back to back with the movements queued beside it (`GroupCommit.run`); on
    PostgreSQL on a pooled connection of its own."""
    if database.group_commit is not None:
        return await database.group_commit.run(body)
    async with database.engine.connect() as connection:
        raw = await connection.get_raw_connection()
        asyncpg_connection = raw.driver_connection
        try:
            # READ COMMITTED whatever the server's default: each statement sees what
            # committed before it, which the daily limit's sum relies on (ledger).
            async with asyncpg_connection.transaction(isolation="read_committed"):
                return await body(_PostgresDriver(raw.dbapi_connection))
        except BaseException as exc:
            # SQLAlchemy does not know about asyncpg's transaction: a connection that a
            # cancellation interrupted (at BEGIN, or in the rollback) or that died is
            # thrown away, never handed to the next movement half inside a transaction.
            if (
                not isinstance(exc, Exception)
                or asyncpg_connection.is_closed()
                or asyncpg_connection.is_in_transaction()
            ):
                await connection.invalidate()
            raise


@dataclass(slots=True)
class _Queued:
    """A movement waiting for its batch: what to run, in which context, and where its
    caller waits for the answer."""

    body: Callable[[Driver], Coroutine[Any, Any, Any]]
    context: contextvars.Context
    answer: asyncio.Future[Any]


class BodyWaited(RuntimeError):
    """A movement's body waited on something inside the write transaction."""


class GroupCommit:
    """SQLite writers of one process share one write transaction: each unit of work runs
    in its own SAVEPOINT (a failing one rolls back alone), and the transaction commits,
    with one fsync, once no other writer is waiting or the batch is full. A unit returns
    only after the commit that made it durable, so nothing is acknowledged early.

    Units run one at a time (SQLite has one writer anyway); across processes the batch
    holds the writer file lock, so another worker's batch follows as soon as it commits.
    This is the group commit that fast ledgers use to go past one fsync per payment.

    Money movements (`run`) go further: they queue, and one leader task runs every
    queued body back to back, each in its own savepoint, without giving the event loop a
    turn in between. The write lock is then held for the statements and the commit only,
    not for the HTTP work of other requests that would otherwise run between two units
    (with two workers, that time is the other worker's wait)."""

    MAX_UNITS = 64
    YIELDS = 3

    def __init__(self, database: Database) -> None:
        self.database = database
        self._slot = asyncio.Lock()
        self._waiting = 0
        self._connection: AsyncConnection | None = None
        self._transaction: Any = None
        self._committed: asyncio.Future[None] | None = None
        self._units = 0
        self._broken = False
        self._queue: deque[_Queued] = deque()
        self._leader: asyncio.Task[None] | None = None

    async def _open(self) -> None:
        file_lock = self.database.writer_file_lock
        if file_lock is not None:
            await file_lock.acquire()
        try:
            connection = await self.database.engine.connect()
            try:
                await connection.execution_options(**{WRITE_OPTION: True})
                self._transaction = await connection.begin()
            except BaseException:
                await connection.close()
                raise
        except BaseException:
            if file_lock is not None:
                file_lock.release()
            raise
        self._connection = connection
        self._committed = asyncio.get_running_loop().create_future()
        self._units = 0
        self._broken = False

    async def _close(self) -> None:
        connection, committed = self._connection, self._committed
        assert connection is not None and committed is not None
        self._connection = self._committed = None
        try:
            # SQLite rolls a whole transaction back by itself on some errors (disk full,
            # I/O error): then nothing of this batch is in the database, and committing
            # (a no-op without a transaction) must not acknowledge its units.
            if self._broken or not (await _driver_of(connection)).in_transaction():
                raise sqlite3.OperationalError("the batch's transaction was rolled back")
            await self._transaction.commit()
        except BaseException as exc:
            committed.set_exception(exc)
            with contextlib.suppress(Exception):
                await self._transaction.rollback()
        else:
            committed.set_result(None)
        finally:
            self._transaction = None
            try:
                await connection.close()
            except Exception:  # the batch's outcome is settled; only the connection is lost
                log.exception("closing the group commit's connection failed")
            finally:
                if self.database.writer_file_lock is not None:
                    self.database.writer_file_lock.release()

    async def _batch_is_complete(self) -> bool:
        """Statements run on the event loop without yielding, so requests that arrived
        together reach the queue only once the loop turns: give it a few turns before
        deciding that nobody else is about to write."""
        for _ in range(self.YIELDS):
            if self._waiting or self._units >= self.MAX_UNITS:
                break
            await asyncio.sleep(0)
        return self._waiting == 0 or self._units >= self.MAX_UNITS

    @asynccontextmanager
    async def _turn(self) -> AsyncIterator[AsyncConnection]:
        """This process's write slot, in the open batch (opened if there is none). On
        the way out the batch commits, unless another writer is about to join it; either
        way this returns only once the batch is durable (or raises if it is not)."""
        self._waiting += 1
        try:
            await self._slot.acquire()
        except asyncio.CancelledError:
            self._waiting -= 1
            if self._connection is not None and not self._slot.locked() and not self._waiting:
                # The holder left the batch open for this writer, which gave up: nobody
                # else is coming to commit it, and it holds the write lock.
                async with self._slot:
                    await asyncio.shield(self._close())
            raise
        self._waiting -= 1
        committed: asyncio.Future[None] | None = None
        try:
            if self._connection is None:
                await self._open()
            assert self._connection is not None
            committed = self._committed
            yield self._connection
        except BaseException:
            if committed is not None:  # this error is what the caller hears, not the batch's
                committed.add_done_callback(_retrieve)
            raise
        finally:
            try:
                if self._connection is not None:
                    try:
                        complete = self._broken or await self._batch_is_complete()
                    except asyncio.CancelledError:  # nobody else may be left to close it
                        await asyncio.shield(self._close())
                        raise
                    if complete:
                        await asyncio.shield(self._close())
            finally:
                self._slot.release()
        if committed is not None:
            await asyncio.shield(committed)

    @asynccontextmanager
    async def unit(self, db: AsyncSession) -> AsyncIterator[None]:
        """A session's unit of work (`unit_of_work`) as a savepoint in the batch."""
        async with self._turn() as connection:
            session = db.sync_session
            db.bind = connection  # SQLAlchemy 2.1: also rebinds the sync session
            session.join_transaction_mode = "create_savepoint"
            try:
                async with db.begin():
                    yield
            except BaseException:
                if not (await _driver_of(connection)).in_transaction():
                    self._broken = True
                raise
            finally:
                db.bind = self.database.engine
                session.join_transaction_mode = "conservative_savepoint"
            self._units += 1

    async def run(self, body: Callable[[Driver], Coroutine[Any, Any, T]]) -> T:
        """Queue a movement for the leader and wait for its answer, which comes once the
        batch it ran in has committed. A caller that gives up (cancelled) before its
        body ran is skipped; once the body ran, its batch commits as usual."""
        answer: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(body, contextvars.copy_context(), answer))
        if self._leader is None or self._leader.done():
            self._leader = asyncio.create_task(self._lead(), name="group-commit")
        return await answer

    async def _lead(self) -> None:
        ran: list[tuple[_Queued, Any, BaseException | None]] = []
        opened = False
        try:
            async with self._turn() as connection:
                opened = True
                sql = await _driver_of(connection)
                assert isinstance(sql, _SQLiteDriver)
                # Everything queued while the slot and the write lock were awaited, and
                # whatever queues while this runs: no loop turn happens in between.
                while self._queue and not self._broken and self._units < self.MAX_UNITS:
                    queued = self._queue.popleft()
                    if queued.answer.done():  # its caller gave up before it ran
                        continue
                    try:
                        ran.append(self._run_body(sql, queued))
                    except BaseException:
                        # Not the body's own error (_run_body keeps those): the batch
                        # cannot be trusted, so none of it commits, and every caller in
                        # it, this one too, hears why.
                        ran.append((queued, None, None))
                        self._broken = True
                        raise
                    self._units += 1
                # Who queues from now on is led by the next leader, which joins this batch
                # if it is still open (the slot's waiter keeps it open).
                self._hand_on()
        except BaseException as exc:
            # No batch (say, "database is locked": every caller retries) or cancelled
            # (shutdown): the whole queue hears it. Otherwise who queued behind this
            # batch goes in the next one.
            if not opened or not isinstance(exc, Exception):
                ran += [(queued, None, None) for queued in self._queue]
                self._queue.clear()
            if self._leader is asyncio.current_task():
                self._hand_on()
            for queued, _, error in ran:  # the batch is not durable: nothing of it happened
                _answer(queued, error=error or exc)
            if not isinstance(exc, Exception):
                raise
            return
        for queued, result, error in ran:
            _answer(queued, result=result, error=error)

    def _hand_on(self) -> None:
        self._leader = None
        if self._queue:
            self._leader = asyncio.create_task(self._lead(), name="group-commit")

    def _run_body(
        self, sql: _SQLiteDriver, queued: _Queued
    ) -> tuple[_Queued, Any, BaseException | None]:
        """One movement in its own savepoint, run to the end at once in its caller's
        context (request id, client address). The money path never waits inside the
        transaction on SQLite (each statement is a plain call), so one step finishes
        it; a body that does wait is refused and rolled back."""
        sql.execute_plain("SAVEPOINT movement")
        coroutine = queued.body(sql)
        try:
            queued.context.run(coroutine.send, None)
        except StopIteration as finished:
            sql.execute_plain("RELEASE movement")
            return queued, finished.value, None
        except Exception as exc:
            self._roll_back_savepoint(sql)
            return queued, None, exc
        coroutine.close()
        self._roll_back_savepoint(sql)
        return queued, None, BodyWaited("a movement waited inside its write transaction")

    def _roll_back_savepoint(self, sql: _SQLiteDriver) -> None:
        if sql.in_transaction():
            sql.execute_plain("ROLLBACK TO movement")
            sql.execute_plain("RELEASE movement")
        else:  # SQLite rolled the whole batch back: every unit in it is lost
            self._broken = True


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # read, so asyncio does not log it as never retrieved


def _answer(queued: _Queued, *, result: Any = None, error: BaseException | None = None) -> None:
    if queued.answer.done():  # the caller gave up waiting
        return
    if isinstance(error, asyncio.CancelledError):
        queued.answer.cancel()
    elif error is not None:
        queued.answer.set_exception(error)
    else:
        queued.answer.set_result(result)


def is_retryable(exc: BaseException) -> bool:
    """A conflict the database resolved by aborting this transaction: raised through
    SQLAlchemy (wrapped) or by the driver itself on the hot path (`Driver`)."""
    if isinstance(exc, OperationalError | sqlite3.OperationalError) and "database is locked" in str(
        exc
    ):
        return True
    orig = getattr(exc, "orig", None) if isinstance(exc, DBAPIError) else exc
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if code is None and orig is not None:
        code = getattr(getattr(orig, "__cause__", None), "sqlstate", None)
    return code in RETRYABLE_PG_CODES


def retry_on_conflict(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Re-run a whole service call when the database aborted it for a conflict."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return await fn(*args, **kwargs)
            except Exception as exc:
                if attempt == MAX_ATTEMPTS or not is_retryable(exc):
                    raise
                log.info("retrying %s after conflict (attempt %d)", fn.__name__, attempt)
                await asyncio.sleep(random.uniform(0, 0.005 * 2**attempt))
        raise AssertionError("unreachable")

    return wrapper
