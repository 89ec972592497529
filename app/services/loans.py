"""Loans: products and quotes, applications with their recommendation, the customer's
and the admins' views, and the decision, four-eyes at BANK_FOUR_EYES_THRESHOLD.

Four-eyes: a loan at or above the threshold needs approvals from two different admins
(one row per admin in loan_approvals, so the same admin twice is 409 `same_approver`).
No role, flag or setting lets one person approve it alone, and no admin ever decides a
loan of the customer their own user is linked to. The final approval disburses, in the
same transaction: status `active`, the disbursement journal, the schedule, the audit
record and the job that accrues its interest. The loan row is locked first, so of two
concurrent approvals one disburses and the other finds it decided.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app import store
from app.db import Tx, database_of, retry_on_conflict, unit_of_work
from app.errors import (
    AlreadyDecided,
    LoanNotFound,
    SameApprover,
    ValidationFailed,
)
from app.models import (
    Account,
    Customer,
    Installment,
    JobKind,
    KycStatus,
    Loan,
    LoanApproval,
    LoanStatus,
    Recommendation,
)
from app.money import format_amount
from app.schemas.common import iso_utc
from app.security import Principal
from app.services import (
    accounts,
    amortization,
    audit,
    conflicts,
    idempotency,
    inbox,
    loan_ledger,
)
from app.services.audit import Actor
from app.services.loan_products import Catalog
from app.services.loan_views import (
    AdminLoanView,
    ApprovalView,
    LoanView,
    RowView,
    next_midnight,
    schedule_of,
    today_of,
    view_of,
)
from app.services.pagination import Slice, decode_cursor, read_limit, slice_of

DTI_REVIEW_BPS = 4000  # debt to income above 40 %
DTI_DECLINE_BPS = 6000
INCOME_MULTIPLE = 10  # a principal above 10× the monthly income


# --- applications ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Applied:
    body: dict[str, Any]  # the loan as answered (LoanOut's fields)
    replayed: bool = False


def _loan_id(raw: str) -> int:
    if not raw.isdigit() or len(raw) > 18:
        raise LoanNotFound(f"No loan {raw}.")
    return int(raw)


async def _in_arrears(db: AsyncSession, customer_id: int, today: date, *, but: int | None) -> bool:
    query = (
        select(func.count())
        .select_from(Installment)
        .join(Loan, Loan.id == Installment.loan_id)
        .where(
            Loan.customer_id == customer_id,
            Loan.status == LoanStatus.active,
            ~Installment.settled,
            Installment.due_date < today,
        )
    )
    if but is not None:
        query = query.where(Loan.id != but)
    return bool(await db.scalar(query))


def recommend(
    *, dti_bps: int, principal: int, monthly_income: int, in_arrears: bool, kyc_review: bool
) -> tuple[Recommendation, list[str]]:
    """Advice for the admins: `approve` with no reason, `review` with one, `decline` with
    two or more or a debt-to-income above 60 %."""
    reasons = []
    if dti_bps > DTI_REVIEW_BPS:
        reasons.append("dti_above_40")
    if in_arrears:
        reasons.append("loan_in_arrears")
    if kyc_review:
        reasons.append("kyc_under_review")
    if principal > INCOME_MULTIPLE * monthly_income:
        reasons.append("amount_above_10x_income")
    if len(reasons) >= 2 or dti_bps > DTI_DECLINE_BPS:
        return Recommendation.decline, reasons
    return (Recommendation.review if reasons else Recommendation.approve), reasons


@retry_on_conflict
async def apply(
    db: AsyncSession,
    catalog: Catalog,
    *,
    principal: Principal,
    product: str,
    amount: int,
    term_months: int,
    monthly_income: int,
    account_number: str,
    purpose: str,
    idempotency_key: str | None,
) -> Applied:
    """A customer applies for a loan: status `pending`, with its quote, debt to income and
    recommendation (the Idempotency-Key makes a retry answer the first result)."""
    database = database_of(db)
    offer = catalog.get(product)
    offer.check(principal=amount, term_months=term_months)
    number = accounts.parse_number(account_number, field="account_number")
    request = {
        "product": product,
        "principal": amount,
        "term_months": term_months,
        "monthly_income": monthly_income,
        "account_number": number,
        "purpose": purpose,
    }
    key = idempotency.key_for(principal.user_id, idempotency_key, "loan.apply", request)
    today = today_of(database)
    async with audit.denials_recorded(db, actor=Actor.of(principal), action="loan.apply"):
        async with unit_of_work(db) as tx:
            if (replay := await lock_caller(tx, principal, key)) is not None:
                return Applied(replay, replayed=True)
            account = accounts.owned(
                await db.scalar(select(Account).where(Account.number == number)),
                principal,
                number,
                "account_number",
            )
            accounts.check_active(account, "account_number")
            quoted = amortization.schedule(amount, offer.annual_rate, term_months, today)
            payment = quoted[0].payment
            others = await db.scalar(
                select(func.coalesce(func.sum(Loan.monthly_payment), 0)).where(
                    Loan.customer_id == principal.customer_id, Loan.status == LoanStatus.active
                )
            )
            # Capped at 999,999 % (a column of 32 bits): any figure that high declines.
            dti_bps = min(999_999, int((payment + int(others or 0)) * 10_000 // monthly_income))
            customer = await db.get(Customer, principal.customer_id)
            advice, reasons = recommend(
                dti_bps=dti_bps,
                principal=amount,
                monthly_income=monthly_income,
                in_arrears=await _in_arrears(db, principal.customer_id or 0, today, but=None),
                kyc_review=customer is not None and customer.kyc_status == KycStatus.review,
            )
            settings = database.settings
            loan = Loan(
                customer_id=principal.customer_id,
                account_id=account.id,
                product=offer.code,
                currency=account.currency,
                principal=amount,
                rate_bps=offer.rate_bps,
                term_months=term_months,
                monthly_payment=payment,
                total_interest=amortization.total_interest(quoted),
                monthly_income=monthly_income,
                purpose=purpose,
                status=LoanStatus.pending,
                recommendation=advice,
                reasons=reasons,
                dti_bps=dti_bps,
                approvals_required=2 if amount >= settings.four_eyes_threshold_minor else 1,
                approvals=0,
                outstanding_principal=0,
                accrued_interest=0,
                created_at=datetime.now(UTC),
            )
            db.add(loan)
            await db.flush()
            view = await view_of(db, loan, number, today)
            await audit.record(
                tx,
                actor=Actor.of(principal),
                action="loan.apply",
                entity_type="loan",
                entity_id=loan.id,
                details={
                    "product": offer.code,
                    "principal": format_amount(amount),
                    "term_months": term_months,
                    "recommendation": advice,
                    "reasons": reasons,
                },
            )
            body = orjson.loads(orjson.dumps(view))
            if key is not None:
                await store.store_answer(tx, key, 201, orjson.dumps(body))
    return Applied(body)


async def lock_caller(tx: Tx, principal: Principal, key: store.IdempotencyKey | None) -> Any:
    """Lock the caller's customer row (claiming the Idempotency-Key in the same
    statement) and check they may move money; the answer filed under a key used before
    (None: go on)."""
    if key is None:
        status = await store.lock_customer(tx, principal.customer_id)
    else:
        claim = await store.claim_key(tx, key, customer_id=principal.customer_id)
        if not claim.claimed:
            return idempotency.replayed_body(await store.stored_answer(tx, key), key)
        status = claim.customer_status
    accounts.check_can_transact(status)
    return None


async def _loan_with_account(db: AsyncSession, loan_id: str) -> Any:
    """(loan, its account's number), read fresh; None if there is no such loan."""
    return (
        await db.execute(
            select(Loan, Account.number)
            .join(Account, Account.id == Loan.account_id)
            .where(Loan.id == _loan_id(loan_id))
            .execution_options(populate_existing=True)
        )
    ).first()


async def own_loan(db: AsyncSession, principal: Principal, loan_id: str) -> tuple[Loan, str]:
    row = await _loan_with_account(db, loan_id)
    if row is None or row[0].customer_id != principal.customer_id:
        raise LoanNotFound(f"No loan {loan_id}.").denying("loan", loan_id)
    return row[0], row[1]


async def get_loan(db: AsyncSession, *, principal: Principal, loan_id: str) -> LoanView:
    async with audit.denials_recorded(db, actor=Actor.of(principal), action="loan.read"):
        loan, number = await own_loan(db, principal, loan_id)
        return await view_of(db, loan, number, today_of(database_of(db)))


async def list_loans(
    db: AsyncSession, *, principal: Principal, cursor: str | None, limit: int
) -> Slice[LoanView]:
    query = (
        select(Loan, Account.number)
        .join(Account, Account.id == Loan.account_id)
        .where(Loan.customer_id == principal.customer_id)
        .order_by(Loan.id)
        .limit(read_limit(limit))
    )
    if (after := decode_cursor(cursor)) is not None:
        query = query.where(Loan.id > after)
    today = today_of(database_of(db))
    views = [
        await view_of(db, loan, number, today) for loan, number in (await db.execute(query)).all()
    ]
    return slice_of(views, limit, key=lambda view: int(view.loan_id))


@retry_on_conflict
async def withdraw(db: AsyncSession, *, principal: Principal, loan_id: str) -> LoanView:
    """The customer withdraws a `pending` application."""
    async with audit.denials_recorded(db, actor=Actor.of(principal), action="loan.withdraw"):
        async with unit_of_work(db) as tx:
            await store.lock_customer(tx, principal.customer_id)
            loan, number = await own_loan(db, principal, loan_id)
            loan = await lock_loan(db, loan.id)
            if loan.status != LoanStatus.pending:
                raise AlreadyDecided(
                    f"Loan {loan.id} is {loan.status}; only a pending one can be withdrawn."
                )
            loan.status = LoanStatus.withdrawn
            loan.decided_at = datetime.now(UTC)
            loan.decision_reason = "Withdrawn by the customer"
            await audit.record(
                tx,
                actor=Actor.of(principal),
                action="loan.withdraw",
                entity_type="loan",
                entity_id=loan.id,
            )
            return await view_of(db, loan, number, today_of(database_of(db)))


async def lock_loan(db: AsyncSession, loan_id: int) -> Loan:
    loan = await db.get(Loan, loan_id, with_for_update=True, populate_existing=True)
    if loan is None:
        raise LoanNotFound(f"No loan {loan_id}.")
    return loan


async def customer_schedule(
    db: AsyncSession, *, principal: Principal, loan_id: str
) -> tuple[LoanView, list[RowView]]:
    async with audit.denials_recorded(db, actor=Actor.of(principal), action="loan.read"):
        loan, number = await own_loan(db, principal, loan_id)
        today = today_of(database_of(db))
        return await view_of(db, loan, number, today), await schedule_of(db, loan, today)


# --- the admins' side ---------------------------------------------------------------


async def _admin_view(db: AsyncSession, loan: Loan, number: str, today: date) -> AdminLoanView:
    approvals = (
        await db.scalars(
            select(LoanApproval)
            .where(LoanApproval.loan_id == loan.id)
            .order_by(LoanApproval.approved_at)
        )
    ).all()
    return AdminLoanView(
        await view_of(db, loan, number, today),
        loan.recommendation,
        list(loan.reasons),
        f"{Decimal(loan.dti_bps) / 100:.2f}",
        [ApprovalView(str(a.admin_id), iso_utc(a.approved_at), a.reason) for a in approvals],
    )


async def admin_get(db: AsyncSession, loan_id: str) -> AdminLoanView:
    row = await _loan_with_account(db, loan_id)
    if row is None:
        raise LoanNotFound(f"No loan {loan_id}.")
    return await _admin_view(db, row[0], row[1], today_of(database_of(db)))


async def admin_list(
    db: AsyncSession,
    *,
    status: str | None,
    recommendation: str | None,
    cursor: str | None,
    limit: int,
    customer_id: int | None = None,
) -> Slice[AdminLoanView]:
    """Loans, oldest first, by status and recommendation."""
    query = (
        select(Loan, Account.number)
        .join(Account, Account.id == Loan.account_id)
        .order_by(Loan.id)
        .limit(read_limit(limit))
    )
    if status is not None:
        query = query.where(Loan.status == status)
    if recommendation is not None:
        query = query.where(Loan.recommendation == recommendation)
    if customer_id is not None:
        query = query.where(Loan.customer_id == customer_id)
    if (after := decode_cursor(cursor)) is not None:
        query = query.where(Loan.id > after)
    today = today_of(database_of(db))
    views = [
        await _admin_view(db, loan, number, today)
        for loan, number in (await db.execute(query)).all()
    ]
    return slice_of(views, limit, key=lambda view: int(view.loan.loan_id))


@retry_on_conflict
async def decide(
    db: AsyncSession, *, loan_id: str, approve: bool, principal: Principal, reason: str | None
) -> AdminLoanView:
    """An admin approves or rejects a pending loan. The approval that completes the count
    disburses it."""
    actor = Actor.of(principal)
    action = "loan.approve" if approve else "loan.reject"
    async with audit.denials_recorded(db, actor=actor, action=action):
        return await _decide(db, loan_id, approve, principal, reason)


async def _decide(
    db: AsyncSession, loan_id: str, approve: bool, principal: Principal, reason: str | None
) -> AdminLoanView:
    database = database_of(db)
    actor = Actor.of(principal)
    today = today_of(database)
    async with unit_of_work(db) as tx:
        found = await db.get(Loan, _loan_id(loan_id))
        if found is None:
            raise LoanNotFound(f"No loan {loan_id}.")
        # The customer first, as money does; a customer no longer Active is paid nothing.
        standing = await store.lock_customer(tx, found.customer_id)
        loan = await lock_loan(db, found.id)  # whoever locks it first decides
        if loan.status != LoanStatus.pending:
            raise AlreadyDecided(f"Loan {loan.id} was already decided ({loan.status}).")
        await conflicts.check_not_linked(db, principal.user_id, loan.customer_id, f"Loan {loan.id}")
        if approve:
            accounts.check_can_transact(standing)
        admin_id = principal.user_id
        number = await db.scalar(select(Account.number).where(Account.id == loan.account_id))
        details: dict[str, Any] = {"reason": reason}
        if approve:
            if await db.get(LoanApproval, (loan.id, admin_id)) is not None:
                raise SameApprover(
                    f"You approved loan {loan.id} already; a second admin must approve it."
                )
            db.add(
                LoanApproval(
                    loan_id=loan.id, admin_id=admin_id, reason=reason, approved_at=datetime.now(UTC)
                )
            )
            loan.approvals += 1
            details |= {"approvals": loan.approvals, "approvals_required": loan.approvals_required}
            if loan.approvals >= loan.approvals_required:
                posted, _ = await loan_ledger.disburse(tx, loan, number, initiated_by=admin_id)
                loan.status = LoanStatus.active
                loan.disbursed_on = today
                loan.accrued_through = today
                loan.outstanding_principal = loan.principal
                loan.disbursement_id = posted.id
                rows = loan_ledger.first_schedule(loan, today)
                loan.monthly_payment = rows[0].payment
                loan_ledger.add_schedule(db, loan, rows)
                details["transaction_id"] = str(posted.id)
                _decided(loan, admin_id, reason)
        else:
            if not reason:
                raise ValidationFailed("A rejection needs a reason.", field="reason")
            loan.status = LoanStatus.rejected
            _decided(loan, admin_id, reason)
        # Whoever held it in the inbox lets go: a loan waiting for its second approval goes
        # back to the queue for another admin.
        await inbox.release(db, inbox.LOAN, loan.id)
        await audit.record(
            tx,
            actor=actor,
            action="loan.approve" if approve else "loan.reject",
            entity_type="loan",
            entity_id=loan.id,
            details=details,
        )
        if loan.status == LoanStatus.active:  # the job goes last: its insert returns its id
            await store.enqueue_job(
                tx, JobKind.loan_accrual, {"loan_id": loan.id}, run_after=next_midnight(today)
            )
        await db.flush()
        return await _admin_view(db, loan, number, today)


def _decided(loan: Loan, admin_id: int, reason: str | None) -> None:
    loan.decided_at = datetime.now(UTC)
    loan.decided_by = admin_id
    loan.decision_reason = reason
