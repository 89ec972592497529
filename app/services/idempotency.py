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
from datetime import UTC, datetime
from typing import Any

import orjson

from app.db import Driver, Sql, Write
from app.errors import IdempotencyInProgress, IdempotencyKeyReused

IN_PROGRESS = 0
CLAIM = Sql(
    "INSERT INTO idempotency_keys"
    " (user_id, key, request_hash, response_status, response_body, created_at)"
    " VALUES (?, ?, ?, 0, '{}', ?) ON CONFLICT (user_id, key) DO NOTHING RETURNING 1"
)
_STORED = Sql(
    "SELECT request_hash, response_status, response_body FROM idempotency_keys"
    " WHERE user_id = ? AND key = ?"
)
_COMPLETE = Sql(
    "UPDATE idempotency_keys SET response_status = ?, response_body = ?"
    " WHERE user_id = ? AND key = ?"
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


def claiming(sql: Driver, idem: IdempotencyKey) -> Write:
    """The write that takes the key: it returns a row if it did, none if the key was
    taken before (then `stored` has the answer). The first statement of the caller's
    transaction that touches the key."""
    return CLAIM, (idem.user_id, idem.key, idem.request_hash, sql.timestamp(datetime.now(UTC)))


async def stored(sql: Driver, idem: IdempotencyKey) -> Outcome:
    """The answer stored under a key taken before, to replay."""
    request_hash, status, body = await sql.one(_STORED, idem.user_id, idem.key)
    if request_hash != idem.request_hash:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was used with a different request body.",
            field="Idempotency-Key",
        )
    if status == IN_PROGRESS:
        raise IdempotencyInProgress("The first request with this key has not finished.")
    return Outcome(status, sql.json(body), replayed=True)


def completion(idem: IdempotencyKey | None, outcome: Outcome) -> list[Write]:
    """The write that stores `outcome` as the key's answer (none without a key), for the
    caller to send with the rest of its movement."""
    if idem is None:
        return []
    body = orjson.dumps(outcome.body).decode()
    return [(_COMPLETE, (outcome.status, body, idem.user_id, idem.key))]
