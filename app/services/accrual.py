"""The loans' daily job: each active loan's interest for every day since it last ran, the
true-up of each due date, and each late fee (app.services.loan_book), posted through the
ledger. Durable and idempotent per loan and day: the job is a row in jobs, queued with
the disbursement for the next midnight and by each run for the one after; the days
already posted are on the loan (`accrued_through`, read under its lock), so a second run
the same day, or the CLI's run beside the job's, posts nothing; a run after downtime
catches up every day missed. Time comes from the database's clock (tests move it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app import store
from app.db import Database, Tx, database_of, end_reads, retry_on_conflict, unit_of_work
from app.models import Account, Job, JobKind, Loan, LoanStatus
from app.money import format_amount
from app.services import audit, loan_book, loan_ledger, loan_views, loans
from app.services.audit import SYSTEM


@dataclass(frozen=True, slots=True)
class Accrued:
    loan_id: int
    interest: int
    fees: int
    posted: bool


async def catch_up(db: AsyncSession, tx: Tx, loan_id: int, today: date) -> Accrued | None:
    """Post loan `loan_id`'s interest and fees up to the end of `today` (None: it is not
    active)."""
    found = await db.get(Loan, loan_id)
    if found is None:
        return None
    await store.lock_customer(tx, found.customer_id)
    loan = await loans.lock_loan(db, loan_id)
    if loan.status != LoanStatus.active:
        return None
    book = await loan_ledger.read_book(db, loan)
    today = loan_views.loan_day(loan, today)
    accrual = loan_book.advance(book, today, **loan_views.terms(database_of(db)))
    number = await db.scalar(select(Account.number).where(Account.id == loan.account_id))
    posted = await loan_ledger.post_accrual(tx, loan, accrual, number or "")
    await loan_ledger.write_book(db, loan, book)
    if posted is not None:
        await audit.record(
            tx,
            actor=SYSTEM,
            action="loan.accrue",
            entity_type="loan",
            entity_id=loan.id,
            details={
                "through": today.isoformat(),
                "interest": format_amount(accrual.interest),
                "fees": [{"installment": n, "fee": format_amount(f)} for n, f in accrual.fees],
                "transaction_id": str(posted.id),
            },
        )
    return Accrued(loan.id, accrual.interest, accrual.fee_total, posted is not None)


async def run_job(db: AsyncSession, tx: Tx, payload: dict[str, Any]) -> None:
    """The job: catch the loan up to today and queue the next run for the next midnight."""
    today = loan_views.today_of(database_of(db))
    done = await catch_up(db, tx, int(payload["loan_id"]), today)
    if done is not None:
        await store.enqueue_job(
            tx, JobKind.loan_accrual, payload, run_after=loan_views.next_midnight(today)
        )


@retry_on_conflict
async def _catch_up_one(database: Database, loan_id: int, today: date) -> Accrued | None:
    async with database.session() as db, unit_of_work(db) as tx:
        return await catch_up(db, tx, loan_id, today)


async def accrue_all(database: Database) -> list[Accrued]:
    """Every active loan caught up to today, each in its own transaction (`bank loans
    accrue`; the jobs do the same loan by loan), and a loan whose chain of jobs was broken
    (its job gave up) given its next one again."""
    today = loan_views.today_of(database)
    async with database.session() as db:
        ids = list(
            (await db.scalars(select(Loan.id).where(Loan.status == LoanStatus.active))).all()
        )
    done = [await _catch_up_one(database, loan_id, today) for loan_id in ids]
    await _requeue_missing(database, [d.loan_id for d in done if d is not None], today)
    return [d for d in done if d is not None]


async def _requeue_missing(database: Database, loan_ids: list[int], today: date) -> None:
    """Give each of `loan_ids` that has no accrual job waiting its next one: its job that
    gave up queued again if there is one (so `bank jobs retry` after this finds nothing to
    add, and the other way round: one chain per loan), else a new one."""
    async with database.session() as db:
        rows = (
            await db.execute(
                select(Job.id, Job.status, Job.payload).where(
                    Job.kind == JobKind.loan_accrual,
                    Job.status.in_(("queued", "running", "failed")),
                )
            )
        ).all()
        chained = {int(p["loan_id"]) for _, status, p in rows if status != "failed"}
        gave_up = {int(p["loan_id"]): job_id for job_id, status, p in rows if status == "failed"}
        missing = [loan_id for loan_id in loan_ids if loan_id not in chained]
        await end_reads(db)
        if not missing:
            return
        due = loan_views.next_midnight(today)
        async with unit_of_work(db) as tx:
            for loan_id in missing:
                if loan_id in gave_up:
                    await db.execute(
                        update(Job)
                        .where(Job.id == gave_up[loan_id], Job.status == "failed")
                        .values(status="queued", attempts=0, run_after=due, finished_at=None)
                    )
                else:
                    await store.enqueue_job(
                        tx, JobKind.loan_accrual, {"loan_id": loan_id}, run_after=due
                    )
