"""The audit trail: one hash-chained, append-only log written in the same transaction as
the change it records, so a rolled-back change leaves no record and a committed one
always has its record.

Chain: hash = SHA-256(canonical JSON of the record, including prev_hash). The next seq
is taken inside the writer's transaction: SQLite writers are already serial (BEGIN
IMMEDIATE); on PostgreSQL the record is sealed at COMMIT by a deferred trigger under a
transaction-scoped advisory lock (see `append`), so concurrent writers still form one
unbroken chain.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Database, Driver, Sql, Write, driver
from app.errors import BankError
from app.models import AuditRecord
from app.problems import client_ip_var, request_id_var
from app.security import Principal

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
class Actor:
    id: str | None
    role: str | None

    @classmethod
    def of(cls, principal: Principal | None) -> Actor:
        if principal is None:
            return ANONYMOUS
        return cls(str(principal.user_id), principal.role)


SYSTEM = Actor("system", "system")
ANONYMOUS = Actor(None, None)


async def record(db: AsyncSession, **fields: Any) -> None:
    """`append` (same keyword fields) on the session's transaction. Must be called
    inside the caller's unit of work."""
    await append(await driver(db), **fields)


_APPEND_PG = Sql(
    "",
    "INSERT INTO audit_pending (at, actor_id, actor_role, action, entity_type, entity_id,"
    " outcome, ip, request_id, details, middle)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
)
_TAIL = Sql("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
_APPEND = Sql(
    "INSERT INTO audit_log (seq, at, actor_id, actor_role, action, entity_type, entity_id,"
    " outcome, ip, request_id, details, prev_hash, hash)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


async def append(sql: Driver, **fields: Any) -> None:
    """Append one record (`appending`'s keyword fields) on the unit of work's driver
    connection (the money path's form of `record`)."""
    await sql.write(await appending(sql, **fields))


async def appending(
    sql: Driver,
    *,
    actor: Actor,
    action: str,
    entity_type: str | None = None,
    entity_id: str | int | None = None,
    outcome: str = "success",
    details: dict[str, Any] | None = None,
) -> Write:
    """The write that appends this record, for the caller to send (`Driver.write`),
    one record per write: on SQLite it is numbered after the chain's tail as read now.

    PostgreSQL: the record goes to audit_pending, and a deferred trigger (migration
    0003) seals it into the chain at COMMIT: it takes the chain lock, reads the tail and
    appends with the same hash as `compute_hash`. Concurrent writers so hold the lock
    only while they commit. SQLite: writers are serial, the tail is read directly."""
    # Serialise details once: the hash covers exactly the JSON that is stored.
    stored_details = orjson.dumps(details or {}, default=str)
    content: list[Any] = [
        datetime.now(UTC),
        actor.id,
        actor.role,
        action,
        entity_type,
        str(entity_id) if entity_id is not None else None,
        outcome,
        client_ip_var.get(),
        request_id_var.get(),
        orjson.loads(stored_details),
    ]
    if not sql.is_sqlite:
        middle = orjson.dumps(content, option=CANONICAL)[1:-1].decode()
        return _APPEND_PG, (*content[:9], stored_details.decode(), middle)
    tail = await sql.one(_TAIL)
    seq, prev_hash = (tail[0] + 1, tail[1]) if tail else (1, GENESIS)
    digest = compute_hash(*content, seq=seq, prev_hash=prev_hash)
    content[0] = sql.timestamp(content[0])
    content[9] = stored_details.decode()
    return _APPEND, (seq, *content, prev_hash, digest)


@dataclass
class ChainReport:
    valid: bool
    entries_checked: int
    first_invalid_seq: int | None


_CHAIN_PAGE = Sql(
    "SELECT seq, at, actor_id, actor_role, action, entity_type, entity_id, outcome, ip,"
    " request_id, details, prev_hash, hash FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?",
    "SELECT seq, at, actor_id, actor_role, action, entity_type, entity_id, outcome, ip,"
    " request_id, details::text, prev_hash, hash FROM audit_log WHERE seq > $1"
    " ORDER BY seq LIMIT $2",
)


async def verify_chain(db: AsyncSession, batch: int = 10_000) -> ChainReport:
    """Recompute the chain in seq order, streaming it a page at a time: constant memory
    whatever the length of the log. Rows come straight from the driver as tuples (the
    stored JSON parsed by orjson, SQLite's timestamps by datetime): this loop runs
    millions of times, and each row costs microseconds."""
    sql = await driver(db)
    prev = GENESIS
    checked = 0
    after = 0
    sha256, dumps, loads, parse_time = hashlib.sha256, orjson.dumps, orjson.loads, _parse_time
    while rows := await sql.all(_CHAIN_PAGE, after, batch):
        for row in rows:
            content = list(row[:12])
            if sql.is_sqlite:
                content[1] = parse_time(content[1])
            content[10] = loads(content[10])
            checked += 1
            if content[11] != prev:
                return ChainReport(False, checked, row[0])
            prev = row[12]
            if sha256(dumps(content, option=CANONICAL)).hexdigest() != prev:
                return ChainReport(False, checked, row[0])
        after = rows[-1][0]
    return ChainReport(True, checked, None)


def _parse_time(stored: str | datetime) -> datetime:
    return stored if isinstance(stored, datetime) else datetime.fromisoformat(stored)


@dataclass(frozen=True, slots=True)
class LogFilter:
    actor: str | None = None
    action: str | None = None
    entity_type: str | None = None
    entity_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def list_records(
    db: AsyncSession, *, filters: LogFilter, after_seq: int | None, limit: int
) -> list[AuditRecord]:
    """Records in chain order (oldest first), after the cursor's seq."""
    query = select(AuditRecord).order_by(AuditRecord.seq).limit(limit)
    conditions = [
        (AuditRecord.actor_id, filters.actor),
        (AuditRecord.action, filters.action),
        (AuditRecord.entity_type, filters.entity_type),
        (AuditRecord.entity_id, filters.entity_id),
    ]
    for column, value in conditions:
        if value is not None:
            query = query.where(column == value)
    if filters.since is not None:
        query = query.where(AuditRecord.at >= filters.since)
    if filters.until is not None:
        query = query.where(AuditRecord.at < filters.until)
    if after_seq is not None:
        query = query.where(AuditRecord.seq > after_seq)
    return list((await db.scalars(query)).all())


@asynccontextmanager
async def denials_recorded(
    owner: AsyncSession | Database, *, actor: Actor, action: str
) -> AsyncIterator[None]:
    """Audit a request refused because the object is someone else's. The refusal rolled
    back the service's transaction, so the record is written in a transaction of its own:
    on the caller's session (its read ends first, so a request never holds two pooled
    connections), or, for the money path, which has no session, on a session of its own."""
    from app.db import unit_of_work

    try:
        yield
    except BankError as exc:
        if exc.denied_entity is None:
            raise
        entity_type, entity_id = exc.denied_entity
        async with contextlib.AsyncExitStack() as stack:
            db = (
                owner
                if isinstance(owner, AsyncSession)
                else await stack.enter_async_context(owner.session())
            )
            async with unit_of_work(db):
                await record(
                    db,
                    actor=actor,
                    action=action,
                    entity_type=entity_type,
                    entity_id=entity_id,
                    outcome="denied",
                )
        raise
