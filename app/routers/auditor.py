"""Read-only endpoints for auditors (admins may read too)."""

from __future__ import annotations

import csv
import io
import json
from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from app.deps import AuditReader, DbSession
from app.schemas.audit import AuditRecordOut, ChainVerificationOut
from app.schemas.common import Page, day_start, problem_responses
from app.schemas.ledger import LedgerReportOut
from app.services import audit, reconciliation
from app.services.pagination import decode_cursor, encode_cursor

router = APIRouter(prefix="/api/audit", tags=["audit"])

CSV_COLUMNS = list(AuditRecordOut.model_fields)
# A cell starting like this is run as a formula by spreadsheets (CSV injection), and the
# log holds client-chosen text (path ids, usernames): such cells get a leading quote.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: object) -> object:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


@router.get(
    "/logs",
    response_model=Page[AuditRecordOut],
    summary="The audit trail, filtered, oldest first (JSON or CSV)",
    responses={**problem_responses(401, 403, 422), 200: {"content": {"text/csv": {}}}},
)
async def logs(
    principal: AuditReader,
    db: DbSession,
    actor: str | None = None,
    action: str | None = None,
    entity_type: str | None = None,
    entity_id: str | None = None,
    from_: Annotated[date | None, Query(alias="from")] = None,
    to: Annotated[date | None, Query(description="Inclusive end date")] = None,
    format: Literal["json", "csv"] = "json",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> object:
    filters = audit.LogFilter(
        actor, action, entity_type, entity_id, day_start(from_), day_start(to, next_day=True)
    )
    records = await audit.list_records(
        db, filters=filters, after_seq=decode_cursor(cursor), limit=limit + 1
    )
    more = len(records) > limit
    records = records[:limit]
    items = [AuditRecordOut.model_validate(r) for r in records]
    next_cursor = encode_cursor(records[-1].seq) if more and records else None
    if format == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for item in items:
            writer.writerow({k: _csv_cell(v) for k, v in item.model_dump(mode="json").items()})
        headers = {"Content-Disposition": 'attachment; filename="audit-log.csv"'}
        if next_cursor:
            headers["X-Next-Cursor"] = next_cursor
        return Response(buffer.getvalue(), media_type="text/csv", headers=headers)
    return Page[AuditRecordOut](items=items, next_cursor=next_cursor)


@router.get(
    "/verify",
    response_model=ChainVerificationOut,
    summary="Recompute the audit hash chain",
    responses=problem_responses(401, 403),
)
async def verify(principal: AuditReader, db: DbSession) -> ChainVerificationOut:
    report = await audit.verify_chain(db)
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
    report = await reconciliation.verify_ledger(db)
    return LedgerReportOut(
        balanced=report.balanced,
        journals_checked=report.journals_checked,
        accounts_checked=report.accounts_checked,
        mismatches=report.mismatches,
        totals=report.totals,
    )
