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
import functools
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import (
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
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.is_sqlite = settings.is_sqlite
        self.engine: AsyncEngine = _create_engine(settings)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=False)
        # In one process, writers wait their turn on an asyncio lock rather than inside
        # SQLite's busy handler (which polls with sleeps); across processes the busy
        # timeout still does the queueing.
        self.write_lock = asyncio.Lock() if self.is_sqlite else None

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session:
            session.info["database"] = self
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()


def _create_engine(settings: Settings) -> AsyncEngine:
    url = settings.db_url
    if not url.startswith("sqlite"):
        return create_async_engine(
            url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_pool_size,
            pool_pre_ping=False,
        )
    if ":memory:" not in url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        connect_args={"timeout": settings.sqlite_busy_timeout_ms / 1000},
    )
    busy_ms = settings.sqlite_busy_timeout_ms

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


@asynccontextmanager
async def unit_of_work(db: AsyncSession) -> AsyncIterator[AsyncSession]:
    """One write transaction: everything inside commits together or not at all."""
    await end_reads(db)
    database = database_of(db)
    if database.write_lock is None:
        async with db.begin():
            await db.connection(execution_options={WRITE_OPTION: True})
            yield db
        return
    async with database.write_lock, db.begin():
        await db.connection(execution_options={WRITE_OPTION: True})
        yield db


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, OperationalError) and "database is locked" in str(exc):
        return True
    if isinstance(exc, DBAPIError):
        orig = getattr(exc, "orig", None)
        code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        if code is None and orig is not None:
            code = getattr(getattr(orig, "__cause__", None), "sqlstate", None)
        return code in RETRYABLE_PG_CODES
    return False


def retry_on_conflict(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Re-run a whole service call when the database aborted it for a conflict."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return await fn(*args, **kwargs)
            except DBAPIError as exc:
                if attempt == MAX_ATTEMPTS or not is_retryable(exc):
                    raise
                log.info("retrying %s after conflict (attempt %d)", fn.__name__, attempt)
                await asyncio.sleep(random.uniform(0, 0.005 * 2**attempt))
        raise AssertionError("unreachable")

    return wrapper
