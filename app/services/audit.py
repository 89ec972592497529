"""The audit trail (API.md §8): who did what, recorded in the same transaction as the
change, so a rolled-back change leaves no record and a committed one always has its
record. The hash chain itself is the store's (app.store.audit); here are the actors,
`record` (the one way to write a record), the chain's verification and the log's
filtered reads.
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

from app import store
from app.context import client_ip_var, request_id_var
from app.db import Database, Tx, end_reads, session_tx, unit_of_work
from app.errors import BankError
from app.models import AuditRecord, User
from app.security import Principal
from app.services.pagination import Slice, decode_cursor, read_limit, slice_of
from app.store.audit import CANONICAL, GENESIS, compute_hash

__all__ = ["GENESIS", "Actor", "compute_hash", "record", "verify_chain"]


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


async def record(
    tx: Tx,
    *,
    actor: Actor,
    action: str,
    entity_type: str | None = None,
    entity_id: str | int | None = None,
    outcome: str = "success",
    details: dict[str, Any] | None = None,
) -> None:
    """Record what `actor` did, in the caller's transaction (`unit_of_work` or a money
    transaction), with the request's id and client address."""
    await store.append_audit(
        tx,
        store.AuditEntry(
            datetime.now(UTC),
            actor.id,
            actor.role,
            action,
            entity_type,
            str(entity_id) if entity_id is not None else None,
            outcome,
            client_ip_var.get(),
            request_id_var.get(),
            details or {},
        ),
    )


async def record_read(
    db: AsyncSession,
    *,
    actor: Actor,
    action: str,
    entity_type: str,
    entity_id: str | int,
    details: dict[str, Any] | None = None,
) -> None:
    """A read worth recording (staff reading a customer's data), in a transaction of its
    own on the caller's session: its read transaction ends first."""
    await end_reads(db)
    async with unit_of_work(db) as tx:
        await record(
            tx,
            actor=actor,
            action=action,
            entity_type=entity_type,
            entity_id=entity_id,
            details=details,
        )


@dataclass
class ChainReport:
    valid: bool
    entries_checked: int
    first_invalid_seq: int | None


async def verify_chain(
    db: AsyncSession,
    batch: int = 10_000,
    *,
    from_seq: int | None = None,
    to_seq: int | None = None,
) -> ChainReport:
    """Recompute the chain in seq order, streaming it a page at a time: constant memory
    whatever the length of the log (this loop runs millions of times). A range starts
    from the stored hash of the record before it, so it checks the link into the range
    as well as every record in it."""
    tx = await session_tx(db)
    prev = GENESIS
    checked = 0
    after = 0
    if from_seq is not None and from_seq > 1:
        before = await store.chain_page(tx, after_seq=from_seq - 2, limit=1)
        if before and before[0][0] == from_seq - 1:
            prev, after = before[0][-1], from_seq - 1
        else:  # the record before the range is gone: the first one after it cannot link
            prev, after = None, from_seq - 1
    sha256, dumps = hashlib.sha256, orjson.dumps
    while page := await store.chain_page(tx, after_seq=after, limit=batch):
        after = page[-1][0]
        for content in page:
            if to_seq is not None and content[0] > to_seq:
                # The first record after the range must link to its last: records cut from
                # the range's end would otherwise go unnoticed.
                if content[11] != prev:
                    return ChainReport(False, checked, content[0])
                return ChainReport(True, checked, None)
            stored_hash = content.pop()  # what remains is what the hash covers
            checked += 1
            if content[11] != prev:
                return ChainReport(False, checked, content[0])
            prev = stored_hash
            if sha256(dumps(content, option=CANONICAL)).hexdigest() != prev:
                return ChainReport(False, checked, content[0])
    return ChainReport(True, checked, None)


@dataclass(frozen=True, slots=True)
class LogFilter:
    actor: str | None = None  # a user id, a username, or "system"
    action: str | None = None
    entity_type: str | None = None
    entity_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    outcome: str | None = None
    request_id: str | None = None


async def _actor_id(db: AsyncSession, actor: str | None) -> str | None:
    """The stored actor id a filter names: an id as given, a username looked up (an unknown
    one matches nobody)."""
    if actor is None or actor.isdigit() or actor == SYSTEM.id:
        return actor
    user_id = await db.scalar(select(User.id).where(User.username == actor.lower()))
    return str(user_id) if user_id is not None else "-"


async def _query(db: AsyncSession, filters: LogFilter, *, newest_first: bool) -> Any:
    order = AuditRecord.seq.desc() if newest_first else AuditRecord.seq
    query = select(AuditRecord).order_by(order)
    conditions = [
        (AuditRecord.actor_id, await _actor_id(db, filters.actor)),
        (AuditRecord.action, filters.action),
        (AuditRecord.entity_type, filters.entity_type),
        (AuditRecord.entity_id, filters.entity_id),
        (AuditRecord.outcome, filters.outcome),
        (AuditRecord.request_id, filters.request_id),
    ]
    for column, value in conditions:
        if value is not None:
            query = query.where(column == value)
    if filters.since is not None:
        query = query.where(AuditRecord.at >= filters.since)
    if filters.until is not None:
        query = query.where(AuditRecord.at < filters.until)
    return query


async def list_records(
    db: AsyncSession,
    *,
    filters: LogFilter,
    cursor: str | None,
    limit: int,
    newest_first: bool = False,
) -> Slice[AuditRecord]:
    """Records in chain order (oldest first, or newest first), a page of `limit` after the
    cursor's seq."""
    query = (await _query(db, filters, newest_first=newest_first)).limit(read_limit(limit))
    if (after_seq := decode_cursor(cursor)) is not None:
        query = query.where(
            AuditRecord.seq < after_seq if newest_first else AuditRecord.seq > after_seq
        )
    rows = list((await db.scalars(query)).all())
    return slice_of(rows, limit, key=lambda record: record.seq)


async def stream_records(
    database: Database, *, filters: LogFilter, newest_first: bool = False, batch: int = 1000
) -> AsyncIterator[list[AuditRecord]]:
    """Every record a filter matches, `batch` at a time, each batch read in a session of its
    own (a download outlives the request's session), keyset by seq."""
    after: int | None = None
    while True:
        async with database.session() as db:
            query = (await _query(db, filters, newest_first=newest_first)).limit(batch)
            if after is not None:
                query = query.where(
                    AuditRecord.seq < after if newest_first else AuditRecord.seq > after
                )
            rows = list((await db.scalars(query)).all())
        if not rows:
            return
        yield rows
        if len(rows) < batch:
            return
        after = rows[-1].seq


@asynccontextmanager
async def denials_recorded(
    owner: AsyncSession | Database, *, actor: Actor, action: str
) -> AsyncIterator[None]:
    """Audit a request refused because the object is someone else's (outcome `denied`), or
    refused by a rule of the money path such as insufficient funds, the daily limit, a
    frozen account or a currency mismatch (outcome `failed`, with the error's code). The
    refusal rolled back the service's transaction, so the record is written in a
    transaction of its own: on the caller's session (its read ends first, so a request
    never holds two pooled connections), or, for the money path, which has no session, on
    a session of its own."""
    try:
        yield
    except BankError as exc:
        if exc.denied_entity is not None:
            entity_type, entity_id = exc.denied_entity
            outcome, details = "denied", None
        elif exc.audited_refusal:
            entity_type, entity_id = None, None
            outcome = "failed"
            details = {"code": exc.code, "field": exc.field, "detail": exc.detail}
        else:
            raise
        async with contextlib.AsyncExitStack() as stack:
            if isinstance(owner, AsyncSession):
                db = owner
            else:
                # The money path's own connection went back already; its record waits
                # at the same gate (PostgreSQL), so refusals never crowd the pool.
                if owner.admission is not None:
                    await stack.enter_async_context(owner.admission)
                db = await stack.enter_async_context(owner.session())
            async with unit_of_work(db) as tx:
                await record(
                    tx,
                    actor=actor,
                    action=action,
                    entity_type=entity_type,
                    entity_id=entity_id,
                    outcome=outcome,
                    details=details,
                )
        raise
