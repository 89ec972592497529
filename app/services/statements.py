"""Account statements: opening balance, every entry of the period with its running
balance, totals in and out, closing balance (closing = opening + in − out, to the cent).
Rendered as JSON, CSV or PDF.

A statement may hold tens of thousands of entries, so its rows are read as plain Core
rows (no ORM objects), each formatted once into the API's entry shape while the totals
are summed in integer minor units; the CSV and the PDF are rendered from those strings.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import ValidationFailed
from app.models import Customer, Entry, Journal
from app.money import format_amount
from app.schemas.common import day_start
from app.security import Principal
from app.services import accounts, exports
from app.services.exports import Download, latin1

MAX_PERIOD_DAYS = 366 * 5

# Built once. Both are served by ix_entries_account_time (account_id, created_at); the
# entry id breaks ties between entries posted at the same instant.
_OPENING_BALANCE = (
    select(Entry.balance_after)
    .where(Entry.account_id == bindparam("account_id"), Entry.created_at < bindparam("start"))
    .order_by(Entry.created_at.desc(), Entry.id.desc())
    .limit(1)
)
_PERIOD_ENTRIES = (
    select(
        Entry.journal_id,
        Entry.created_at,
        Journal.kind,
        Journal.description,
        Entry.amount,
        Entry.balance_after,
    )
    .join(Journal, Journal.id == Entry.journal_id)
    .where(
        Entry.account_id == bindparam("account_id"),
        Entry.created_at >= bindparam("start"),
        Entry.created_at < bindparam("end"),
    )
    .order_by(Entry.created_at, Entry.id)
)


@dataclass(frozen=True, slots=True)
class Statement:
    bank_name: str
    account_number: str
    account_type: str
    currency: str
    customer_id: int
    customer_name: str
    period_from: date
    period_to: date
    opening_balance: int
    total_in: int
    total_out: int
    # The API's entry objects (StatementEntryOut), oldest first, already formatted.
    entries: list[dict[str, Any]]
    generated_at: datetime

    @property
    def closing_balance(self) -> int:
        return self.opening_balance + self.total_in - self.total_out


async def export(statement: Statement, format: Literal["csv", "pdf"]) -> Download:
    name = f"statement-{statement.account_number}-{statement.period_from}-{statement.period_to}"
    if format == "csv":
        return Download(f"{name}.csv", "text/csv", render_csv(statement))
    return Download(f"{name}.pdf", "application/pdf", await render_pdf(statement))


def period(since: date | None, until: date | None) -> tuple[date, date]:
    today = datetime.now(UTC).date()
    until = until or today
    since = since or until.replace(day=1)
    if since > until:
        raise ValidationFailed("`from` must not be after `to`.", field="from")
    if (until - since).days > MAX_PERIOD_DAYS:
        raise ValidationFailed(f"A statement covers at most {MAX_PERIOD_DAYS} days.", field="to")
    return since, until


def statement_entries(
    rows: Iterable[tuple[int, datetime, str, str | None, int, int]],
) -> tuple[list[dict[str, Any]], int, int]:
    """Entry rows (journal id, posted at, kind, description, signed amount, balance after)
    as API entries, with the totals in and out in minor units."""
    entries: list[dict[str, Any]] = []
    append = entries.append
    total_in = total_out = 0
    for journal_id, posted_at, kind, description, amount, balance in rows:
        if amount > 0:
            total_in += amount
        else:
            total_out -= amount
        append(
            {
                "transaction_id": str(journal_id),
                # UTC already (UTCDateTime): no conversion per row.
                "posted_at": posted_at.isoformat().replace("+00:00", "Z"),
                "type": kind,
                "description": description,
                "amount": format_amount(amount),
                "balance": format_amount(balance),
            }
        )
    return entries, total_in, total_out


async def build(
    db: AsyncSession,
    *,
    principal: Principal,
    account_number: str,
    since: date | None,
    until: date | None,
    bank_name: str,
) -> Statement:
    number = accounts.parse_number(account_number, field="account_number")
    since, until = period(since, until)
    start = day_start(since)
    end = day_start(until, next_day=True)
    assert start is not None and end is not None
    account = await accounts.get_account(db, principal=principal, number=number)
    customer_name = await db.scalar(
        select(Customer.full_name).where(Customer.id == account.customer_id)
    )
    assert customer_name is not None and account.customer_id is not None
    conn = await db.connection()
    opening = await conn.scalar(_OPENING_BALANCE, {"account_id": account.id, "start": start})
    rows = await conn.execute(
        _PERIOD_ENTRIES, {"account_id": account.id, "start": start, "end": end}
    )
    entries, total_in, total_out = statement_entries(rows)
    return Statement(
        bank_name=bank_name,
        account_number=number,
        account_type=account.type,
        currency=account.currency,
        customer_id=account.customer_id,
        customer_name=customer_name,
        period_from=since,
        period_to=until,
        opening_balance=opening or 0,
        total_in=total_in,
        total_out=total_out,
        entries=entries,
        generated_at=datetime.now(UTC),
    )


CSV_COLUMNS = ["posted_at", "transaction_id", "type", "description", "amount", "balance"]


def render_csv(statement: Statement) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    opening = format_amount(statement.opening_balance)
    writer.writerow((statement.period_from.isoformat(), "", "opening_balance", "", "", opening))
    writer.writerows([entry[column] for column in CSV_COLUMNS] for entry in statement.entries)
    closing = format_amount(statement.closing_balance)
    writer.writerow((statement.period_to.isoformat(), "", "closing_balance", "", "", closing))
    return buffer.getvalue()


# A row of the PDF's table is 111 characters (exports.table_pdf sets it in Courier).
W_ID, W_TYPE, W_TEXT, W_MONEY = 11, 10, 31, 15  # characters; the time takes 19
GAP = "  "
PDF_HEADING = GAP.join(
    (
        "Posted (UTC)".ljust(19),
        "Transaction".rjust(W_ID),
        "Type".ljust(W_TYPE),
        "Description".ljust(W_TEXT),
        "Amount".rjust(W_MONEY),
        "Balance".rjust(W_MONEY),
    )
)


def pdf_lines(statement: Statement) -> list[str]:
    """The entry table's rows as fixed-width text, oldest first. A value wider than its
    column (a balance above 10^12) pushes the rest of its row right; none is cut."""
    return [
        f"{e['posted_at'][:10]} {e['posted_at'][11:19]}{GAP}"
        f"{e['transaction_id']:>{W_ID}}{GAP}{e['type']:<{W_TYPE}}{GAP}"
        f"{latin1(e['description'])[:W_TEXT]:<{W_TEXT}}{GAP}"
        f"{e['amount']:>{W_MONEY}}{GAP}{e['balance']:>{W_MONEY}}"
        for e in statement.entries
    ]


def _pdf_heading(statement: Statement) -> list[tuple[str, str]]:
    return [
        ("Customer", f"{statement.customer_name} ({statement.customer_id})"),
        ("Account", f"{statement.account_number} ({statement.account_type}, {statement.currency})"),
        ("Period", f"{statement.period_from.isoformat()} to {statement.period_to.isoformat()}"),
        ("Opening balance", format_amount(statement.opening_balance)),
        ("Total in", format_amount(statement.total_in)),
        ("Total out", format_amount(statement.total_out)),
        ("Closing balance", format_amount(statement.closing_balance)),
        ("Entries", str(len(statement.entries))),
    ]


async def render_pdf(statement: Statement) -> bytes:
    return await exports.table_pdf(
        f"Statement {statement.account_number}",
        _pdf_heading(statement),
        PDF_HEADING,
        pdf_lines(statement),
        heading=statement.bank_name,
    )
