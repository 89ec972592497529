"""The compliance report (API.md §8): a period's movements by type and status, new
customers by KYC outcome, fraud flags, holds, loans by status and delinquency, every
movement at or above the cash-reporting threshold, staff actions and SLA breaches.
Every money figure is read from the journals themselves, so it reconciles with the
ledger."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import database_of, read_snapshot
from app.models import (
    AuditRecord,
    Customer,
    Flag,
    FlagStatus,
    Hold,
    Installment,
    Journal,
    JournalKind,
    Loan,
    LoanStatus,
    Repayment,
    Role,
)
from app.money import format_amount
from app.schemas.common import day_start, iso_utc
from app.services import exports, inbox, loan_book
from app.services.history import views_of

CASH_REPORTING_MINOR = 1_000_000  # 10,000.00: movements at or above it are listed
LARGE_MOVEMENTS_SHOWN = 1000
MOVEMENTS = (JournalKind.deposit, JournalKind.withdrawal, JournalKind.transfer)


@dataclass(frozen=True, slots=True)
class Summary:
    since: date
    until: date
    body: dict[str, Any]


async def summary(db: AsyncSession, *, since: date, until: date) -> Summary:
    """The report for the days `since` to `until`, both inclusive, in one snapshot."""
    start, end = day_start(since), day_start(until, next_day=True)
    assert start is not None and end is not None
    await read_snapshot(db)
    in_period = (Journal.created_at >= start, Journal.created_at < end)
    movements = await db.execute(
        select(Journal.kind, Journal.status, func.count(), func.sum(Journal.amount))
        .where(*in_period)
        .group_by(Journal.kind, Journal.status)
        .order_by(Journal.kind, Journal.status)
    )
    transactions = [
        {"type": kind, "status": status, "count": n, "sum": format_amount(int(total or 0))}
        for kind, status, n, total in movements
    ]
    registered = await db.execute(
        select(Customer.kyc_status, func.count())
        .where(Customer.created_at >= start, Customer.created_at < end)
        .group_by(Customer.kyc_status)
        .order_by(Customer.kyc_status)
    )
    customers = [{"kyc_outcome": status, "count": n} for status, n in registered]
    flags = await _flags(db, start, end)
    held = await db.execute(
        select(Hold.status, func.count(), func.sum(Hold.amount))
        .where(Hold.created_at >= start, Hold.created_at < end)
        .group_by(Hold.status)
        .order_by(Hold.status)
    )
    holds = [
        {"outcome": status, "count": n, "sum": format_amount(int(total or 0))}
        for status, n, total in held
    ]
    now = database_of(db).clock()
    loans = await _loans(db, end, until, now)
    large = list(
        (
            await db.scalars(
                select(Journal)
                .where(*in_period, Journal.kind.in_(MOVEMENTS))
                .where(Journal.amount >= CASH_REPORTING_MINOR)
                .order_by(Journal.id)
                .limit(LARGE_MOVEMENTS_SHOWN + 1)
            )
        ).all()
    )
    truncated = len(large) > LARGE_MOVEMENTS_SHOWN
    large = large[:LARGE_MOVEMENTS_SHOWN]
    large_views = await views_of(db, large, of=lambda _, __: False)
    staff = await db.execute(
        select(AuditRecord.actor_id, AuditRecord.action, func.count())
        .where(
            AuditRecord.at >= start,
            AuditRecord.at < end,
            AuditRecord.actor_role == Role.admin,
        )
        .group_by(AuditRecord.actor_id, AuditRecord.action)
        .order_by(AuditRecord.actor_id, AuditRecord.action)
    )
    waiting = await inbox.list_items(
        db, kind=None, assigned_to=None, unassigned=False, cursor=None, limit=100_000
    )
    body = {
        "from": since.isoformat(),
        "to": until.isoformat(),
        "transactions": transactions,
        "customers": customers,
        "flags": flags,
        "holds": holds,
        "loans": loans,
        "large_movements": [
            {**_view(v), "customer_id": str(j.customer_id) if j.customer_id else None}
            for v, j in zip(large_views, large, strict=True)
        ],
        "large_movements_truncated": truncated,
        "staff_actions": [{"actor_id": a, "action": act, "count": n} for a, act, n in staff],
        "sla_breaches": sum(1 for item in waiting.items if item.overdue),
        "as_of": iso_utc(now),
    }
    return Summary(since, until, body)


def _view(view: Any) -> dict[str, Any]:
    return {name: getattr(view, name) for name in view.__slots__}


async def _flags(db: AsyncSession, start: datetime, end: datetime) -> dict[str, Any]:
    opened = await db.execute(
        select(Flag.rule_codes).where(Flag.created_at >= start, Flag.created_at < end)
    )
    by_rule: dict[str, int] = {}
    count = 0
    for (codes,) in opened:
        count += 1
        for code in codes or []:
            by_rule[code] = by_rule.get(code, 0) + 1
    resolved = (
        await db.execute(
            select(Flag.created_at, Flag.resolved_at).where(
                Flag.status == FlagStatus.resolved,
                Flag.resolved_at >= start,
                Flag.resolved_at < end,
            )
        )
    ).all()
    minutes = [(done - made).total_seconds() / 60 for made, done in resolved]
    return {
        "opened": count,
        "resolved": len(resolved),
        "by_rule": [{"rule": code, "opened": n} for code, n in sorted(by_rule.items())],
        "median_minutes_to_resolve": round(statistics.median(minutes), 1) if minutes else None,
    }


async def _loans(
    db: AsyncSession, end: datetime, until: date, now: datetime
) -> list[dict[str, Any]]:
    """Loans applied for by the period's end, as they stood at its last day (today, for a
    period not over): pending until paid out; then active, or paid off once the
    principal repaid by that day is the whole principal; the principal outstanding then;
    and for active ones the delinquency then (the oldest installment due before that day
    and not settled by it). Rejections and withdrawals count from when they were made.
    Days are loan days (`paid_on`, `settled_on`, due dates), as the loans work them out."""
    cutoff, day = min(end, now), min(until, now.date())
    repaid = dict(
        (
            await db.execute(
                select(Repayment.loan_id, func.sum(Repayment.principal))
                .where(Repayment.paid_on <= day)
                .group_by(Repayment.loan_id)
            )
        ).all()
    )
    late = (
        select(Installment.loan_id, func.min(Installment.due_date).label("oldest"))
        .where(
            Installment.due_date < day,
            ~Installment.settled | (Installment.settled_on > day),
        )
        .group_by(Installment.loan_id)
        .subquery()
    )
    rows = await db.execute(
        select(
            Loan.id,
            Loan.status,
            Loan.principal,
            Loan.decided_at,
            Loan.disbursed_on,
            late.c.oldest,
        )
        .outerjoin(late, late.c.loan_id == Loan.id)
        .where(Loan.created_at < cutoff)
    )
    groups: dict[tuple[str, str], list[int]] = {}
    for loan_id, status, principal, decided_at, disbursed_on, oldest in rows:
        outstanding, bucket = 0, "current"
        if status in (LoanStatus.rejected, LoanStatus.withdrawn):
            status = (
                status if decided_at is not None and decided_at < cutoff else LoanStatus.pending
            )
        elif disbursed_on is None or disbursed_on > day:
            status = LoanStatus.pending
        else:
            outstanding = principal - int(repaid.get(loan_id) or 0)
            status = LoanStatus.active if outstanding > 0 else LoanStatus.paid_off
            if status == LoanStatus.active and oldest is not None:
                bucket = loan_book.Arrears(0, (day - oldest).days).delinquency
        entry = groups.setdefault((str(status), bucket), [0, 0])
        entry[0] += 1
        entry[1] += outstanding
    return [
        {"status": s, "delinquency": d, "count": n, "outstanding": format_amount(total)}
        for (s, d), (n, total) in sorted(groups.items())
    ]


CSV_COLUMNS = ["section", "key", "detail", "count", "amount"]


def csv_rows(report: Summary) -> list[dict[str, Any]]:
    b = report.body
    rows: list[dict[str, Any]] = []
    rows += [
        {
            "section": "transactions",
            "key": t["type"],
            "detail": t["status"],
            "count": t["count"],
            "amount": t["sum"],
        }
        for t in b["transactions"]
    ]
    rows += [
        {"section": "customers", "key": c["kyc_outcome"], "count": c["count"]}
        for c in b["customers"]
    ]
    f = b["flags"]
    rows += [
        {"section": "flags", "key": "opened", "count": f["opened"]},
        {"section": "flags", "key": "resolved", "count": f["resolved"]},
        {
            "section": "flags",
            "key": "median_minutes_to_resolve",
            "detail": f["median_minutes_to_resolve"],
        },
    ]
    rows += [
        {"section": "flags_by_rule", "key": r["rule"], "count": r["opened"]} for r in f["by_rule"]
    ]
    rows += [
        {"section": "holds", "key": h["outcome"], "count": h["count"], "amount": h["sum"]}
        for h in b["holds"]
    ]
    rows += [
        {
            "section": "loans",
            "key": x["status"],
            "detail": x["delinquency"],
            "count": x["count"],
            "amount": x["outstanding"],
        }
        for x in b["loans"]
    ]
    rows += [
        {
            "section": "large_movements",
            "key": m["transaction_id"],
            "detail": m["type"],
            "count": 1,
            "amount": m["amount"],
        }
        for m in b["large_movements"]
    ]
    rows += [
        {
            "section": "staff_actions",
            "key": s["actor_id"],
            "detail": s["action"],
            "count": s["count"],
        }
        for s in b["staff_actions"]
    ]
    rows.append({"section": "sla_breaches", "count": b["sla_breaches"]})
    rows.append({"section": "as_of", "key": b["as_of"]})
    return rows


async def export(report: Summary, format: str, *, bank_name: str) -> exports.Download:
    name = f"summary-{report.since.isoformat()}-{report.until.isoformat()}"
    rows = csv_rows(report)
    if format == "csv":
        return exports.csv_download(f"{name}.csv", CSV_COLUMNS, rows)
    widths = (16, 24, 24, 8, 16)
    header = "  ".join(c.ljust(w) for c, w in zip(CSV_COLUMNS, widths, strict=True))
    lines = [
        "  ".join(
            exports.latin1(str(row.get(c, "") if row.get(c) is not None else ""))[:w].ljust(w)
            for c, w in zip(CSV_COLUMNS, widths, strict=True)
        )
        for row in rows
    ]
    pairs = [
        ("Period", f"{report.since.isoformat()} to {report.until.isoformat()}"),
        ("Generated", report.body["as_of"]),  # the SLA breaches are as of then
    ]
    content = await exports.table_pdf(
        f"Compliance summary {name}", pairs, header, lines, heading=bank_name
    )
    return exports.Download(f"{name}.pdf", "application/pdf", content)
