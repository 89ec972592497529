"""Login throttling (table login_throttle): failed logins per username, existing or not,
so a lockout holds across processes."""

from __future__ import annotations

from datetime import UTC, datetime

from app.db import Sql, Tx

_CREATE = Sql(
    "INSERT INTO login_throttle (username, failures, window_started_at) VALUES (?, 0, ?)"
    " ON CONFLICT (username) DO NOTHING"
)


async def create_throttle(tx: Tx, username: str) -> None:
    """Make sure the username has its throttle row (the loser of a create race waits
    for the winner's row to commit, then finds it)."""
    await tx.write(_CREATE, username, tx.timestamp(datetime.now(UTC)))
