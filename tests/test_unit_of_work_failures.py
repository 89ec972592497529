"""The unit of work when something fails underneath it: a broken batch, a cancelled
writer, a dead or interrupted PostgreSQL connection, a burst of refused reads. Every
caller gets an answer, and no answer says "done" for work that did not commit."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from app.db import Sql, Tx, money_transaction, session_tx
from app.db.driver import SQLiteDriver
from app.db.group_commit import GroupCommit
from app.services import audit
from app.services.audit import SYSTEM
from tests.ledger_helpers import funded_account

_ACTIONS = Sql("SELECT action FROM audit_log ORDER BY seq")
_SLEEP = Sql("SELECT 1", "SELECT pg_sleep(1)")


def _append(action: str):  # type: ignore[no-untyped-def]
    async def body(tx: Tx) -> str:
        await audit.record(tx, actor=SYSTEM, action=action)
        return action

    return body


async def _actions(database) -> list[str]:  # type: ignore[no-untyped-def]
    async with database.session() as db:
        return [row[0] for row in await (await session_tx(db)).all(_ACTIONS)]


async def _backend_states(database) -> list[str]:  # type: ignore[no-untyped-def]
    url = make_url(database.settings.db_url)
    admin = await asyncpg.connect(host=url.host, port=url.port, user=url.username)
    try:
        rows = await admin.fetch(
            "SELECT state FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            url.database,
        )
    finally:
        await admin.close()
    return [row[0] for row in rows]


@pytest.mark.sqlite_only
async def test_callers_queued_behind_a_failed_batch_are_still_answered(database, monkeypatch):
    """Past a body's own error (rolled back alone), anything that fails in the leader
    (here the SAVEPOINT before the second body) fails its whole batch: every caller in it
    hears so and none of it commits. Who queued behind goes in the next batch."""
    real = SQLiteDriver.execute_plain
    savepoints = 0

    def flaky(self, statement: str) -> None:  # type: ignore[no-untyped-def]
        nonlocal savepoints
        if statement.startswith("SAVEPOINT"):
            savepoints += 1
            if savepoints == 2:
                raise sqlite3.OperationalError("disk I/O error")
        real(self, statement)

    monkeypatch.setattr(SQLiteDriver, "execute_plain", flaky)
    calls = [money_transaction(database, _append(f"test.{i}")) for i in range(3)]
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5)
    assert isinstance(results[0], sqlite3.OperationalError)  # its batch failed
    assert isinstance(results[1], sqlite3.OperationalError)
    assert results[2] == "test.2"  # the next batch
    assert [a for a in await _actions(database) if a.startswith("test.")] == ["test.2"]


@pytest.mark.sqlite_only
async def test_a_writer_that_gives_up_on_a_batch_handed_to_it_closes_it(database, monkeypatch):
    """The holder keeps the batch open for the writer waiting behind it; if that writer
    is cancelled before its turn, the batch must still commit (and free the write lock)."""
    batch = database.group_commit
    holding, release = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with database.session() as db, batch.unit(db):
            holding.set()
            await release.wait()

    async def waiter() -> None:
        async with database.session() as db, batch.unit(db):
            pass

    held = asyncio.ensure_future(holder())
    await holding.wait()
    moved = asyncio.ensure_future(money_transaction(database, _append("test.moved")))
    await asyncio.sleep(0.01)
    waiting = asyncio.ensure_future(waiter())
    await asyncio.sleep(0.01)
    real = GroupCommit._batch_is_complete

    async def cancel_the_next_writer(self) -> bool:  # type: ignore[no-untyped-def]
        complete = await real(self)
        if asyncio.current_task() is not held and not complete and not waiting.done():
            waiting.cancel()  # its client went away
        return complete

    monkeypatch.setattr(GroupCommit, "_batch_is_complete", cancel_the_next_writer)
    release.set()
    assert await asyncio.wait_for(moved, 5) == "test.moved"
    await held
    assert batch._connection is None  # committed and closed: the write lock is free
    assert "test.moved" in await _actions(database)


@pytest.mark.postgres_only
@pytest.mark.parametrize("cancels", [1, 2])
async def test_a_cancelled_postgres_movement_leaves_no_connection_in_a_transaction(
    database, cancels
):
    """Cancelled mid-transaction (and again during its rollback): the connection is
    thrown away, not handed to the next movement inside a transaction that never
    commits."""

    async def slow(tx: Tx) -> str:
        await audit.record(tx, actor=SYSTEM, action="test.slow")
        await tx.one(_SLEEP)
        return "slow"

    await money_transaction(database, _append("test.warm"))
    task = asyncio.ensure_future(money_transaction(database, slow))
    await asyncio.sleep(0.3)
    for _ in range(cancels):
        task.cancel()
        await asyncio.sleep(0)
    with pytest.raises(asyncio.CancelledError):
        await task
    answers = [
        await asyncio.wait_for(money_transaction(database, _append(f"test.after.{i}")), 5)
        for i in range(3)
    ]
    assert answers == ["test.after.0", "test.after.1", "test.after.2"]
    actions = await _actions(database)
    assert "test.slow" not in actions
    assert {"test.after.0", "test.after.1", "test.after.2"} <= set(actions)
    assert not [s for s in await _backend_states(database) if s and "transaction" in s]


@pytest.mark.postgres_only
async def test_a_postgres_movement_cancelled_at_begin_changes_nothing_after_it(database):
    await money_transaction(database, _append("test.warm"))
    task = asyncio.ensure_future(money_transaction(database, _append("test.cancelled")))
    await asyncio.sleep(0)  # up to its first real wait: BEGIN on the pooled connection
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for i in range(3):
        assert await asyncio.wait_for(money_transaction(database, _append(f"test.after.{i}")), 5)
    actions = await _actions(database)
    assert {"test.after.0", "test.after.1", "test.after.2"} <= set(actions)


@pytest.mark.postgres_only
async def test_dead_postgres_connections_are_replaced(database):
    for i in range(2):
        await money_transaction(database, _append(f"test.warm.{i}"))
    url = make_url(database.settings.db_url)
    admin = await asyncpg.connect(host=url.host, port=url.port, user=url.username)
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            url.database,
        )
    finally:
        await admin.close()
    outcomes = []
    for i in range(6):
        try:
            outcomes.append(await money_transaction(database, _append(f"test.after.{i}")))
        except Exception as exc:  # the first use of each dead connection fails
            outcomes.append(type(exc).__name__)
    assert outcomes[-3:] == ["test.after.3", "test.after.4", "test.after.5"], outcomes


@pytest.mark.settings(db_pool_size=1)
async def test_refused_reads_at_once_do_not_exhaust_the_pool(bank):
    """Each refusal is audited on the request's own session after its read ended: a
    request never holds two pooled connections (with a pool of one, three at once used
    to wait 30 s for each other and fail with 500)."""
    _, headers = await bank.customer()
    _, _, theirs = await funded_account(bank, "10.00")
    started = time.monotonic()
    responses = await asyncio.gather(
        *[bank.client.get(f"/api/accounts/{theirs}", headers=headers) for _ in range(3)]
    )
    assert [r.status_code for r in responses] == [404, 404, 404]
    assert time.monotonic() - started < 5
