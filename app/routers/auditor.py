"""Read-only endpoints for auditors (admins may read too)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse

from app.db import Database
from app.deps import AuditReader, DatabaseDep, DbSession, SettingsDep
from app.errors import ValidationFailed
from app.money import Amount
from app.ratelimit import AUDIT_EXPORT_LIMIT
from app.routers.admin import FlagQuery
from app.routing import DIGITS, StrictQueryRoute, download
from app.schemas.audit import (
    AuditRecordOut,
    ChainVerificationOut,
    CheckpointOut,
    KnownKeyOut,
    KnownKeysOut,
    SigningKeyOut,
    SummaryOut,
)
from app.schemas.common import IsoDate, IsoInstant, Page, day_start, problem_responses
from app.schemas.fraud import FlagOut
from app.schemas.ledger import AuditTransactionOut, BalanceAtOut, BooksAtOut, LedgerReportOut
from app.services import audit, exports, fraud, history, reconciliation, reports
from app.services import checkpoints as checkpoints_service
from app.services.pagination import decode_cursor, encode_cursor

router = APIRouter(prefix="/api/audit", tags=["audit"], route_class=StrictQueryRoute)

CSV_COLUMNS = list(AuditRecordOut.model_fields)


@router.get(
    "/logs",
    response_model=Page[AuditRecordOut],
    summary="The audit trail, filtered, in either order (JSON, or the whole range as CSV)",
    responses={**problem_responses(401, 403, 422, 429), 200: {"content": {"text/csv": {}}}},
    dependencies=[AUDIT_EXPORT_LIMIT],
)
async def logs(
    principal: AuditReader,
    db: DbSession,
    database: DatabaseDep,
    actor: Annotated[
        str | None, Query(max_length=64, description="A user id, a username, or `system`")
    ] = None,
    action: str | None = None,
    entity_type: str | None = None,
    entity_id: str | None = None,
    outcome: Literal["success", "denied", "failed"] | None = None,
    request_id: Annotated[str | None, Query(max_length=128)] = None,
    from_: Annotated[IsoDate | None, Query(alias="from")] = None,
    to: Annotated[IsoDate | None, Query(description="Inclusive end date")] = None,
    order: Literal["asc", "desc"] = "asc",
    format: Literal["json", "csv"] = "json",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> object:
    """The audit trail filtered by actor (user id, username or `system`), action, entity,
    outcome, request id and dates (inclusive), oldest first or newest first (`order`), a
    page at a time. `format=csv` downloads every record the filters match, in that order,
    in one streamed file (`limit` and `cursor` do not apply). Auditors and admins;
    read-only."""
    filters = audit.LogFilter(
        actor,
        action,
        entity_type,
        entity_id,
        day_start(from_),
        day_start(to, next_day=True),
        outcome,
        request_id,
    )
    newest_first = order == "desc"
    if format == "csv":
        batches = audit.stream_records(database, filters=filters, newest_first=newest_first)
        return StreamingResponse(
            _csv(batches),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="audit-log.csv"'},
        )
    page = await audit.list_records(
        db, filters=filters, cursor=cursor, limit=limit, newest_first=newest_first
    )
    items = [AuditRecordOut.model_validate(r) for r in page.items]
    return Page[AuditRecordOut](items=items, next_cursor=page.next_cursor)


async def _csv(batches: AsyncIterator[list[Any]]) -> AsyncIterator[str]:
    yield exports.csv_text(CSV_COLUMNS, [], header=True)
    async for batch in batches:
        rows = (AuditRecordOut.model_validate(r).model_dump(mode="json") for r in batch)
        yield exports.csv_text(CSV_COLUMNS, rows, header=False)


@router.get(
    "/verify",
    response_model=ChainVerificationOut,
    summary="Recompute the audit hash chain (all of it, or a range of records)",
    responses=problem_responses(401, 403, 422),
)
async def verify(
    principal: AuditReader,
    db: DbSession,
    from_seq: Annotated[int | None, Query(ge=1, le=2**62, description="First record")] = None,
    to_seq: Annotated[int | None, Query(ge=1, le=2**62, description="Last record")] = None,
) -> ChainVerificationOut:
    """Recompute the audit trail's hash chain, from the first record or from `from_seq` (its
    link to the record before it included) to the last or to `to_seq`, and report whether
    it is intact and the first record that is not. Auditors and admins; read-only."""
    report = await audit.verify_chain(db, from_seq=from_seq, to_seq=to_seq)
    return ChainVerificationOut(
        valid=report.valid,
        entries_checked=report.entries_checked,
        first_invalid_seq=report.first_invalid_seq,
    )


@router.get(
    "/ledger",
    response_model=LedgerReportOut,
    summary="Trial balance: every journal sums to zero, every balance equals its entries",
    responses=problem_responses(401, 403),
)
async def ledger(principal: AuditReader, db: DbSession) -> LedgerReportOut:
    """The trial balance: every journal sums to zero, and every account's balance equals the
    sum of its entries; mismatches are listed. Auditors and admins; read-only."""
    report = await reconciliation.verify_ledger(db)
    return LedgerReportOut(
        balanced=report.balanced,
        journals_checked=report.journals_checked,
        accounts_checked=report.accounts_checked,
        mismatches=report.mismatches,
        totals=report.totals,
    )


@router.get(
    "/flags",
    response_model=Page[FlagOut],
    summary="Fraud flags across customers, highest score first (read-only)",
    responses=problem_responses(401, 403, 422),
)
async def flags(
    principal: AuditReader,
    db: DbSession,
    where: FlagQuery,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> Page[FlagOut]:
    """Every fraud flag, with the same filters as the admins' review queue (status, rule code,
    customer, assignee), highest score first. Auditors and admins; read-only."""
    page = await fraud.list_flags(db, where=where, cursor=cursor, limit=limit)
    return Page[FlagOut](
        items=[FlagOut.model_validate(f) for f in page.items], next_cursor=page.next_cursor
    )


@router.get(
    "/transactions",
    response_model=Page[AuditTransactionOut],
    summary="Every customer's transactions, newest first (read-only)",
    responses=problem_responses(401, 403, 422),
)
async def transactions(
    principal: AuditReader,
    db: DbSession,
    customer_id: Annotated[str | None, Query(pattern=DIGITS, max_length=18)] = None,
    type: Literal[
        "deposit", "withdrawal", "transfer", "disbursement", "repayment", "accrual", "reversal"
    ]
    | None = None,
    status: Literal["completed", "pending_review", "rejected"] | None = None,
    min_amount: Annotated[Amount | None, Query(description="At least this amount")] = None,
    from_: Annotated[IsoDate | None, Query(alias="from")] = None,
    to: Annotated[IsoDate | None, Query(description="Inclusive end date")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> Page[AuditTransactionOut]:
    """Every transaction across customers (and the bank's own postings, such as loan
    accruals), newest first, filtered by customer, type, status, amount and dates. Auditors
    and admins; read-only."""
    where = history.TransactionFilter(
        int(customer_id) if customer_id else None,
        type,
        status,
        day_start(from_),
        day_start(to, next_day=True),
        min_amount,
    )
    page = await history.list_all(db, where=where, cursor=cursor, limit=limit)
    items = [
        AuditTransactionOut.model_validate({**asdict(view), "customer_id": owner})
        for view, owner in page.items
    ]
    return Page[AuditTransactionOut](items=items, next_cursor=page.next_cursor)


@router.get(
    "/balances",
    response_model=BooksAtOut,
    summary="The books at an instant: every account's balance and the trial balance then",
    responses=problem_responses(401, 403, 422),
)
async def balances(
    principal: AuditReader,
    db: DbSession,
    at: Annotated[IsoInstant, Query(description="An instant, ISO 8601 with its offset")],
    limit: Annotated[int, Query(ge=1, le=500)] = 500,
    cursor: str | None = None,
) -> BooksAtOut:
    """Every account's balance at `at`, recomputed from the entries (each account's last entry
    by then), a page of accounts at a time, and the trial balance of all of them then: the
    customer and the bank's own balances per currency, which sum to zero. Auditors and
    admins; read-only."""
    books = await reconciliation.books_at(db, at=at, cursor=cursor, limit=limit)
    return BooksAtOut(
        at=books.at,
        balanced=books.balanced,
        totals=books.totals,
        accounts=[BalanceAtOut.model_validate(a) for a in books.accounts],
        next_cursor=books.next_cursor,
    )


@router.get(
    "/checkpoints",
    response_model=Page[CheckpointOut],
    summary="Signed checkpoints of the audit chain's head",
    responses=problem_responses(401, 403, 422),
)
async def checkpoints(
    principal: AuditReader,
    db: DbSession,
    limit: Annotated[int, Query(ge=1, le=500)] = 500,
    cursor: str | None = None,
) -> Page[CheckpointOut]:
    """The chain's head (seq, hash, time), signed with the service's Ed25519 key every
    `BANK_AUDIT_CHECKPOINT_RECORDS` records (1,000) or `BANK_AUDIT_CHECKPOINT_SECONDS` (300),
    whichever comes first, and on demand (`bank audit checkpoint`); oldest first. Keep a
    copy elsewhere: `bank verify --checkpoints FILE` then shows a chain cut, rewritten or
    forked after any of them. Auditors and admins; read-only."""
    after = decode_cursor(cursor)
    found = await checkpoints_service.list_checkpoints(db, after_seq=after, limit=limit + 1)
    items = [CheckpointOut.model_validate(checkpoints_service.checkpoint_dict(c)) for c in found]
    more = len(items) > limit
    return Page[CheckpointOut](
        items=items[:limit], next_cursor=encode_cursor(items[limit - 1].seq) if more else None
    )


@router.get(
    "/checkpoints/key",
    response_model=SigningKeyOut,
    summary="The public key that signs checkpoints and exports",
    responses=problem_responses(401, 403),
)
async def signing_key(principal: AuditReader, settings: SettingsDep) -> SigningKeyOut:
    """The Ed25519 public key (PEM) of the checkpoints' and exports' signatures, and its id.
    Auditors and admins."""
    signer = checkpoints_service.Signer.of(settings)
    return SigningKeyOut(key_id=signer.key_id, public_key=signer.public_pem)


@router.get(
    "/checkpoints/keys",
    response_model=KnownKeysOut,
    summary="Every key that has signed checkpoints, and the current one",
    responses=problem_responses(401, 403),
)
async def signing_keys(
    principal: AuditReader, db: DbSession, settings: SettingsDep
) -> KnownKeysOut:
    """Every Ed25519 public key (PEM) that has signed a checkpoint, oldest first, and the
    one signing now (`current`): after `BANK_AUDIT_SIGNING_KEY` is rotated, checkpoints
    signed before are checked with the key they name (`key_id`). Keep a copy with the
    checkpoints; `bank verify --checkpoints FILE --public-key PEM …` takes them. Auditors and
    admins."""
    known = await checkpoints_service.known_keys(db, checkpoints_service.Signer.of(settings))
    return KnownKeysOut(items=[KnownKeyOut.model_validate(k) for k in known])


@router.get(
    "/export",
    summary="A period of the audit trail as signed JSON lines",
    response_class=Response,
    responses={
        **problem_responses(401, 403, 422, 429),
        200: {
            "description": "One record per line; `Audit-Signature`: Ed25519 over the body, base64",
            "content": {"application/x-ndjson": {}},
        },
    },
    dependencies=[AUDIT_EXPORT_LIMIT],
)
async def export(
    principal: AuditReader,
    database: DatabaseDep,
    settings: SettingsDep,
    from_: Annotated[IsoDate | None, Query(alias="from")] = None,
    to: Annotated[IsoDate | None, Query(description="Inclusive end date")] = None,
) -> Response:
    """Every record of a period (both days inclusive; default: all), in chain order, one JSON
    object per line (keys sorted), with an `Audit-Signature` header: the service's Ed25519
    signature over the exact body, base64. `bank verify --export FILE --signature SIG`
    checks it offline: the signature, each record's hash and each link. Auditors and
    admins; read-only."""
    filters = audit.LogFilter(since=day_start(from_), until=day_start(to, next_day=True))
    signer = checkpoints_service.Signer.of(settings)
    spooled = await checkpoints_service.spool_export(
        database, _export_batches(database, filters), signer
    )
    return StreamingResponse(
        spooled.pieces(),
        media_type="application/x-ndjson",
        headers={
            "Audit-Signature": spooled.signature,
            "Audit-Key-Id": signer.key_id,
            "Content-Length": str(spooled.size),
            "Content-Disposition": 'attachment; filename="audit-export.ndjson"',
        },
    )


async def _export_batches(
    database: Database, filters: audit.LogFilter
) -> AsyncIterator[list[dict[str, Any]]]:
    async for batch in audit.stream_records(database, filters=filters):
        yield [AuditRecordOut.model_validate(r).model_dump(mode="json") for r in batch]


@router.get(
    "/reports/summary",
    response_model=SummaryOut,
    response_model_by_alias=True,
    summary="The compliance report for a period (JSON, CSV or PDF)",
    responses={
        **problem_responses(401, 403, 422, 429),
        200: {"content": {"text/csv": {}, "application/pdf": {}}},
    },
    dependencies=[AUDIT_EXPORT_LIMIT],
)
async def summary_report(
    principal: AuditReader,
    db: DbSession,
    settings: SettingsDep,
    from_: Annotated[IsoDate, Query(alias="from", description="First day")],
    to: Annotated[IsoDate, Query(description="Last day, inclusive")],
    format: Literal["json", "csv", "pdf"] = "json",
) -> Any:
    """A period's movements by type and status (count and sum, from the journals), new
    customers by KYC outcome, fraud flags opened and resolved (by rule, with the median
    time to resolve), holds by outcome, loans by status and delinquency, every deposit,
    withdrawal and transfer of 10,000.00 or more (the cash-reporting threshold), admins'
    actions and the items waiting past their SLA. Both dates inclusive. Auditors and
    admins; read-only."""
    if to < from_:
        raise ValidationFailed("`to` is before `from`.", field="to")
    report = await reports.summary(db, since=from_, until=to)
    if format == "json":
        return SummaryOut.model_validate(report.body)
    return download(await reports.export(report, format, bank_name=settings.bank_name))
