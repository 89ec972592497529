"""Transactions: `Tx`, the write transaction the store works on; `unit_of_work` (a
session's write transaction) and `money_transaction` (the money path's, session-free);
conflict retries; the reads that need one snapshot.

A service never commits by hand: everything inside one of these commits together or not
at all, and the request's session only ever rolls back.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.driver import WRITE_OPTION, Driver, PostgresDriver, Sql, Write, driver_of
from app.db.engine import Database

log = logging.getLogger(__name__)

_ANY = "*"  # the table of a kept write whose text names none that can be read off
RETRYABLE_PG_CODES = {"40001", "40P01"}  # serialization_failure, deadlock_detected
MAX_ATTEMPTS = 8

P = ParamSpec("P")
T = TypeVar("T")


class Tx:
    """One write transaction, as the store (`app.store`) sees it: reads, and writes whose
    results nobody reads.

    On PostgreSQL a money transaction keeps its writes and sends them together, as one
    statement, when it next reads, commits, or writes a table that a kept write changes
    rows of: one network round trip for a movement's writes however many there are, and
    every read still sees every write before it. SQLite runs each statement at once (a
    function call, no round trip); so does a session's unit of work, whose ORM reads
    would not see kept writes.

    The rule looks at the table each write writes, not at tables it only reads (an
    `INSERT … SELECT`): a write that reads what another kept write changes must not be
    given to a money transaction as a plain write. A write whose table cannot be read off
    its text is sent apart from the others."""

    __slots__ = ("_driver", "_keeps", "_pending", "_tables")

    def __init__(self, driver: Driver, *, keeps_writes: bool) -> None:
        self._driver = driver
        self._keeps = keeps_writes and not driver.is_sqlite
        self._pending: list[Write] = []
        self._tables: dict[str, bool] = {}  # tables of the kept writes: rows changed?

    @property
    def is_sqlite(self) -> bool:
        return self._driver.is_sqlite

    async def one(self, sql: Sql, *args: Any) -> Any:
        """The first row of a read (None if it has none)."""
        if self._pending:
            await self.flush()
        return await self._driver.one(sql, *args)

    async def all(self, sql: Sql, *args: Any) -> list[Any]:
        if self._pending:
            await self.flush()
        return await self._driver.all(sql, *args)

    async def write(self, sql: Sql, *args: Any) -> None:
        if not self._keeps:
            await self._driver.send([(sql, args)])
            return
        if self._would_see(sql):
            await self.flush()
        self._pending.append((sql, args))
        table = sql.table or _ANY
        self._tables[table] = self._tables.get(table, False) or sql.changes_rows

    async def write_returning(self, sql: Sql, *args: Any) -> Any:
        """A write whose first row is returned (`INSERT … RETURNING id`), sent at once
        with the writes kept so far, in one round trip. Writes after it go in a statement
        of their own: make it the last write of a money transaction."""
        if self._would_see(sql):
            await self.flush()
        row = await self._driver.send(self._pending, (sql, args))
        self._forget()
        return row

    async def flush(self) -> None:
        """Send the kept writes (done before every read and before COMMIT)."""
        if self._pending:
            pending = self._pending
            self._forget()
            await self._driver.send(pending)

    def timestamp(self, value: datetime) -> Any:
        """A UTC datetime as the engine stores it."""
        return self._driver.timestamp(value)

    def json(self, value: Any) -> Any:
        """A JSON column's value as read, decoded."""
        return self._driver.json(value)

    def read_time(self, value: Any) -> Any:
        """A timestamp column's value as read: an aware UTC datetime (or None)."""
        return self._driver.read_time(value)

    def _would_see(self, sql: Sql) -> bool:
        """Whether `sql` and a kept write touch one table where either changes rows that
        exist: sent in one statement, neither would see the other's effect. A write of
        a table that cannot be told is sent apart from every other."""
        if not self._pending or sql.disjoint:
            return False
        if sql.table is None or _ANY in self._tables:
            return True
        if sql.table not in self._tables:
            return False
        return sql.changes_rows or self._tables[sql.table]

    def _forget(self) -> None:
        self._pending = []
        self._tables = {}


async def end_reads(db: AsyncSession) -> None:
    """Close the read transaction a session opened on its own, keeping what it loaded
    (sessions never expire on commit). Nothing is pending: writes only happen inside
    unit_of_work."""
    if db.in_transaction():
        await db.commit()


def database_of(db: AsyncSession) -> Database:
    return db.info["database"]


@asynccontextmanager
async def unit_of_work(db: AsyncSession) -> AsyncIterator[Tx]:
    """One write transaction on the session: everything inside commits together or not
    at all. Yields the transaction for the store's statements (audit records, jobs)."""
    await end_reads(db)
    database = database_of(db)
    if database.group_commit is None:
        async with db.begin():
            await db.connection(execution_options={WRITE_OPTION: True})
            yield await session_tx(db)
        return
    async with database.group_commit.unit(db):
        yield await session_tx(db)


async def session_tx(db: AsyncSession) -> Tx:
    """The session's current transaction (a read one, unless inside `unit_of_work`) as a
    `Tx`, for the store's reads on it."""
    return Tx(await driver_of(await db.connection()), keeps_writes=False)


async def read_snapshot(db: AsyncSession) -> None:
    """Make the session's next read transaction one snapshot for all its statements
    (PostgreSQL: REPEATABLE READ; SQLite's read transactions already are one)."""
    await end_reads(db)
    if not database_of(db).is_sqlite:
        await db.connection(execution_options={"isolation_level": "REPEATABLE READ"})


async def money_transaction(database: Database, work: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
    """The money path's unit of work: `work` runs in one write transaction, all or
    nothing, driven only through its `Tx` (no ORM state to flush, no session at all),
    and is run again from the start if the database aborted it for a conflict.

    SQLite: a savepoint in the group commit's batch, back to back with the movements
    queued beside it (`GroupCommit.run`); the work must not wait on anything but its own
    statements, which never wait there. PostgreSQL: a pooled connection of its own, at
    most pool-size of them at once (`Database.admission`), retries included."""
    gate = database.admission
    if gate is None:
        return await _money_transaction_retried(database, work)
    async with gate:
        return await _money_transaction_retried(database, work)


async def _money_transaction_once(
    database: Database, work: Callable[[Tx], Coroutine[Any, Any, T]]
) -> T:
    if database.group_commit is not None:

        async def in_batch(driver: Driver) -> T:
            return await work(Tx(driver, keeps_writes=False))

        return await database.group_commit.run(in_batch)
    async with database.engine.connect() as connection:
        raw = await connection.get_raw_connection()
        asyncpg_connection = raw.driver_connection
        try:
            # READ COMMITTED whatever the server's default: each statement sees what
            # committed before it, which the daily limit's sum relies on (app.store).
            async with asyncpg_connection.transaction(isolation="read_committed"):
                tx = Tx(PostgresDriver(raw.dbapi_connection), keeps_writes=True)
                result = await work(tx)
                await tx.flush()
                return result
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


def is_retryable(exc: BaseException) -> bool:
    """A conflict the database resolved by aborting this transaction: raised through
    SQLAlchemy (wrapped) or by the driver itself on the money path."""
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


_money_transaction_retried = retry_on_conflict(_money_transaction_once)
