"""The reviewers' inbox (API.md §7): every item waiting for a person, from where it lives
(customers under KYC review, loans waiting for an approval, open fraud flags, held
transactions), oldest first, each with its SLA deadline (BANK_SLA_*) and who holds it.

`next` hands the caller the oldest item nobody holds that they may decide, and holds it
for them: a conditional write (a flag's `assigned_to` set only while empty; a claim row
whose key refuses a second), so two admins never get the same item. An item someone
else holds changes hands only by an explicit, audited take-over. Four-eyes holds here
too: an admin is never handed a loan they approved already, nor anything of the
customer their user is linked to.

The queue is work waiting for people, hundreds or thousands of items, not the books:
it is read whole and merged in memory, which keeps one order across four tables.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Database, database_of, end_reads, retry_on_conflict, unit_of_work
from app.errors import ConflictOfInterest, InboxItemNotFound, ValidationFailed
from app.models import (
    Customer,
    CustomerStatus,
    Flag,
    FlagStatus,
    Hold,
    HoldStatus,
    InboxClaim,
    Loan,
    LoanApproval,
    LoanStatus,
)
from app.security import Principal
from app.services import audit, conflicts
from app.services.audit import Actor
from app.services.pagination import Slice

KYC, LOAN, FLAG, HOLD = "kyc_review", "loan_approval", "fraud_flag", "held_transaction"
KINDS = (KYC, LOAN, FLAG, HOLD)
ENTITY_TYPE = {KYC: "customer", LOAN: "loan", FLAG: "flag", HOLD: "transaction"}
"""Each kind's entity as every other audit record names it."""
NEXT_TRIES = 20  # candidates tried by one `next` before it gives up on a busy queue


@dataclass(frozen=True, slots=True)
class Item:
    """One item waiting for a person (schema: InboxItemOut)."""

    item_id: str
    kind: str
    entity_id: str
    customer_id: str | None
    created_at: datetime
    due_at: datetime
    overdue: bool
    age_seconds: int
    assigned_to: str | None


def _sla(database: Database) -> dict[str, timedelta]:
    s = database.settings
    return {
        KYC: s.sla_kyc_review,
        LOAN: s.sla_loan_approval,
        FLAG: s.sla_fraud_flag,
        HOLD: s.sla_held_transaction,
    }


def parse_item_id(item_id: str) -> tuple[str, int]:
    kind, _, raw = item_id.partition(":")
    if kind not in KINDS or not raw.isdigit() or len(raw) > 18:
        raise InboxItemNotFound(f"No inbox item {item_id}.")
    return kind, int(raw)


async def _waiting(db: AsyncSession) -> list[tuple[str, int, int | None, datetime, int | None]]:
    """(kind, entity id, customer id, waiting since, holder) of every item waiting."""
    claims = {
        (c.kind, c.entity_id): c.assigned_to for c in (await db.scalars(select(InboxClaim))).all()
    }
    rows: list[tuple[str, int, int | None, datetime, int | None]] = []
    kyc = select(Customer.id, func.coalesce(Customer.kyc_checked_at, Customer.created_at))
    for cid, since in await db.execute(kyc.where(Customer.status == CustomerStatus.under_review)):
        rows.append((KYC, cid, cid, since, claims.get((KYC, cid))))
    loans = select(Loan.id, Loan.customer_id, Loan.created_at).where(
        Loan.status == LoanStatus.pending
    )
    for lid, cid, since in await db.execute(loans):
        rows.append((LOAN, lid, cid, since, claims.get((LOAN, lid))))
    flags = select(Flag.id, Flag.customer_id, Flag.created_at, Flag.assigned_to).where(
        Flag.status == FlagStatus.open
    )
    for fid, cid, since, holder in await db.execute(flags):
        rows.append((FLAG, fid, cid, since, holder))
    holds = select(Hold.journal_id, Hold.customer_id, Hold.created_at).where(
        Hold.status == HoldStatus.pending
    )
    for jid, cid, since in await db.execute(holds):
        rows.append((HOLD, jid, cid, since, claims.get((HOLD, jid))))
    rows.sort(key=lambda r: (r[3], KINDS.index(r[0]), r[1]))
    return rows


def _item(row: tuple[str, int, int | None, datetime, int | None], sla: dict, now: datetime) -> Item:
    kind, entity_id, customer_id, since, holder = row
    due = since + sla[kind]
    return Item(
        f"{kind}:{entity_id}",
        kind,
        str(entity_id),
        str(customer_id) if customer_id is not None else None,
        since,
        due,
        now > due,
        max(0, int((now - since).total_seconds())),
        str(holder) if holder is not None else None,
    )


def _cursor(item: Item) -> str:
    raw = f"{item.created_at.isoformat()}|{KINDS.index(item.kind)}|{item.entity_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _after(cursor: str) -> tuple[datetime, int, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        since, kind, entity = raw.split("|")
        return datetime.fromisoformat(since), int(kind), int(entity)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationFailed("The cursor is not valid.", field="cursor") from exc


async def list_items(
    db: AsyncSession,
    *,
    kind: str | None,
    assigned_to: int | None,
    unassigned: bool,
    cursor: str | None,
    limit: int,
) -> Slice[Item]:
    database = database_of(db)
    now, sla = database.clock(), _sla(database)
    rows = await _waiting(db)
    if kind is not None:
        rows = [r for r in rows if r[0] == kind]
    if assigned_to is not None:
        rows = [r for r in rows if r[4] == assigned_to]
    if unassigned:
        rows = [r for r in rows if r[4] is None]
    if cursor:
        after = _after(cursor)
        rows = [r for r in rows if (r[3], KINDS.index(r[0]), r[1]) > after]
    items = [_item(r, sla, now) for r in rows[: limit + 1]]
    if len(items) <= limit:
        return Slice(items, None)
    return Slice(items[:limit], _cursor(items[limit - 1]))


async def _approved(db: AsyncSession, admin_id: int) -> set[int]:
    """The loans the admin approved already (the second approval is someone else's)."""
    found = await db.scalars(select(LoanApproval.loan_id).where(LoanApproval.admin_id == admin_id))
    return set(found.all())


async def _still_waiting(db: AsyncSession, kind: str, entity_id: int) -> bool:
    if kind == KYC:
        status = await db.scalar(select(Customer.status).where(Customer.id == entity_id))
        return status == CustomerStatus.under_review
    if kind == LOAN:
        status = await db.scalar(select(Loan.status).where(Loan.id == entity_id))
        return status == LoanStatus.pending
    if kind == HOLD:
        status = await db.scalar(select(Hold.status).where(Hold.journal_id == entity_id))
        return status == HoldStatus.pending
    return True  # a flag's claim checks its status itself


async def _claim(db: AsyncSession, kind: str, entity_id: int, admin_id: int) -> bool:
    """Hold an item for `admin_id` if nobody does (in the caller's transaction)."""
    now = datetime.now(UTC)
    if kind == FLAG:
        won = await db.execute(
            update(Flag)
            .where(Flag.id == entity_id, Flag.status == FlagStatus.open, Flag.assigned_to.is_(None))
            .values(assigned_to=admin_id, updated_at=now)
        )
        return won.rowcount == 1
    try:
        async with db.begin_nested():
            db.add(
                InboxClaim(kind=kind, entity_id=entity_id, assigned_to=admin_id, assigned_at=now)
            )
    except IntegrityError:
        return False  # another admin's claim came first
    return True


@retry_on_conflict
async def take_next(db: AsyncSession, *, principal: Principal) -> Item | None:
    """The oldest item nobody holds that the caller may decide, now held by the caller
    (None: nothing waits)."""
    database = database_of(db)
    for _ in range(NEXT_TRIES):
        rows = await _waiting(db)
        # Never handed their linked customer's items, nor a loan they approved already.
        linked = await conflicts.linked_customer(db, principal.user_id)
        approved = await _approved(db, principal.user_id)
        await end_reads(db)
        candidate = next(
            (
                r
                for r in rows
                if r[4] is None
                and (linked is None or r[2] != linked)
                and not (r[0] == LOAN and r[1] in approved)
            ),
            None,
        )
        if candidate is None:
            return None
        async with unit_of_work(db) as tx:
            if not await _still_waiting(db, candidate[0], candidate[1]):
                continue  # decided meanwhile
            if not await _claim(db, candidate[0], candidate[1], principal.user_id):
                continue  # someone was faster: the next candidate
            await audit.record(
                tx,
                actor=Actor.of(principal),
                action="inbox.assign",
                entity_type=ENTITY_TYPE[candidate[0]],
                entity_id=candidate[1],
            )
        held = (*candidate[:4], principal.user_id)
        return _item(held, _sla(database), database.clock())
    return None


@retry_on_conflict
async def take_over(db: AsyncSession, *, principal: Principal, item_id: str) -> Item:
    """Hold an item whoever holds it now (audited with the previous holder)."""
    async with audit.denials_recorded(db, actor=Actor.of(principal), action="inbox.take_over"):
        return await _take_over(db, principal, item_id)


async def _take_over(db: AsyncSession, principal: Principal, item_id: str) -> Item:
    kind, entity_id = parse_item_id(item_id)
    database = database_of(db)
    async with unit_of_work(db) as tx:
        rows = [r for r in await _waiting(db) if r[0] == kind and r[1] == entity_id]
        if not rows:
            raise InboxItemNotFound(f"No inbox item {item_id} is waiting.")
        await conflicts.check_not_linked(db, principal.user_id, rows[0][2], f"Inbox item {item_id}")
        if kind == LOAN and entity_id in await _approved(db, principal.user_id):
            raise ConflictOfInterest(
                f"You approved loan {entity_id} already: its second approval is another admin's."
            )
        previous = rows[0][4]
        now = datetime.now(UTC)
        if kind == FLAG:
            await db.execute(
                update(Flag)
                .where(Flag.id == entity_id)
                .values(assigned_to=principal.user_id, updated_at=now)
            )
        else:
            await db.execute(
                delete(InboxClaim).where(InboxClaim.kind == kind, InboxClaim.entity_id == entity_id)
            )
            db.add(
                InboxClaim(
                    kind=kind, entity_id=entity_id, assigned_to=principal.user_id, assigned_at=now
                )
            )
        await audit.record(
            tx,
            actor=Actor.of(principal),
            action="inbox.take_over",
            entity_type=ENTITY_TYPE[kind],
            entity_id=entity_id,
            details={"from": str(previous) if previous is not None else None},
        )
    held = (*rows[0][:4], principal.user_id)
    return _item(held, _sla(database), database.clock())


async def release(db: AsyncSession, kind: str, entity_id: int) -> None:
    """Let go of an item's holder (in the caller's transaction): a loan after its first of
    two approvals goes back to the queue for a second admin."""
    await db.execute(
        delete(InboxClaim).where(InboxClaim.kind == kind, InboxClaim.entity_id == entity_id)
    )


async def release_all(db: AsyncSession, admin_id: int) -> None:
    """Let go of everything an admin holds (in the caller's transaction): a disabled
    admin's items go back to the queue."""
    await db.execute(delete(InboxClaim).where(InboxClaim.assigned_to == admin_id))
    await db.execute(
        update(Flag)
        .where(Flag.assigned_to == admin_id, Flag.status == FlagStatus.open)
        .values(assigned_to=None)
    )


def describe(item: Item) -> dict[str, Any]:
    return {
        "item_id": item.item_id,
        "kind": item.kind,
        "entity_id": item.entity_id,
        "customer_id": item.customer_id,
        "created_at": item.created_at,
        "due_at": item.due_at,
        "overdue": item.overdue,
        "age_seconds": item.age_seconds,
        "assigned_to": item.assigned_to,
    }
