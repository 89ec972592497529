"""Idempotency keys (API.md §1), scoped to the user.

The key is claimed at the start of the movement's own transaction and its response is
stored at the end of it, so the key, the money and the answer commit together. A
concurrent request with the same key waits on the key's primary key (PostgreSQL) or on
the write lock (SQLite) until the first commits, then replays its answer: one key
executes at most once. A request that fails rolls back and leaves the key free, so the
client can retry it with the same key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import IdempotencyInProgress, IdempotencyKeyReused
from app.models import IdempotencyRecord

IN_PROGRESS = 0
_CLAIM = {
    name: insert(IdempotencyRecord).on_conflict_do_nothing(index_elements=["user_id", "key"])
    for name, insert in (("postgresql", pg_insert), ("sqlite", sqlite_insert))
}
_COMPLETE = update(IdempotencyRecord).where(
    IdempotencyRecord.user_id == bindparam("uid"), IdempotencyRecord.key == bindparam("k")
)


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    user_id: int
    key: str
    request_hash: str

    @classmethod
    def of(
        cls, user_id: int, key: str | None, operation: str, request: dict[str, Any]
    ) -> IdempotencyKey | None:
        if key is None:
            return None
        canonical = orjson.dumps({"op": operation, "request": request}, option=orjson.OPT_SORT_KEYS)
        return cls(user_id, key, hashlib.sha256(canonical).hexdigest())


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a money endpoint answers: the status and body, and whether it is a replay."""

    status: int
    body: dict[str, Any]
    replayed: bool = False


async def claim(db: AsyncSession, idem: IdempotencyKey) -> Outcome | None:
    """Take the key inside the caller's transaction, or return the stored answer."""
    conn = await db.connection()
    inserted = await conn.execute(
        _CLAIM[conn.dialect.name],
        {
            "user_id": idem.user_id,
            "key": idem.key,
            "request_hash": idem.request_hash,
            "response_status": IN_PROGRESS,
            "response_body": {},
        },
    )
    if inserted.rowcount == 1:
        return None
    stored = (
        await db.execute(
            select(
                IdempotencyRecord.request_hash,
                IdempotencyRecord.response_status,
                IdempotencyRecord.response_body,
            ).where(IdempotencyRecord.user_id == idem.user_id, IdempotencyRecord.key == idem.key)
        )
    ).one()
    if stored.request_hash != idem.request_hash:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was used with a different request body.",
            field="Idempotency-Key",
        )
    if stored.response_status == IN_PROGRESS:
        raise IdempotencyInProgress("The first request with this key has not finished.")
    return Outcome(stored.response_status, stored.response_body, replayed=True)


async def complete(db: AsyncSession, idem: IdempotencyKey | None, outcome: Outcome) -> Outcome:
    if idem is not None:
        conn = await db.connection()
        await conn.execute(
            _COMPLETE,
            {
                "uid": idem.user_id,
                "k": idem.key,
                "response_status": outcome.status,
                "response_body": outcome.body,
            },
        )
    return outcome
