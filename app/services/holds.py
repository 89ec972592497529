"""Held transactions: a withdrawal or transfer at or above BANK_REVIEW_THRESHOLD is created
`pending_review` with its amount held on the source account (app.services.ledger). An
admin approves it (its entries move the money and the hold is released, in one posting)
or rejects it with a reason (the hold is released and the daily total gives the amount
back); one not decided within BANK_HOLD_EXPIRY is rejected by the job runner, as actor
`system`. Each decision is one money transaction that locks the hold first, so of two
concurrent decisions exactly one wins and the other is 409 `already_decided`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app import store
from app.db import Database, Tx, database_of, money_transaction
from app.errors import AccountNotFound, AlreadyDecided, TransactionNotFound, ValidationFailed
from app.models import Account, Hold, HoldStatus, Journal, JournalKind, JournalStatus
from app.money import format_amount
from app.schemas.common import iso_utc
from app.services import accounts, audit, conflicts
from app.services.audit import SYSTEM, Actor
from app.services.ledger import CASH, HOLDS, TransactionView, check_not_blocked
from app.services.pagination import Slice, decode_cursor, read_limit, slice_of
from app.store import Settlement
from app.store import fraud as fraud_store

STATUS_OF = {
    JournalStatus.pending_review: HoldStatus.pending,
    JournalStatus.completed: HoldStatus.approved,
    JournalStatus.rejected: HoldStatus.rejected,
}


@dataclass(frozen=True, slots=True)
class HeldView:
    """A held transaction as admins see it (schema: HeldTransactionOut)."""

    transaction: TransactionView
    customer_id: str | None
    expires_at: str
    decided_by: str | None
    decided_at: str | None
    decision_reason: str | None

    def as_dict(self) -> dict[str, Any]:
        fields = {name: getattr(self.transaction, name) for name in TransactionView.__slots__}
        return {
            **fields,
            "customer_id": self.customer_id,
            "expires_at": self.expires_at,
            "decided_by": self.decided_by,
            "decided_at": self.decided_at,
            "decision_reason": self.decision_reason,
        }


async def decide(
    database: Database,
    *,
    transaction_id: str,
    approve: bool,
    actor: Actor,
    reason: str | None,
) -> HeldView:
    """An admin's decision on a held transaction; the transaction as it is now. An admin
    linked to the customer who made it is refused (403 `conflict_of_interest`, audited):
    whose movement it is never changes, so that is read before the money transaction."""
    journal_id = _journal_id(transaction_id)

    async def work(tx: Tx) -> None:
        await decide_in(tx, journal_id, approve=approve, actor=actor, reason=reason)

    action = "transaction.approve" if approve else "transaction.reject"
    async with audit.denials_recorded(database, actor=actor, action=action):
        if actor.id is not None and actor.id.isdigit():
            async with database.session() as db:
                await conflicts.check_not_linked(
                    db, int(actor.id), await _sides(db, journal_id), f"Transaction {journal_id}"
                )
        await money_transaction(database, work)
    async with database.session() as db:
        return await get_held(db, transaction_id)


async def _sides(db: AsyncSession, journal_id: int) -> set[int | None]:
    """The customers on either side of a pending held movement, in one read (none once it
    is decided or if there is no such hold: the money transaction answers 409 or 404)."""
    row = (
        await db.execute(
            select(Hold.customer_id, Account.customer_id)
            .join(Journal, Journal.id == Hold.journal_id)
            .outerjoin(Account, Account.id == Journal.to_account_id)
            .where(Hold.journal_id == journal_id, Hold.status == HoldStatus.pending)
        )
    ).first()
    return set(row) if row is not None else set()


async def decide_in(
    tx: Tx,
    journal_id: int,
    *,
    approve: bool,
    actor: Actor,
    reason: str | None,
    action: str | None = None,
) -> bool:
    """Approve or reject the hold of journal `journal_id` in `tx`. Returns False if it was
    already decided and `action` (the job runner's) says not to raise."""
    hold = await fraud_store.lock_hold(tx, journal_id)  # whoever locks it first decides
    if hold is None:
        raise TransactionNotFound(f"No held transaction {journal_id}.")
    status, amount, customer_id, kind = hold.status, hold.amount, hold.customer_id, hold.kind
    currency, source, target = hold.currency, hold.source, hold.target
    if status != HoldStatus.pending:
        if action is not None:
            return False
        raise AlreadyDecided(f"Transaction {journal_id} was already decided ({status}).")
    await store.lock_customer(tx, customer_id)  # the daily total is the customer's
    numbers = [source] if target is None else [source, target]
    bank = (HOLDS, CASH) if kind == JournalKind.withdrawal else (HOLDS,)
    locked = await store.lock_movement(tx, numbers, internal=bank)
    src = locked.accounts[source]
    holds = locked.bank[HOLDS]
    lines = []
    if approve:
        accounts.check_active(src, "transaction_id")
        check_not_blocked(src, "transaction_id")
        if kind == JournalKind.withdrawal:
            other = locked.bank.get(CASH) or await store.add_internal_account(
                tx, locked, CASH, currency, new_number=accounts.new_number
            )
        else:
            other = locked.accounts.get(target)
            if other is None:  # pragma: no cover - accounts are never deleted
                raise AccountNotFound(f"No account {target}.")
            accounts.check_active(other, "transaction_id")
            check_not_blocked(other, "transaction_id")
        lines = [(src, -amount), (other, amount)]
    new_status = JournalStatus.completed if approve else JournalStatus.rejected
    await store.post_journal(
        tx,
        locked,
        Settlement(
            journal_id,
            kind,
            new_status,
            amount,
            currency,
            hold.description,
            customer_id,
            hold.created_at,
        ),
        lines,
        holds=[(src, -amount), (holds, amount)],
    )
    await fraud_store.decide_hold(tx, journal_id, STATUS_OF[new_status], actor.id, reason)
    await audit.record(
        tx,
        actor=actor,
        action=action or ("transaction.approve" if approve else "transaction.reject"),
        entity_type="transaction",
        entity_id=journal_id,
        details={
            "amount": format_amount(amount),
            "currency": currency,
            "from_account": source,
            "to_account": target,
            "reason": reason,
        },
    )
    return True


async def expire(db: AsyncSession, tx: Tx, payload: dict[str, Any]) -> None:
    """The job that rejects a hold nobody decided within BANK_HOLD_EXPIRY (due at its
    expiry; the job runner's clock says when that is)."""
    database = database_of(db)
    journal_id = int(payload["journal_id"])
    hours = database.settings.hold_expiry.total_seconds() / 3600
    await decide_in(
        tx,
        journal_id,
        approve=False,
        actor=SYSTEM,
        reason=f"Not decided within {hours:g} h: expired",
        action="transaction.hold_expired",
    )


def _journal_id(transaction_id: str) -> int:
    if not transaction_id.isdigit() or len(transaction_id) > 18:
        raise TransactionNotFound(f"No held transaction {transaction_id}.")
    return int(transaction_id)


async def _views(db: AsyncSession, rows: list[tuple[Hold, Journal]]) -> list[HeldView]:
    ids = {j.from_account_id for _, j in rows} | {j.to_account_id for _, j in rows}
    numbers = dict(
        (
            await db.execute(select(Account.id, Account.number).where(Account.id.in_(ids - {None})))
        ).all()
    )
    return [
        HeldView(
            TransactionView.of(
                journal,
                from_number=numbers.get(journal.from_account_id),
                to_number=numbers.get(journal.to_account_id),
                balance_after=None,
            ),
            str(hold.customer_id) if hold.customer_id is not None else None,
            iso_utc(hold.expires_at),
            hold.decided_by,
            iso_utc(hold.decided_at) if hold.decided_at else None,
            hold.reason,
        )
        for hold, journal in rows
    ]


async def get_held(db: AsyncSession, transaction_id: str) -> HeldView:
    journal_id = _journal_id(transaction_id)
    row = (
        await db.execute(
            select(Hold, Journal)
            .join(Journal, Journal.id == Hold.journal_id)
            .where(Hold.journal_id == journal_id)
            .execution_options(populate_existing=True)
        )
    ).first()
    if row is None:
        raise TransactionNotFound(f"No held transaction {transaction_id}.")
    return (await _views(db, [(row[0], row[1])]))[0]


async def list_held(
    db: AsyncSession, *, status: str, cursor: str | None, limit: int
) -> Slice[HeldView]:
    """Held transactions in one state, oldest first."""
    if status not in STATUS_OF:
        raise ValidationFailed(f"Unknown status {status!r}.", field="status")
    query = (
        select(Hold, Journal)
        .join(Journal, Journal.id == Hold.journal_id)
        .where(Hold.status == STATUS_OF[JournalStatus(status)])
        .order_by(Hold.journal_id)
        .limit(read_limit(limit))
    )
    if (after := decode_cursor(cursor)) is not None:
        query = query.where(Hold.journal_id > after)
    rows = [(hold, journal) for hold, journal in (await db.execute(query)).all()]
    views = await _views(db, rows)
    return slice_of(views, limit, key=lambda view: int(view.transaction.transaction_id))
