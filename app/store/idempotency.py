"""Idempotency keys (table idempotency_keys), claimed at the start of the movement's own
transaction and answered at its end, so the key, the money and the answer commit
together. A concurrent request with the same key waits on the key's primary key
(PostgreSQL) or on the write lock (SQLite) until the first commits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.db import Sql, Tx, locking
from app.store.accounts import lock_customer

IN_PROGRESS = 0  # the response_status of a key claimed by a movement not yet committed


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """A key as the store files it: per user, with the hash of the request it came with."""

    user_id: int
    key: str
    request_hash: str


@dataclass(frozen=True, slots=True)
class Claim:
    claimed: bool  # False: the key was taken before (`stored_answer` has its answer)
    customer_status: str | None  # the caller's customer row, now locked (None: none)


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    request_hash: str
    status: int  # IN_PROGRESS until the first request's movement commits
    body: Any


_CLAIM = Sql(
    "INSERT INTO idempotency_keys"
    " (user_id, key, request_hash, response_status, response_body, created_at)"
    " VALUES (?, ?, ?, 0, '{}', ?) ON CONFLICT (user_id, key) DO NOTHING RETURNING 1"
)
# PostgreSQL: the claim and the customer's lock in one statement, the claim's result in
# the same row. SQLite has no INSERT inside WITH: there the claim runs first.
_CLAIM_AND_LOCK_CUSTOMER = locking(
    f"WITH claimed AS ({_CLAIM.sqlite})"  # noqa: S608
    " SELECT status, (SELECT COUNT(*) FROM claimed) FROM customers WHERE id = ?"
)
_STORED = Sql(
    "SELECT request_hash, response_status, response_body FROM idempotency_keys"
    " WHERE user_id = ? AND key = ?"
)
_ANSWER = Sql(
    "UPDATE idempotency_keys SET response_status = ?, response_body = ?"
    " WHERE user_id = ? AND key = ?"
)


async def claim_key(tx: Tx, key: IdempotencyKey, *, customer_id: int | None) -> Claim:
    """Take the key, if nobody has, and lock the caller's customer row (one statement on
    PostgreSQL); the first statement of the movement."""
    now = tx.timestamp(datetime.now(UTC))
    values = (key.user_id, key.key, key.request_hash, now)
    if tx.is_sqlite:
        claimed = await tx.one(_CLAIM, *values) is not None
        return Claim(claimed, await lock_customer(tx, customer_id))
    row = await tx.one(_CLAIM_AND_LOCK_CUSTOMER, *values, customer_id)
    return Claim(row[1] == 1, row[0]) if row else Claim(True, None)


async def stored_answer(tx: Tx, key: IdempotencyKey) -> StoredAnswer:
    """What is filed under a key taken before."""
    request_hash, status, body = await tx.one(_STORED, key.user_id, key.key)
    return StoredAnswer(request_hash, status, tx.json(body))


async def store_answer(tx: Tx, key: IdempotencyKey, status: int, body: bytes) -> None:
    """File the movement's answer (`body`: JSON) under its key, in its transaction."""
    await tx.write(_ANSWER, status, body.decode(), key.user_id, key.key)
