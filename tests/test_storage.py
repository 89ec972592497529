"""Storage behaviour that the money path's latency depends on (issue 9)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import event, text

from app.context import request_id_var
from app.db import BodyWaited, Sql, Tx, money_transaction, session_tx
from app.db.driver import fused
from app.services import audit
from app.services.audit import SYSTEM
from tests.helpers import wait_for
from tests.ledger_helpers import (
    balance,
    deposit,
    funded_account,
    new_key,
    transfer,
    verify_books,
)

_ACTIONS = Sql("SELECT action FROM audit_log ORDER BY seq")
_INSERT_MARKER = Sql(  # a table no foreign key ties to anything
    "INSERT INTO login_throttle (username, failures, window_started_at)"
    " VALUES (?, 0, CURRENT_TIMESTAMP)"
)


def _size(path: Path) -> int:
    return path.stat().st_size


@pytest.mark.sqlite_only
async def test_a_sqlite_server_checkpoints_the_wal_in_the_background(app, bank, database):
    """Commits never run SQLite's automatic checkpoint (it held the write lock for every
    worker through MBs of writes and an fsync); the app's own loop copies the WAL back
    into the database file, on its own connection, while it serves."""
    assert database.background_checkpoints is True
    async with database.engine.connect() as connection:
        pragma = await connection.exec_driver_sql("PRAGMA wal_autocheckpoint")
        assert pragma.scalar() == 10_000  # SQLite's own only as a backstop
        # A page cache that holds large books' index pages (SQLite's default: 2 MiB).
        cache = await connection.exec_driver_sql("PRAGMA cache_size")
        assert cache.scalar() == -32 * 1024
    main_file = Path(database.path)
    async with app.router.lifespan_context(app):
        before = _size(main_file)
        _, headers, number = await funded_account(bank, "100.00")
        for _ in range(40):
            assert (await deposit(bank.client, headers, number, "1.00")).status_code == 201

        async def grown() -> bool:
            return _size(main_file) > before

        # Only a checkpoint writes pages into the main file of a WAL database.
        await wait_for(grown, within=3.0)


@pytest.mark.sqlite_only
async def test_a_batch_that_sqlite_rolled_back_acknowledges_none_of_its_units(database):
    """SQLite rolls a whole transaction back by itself on some errors (disk full, I/O
    error). A unit that already finished in that group-commit batch must not be
    acknowledged: its work is gone."""

    async def first(tx: Tx) -> str:
        await audit.record(tx, actor=SYSTEM, action="test.first")
        return "done"

    async def second(tx: Tx) -> None:
        await tx.write(Sql("ROLLBACK"))  # what SQLite does on SQLITE_FULL / SQLITE_IOERR
        raise OSError("disk I/O error")

    # Queued together: the same batch, first before second.
    results = await asyncio.gather(
        money_transaction(database, first),
        money_transaction(database, second),
        return_exceptions=True,
    )
    assert isinstance(results[1], OSError)  # its own error
    with pytest.raises(Exception, match="rolled back"):
        raise results[0]  # not acknowledged
    assert not [r for r in await _actions(database) if r == "test.first"]
    # The next batch starts clean.
    await money_transaction(database, _append("test.after"))
    assert "test.after" in await _actions(database)


def _append(action: str):  # type: ignore[no-untyped-def]
    async def body(tx: Tx) -> str:
        await audit.record(tx, actor=SYSTEM, action=action)
        return action

    return body


async def test_queued_movements_run_back_to_back_in_one_batch_each_in_its_own_context(database):
    """Movements queued together share one commit, run one after the other without the
    event loop turning in between, each in its own savepoint and with its own caller's
    context (the audit record carries each request's id); a failing one rolls back
    alone."""

    async def as_request(request_id: str, body):  # type: ignore[no-untyped-def]
        request_id_var.set(request_id)
        return await money_transaction(database, body)

    async def fails(tx: Tx) -> None:
        await audit.record(tx, actor=SYSTEM, action="test.failed")
        raise ValueError("refused")

    commits = 0
    if database.is_sqlite:
        sync_engine = database.engine.sync_engine

        def count(_conn: object) -> None:
            nonlocal commits
            commits += 1

        event.listen(sync_engine, "commit", count)
    try:
        results = await asyncio.gather(
            as_request("req-a", _append("test.a")),
            as_request("req-b", fails),
            as_request("req-c", _append("test.c")),
            return_exceptions=True,
        )
    finally:
        if database.is_sqlite:
            event.remove(sync_engine, "commit", count)
    assert results[0] == "test.a" and results[2] == "test.c"
    assert isinstance(results[1], ValueError)
    async with database.session() as db:
        rows = (
            await db.execute(
                text(
                    "SELECT action, request_id FROM audit_log"
                    " WHERE action LIKE 'test.%' ORDER BY seq"
                )
            )
        ).all()
    expected = [("test.a", "req-a"), ("test.c", "req-c")]
    if database.is_sqlite:  # in queue order, in one commit
        assert [tuple(r) for r in rows] == expected
        assert commits == 1
    else:  # three transactions of their own, chained in commit order
        assert sorted(tuple(r) for r in rows) == expected


@pytest.mark.sqlite_only
async def test_a_movement_that_waits_inside_its_transaction_is_refused(database):
    """On SQLite a movement's body runs to its end in one go, holding the write lock for
    its statements only; one that awaits something else (a sleep, a network call) is
    rolled back with an error rather than holding every other writer."""

    async def waits(tx: Tx) -> None:
        await audit.record(tx, actor=SYSTEM, action="test.waited")
        await asyncio.sleep(0.01)

    results = await asyncio.gather(
        money_transaction(database, waits),
        money_transaction(database, _append("test.next")),
        return_exceptions=True,
    )
    assert isinstance(results[0], BodyWaited)
    assert results[1] == "test.next"
    actions = await _actions(database)
    assert "test.waited" not in actions and "test.next" in actions


@pytest.mark.sqlite_only
async def test_a_caller_that_gives_up_before_its_movement_ran_changes_nothing(database):
    abandoned = asyncio.ensure_future(money_transaction(database, _append("test.abandoned")))
    await asyncio.sleep(0)  # queued; the leader has not run it yet
    abandoned.cancel()
    assert await money_transaction(database, _append("test.kept")) == "test.kept"
    with pytest.raises(asyncio.CancelledError):
        await abandoned
    actions = await _actions(database)
    assert "test.abandoned" not in actions and "test.kept" in actions


async def _actions(database) -> list[str]:  # type: ignore[no-untyped-def]
    async with database.session() as db:
        tx = await session_tx(db)
        return [row[0] for row in await tx.all(_ACTIONS)]


@pytest.mark.sqlite_only
async def test_queued_movements_run_with_no_event_loop_turn_between_them(database):
    """What keeps the write lock short: once the leader runs, the queued bodies follow
    one another directly; nothing else the event loop has (other requests' HTTP work)
    runs in between."""
    turned: list[bool] = []
    loop_turned = asyncio.Event()

    async def first(tx: Tx) -> None:
        asyncio.get_running_loop().call_soon(loop_turned.set)
        await audit.record(tx, actor=SYSTEM, action="test.first")

    async def later(tx: Tx) -> None:
        turned.append(loop_turned.is_set())
        await audit.record(tx, actor=SYSTEM, action="test.later")

    await asyncio.gather(
        money_transaction(database, first), *(money_transaction(database, later) for _ in range(5))
    )
    assert turned == [False] * 5
    assert loop_turned.is_set()


@pytest.mark.postgres_only
async def test_a_postgres_movement_takes_five_round_trips(bank, database):
    """On PostgreSQL most of a movement's cost is round trips (each ~5 % of throughput
    on the benchmark's machine), and rows stay locked across them. A transfer with an
    Idempotency-Key: BEGIN, the key's claim with the customer's lock, the movement's
    lock (accounts, journal id, daily total), its writes as one statement, COMMIT."""
    _, headers, source = await funded_account(bank, "100.00")
    _, _, target = await funded_account(bank, "0.00")
    sent: list[str] = []
    await database.engine.dispose()  # every connection from here on is logged

    @event.listens_for(database.engine.sync_engine, "connect")
    def _log(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        dbapi_connection.driver_connection.add_query_logger(lambda q: sent.append(q.query))

    response = await transfer(bank.client, headers, source, target, "1.00", key=new_key())
    assert response.status_code == 201, response.text
    assert len(sent) == 5, sent
    writes = [query for query in sent if query.startswith("WITH w0 AS ")]
    assert len(writes) == 1, sent
    for table in ("journals", "accounts", "entries", "outgoing_minutes", "idempotency_keys"):
        assert f" {table} " in writes[0], table
    assert "INSERT INTO audit_pending" in writes[0]
    # A deposit locks the bank's cash account with the customer's: the same five.
    sent.clear()
    response = await deposit(bank.client, headers, source, "2.00", key=new_key())
    assert response.status_code == 201, response.text
    assert len(sent) == 5, sent
    assert await balance(bank.client, headers, source) == "101.00"
    # Now and then a journal also prunes its customer's minutes that left the window:
    # still the same five.
    async with database.session() as db:
        next_id = await db.scalar(text("SELECT last_value + 1 FROM journals_id_seq"))
    for _ in range(-next_id % 64):
        assert (await deposit(bank.client, headers, source, "0.01")).status_code == 201
    sent.clear()
    response = await transfer(bank.client, headers, source, target, "1.00", key=new_key())
    assert response.json()["transaction_id"] == str(next_id + -next_id % 64)
    assert len(sent) == 5, sent
    assert "DELETE FROM outgoing_minutes" in next(q for q in sent if q.startswith("WITH w0"))
    assert (await verify_books(bank.app)).balanced


async def test_writes_sent_together_take_effect_together_or_not_at_all(database):
    """`Tx.write`: on PostgreSQL one statement for several writes. Each takes
    effect; a statement given the wrong parameters fails the movement and leaves
    nothing of it."""

    async def both(tx: Tx) -> None:
        await audit.record(tx, actor=SYSTEM, action="test.first")
        await tx.write(_INSERT_MARKER, "test.marker")

    await money_transaction(database, both)

    async def wrong(tx: Tx) -> None:
        await audit.record(tx, actor=SYSTEM, action="test.wrong")
        await tx.write(_INSERT_MARKER, "test.marker", "one too many")

    with pytest.raises(Exception, match=r"parameter|binding|placeholder"):
        await money_transaction(database, wrong)

    async def read(tx: Tx) -> list[str]:
        return [row[0] for row in await tx.all(_ACTIONS)]

    assert await money_transaction(database, read) == ["test.first"]
    # PostgreSQL could not nest these safely: refused rather than rewritten.
    for text_ in ("WITH x AS (SELECT 1) DELETE FROM login_throttle", "SELECT 'costs $1', ?"):
        with pytest.raises(ValueError, match="cannot send together"):
            fused((_INSERT_MARKER, Sql(text_)))
    async with database.session() as db:
        count = await db.scalar(text("SELECT COUNT(*) FROM login_throttle"))
    assert count == 1
