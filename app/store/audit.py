"""The audit chain (tables audit_log, and audit_pending on PostgreSQL): one hash-chained,
append-only log written in the transaction of the change it records.

Chain: hash = SHA-256(canonical JSON of the record, including prev_hash). SQLite writers
are serial (BEGIN IMMEDIATE), so a record is numbered and hashed after the chain's tail
as read in its transaction. PostgreSQL's writers are not: a record goes to
audit_pending, and a deferred trigger (migration 0003) seals it into the chain at COMMIT
under a transaction-scoped advisory lock, with the same hash as `compute_hash`;
concurrent writers so hold the chain's lock only while they commit.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from app.db import Sql, Tx

GENESIS = "0" * 64
AUDIT_CHAIN_LOCK = 0x4155444954  # "AUDIT": pg_advisory_xact_lock key, also in migration 0003
CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC


def compute_hash(
    at: datetime,
    actor_id: str | None,
    actor_role: str | None,
    action: str,
    entity_type: str | None,
    entity_id: str | None,
    outcome: str,
    ip: str | None,
    request_id: str | None,
    details: dict[str, Any],
    *,
    seq: int,
    prev_hash: str,
) -> str:
    """SHA-256 of the record's canonical form: a JSON array in a fixed field order, the
    time in RFC 3339 UTC, `details` with sorted keys (orjson, so it costs microseconds:
    verification streams millions of these). PostgreSQL's audit_append() builds the same
    bytes around the serialised middle of this array."""
    content = [
        seq,
        at,
        actor_id,
        actor_role,
        action,
        entity_type,
        entity_id,
        outcome,
        ip,
        request_id,
        details,
        prev_hash,
    ]
    return hashlib.sha256(orjson.dumps(content, option=CANONICAL)).hexdigest()


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One record's fields, in the chain's order."""

    at: datetime
    actor_id: str | None
    actor_role: str | None
    action: str
    entity_type: str | None
    entity_id: str | None
    outcome: str
    ip: str | None
    request_id: str | None
    details: dict[str, Any]


_APPEND_PENDING = Sql(
    "INSERT INTO audit_pending (at, actor_id, actor_role, action, entity_type, entity_id,"
    " outcome, ip, request_id, details, middle) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_TAIL = Sql("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
_APPEND = Sql(
    "INSERT INTO audit_log (seq, at, actor_id, actor_role, action, entity_type, entity_id,"
    " outcome, ip, request_id, details, prev_hash, hash)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


async def append_audit(tx: Tx, entry: AuditEntry) -> None:
    """Append one record to the chain, in `tx`."""
    # Serialise details once: the hash covers exactly the JSON that is stored.
    details = orjson.dumps(entry.details, default=str)
    content: list[Any] = [
        entry.at,
        entry.actor_id,
        entry.actor_role,
        entry.action,
        entry.entity_type,
        entry.entity_id,
        entry.outcome,
        entry.ip,
        entry.request_id,
        orjson.loads(details),
    ]
    if not tx.is_sqlite:
        middle = orjson.dumps(content, option=CANONICAL)[1:-1].decode()
        await tx.write(_APPEND_PENDING, *content[:9], details.decode(), middle)
        return
    tail = await tx.one(_TAIL)
    seq, prev_hash = (tail[0] + 1, tail[1]) if tail else (1, GENESIS)
    digest = compute_hash(*content, seq=seq, prev_hash=prev_hash)
    content[0] = tx.timestamp(content[0])
    content[9] = details.decode()
    await tx.write(_APPEND, seq, *content, prev_hash, digest)


_CHAIN_PAGE = Sql(
    "SELECT seq, at, actor_id, actor_role, action, entity_type, entity_id, outcome, ip,"
    " request_id, details, prev_hash, hash FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?",
    "SELECT seq, at, actor_id, actor_role, action, entity_type, entity_id, outcome, ip,"
    " request_id, details::text, prev_hash, hash FROM audit_log WHERE seq > $1"
    " ORDER BY seq LIMIT $2",
)


async def chain_page(tx: Tx, *, after_seq: int, limit: int) -> list[list[Any]]:
    """The records after `after_seq`, in chain order, each a list of `compute_hash`'s
    fields in order (seq first, prev_hash twelfth) and its stored hash last. Rows come
    straight from the driver, the stored JSON parsed by orjson and SQLite's timestamps by
    datetime: verification reads millions of these."""
    rows = await tx.all(_CHAIN_PAGE, after_seq, limit)
    loads, sqlite = orjson.loads, tx.is_sqlite
    page = [list(row) for row in rows]
    for record in page:
        if sqlite:
            record[1] = datetime.fromisoformat(record[1])
        record[10] = loads(record[10])
    return page
