"""Storage behaviour that the money path's latency depends on (issue 9)."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import wait_for
from tests.ledger_helpers import deposit, funded_account


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
        assert pragma.scalar() == 0
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
