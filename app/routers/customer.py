"""Endpoints for customers: their profile (which staff may also read), accounts, money
movement, history and statements."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, BackgroundTasks, Header, Path, Query
from fastapi.responses import Response

from app.deps import (
    CurrentCustomer,
    CurrentUser,
    DatabaseDep,
    DbSession,
    ProductsDep,
    ScorerDep,
    SettingsDep,
)
from app.errors import CustomerNotFound
from app.money import format_amount
from app.ratelimit import STATEMENT_EXPORT_LIMIT, MoneyMover
from app.routing import (
    DIGITS,
    AccountNumberPath,
    AccountNumberQuery,
    DecimalRoute,
    StrictQueryRoute,
    audited,
    download,
    not_audited,
)
from app.schemas.common import IsoDate, IsoInstant, Page, day_start, iso_utc, problem_responses
from app.schemas.customer import CustomerOut, CustomerUpdate
from app.schemas.ledger import (
    AccountOpen,
    AccountOut,
    DepositIn,
    StatementOut,
    TransactionOut,
    TransferIn,
    WithdrawalIn,
)
from app.schemas.loan import (
    LoanApply,
    LoanOut,
    ProductOut,
    QuoteIn,
    QuoteOut,
    RepaymentIn,
    RepaymentOut,
    ScheduleOut,
    ScheduleRowOut,
)
from app.services import (
    accounts,
    customers,
    history,
    ledger,
    loan_views,
    loans,
    reconciliation,
    repayments,
    statements,
)
from app.services.ledger import Movement
from app.services.scoring import Scorer

router = APIRouter(prefix="/api/customers", tags=["customers"], route_class=StrictQueryRoute)
DigitsPath = Annotated[str, Path(pattern=DIGITS)]


@router.get(
    "/me",
    response_model=CustomerOut,
    summary="My customer profile",
    responses=problem_responses(401, 403, 404),
)
async def get_me(principal: CurrentCustomer, db: DbSession) -> CustomerOut:
    """The caller's customer profile, with KYC status and document metadata (never the files).
    Customers only (staff get 403)."""
    profile = await customers.load_profile(db, principal.customer_id or 0)
    if profile is None:
        raise CustomerNotFound("The caller is not a customer.")
    return _customer_out(profile)


@router.patch(
    "/me",
    openapi_extra=audited("customer.update"),
    response_model=CustomerOut,
    summary="Update my email, phone or address",
    responses=problem_responses(401, 403, 409, 422),
)
async def patch_me(body: CustomerUpdate, principal: CurrentCustomer, db: DbSession) -> CustomerOut:
    """Change the caller's email, phone or address. Customers only. An email another user has
    is 409 `email_taken`."""
    return _customer_out(await customers.update_me(db, principal=principal, changes=body))


@router.get(
    "/{customer_id:digits}",
    response_model=CustomerOut,
    summary="A customer's profile (the customer themself, admins, auditors)",
    responses=problem_responses(401, 404),
)
async def get_customer(
    customer_id: DigitsPath, principal: CurrentUser, db: DbSession
) -> CustomerOut:
    """A customer's profile by id: the customer themself, admins and auditors. Another
    customer's id is 404, as if it did not exist."""
    profile = await customers.get_profile(db, principal=principal, customer_id=customer_id)
    return _customer_out(profile)


def _customer_out(profile: customers.Profile) -> CustomerOut:
    return CustomerOut.of(profile.customer, profile.user, profile.documents)


# Accounts, money movement, history and statements. JSON bodies are parsed with Decimal
# (DecimalRoute), so an amount never passes through a float.
banking = APIRouter(prefix="/api", route_class=DecimalRoute)

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x20-\x7e]+$",
        description="1-255 printable ASCII characters; a retry with the same key and "
        "body returns the original answer instead of moving money again.",
    ),
]
Limit = Annotated[int, Query(ge=1, le=500)]
MONEY_ERRORS = problem_responses(401, 403, 404, 409, 422, 429)


def _created(movement: Movement, tasks: BackgroundTasks, scorer: Scorer) -> Response:
    """201 with the transaction (TransactionView has the response model's fields, which
    a test checks against the schema: serialized as it is, not validated again). Fraud
    scoring of a new movement starts right after the response is sent."""
    headers = {"Idempotent-Replayed": "true"} if movement.replayed else None
    if not movement.replayed:
        tasks.add_task(scorer.wake)
    return Response(
        orjson.dumps(movement.transaction),
        status_code=201,
        headers=headers,
        media_type="application/json",
    )


@banking.post(
    "/accounts",
    openapi_extra=audited("account.open"),
    tags=["accounts"],
    status_code=201,
    response_model=AccountOut,
    summary="Open a savings or checking account",
    responses=problem_responses(401, 403, 422),
)
async def open_account(
    body: AccountOpen, principal: CurrentCustomer, db: DbSession, settings: SettingsDep
) -> AccountOut:
    """Open a savings or checking account for the caller, at zero balance, in the bank's
    currency unless another is named. Customers whose KYC is `Active` only (otherwise
    403 `kyc_required`)."""
    account = await accounts.open_account(
        db, principal=principal, type=body.type, currency=body.currency or settings.currency
    )
    return AccountOut.of(account)


@banking.get(
    "/accounts",
    tags=["accounts"],
    response_model=Page[AccountOut],
    summary="My accounts",
    responses=problem_responses(401, 403, 422),
)
async def list_accounts(
    principal: CurrentCustomer, db: DbSession, limit: Limit = 50, cursor: str | None = None
) -> Page[AccountOut]:
    """The caller's accounts, a page at a time (`limit`, `cursor` from `next_cursor`).
    Customers only."""
    page = await accounts.list_accounts(db, principal=principal, cursor=cursor, limit=limit)
    return Page[AccountOut](
        items=[AccountOut.of(a) for a in page.items], next_cursor=page.next_cursor
    )


@banking.get(
    "/accounts/{account_number}",
    tags=["accounts"],
    response_model=AccountOut,
    summary="One of my accounts",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_account(
    account_number: AccountNumberPath,
    principal: CurrentUser,
    db: DbSession,
    at: Annotated[
        IsoInstant | None,
        Query(description="An instant (ISO 8601 with offset): the balances then"),
    ] = None,
) -> AccountOut:
    """One of the caller's accounts with its balance; another customer's account is 404. Staff
    (admins, auditors) read any customer's account, and the read is audited. With `at`,
    `balance` and `available_balance` are the account's at that instant (from its entries
    and the holds then); `status` is its status now."""
    account = await accounts.get_account(db, principal=principal, number=account_number)
    if at is None:
        return AccountOut.of(account)
    balance, held = await reconciliation.account_at(db, account, at)
    return AccountOut.of(account).model_copy(
        update={
            "balance": format_amount(balance),
            "available_balance": format_amount(balance - held),
        }
    )


@banking.post(
    "/accounts/{account_number}/close",
    openapi_extra=audited("account.close"),
    tags=["accounts"],
    response_model=AccountOut,
    summary="Close an account (only at zero balance)",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def close_account(
    account_number: AccountNumberPath, principal: CurrentCustomer, db: DbSession
) -> AccountOut:
    """Close one of the caller's accounts. Only at zero balance (409 `balance_not_zero`).
    Customers only; another customer's account is 404."""
    return AccountOut.of(
        await accounts.close_account(db, principal=principal, number=account_number)
    )


@banking.get(
    "/accounts/{account_number}/statement",
    tags=["accounts"],
    response_model=StatementOut,
    summary="Statement for a period as JSON, CSV or PDF",
    responses={
        **problem_responses(401, 403, 404, 422, 429),
        200: {"content": {"text/csv": {}, "application/pdf": {}}},
    },
    dependencies=[STATEMENT_EXPORT_LIMIT],
)
async def statement(
    account_number: AccountNumberPath,
    principal: CurrentUser,
    db: DbSession,
    settings: SettingsDep,
    from_: Annotated[
        IsoDate | None,
        Query(alias="from", description="First day (default: first of the month of `to`)"),
    ] = None,
    to: Annotated[IsoDate | None, Query(description="Last day, inclusive (default: today)")] = None,
    format: Literal["json", "csv", "pdf"] = "json",
) -> Any:
    """A statement of one of the caller's accounts for a period (default: this month to date):
    opening and closing balance, totals in and out, and every entry. `format=json`
    (default), `csv` or `pdf` (downloads). Another customer's account is 404; staff read
    any customer's, audited."""
    result = await statements.build(
        db,
        principal=principal,
        account_number=account_number,
        since=from_,
        until=to,
        bank_name=settings.bank_name,
    )
    if format == "json":
        return statement_out(result)
    return download(await statements.export(result, format))


def statement_out(statement: statements.Statement) -> StatementOut:
    return StatementOut.model_validate(
        {
            "account_number": statement.account_number,
            "account_type": statement.account_type,
            "currency": statement.currency,
            "customer_id": str(statement.customer_id),
            "customer_name": statement.customer_name,
            "from": statement.period_from,
            "to": statement.period_to,
            "opening_balance": format_amount(statement.opening_balance),
            "total_in": format_amount(statement.total_in),
            "total_out": format_amount(statement.total_out),
            "closing_balance": format_amount(statement.closing_balance),
            "entries": statement.entries,
            "generated_at": iso_utc(statement.generated_at),
        }
    )


@banking.post(
    "/transactions/deposit",
    openapi_extra=audited("transaction.deposit"),
    status_code=201,
    response_model=TransactionOut,
    tags=["transactions"],
    summary="Deposit into one of my accounts",
    responses=MONEY_ERRORS,
)
async def deposit(
    body: DepositIn,
    principal: MoneyMover,
    database: DatabaseDep,
    scorer: ScorerDep,
    tasks: BackgroundTasks,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    """Put money into one of the caller's accounts (cash or an external source). Amount: a two-
    place decimal string above zero, at most `BANK_MAX_TRANSACTION`. Send an
    `Idempotency-Key` to make a retry safe: the same key and body answer the first
    result again with `Idempotent-Replayed: true`; the same key with another body is 422
    `idempotency_key_reused`, and while the first is still running 409
    `idempotency_in_progress`. Customers only; another customer's account is 404; a
    frozen or closed account is 409 `account_not_active`."""
    return _created(
        await ledger.deposit(
            database,
            principal=principal,
            account_number=body.account_number,
            amount=body.amount,
            description=body.description,
            idempotency_key=idempotency_key,
        ),
        tasks,
        scorer,
    )


@banking.post(
    "/transactions/withdrawal",
    openapi_extra=audited("transaction.withdrawal"),
    status_code=201,
    response_model=TransactionOut,
    tags=["transactions"],
    summary="Withdraw from one of my accounts",
    responses=MONEY_ERRORS,
)
async def withdrawal(
    body: WithdrawalIn,
    principal: MoneyMover,
    database: DatabaseDep,
    scorer: ScorerDep,
    tasks: BackgroundTasks,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    """Take money out of one of the caller's accounts. The balance never goes below zero (422
    `insufficient_funds`), and the outgoing total of the last 24 h stays within
    `BANK_DAILY_LIMIT` (422 `daily_limit_exceeded`). `Idempotency-Key` as for deposits.
    Customers only; another customer's account is 404; a frozen or closed account is 409
    `account_not_active`."""
    return _created(
        await ledger.withdraw(
            database,
            principal=principal,
            account_number=body.account_number,
            amount=body.amount,
            description=body.description,
            idempotency_key=idempotency_key,
        ),
        tasks,
        scorer,
    )


@banking.post(
    "/transactions/transfer",
    openapi_extra=audited("transaction.transfer"),
    status_code=201,
    response_model=TransactionOut,
    tags=["transactions"],
    summary="Transfer to any account in the same currency",
    responses=MONEY_ERRORS,
)
async def transfer(
    body: TransferIn,
    principal: MoneyMover,
    database: DatabaseDep,
    scorer: ScorerDep,
    tasks: BackgroundTasks,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    """Move money from one of the caller's accounts to any active account in the same currency,
    as one double-entry journal. Refused with 422: `insufficient_funds`,
    `daily_limit_exceeded`, `amount_too_large`, `currency_mismatch`, `same_account`; 404
    when the source is not the caller's or the destination does not exist; 409
    `account_not_active` for a frozen or closed account. `Idempotency-Key` as for
    deposits. Customers only."""
    return _created(
        await ledger.transfer(
            database,
            principal=principal,
            from_account=body.from_account,
            to_account=body.to_account,
            amount=body.amount,
            description=body.description,
            idempotency_key=idempotency_key,
        ),
        tasks,
        scorer,
    )


@banking.get(
    "/transactions",
    response_model=Page[TransactionOut],
    tags=["transactions"],
    summary="My transactions, newest first",
    responses=problem_responses(401, 403, 422),
)
async def list_transactions(
    principal: CurrentUser,
    db: DbSession,
    account_number: AccountNumberQuery = None,
    from_: Annotated[IsoDate | None, Query(alias="from")] = None,
    to: Annotated[IsoDate | None, Query(description="Inclusive end date")] = None,
    limit: Limit = 50,
    cursor: str | None = None,
) -> Page[TransactionOut]:
    """The caller's transactions, newest first, optionally of one account and between two dates
    (inclusive), a page at a time. Staff read any customer's account's transactions: they
    name the account (`account_number`, else 422), and the read is audited."""
    page = await history.list_transactions(
        db,
        principal=principal,
        account_number=account_number,
        since=day_start(from_),
        until=day_start(to, next_day=True),
        cursor=cursor,
        limit=limit,
    )
    return Page[TransactionOut](
        items=[TransactionOut.model_validate(v) for v in page.items], next_cursor=page.next_cursor
    )


@banking.get(
    "/transactions/{transaction_id:digits}",
    response_model=TransactionOut,
    tags=["transactions"],
    summary="One of my transactions",
    responses=problem_responses(401, 403, 404),
)
async def get_transaction(
    transaction_id: DigitsPath, principal: CurrentUser, db: DbSession
) -> TransactionOut:
    """One transaction that touched one of the caller's accounts; any other transaction is 404.
    Staff read any transaction, audited."""
    view = await history.get_transaction(db, principal=principal, transaction_id=transaction_id)
    return TransactionOut.model_validate(view)


# --- loans (API.md §6) ------------------------------------------------------------------

LoanIdPath = Annotated[str, Path(pattern=DIGITS, description="The loan's id")]


def _replayable(body: dict[str, Any], *, replayed: bool) -> Response:
    """201 with an answer as filed under its Idempotency-Key (the schema's fields)."""
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return Response(
        orjson.dumps(body), status_code=201, headers=headers, media_type="application/json"
    )


@banking.get(
    "/loans/products",
    tags=["loans"],
    response_model=Page[ProductOut],
    summary="The loan products: rates, principal and term ranges",
    responses=problem_responses(422),
)
async def loan_products(catalog: ProductsDep) -> Page[ProductOut]:
    """Every loan product: its annual rate (APR, percent), principal range and term range in
    months. No login needed; a query parameter it does not take is 422."""
    items = [
        ProductOut(
            product=p.code,
            name=p.name,
            annual_rate=loan_views.rate_text(p.annual_rate),
            min_principal=format_amount(p.min_principal),
            max_principal=format_amount(p.max_principal),
            min_term_months=p.min_term_months,
            max_term_months=p.max_term_months,
        )
        for p in catalog.products.values()
    ]
    return Page[ProductOut](items=items, next_cursor=None)


@banking.post(
    "/loans/quote",
    openapi_extra=not_audited("computes a quote and changes nothing"),
    tags=["loans"],
    response_model=QuoteOut,
    summary="Quote a loan: the payment and the whole schedule",
    responses=problem_responses(400, 422),
)
async def loan_quote(body: QuoteIn, catalog: ProductsDep, database: DatabaseDep) -> QuoteOut:
    """The monthly payment, total interest and amortization schedule of a product's loan, due
    dates as if paid out today. payment = P·r / (1 − (1+r)^−n), r = APR / 12, rounded
    half-up to the cent; each row's interest is round(balance · r); the last row absorbs
    the rounding. A principal or term outside the product's range is 422 naming the field.
    No login needed."""
    view = loan_views.quote(
        catalog,
        product=body.product,
        principal=body.principal,
        term_months=body.term_months,
        today=loan_views.today_of(database),
    )
    return QuoteOut.model_validate(view)


@banking.post(
    "/loans",
    openapi_extra=audited("loan.apply"),
    tags=["loans"],
    status_code=201,
    response_model=LoanOut,
    summary="Apply for a loan",
    responses=problem_responses(401, 403, 404, 409, 422, 429),
)
async def apply_for_loan(
    body: LoanApply,
    principal: MoneyMover,
    db: DbSession,
    catalog: ProductsDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    """Apply for a loan paid out to one of the caller's accounts: 201 with the loan, `pending`,
    and its quote. An admin decides (two admins at or above `BANK_FOUR_EYES_THRESHOLD`).
    The customer must be `Active` (403 `kyc_required` / `customer_suspended`); a principal
    or term outside the product's range is 422 naming the field; another customer's
    account is 404. Send an `Idempotency-Key` to make a retry safe. Customers only."""
    applied = await loans.apply(
        db,
        catalog,
        principal=principal,
        product=body.product,
        amount=body.principal,
        term_months=body.term_months,
        monthly_income=body.monthly_income,
        account_number=body.account_number,
        purpose=body.purpose,
        idempotency_key=idempotency_key,
    )
    return _replayable(applied.body, replayed=applied.replayed)


@banking.get(
    "/loans",
    tags=["loans"],
    response_model=Page[LoanOut],
    summary="My loans",
    responses=problem_responses(401, 403, 422),
)
async def list_my_loans(
    principal: CurrentCustomer, db: DbSession, limit: Limit = 50, cursor: str | None = None
) -> Page[LoanOut]:
    """The caller's loans and applications, oldest first, a page at a time. Customers only."""
    page = await loans.list_loans(db, principal=principal, cursor=cursor, limit=limit)
    return Page[LoanOut](
        items=[LoanOut.model_validate(v) for v in page.items], next_cursor=page.next_cursor
    )


@banking.get(
    "/loans/{loan_id:digits}",
    tags=["loans"],
    response_model=LoanOut,
    summary="One of my loans",
    responses=problem_responses(401, 403, 404),
)
async def get_my_loan(loan_id: LoanIdPath, principal: CurrentCustomer, db: DbSession) -> LoanOut:
    """One of the caller's loans: status, outstanding principal, the payoff amount today,
    the next due date and, when active, what is overdue and since how many days. Customers
    only; another customer's loan is 404."""
    return LoanOut.model_validate(await loans.get_loan(db, principal=principal, loan_id=loan_id))


@banking.get(
    "/loans/{loan_id:digits}/schedule",
    tags=["loans"],
    response_model=ScheduleOut,
    summary="A loan's amortization schedule as JSON, CSV or PDF",
    responses={
        **problem_responses(401, 403, 404, 422),
        200: {"content": {"text/csv": {}, "application/pdf": {}}},
    },
)
async def loan_schedule(
    loan_id: LoanIdPath,
    principal: CurrentCustomer,
    db: DbSession,
    settings: SettingsDep,
    format: Literal["json", "csv", "pdf"] = "json",
) -> Any:
    """The loan's installments with what has been paid of each; a loan not yet paid out shows
    its schedule as if paid out today. `format=json` (default), `csv` or `pdf` (downloads).
    Customers only; another customer's loan is 404."""
    view, rows = await loans.customer_schedule(db, principal=principal, loan_id=loan_id)
    if format == "json":
        return ScheduleOut(
            loan_id=view.loan_id,
            status=view.status,
            currency=view.currency,
            rows=[ScheduleRowOut.model_validate(row) for row in rows],
        )
    return download(
        await loan_views.export_schedule(view, rows, format, bank_name=settings.bank_name)
    )


@banking.post(
    "/loans/{loan_id:digits}/withdraw",
    openapi_extra=audited("loan.withdraw"),
    tags=["loans"],
    response_model=LoanOut,
    summary="Withdraw my pending application",
    responses=problem_responses(401, 403, 404, 409),
)
async def withdraw_loan(loan_id: LoanIdPath, principal: CurrentCustomer, db: DbSession) -> LoanOut:
    """Withdraw a `pending` application: status `withdrawn` (audited). Anything else is 409
    `already_decided`. Customers only; another customer's loan is 404."""
    return LoanOut.model_validate(await loans.withdraw(db, principal=principal, loan_id=loan_id))


@banking.post(
    "/loans/{loan_id:digits}/repayments",
    openapi_extra=audited("loan.repay", "loan.accrue"),
    tags=["loans"],
    status_code=201,
    response_model=RepaymentOut,
    summary="Repay a loan (or see what a repayment would do: dry_run=true)",
    responses={
        **problem_responses(401, 403, 404, 409, 422, 429),
        200: {"model": RepaymentOut, "description": "A dry run: nothing was written"},
    },
)
async def repay_loan(
    loan_id: LoanIdPath,
    body: RepaymentIn,
    principal: MoneyMover,
    db: DbSession,
    dry_run: bool = False,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    """Repay from one of the caller's accounts. The amount goes to fees, then interest due, then
    principal due (oldest installment first within each), then future principal, which
    lowers the installments not yet due (same term, lower payment); the answer lists the
    `allocation`. Paying exactly `payoff_amount` closes the loan (`paid_off`, with the
    interest accrued since the last due date); more is 422 `payoff_exceeded`, and an
    amount that would clear the principal but not that interest is 422
    `payoff_required`. `dry_run=true` answers 200 with the same allocation and the new
    schedule and writes nothing. Send an `Idempotency-Key` to make a retry safe. A loan
    not active is 409 `loan_not_active`. Customers only; another customer's loan or
    account is 404."""
    repaid = await repayments.repay(
        db,
        principal=principal,
        loan_id=loan_id,
        amount=body.amount,
        from_account=body.from_account,
        idempotency_key=idempotency_key,
        dry_run=dry_run,
    )
    if dry_run:
        return Response(orjson.dumps(repaid.body), media_type="application/json")
    return _replayable(repaid.body, replayed=repaid.replayed)
