"""Idempotency keys (API.md §1), scoped to the user: when two requests are the same one,
and what a retry is answered. The key is claimed at the start of the movement's own
transaction and its answer filed at the end of it (app.store.idempotency), so the key,
the money and the answer commit together: one key executes at most once. A request that
fails rolls back and leaves the key free, so the client can retry it with the same key.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from app.errors import IdempotencyInProgress, IdempotencyKeyReused
from app.store import IdempotencyKey, StoredAnswer
from app.store.idempotency import IN_PROGRESS


def key_for(
    user_id: int, key: str | None, operation: str, request: dict[str, Any]
) -> IdempotencyKey | None:
    """The key a request came with (None without one), bound to the request's content:
    the same key with another body is refused rather than replayed."""
    if key is None:
        return None
    canonical = orjson.dumps({"op": operation, "request": request}, option=orjson.OPT_SORT_KEYS)
    return IdempotencyKey(user_id, key, hashlib.sha256(canonical).hexdigest())


def replayed_body(stored: StoredAnswer, key: IdempotencyKey) -> Any:
    """The answer filed under a key taken before, to send again."""
    if stored.request_hash != key.request_hash:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was used with a different request body.",
            field="Idempotency-Key",
        )
    if stored.status == IN_PROGRESS:
        raise IdempotencyInProgress("The first request with this key has not finished.")
    return stored.body
