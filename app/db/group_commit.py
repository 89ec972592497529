"""SQLite's group commit: the writers of one process share one write transaction and one
fsync, each in a savepoint of its own (see `GroupCommit`)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.db.driver import WRITE_OPTION, Driver, SQLiteDriver, driver_of

if TYPE_CHECKING:
    from app.db.engine import Database

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(slots=True)
class _Queued:
    """A movement waiting for its batch: what to run, in which context, and where its
    caller waits for the answer."""

    work: Callable[[Driver], Coroutine[Any, Any, Any]]
    context: contextvars.Context
    answer: asyncio.Future[Any]


class BodyWaited(RuntimeError):
    """A money transaction's work waited on something inside the batch's write
    transaction (anything but its own statements, which never wait on SQLite)."""


class GroupCommit:
    """SQLite writers of one process share one write transaction: each unit of work runs
    in its own SAVEPOINT (a failing one rolls back alone), and the transaction commits,
    with one fsync, once no other writer is waiting or the batch is full. A unit returns
    only after the commit that made it durable, so nothing is acknowledged early.

    Units run one at a time (SQLite has one writer anyway); across processes the batch
    holds the writer file lock, so another worker's batch follows as soon as it commits.
    This is the group commit that fast ledgers use to go past one fsync per payment.

    Money movements (`run`) go further: they queue, and one leader task runs every
    queued work back to back, each in its own savepoint, without giving the event loop a
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
            if self._broken or not (await driver_of(connection)).in_transaction():
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
                if not (await driver_of(connection)).in_transaction():
                    self._broken = True
                raise
            finally:
                db.bind = self.database.engine
                session.join_transaction_mode = "conservative_savepoint"
            self._units += 1

    async def run(self, work: Callable[[Driver], Coroutine[Any, Any, T]]) -> T:
        """Queue a movement for the leader and wait for its answer, which comes once the
        batch it ran in has committed. A caller that gives up (cancelled) before its
        work ran is skipped; once the work ran, its batch commits as usual."""
        answer: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(work, contextvars.copy_context(), answer))
        if self._leader is None or self._leader.done():
            self._leader = asyncio.create_task(self._lead(), name="group-commit")
        return await answer

    async def _lead(self) -> None:
        ran: list[tuple[_Queued, Any, BaseException | None]] = []
        opened = False
        try:
            async with self._turn() as connection:
                opened = True
                driver = await driver_of(connection)
                assert isinstance(driver, SQLiteDriver)
                # Everything queued while the slot and the write lock were awaited, and
                # whatever queues while this runs: no loop turn happens in between.
                while self._queue and not self._broken and self._units < self.MAX_UNITS:
                    queued = self._queue.popleft()
                    if queued.answer.done():  # its caller gave up before it ran
                        continue
                    try:
                        ran.append(self._run_work(driver, queued))
                    except BaseException:
                        # Not the work's own error (_run_work keeps those): the batch
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

    def _run_work(
        self, driver: SQLiteDriver, queued: _Queued
    ) -> tuple[_Queued, Any, BaseException | None]:
        """One movement in its own savepoint, run to the end at once in its caller's
        context (request id, client address). The money path never waits inside the
        transaction on SQLite (each statement is a plain call), so one step finishes
        it; work that does wait is refused and rolled back."""
        driver.execute_plain("SAVEPOINT movement")
        coroutine = queued.work(driver)
        try:
            queued.context.run(coroutine.send, None)
        except StopIteration as finished:
            driver.execute_plain("RELEASE movement")
            return queued, finished.value, None
        except Exception as exc:
            self._roll_back_savepoint(driver)
            return queued, None, exc
        coroutine.close()
        self._roll_back_savepoint(driver)
        return queued, None, BodyWaited("a movement waited inside its write transaction")

    def _roll_back_savepoint(self, driver: SQLiteDriver) -> None:
        if driver.in_transaction():
            driver.execute_plain("ROLLBACK TO movement")
            driver.execute_plain("RELEASE movement")
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
