"""The engine and its connections: the `Database` (engine, sessions, the SQLite group
commit or the PostgreSQL admission gate), the inline SQLite connection, the writer file
lock and the WAL checkpointer.

SQLite is the embedded engine: WAL, synchronous=FULL, foreign keys, a busy timeout, and
every write transaction opened with BEGIN IMMEDIATE so concurrent writers queue for the
write lock instead of failing with "database is locked" half-way through (a deferred
BEGIN that later upgrades to a write cannot wait: SQLite refuses it at once). Reads keep
a deferred BEGIN and never block writers under WAL.

PostgreSQL is the scale-out engine: rows are locked in a fixed order by the store and a
deadlock or serialization failure is retried a bounded number of times
(app.db.transactions).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
import anyio
from sqlalchemy import event, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.db.driver import WRITE_OPTION
from app.db.group_commit import GroupCommit
from app.settings import Settings


def _utcnow() -> datetime:
    return datetime.now(UTC)


log = logging.getLogger(__name__)


class Database:
    def __init__(self, settings: Settings, *, background_checkpoints: bool = False) -> None:
        """`background_checkpoints` (SQLite, for a server: see `checkpoints`): commits
        never copy the WAL back into the database file themselves."""
        self.settings = settings
        # The time as the services read it for what is due (jobs, hold expiry): a test
        # replaces it to move time.
        self.clock: Callable[[], datetime] = _utcnow
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

    async def is_reachable(self) -> bool:
        """Whether the database answers a trivial query (the readiness probe)."""
        try:
            async with self.engine.connect() as connection:
                await connection.exec_driver_sql("SELECT 1")
        except Exception:
            log.warning("database unreachable", exc_info=True)
            return False
        return True


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

    @property
    def sqlite_connection(self) -> sqlite3.Connection:
        """The sqlite3 connection itself, for the driver (app.db.driver)."""
        if self._connection is None:
            raise ValueError("Connection closed")
        return self._connection

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
