"""Endpoints for bank administrators."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import FileResponse, Response

from app.deps import AdminUser, DatabaseDep, DbSession, RulesDep, SecurityDep, SettingsDep
from app.models import Role
from app.routing import DIGITS, AccountNumberPath, DecimalRoute, audited
from app.schemas.admin import (
    CustomerFileOut,
    CustomerStatusName,
    CustomerSummaryOut,
    InboxItemOut,
    KycDecisionIn,
    ReasonIn,
)
from app.schemas.common import Page, PlainText, problem_responses
from app.schemas.customer import CustomerOut
from app.schemas.fraud import (
    ApproveIn,
    BacktestIn,
    BacktestOut,
    ExplainOut,
    FlagDetailOut,
    FlagOut,
    FlagResolve,
    HeldTransactionOut,
    ListEntryIn,
    ListEntryOut,
    RejectIn,
)
from app.schemas.ledger import AccountOut, AccountStatusChange
from app.schemas.loan import AdminLoanOut
from app.schemas.staff import StaffCreate, StaffOut
from app.services import accounts, customer_admin, fraud, holds, inbox, loans, staff
from app.services.audit import Actor

router = APIRouter(prefix="/api/admin", tags=["admin"], route_class=DecimalRoute)


@router.post(
    "/users",
    openapi_extra=audited("staff.create"),
    status_code=201,
    response_model=StaffOut,
    summary="Create a staff user (admin or auditor)",
    responses=problem_responses(401, 403, 409, 422),
)
async def create_user(
    body: StaffCreate, principal: AdminUser, db: DbSession, security: SecurityDep
) -> StaffOut:
    """Create a staff user, an admin or an auditor. Admins only. A taken username or email is
    409; a weak password 422 `weak_password`."""
    user = await staff.create_staff(
        db,
        security,
        username=body.username,
        email=body.email,
        password=body.password,
        role=Role(body.role),
        actor=Actor.of(principal),
    )
    return StaffOut.of(user)


@router.get(
    "/users",
    response_model=Page[StaffOut],
    summary="Staff users (admins and auditors)",
    responses=problem_responses(401, 403, 422),
)
async def list_users(
    principal: AdminUser,
    db: DbSession,
    role: Literal["admin", "auditor"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> Page[StaffOut]:
    """Admins and auditors, by id, with whether each is active. Admins only."""
    page = await staff.list_staff(db, role=role, cursor=cursor, limit=limit)
    return Page[StaffOut](items=[StaffOut.of(u) for u in page.items], next_cursor=page.next_cursor)


@router.post(
    "/users/{user_id:digits}/disable",
    openapi_extra=audited("staff.disable"),
    response_model=StaffOut,
    summary="Disable a staff user: no login, every session ends",
    responses=problem_responses(400, 401, 403, 404, 409, 422),
)
async def disable_user(
    user_id: Annotated[str, Path(pattern=DIGITS, description="The staff user's id")],
    body: ReasonIn,
    principal: AdminUser,
    db: DbSession,
    security: SecurityDep,
) -> StaffOut:
    """Disable an admin or auditor, with a reason (audited): their login is refused from now
    on (401 `invalid_credentials`) and every session of theirs ends at once (refresh
    tokens revoked, their access tokens with them). Disabling oneself is 409
    `cannot_disable_self`; a disabled user again 409 `already_decided`; a customer's user
    id 404. Admins only."""
    user = await staff.disable_staff(
        db, security, principal=principal, user_id=user_id, reason=body.reason
    )
    return StaffOut.of(user)


# --- the reviewers' inbox (API.md §7) ------------------------------------------------

ItemId = Annotated[
    str,
    Path(
        pattern=r"^(kyc_review|loan_approval|fraud_flag|held_transaction):[0-9]{1,18}$",
        description="`kind:entity_id`, as the inbox lists it",
    ),
]


@router.get(
    "/inbox",
    response_model=Page[InboxItemOut],
    summary="Every item waiting for a person, oldest first",
    responses=problem_responses(401, 403, 422),
)
async def list_inbox(
    principal: AdminUser,
    db: DbSession,
    kind: Literal["kyc_review", "loan_approval", "fraud_flag", "held_transaction"] | None = None,
    assigned_to: Annotated[
        str | None, Query(pattern=DIGITS, max_length=18, description="An admin's user id")
    ] = None,
    unassigned: bool = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> Page[InboxItemOut]:
    """KYC reviews, loans waiting for a first or second approval, open fraud flags and held
    transactions, oldest first, each with its SLA deadline (`BANK_SLA_KYC_REVIEW`,
    `_LOAN_APPROVAL`, `_FRAUD_FLAG`, `_HELD_TRANSACTION`), whether it is overdue and who
    holds it. Admins only."""
    page = await inbox.list_items(
        db,
        kind=kind,
        assigned_to=int(assigned_to) if assigned_to else None,
        unassigned=unassigned,
        cursor=cursor,
        limit=limit,
    )
    return Page[InboxItemOut](
        items=[InboxItemOut.model_validate(inbox.describe(i)) for i in page.items],
        next_cursor=page.next_cursor,
    )


@router.post(
    "/inbox/next",
    openapi_extra=audited("inbox.assign"),
    response_model=InboxItemOut,
    summary="Take the oldest item nobody holds",
    responses={**problem_responses(401, 403), 204: {"description": "Nothing waits for you"}},
)
async def next_item(principal: AdminUser, db: DbSession) -> Any:
    """The oldest item nobody holds that the caller may decide, now held by the caller
    (audited); 204 when none waits. Two admins asking at once never get the same item. An
    admin is never handed a loan they approved already (the second approval is someone
    else's) nor an item of the customer their user is linked to. Admins only."""
    item = await inbox.take_next(db, principal=principal)
    if item is None:
        return Response(status_code=204)
    return InboxItemOut.model_validate(inbox.describe(item))


@router.post(
    "/inbox/{item_id}/take",
    openapi_extra=audited("inbox.take_over"),
    response_model=InboxItemOut,
    summary="Take an item over from whoever holds it",
    responses=problem_responses(401, 403, 404),
)
async def take_item(item_id: ItemId, principal: AdminUser, db: DbSession) -> InboxItemOut:
    """Hold an item, taking it over from the admin who holds it, if any (audited with the
    previous holder). An item no longer waiting is 404. Admins only."""
    item = await inbox.take_over(db, principal=principal, item_id=item_id)
    return InboxItemOut.model_validate(inbox.describe(item))


# --- customers (API.md §7) ---------------------------------------------------------

CustomerId = Annotated[str, Path(pattern=DIGITS, description="The customer's id")]


@router.get(
    "/customers",
    response_model=Page[CustomerSummaryOut],
    summary="Find customers by name, username, email or id",
    responses=problem_responses(401, 403, 422),
)
async def list_customers(
    principal: AdminUser,
    db: DbSession,
    q: Annotated[
        PlainText | None,
        Query(max_length=100, description="Part of a name, username or email; or an id"),
    ] = None,
    status: CustomerStatusName | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> Page[CustomerSummaryOut]:
    """Customers by id, filtered by status and by `q` (any part of the full name, username or
    email, in any case; or the customer id itself). Admins only."""
    page = await customer_admin.list_customers(db, q=q, status=status, cursor=cursor, limit=limit)
    return Page[CustomerSummaryOut](
        items=[CustomerSummaryOut.model_validate(c) for c in page.items],
        next_cursor=page.next_cursor,
    )


@router.get(
    "/customers/{customer_id:digits}",
    response_model=CustomerFileOut,
    summary="A customer's file: profile, KYC, accounts, loans, flags",
    responses=problem_responses(401, 403, 404),
)
async def get_customer_file(
    customer_id: CustomerId, principal: AdminUser, db: DbSession
) -> CustomerFileOut:
    """A customer's whole file: the profile with KYC and its documents' metadata, every
    account, loans and fraud flags. The read is audited. Admins only."""
    profile, owned = await customer_admin.read_file(
        db, principal=principal, customer_id=customer_id
    )
    cid = profile.customer.id
    loan_page = await loans.admin_list(
        db, status=None, recommendation=None, cursor=None, limit=50, customer_id=cid
    )
    flag_page = await fraud.list_flags(
        db, where=fraud.FlagFilter(customer_id=cid), cursor=None, limit=50
    )
    base = CustomerOut.of(profile.customer, profile.user, profile.documents)
    return CustomerFileOut(
        **base.model_dump(),
        accounts=[AccountOut.of(a) for a in owned],
        loans=[AdminLoanOut.model_validate(v.as_dict()) for v in loan_page.items],
        flags=[FlagOut.model_validate(f) for f in flag_page.items],
    )


@router.post(
    "/customers/{customer_id:digits}/kyc",
    openapi_extra=audited("kyc.decide"),
    response_model=CustomerOut,
    summary="Decide a customer's KYC: approve or reject",
    responses=problem_responses(400, 401, 403, 404, 409, 422),
)
async def decide_kyc(
    customer_id: CustomerId, body: KycDecisionIn, principal: AdminUser, db: DbSession
) -> CustomerOut:
    """Approve (`Active`) or reject (`KYC Rejected`) the KYC of a customer `Under Review` or
    still `Pending KYC Approval`, with a reason (audited). Decided already: 409
    `already_decided`. Admins only."""
    profile = await customer_admin.decide_kyc(
        db,
        principal=principal,
        customer_id=customer_id,
        approve=body.decision == "approve",
        reason=body.reason,
    )
    return CustomerOut.of(profile.customer, profile.user, profile.documents)


@router.get(
    "/customers/{customer_id:digits}/documents/{document_id:digits}",
    summary="Download a customer's KYC document",
    response_class=FileResponse,
    responses={
        **problem_responses(401, 403, 404),
        200: {
            "description": "The file, as an attachment",
            "content": {"application/pdf": {}, "image/png": {}, "image/jpeg": {}},
        },
    },
)
async def get_document(
    customer_id: CustomerId,
    document_id: Annotated[str, Path(pattern=DIGITS, description="The document's id")],
    principal: AdminUser,
    db: DbSession,
) -> FileResponse:
    """A KYC document's file, by its id, with its content type, as a download
    (`Content-Disposition: attachment`). The read is audited. Admins only."""
    found = await customer_admin.document(
        db, principal=principal, customer_id=customer_id, document_id=document_id
    )
    return FileResponse(
        found.path,
        media_type=found.content_type,
        filename=found.filename,
        content_disposition_type="attachment",
    )


@router.post(
    "/customers/{customer_id:digits}/suspend",
    openapi_extra=audited("customer.suspend"),
    response_model=CustomerOut,
    summary="Suspend a customer: they read, they move no money",
    responses=problem_responses(400, 401, 403, 404, 409, 422),
)
async def suspend_customer(
    customer_id: CustomerId, body: ReasonIn, principal: AdminUser, db: DbSession
) -> CustomerOut:
    """Suspend an `Active` customer, with a reason (audited). They can still log in and read;
    every money movement and loan application of theirs is 403 `customer_suspended` from
    now on, whatever token it carries. Not `Active`: 409 `already_decided`. Admins only."""
    profile = await customer_admin.set_standing(
        db, principal=principal, customer_id=customer_id, suspend=True, reason=body.reason
    )
    return CustomerOut.of(profile.customer, profile.user, profile.documents)


@router.post(
    "/customers/{customer_id:digits}/reactivate",
    openapi_extra=audited("customer.reactivate"),
    response_model=CustomerOut,
    summary="Reactivate a suspended customer",
    responses=problem_responses(400, 401, 403, 404, 409, 422),
)
async def reactivate_customer(
    customer_id: CustomerId, body: ReasonIn, principal: AdminUser, db: DbSession
) -> CustomerOut:
    """Reactivate a `Suspended` customer, with a reason (audited). Not suspended: 409
    `already_decided`. Admins only."""
    profile = await customer_admin.set_standing(
        db, principal=principal, customer_id=customer_id, suspend=False, reason=body.reason
    )
    return CustomerOut.of(profile.customer, profile.user, profile.documents)


@router.patch(
    "/accounts/{account_number}",
    openapi_extra=audited("account.status"),
    response_model=AccountOut,
    summary="Freeze, unfreeze or close a customer's account",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def set_account_status(
    account_number: AccountNumberPath,
    body: AccountStatusChange,
    principal: AdminUser,
    db: DbSession,
) -> AccountOut:
    """Freeze, unfreeze or close a customer's account, with a reason that goes into the audit
    trail. A frozen account neither sends nor receives money. Admins only. A change the
    account's state does not allow (closing with money in it, anything on a closed
    account) is 409; an admin linked to the account's customer → 403 `conflict_of_interest`
    (audited as failed)."""
    account = await accounts.set_status(
        db, principal=principal, number=account_number, status=body.status, reason=body.reason
    )
    return AccountOut.of(account)


# --- fraud review (API.md §7) ------------------------------------------------------

fraud_router = APIRouter(prefix="/api/admin", tags=["fraud"], route_class=DecimalRoute)

FlagId = Annotated[str, Path(pattern=DIGITS, description="The flag's id")]
TransactionId = Annotated[str, Path(pattern=DIGITS, description="The held transaction's id")]
EntryId = Annotated[str, Path(pattern=DIGITS, description="The list entry's id")]
Limit = Annotated[int, Query(ge=1, le=500)]
RuleCode = Annotated[str | None, Query(pattern=r"^[a-z_]{1,32}$", description="A rule code")]


def flag_filter(
    status: Literal["open", "resolved"] | None = None,
    rule: RuleCode = None,
    customer_id: Annotated[str | None, Query(pattern=DIGITS, max_length=18)] = None,
    assigned_to: Annotated[
        str | None, Query(pattern=DIGITS, max_length=18, description="An admin's user id")
    ] = None,
) -> fraud.FlagFilter:
    return fraud.FlagFilter(
        status,
        rule,
        int(customer_id) if customer_id else None,
        int(assigned_to) if assigned_to else None,
    )


FlagQuery = Annotated[fraud.FlagFilter, Depends(flag_filter)]


@fraud_router.get(
    "/flags",
    response_model=Page[FlagOut],
    summary="The fraud review queue: flags, highest score first",
    responses=problem_responses(401, 403, 422),
)
async def list_flags(
    principal: AdminUser,
    db: DbSession,
    where: FlagQuery,
    limit: Limit = 50,
    cursor: str | None = None,
) -> Page[FlagOut]:
    """Flags opened by fraud scoring, highest score first (then newest), filtered by status,
    rule code, customer and assignee, a page at a time. Admins only."""
    page = await fraud.list_flags(db, where=where, cursor=cursor, limit=limit)
    return Page[FlagOut](
        items=[FlagOut.model_validate(f) for f in page.items], next_cursor=page.next_cursor
    )


@fraud_router.get(
    "/flags/{flag_id:digits}",
    response_model=FlagDetailOut,
    summary="One flag with its transaction, every score and the customer's recent activity",
    responses=problem_responses(401, 403, 404),
)
async def get_flag(flag_id: FlagId, principal: AdminUser, db: DbSession) -> FlagDetailOut:
    """A flag with the transaction that opened it, the score and reasons of every movement on
    it, and the customer's 20 newest movements. Admins only."""
    return FlagDetailOut.model_validate(await fraud.flag_detail(db, flag_id))


@fraud_router.post(
    "/flags/{flag_id:digits}/assign",
    openapi_extra=audited("fraud.flag_assigned"),
    response_model=FlagOut,
    summary="Assign a flag to myself",
    responses=problem_responses(401, 403, 404, 409),
)
async def assign_flag(flag_id: FlagId, principal: AdminUser, db: DbSession) -> FlagOut:
    """Assign an open flag to the calling admin, taking it over from whoever had it (audited
    with the previous assignee). A resolved flag is 409 `already_decided`; an admin linked
    to the flag's customer → 403 `conflict_of_interest` (audited as failed). Admins only."""
    return FlagOut.model_validate(await fraud.assign(db, principal=principal, flag_id=flag_id))


@fraud_router.post(
    "/flags/{flag_id:digits}/resolve",
    openapi_extra=audited("fraud.flag_resolved"),
    response_model=FlagOut,
    summary="Resolve a flag as legitimate or fraud",
    responses=problem_responses(400, 401, 403, 404, 409, 422),
)
async def resolve_flag(
    flag_id: FlagId, body: FlagResolve, principal: AdminUser, db: DbSession
) -> FlagOut:
    """Resolve an open flag with a decision and a note (audited). `fraud` freezes the flag's
    source account in the same transaction. The customer's next hit of the same rule opens
    a new flag. A resolved flag is 409 `already_decided`; an admin linked to the flag's
    customer → 403 `conflict_of_interest` (audited as failed). Admins only."""
    flag = await fraud.resolve(
        db, principal=principal, flag_id=flag_id, decision=body.decision, note=body.note
    )
    return FlagOut.model_validate(flag)


@fraud_router.get(
    "/flags/{flag_id:digits}/explain",
    response_model=ExplainOut,
    summary="Re-score a flag's movements from their stored features",
    responses=problem_responses(401, 403, 404),
)
async def explain_flag(flag_id: FlagId, principal: AdminUser, db: DbSession) -> ExplainOut:
    """Every score on the flag re-run by the rule set that gave it (by version) on the features
    stored with it: the result is identical, which `identical` states. Admins only."""
    return ExplainOut.model_validate(await fraud.explain(db, flag_id))


@fraud_router.get(
    "/transactions",
    response_model=Page[HeldTransactionOut],
    summary="Held transactions, oldest first",
    responses=problem_responses(401, 403, 422),
)
async def list_held(
    principal: AdminUser,
    db: DbSession,
    status: Literal["pending_review", "completed", "rejected"] = "pending_review",
    limit: Limit = 50,
    cursor: str | None = None,
) -> Page[HeldTransactionOut]:
    """Withdrawals and transfers held for review (at or above `BANK_REVIEW_THRESHOLD`), in one
    state, oldest first: `pending_review` waits for a decision. Admins only."""
    page = await holds.list_held(db, status=status, cursor=cursor, limit=limit)
    return Page[HeldTransactionOut](
        items=[HeldTransactionOut.model_validate(v.as_dict()) for v in page.items],
        next_cursor=page.next_cursor,
    )


@fraud_router.get(
    "/transactions/{transaction_id:digits}",
    response_model=HeldTransactionOut,
    summary="One held transaction",
    responses=problem_responses(401, 403, 404),
)
async def get_held(
    transaction_id: TransactionId, principal: AdminUser, db: DbSession
) -> HeldTransactionOut:
    """A transaction that was held for review, whatever its state now. Admins only."""
    return HeldTransactionOut.model_validate((await holds.get_held(db, transaction_id)).as_dict())


@fraud_router.post(
    "/transactions/{transaction_id:digits}/approve",
    openapi_extra=audited("transaction.approve"),
    response_model=HeldTransactionOut,
    summary="Approve a held transaction: the money moves",
    responses=problem_responses(400, 401, 403, 404, 409, 422),
)
async def approve_held(
    transaction_id: TransactionId,
    principal: AdminUser,
    database: DatabaseDep,
    body: ApproveIn | None = None,
) -> HeldTransactionOut:
    """Approve a `pending_review` transaction: it becomes `completed`, its entries move the
    money and the hold is released, in one transaction (audited, with the reason if given).
    Decided already (or expired) → 409 `already_decided`; a source or destination frozen or
    closed meanwhile → 409 `account_not_active`; one on the block list → 422
    `blocked_counterparty`; an admin linked to the customer who made it → 403
    `conflict_of_interest` (audited as failed). Admins only."""
    view = await holds.decide(
        database,
        transaction_id=transaction_id,
        approve=True,
        actor=Actor.of(principal),
        reason=body.reason if body else None,
    )
    return HeldTransactionOut.model_validate(view.as_dict())


@fraud_router.post(
    "/transactions/{transaction_id:digits}/reject",
    openapi_extra=audited("transaction.reject"),
    response_model=HeldTransactionOut,
    summary="Reject a held transaction: the hold is released",
    responses=problem_responses(400, 401, 403, 404, 409, 422),
)
async def reject_held(
    transaction_id: TransactionId,
    body: RejectIn,
    principal: AdminUser,
    database: DatabaseDep,
) -> HeldTransactionOut:
    """Reject a `pending_review` transaction with a reason: it becomes `rejected`, the hold is
    released and its amount no longer counts toward the customer's daily limit (audited).
    Decided already (or expired) → 409 `already_decided`; an admin linked to the customer
    who made it → 403 `conflict_of_interest` (audited as failed). Admins only."""
    view = await holds.decide(
        database,
        transaction_id=transaction_id,
        approve=False,
        actor=Actor.of(principal),
        reason=body.reason,
    )
    return HeldTransactionOut.model_validate(view.as_dict())


@fraud_router.get(
    "/fraud/lists",
    response_model=Page[ListEntryOut],
    summary="Block and allow list entries",
    responses=problem_responses(401, 403, 422),
)
async def list_entries(
    principal: AdminUser,
    db: DbSession,
    list: Literal["block", "allow"] | None = None,
    live: Annotated[bool, Query(description="Only entries that have not expired")] = False,
    limit: Limit = 50,
    cursor: str | None = None,
) -> Page[ListEntryOut]:
    """Block and allow list entries, oldest first. Admins only."""
    page = await fraud.list_entries(db, list_kind=list, live_only=live, cursor=cursor, limit=limit)
    return Page[ListEntryOut](
        items=[ListEntryOut.model_validate(e) for e in page.items], next_cursor=page.next_cursor
    )


@fraud_router.post(
    "/fraud/lists",
    openapi_extra=audited("fraud.block_listed", "fraud.allow_listed"),
    status_code=201,
    response_model=ListEntryOut,
    summary="Add a block or allow list entry",
    responses=problem_responses(400, 401, 403, 404, 422),
)
async def add_entry(
    body: ListEntryIn, principal: AdminUser, db: DbSession, settings: SettingsDep
) -> ListEntryOut:
    """Block an account, a customer or a national id (a movement from or to it is refused with
    422 `blocked_counterparty`), or allow one (the named rules no longer score movements it
    takes part in), with a reason and an optional expiry after which the entry stops
    applying by itself (audited). A national id is kept only as its keyed hash. An unknown
    account or customer is 404; an entry naming the customer the admin's user is linked to
    → 403 `conflict_of_interest` (audited as failed). Admins only."""
    entry = await fraud.add_entry(
        db,
        settings,
        principal=principal,
        list_kind=body.list,
        target_type=body.target_type,
        target=body.target,
        reason=body.reason,
        rules=body.rules,
        expires_at=body.expires_at,
    )
    return ListEntryOut.model_validate(entry)


@fraud_router.delete(
    "/fraud/lists/{entry_id:digits}",
    openapi_extra=audited("fraud.list_entry_deleted"),
    status_code=204,
    summary="Remove a block or allow list entry",
    responses=problem_responses(401, 403, 404),
)
async def delete_entry(entry_id: EntryId, principal: AdminUser, db: DbSession) -> Response:
    """Remove a list entry (audited); it stops applying at once. One naming the customer the
    admin's user is linked to → 403 `conflict_of_interest` (audited as failed). Admins
    only."""
    await fraud.delete_entry(db, principal=principal, entry_id=entry_id)
    return Response(status_code=204)


@fraud_router.post(
    "/fraud/backtest",
    openapi_extra=audited("fraud.backtest"),
    response_model=BacktestOut,
    summary="Backtest a candidate rule set on the bank's history",
    responses=problem_responses(400, 401, 403, 422),
)
async def backtest(
    body: BacktestIn, principal: AdminUser, database: DatabaseDep, rules: RulesDep
) -> BacktestOut:
    """Re-score the movements of a period with a candidate rule set (the rule file's TOML) and
    compare with the current rules: how many it flags, which it adds and drops, and, against
    flags already resolved, a confusion matrix with precision and recall. Read-only, from
    one snapshot, bounded by `BANK_FRAUD_BACKTEST_SECONDS`; the run is audited. A bad rule set
    is 422 naming the rule and field. Admins only."""
    report = await fraud.backtest(
        database,
        actor=Actor.of(principal),
        current=rules,
        candidate_text=body.rules,
        since=body.from_,
        until=body.to,
    )
    return BacktestOut.model_validate(report)


# --- loan decisions (API.md §7) ----------------------------------------------------

loan_router = APIRouter(prefix="/api/admin", tags=["loans"], route_class=DecimalRoute)

LoanId = Annotated[str, Path(pattern=DIGITS, description="The loan's id")]


@loan_router.get(
    "/loans",
    response_model=Page[AdminLoanOut],
    summary="The loan queue: applications and loans, oldest first",
    responses=problem_responses(401, 403, 422),
)
async def list_loans(
    principal: AdminUser,
    db: DbSession,
    status: Literal["pending", "active", "rejected", "withdrawn", "paid_off"] | None = None,
    recommendation: Literal["approve", "review", "decline"] | None = None,
    limit: Limit = 50,
    cursor: str | None = None,
) -> Page[AdminLoanOut]:
    """Loans, oldest first, by status (`pending`: waiting for a first or second approval) and
    recommendation, with the debt to income, the reasons and the approvals so far. Admins
    only."""
    page = await loans.admin_list(
        db, status=status, recommendation=recommendation, cursor=cursor, limit=limit
    )
    return Page[AdminLoanOut](
        items=[AdminLoanOut.model_validate(v.as_dict()) for v in page.items],
        next_cursor=page.next_cursor,
    )


@loan_router.get(
    "/loans/{loan_id:digits}",
    response_model=AdminLoanOut,
    summary="A loan with its recommendation and approvals",
    responses=problem_responses(401, 403, 404),
)
async def get_loan(loan_id: LoanId, principal: AdminUser, db: DbSession) -> AdminLoanOut:
    """Any loan, with the debt to income, the recommendation and its reasons (advice, never the
    decision) and the approvals so far. Admins only."""
    return AdminLoanOut.model_validate((await loans.admin_get(db, loan_id)).as_dict())


@loan_router.post(
    "/loans/{loan_id:digits}/approve",
    openapi_extra=audited("loan.approve"),
    response_model=AdminLoanOut,
    summary="Approve a loan: the last approval it needs pays it out",
    responses=problem_responses(400, 401, 403, 404, 409, 422),
)
async def approve_loan(
    loan_id: LoanId, principal: AdminUser, db: DbSession, body: ApproveIn | None = None
) -> AdminLoanOut:
    """Approve a `pending` loan (audited, with the reason if given). Below
    `BANK_FOUR_EYES_THRESHOLD` one approval disburses it; at or above it two different
    admins must approve: the first leaves it `pending` with `approvals: 1`, the same admin
    again is 409 `same_approver`. The approval that completes the count makes it `active`
    and pays the principal into the customer's account, in one transaction. An admin whose
    user is linked to the loan's customer is 403 `conflict_of_interest`; a decided loan is
    409 `already_decided`; a disbursement account frozen or closed meanwhile is 409
    `account_not_active`. Admins only."""
    view = await loans.decide(
        db, loan_id=loan_id, approve=True, principal=principal, reason=body.reason if body else None
    )
    return AdminLoanOut.model_validate(view.as_dict())


@loan_router.post(
    "/loans/{loan_id:digits}/reject",
    openapi_extra=audited("loan.reject"),
    response_model=AdminLoanOut,
    summary="Reject a loan application",
    responses=problem_responses(400, 401, 403, 404, 409, 422),
)
async def reject_loan(
    loan_id: LoanId, body: RejectIn, principal: AdminUser, db: DbSession
) -> AdminLoanOut:
    """Reject a `pending` loan with a reason (audited), whatever approvals it has. A decided
    loan is 409 `already_decided`. Admins only."""
    view = await loans.decide(
        db, loan_id=loan_id, approve=False, principal=principal, reason=body.reason
    )
    return AdminLoanOut.model_validate(view.as_dict())
