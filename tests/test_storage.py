"""Storage behaviour that the money path's latency depends on (issue 9)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.db import Sql, driver, movement
from app.services import audit
from app.services.audit import SYSTEM
from tests.helpers import wait_for
from tests.ledger_helpers import deposit, funded_account

_ACTIONS = Sql("SELECT action FROM audit_log ORDER BY seq")


def _size(path: Path) -> int:
    return path.stat().st_size


async def test_a_sqlite_server_checkpoints_the_wal_in_the_background(app, bank, database):
    """Commits never run SQLite's automatic checkpoint (it held the write lock for every
    worker through MBs of writes and an fsync); the app's own loop copies the WAL back
    into the database file, on its own connection, while it serves."""
    if not database.is_sqlite:
        assert database.background_checkpoints is False
        return
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


async def test_a_batch_that_sqlite_rolled_back_acknowledges_none_of_its_units(database):
    """SQLite rolls a whole transaction back by itself on some errors (disk full, I/O
    error). A unit that already finished in that group-commit batch must not be
    acknowledged: its work is gone."""
    if not database.is_sqlite:  # PostgreSQL has no shared batch: each movement commits
        assert database.group_commit is None
        return
    entered, release = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with movement(database) as sql:
            await audit.append(sql, actor=SYSTEM, action="test.first")
            entered.set()
            await release.wait()  # the second unit queues behind this one: same batch

    async def second() -> None:
        await entered.wait()
        async with movement(database) as sql:
            sql.execute_plain("ROLLBACK")  # what SQLite does on SQLITE_FULL / SQLITE_IOERR
            raise OSError("disk I/O error")

    tasks = [asyncio.create_task(first()), asyncio.create_task(second())]
    await entered.wait()
    for _ in range(5):
        await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[1], OSError)
    with pytest.raises(Exception, match="rolled back"):
        raise results[0]  # not acknowledged
    assert not [r for r in await _actions(database) if r == "test.first"]
    # The next batch starts clean.
    async with movement(database) as sql:
        await audit.append(sql, actor=SYSTEM, action="test.after")
    assert "test.after" in await _actions(database)


async def _actions(database) -> list[str]:  # type: ignore[no-untyped-def]
    async with database.session() as db:
        sql = await driver(db)
        return [row[0] for row in await sql.all(_ACTIONS)]
