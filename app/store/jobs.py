"""Durable background jobs (table jobs): queued in the transaction of the change that
needs them, so the job commits with the change or not at all. Claiming and running them
is app.services.jobs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from app.db import Sql, Tx
from app.models import JobKind

_ENQUEUE = Sql(
    "INSERT INTO jobs (kind, payload, status, attempts, run_after, created_at)"
    " VALUES (?, ?, 'queued', 0, ?, ?) RETURNING id"
)


async def enqueue_job(
    tx: Tx, kind: JobKind, payload: dict[str, Any], *, run_after: datetime | None = None
) -> int:
    """Queue a job in `tx`, due now or at `run_after`; returns its id. On a money
    transaction the insert goes with the writes kept so far (no round trip of its own):
    queue it last."""
    now = datetime.now(UTC)
    due = tx.timestamp(run_after or now)
    row = await tx.write_returning(
        _ENQUEUE, kind, orjson.dumps(payload).decode(), due, tx.timestamp(now)
    )
    return int(row[0])
