"""Account statements: opening balance, every entry of the period with its running
balance, totals in and out, closing balance (closing = opening + in − out, to the cent).
Rendered as JSON, CSV or PDF."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import anyio
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import ValidationFailed
from app.models import Customer, Entry, Journal
from app.money import format_amount
from app.security import Principal
from app.services import accounts

MAX_PERIOD_DAYS = 366 * 5


@dataclass(frozen=True, slots=True)
class StatementLine:
    transaction_id: int
    posted_at: datetime
    type: str
    description: str | None
    amount: int  # signed: + in, − out
    balance: int


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
    lines: list[StatementLine]
    generated_at: datetime

    @property
    def total_in(self) -> int:
        return sum(line.amount for line in self.lines if line.amount > 0)

    @property
    def total_out(self) -> int:
        return -sum(line.amount for line in self.lines if line.amount < 0)

    @property
    def closing_balance(self) -> int:
        return self.opening_balance + self.total_in - self.total_out

    def as_dict(self) -> dict[str, Any]:
        return {
            "account_number": self.account_number,
            "account_type": self.account_type,
            "currency": self.currency,
            "customer_id": str(self.customer_id),
            "customer_name": self.customer_name,
            "from": self.period_from.isoformat(),
            "to": self.period_to.isoformat(),
            "opening_balance": format_amount(self.opening_balance),
            "total_in": format_amount(self.total_in),
            "total_out": format_amount(self.total_out),
            "closing_balance": format_amount(self.closing_balance),
            "entries": [
                {
                    "transaction_id": str(line.transaction_id),
                    "posted_at": line.posted_at.isoformat().replace("+00:00", "Z"),
                    "type": line.type,
                    "description": line.description,
                    "amount": format_amount(line.amount),
                    "balance": format_amount(line.balance),
                }
                for line in self.lines
            ],
            "generated_at": self.generated_at.isoformat().replace("+00:00", "Z"),
        }


def period(since: date | None, until: date | None) -> tuple[date, date]:
    today = datetime.now(UTC).date()
    until = until or today
    since = since or until.replace(day=1)
    if since > until:
        raise ValidationFailed("`from` must not be after `to`.", field="from")
    if (until - since).days > MAX_PERIOD_DAYS:
        raise ValidationFailed(f"A statement covers at most {MAX_PERIOD_DAYS} days.", field="to")
    return since, until


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
    start = datetime.combine(since, time.min, tzinfo=UTC)
    end = datetime.combine(until + timedelta(days=1), time.min, tzinfo=UTC)
    account = await accounts.get_account(db, principal=principal, number=number)
    customer = await db.get(Customer, account.customer_id)
    assert customer is not None
    opening = await db.scalar(
        select(Entry.balance_after)
        .where(Entry.account_id == account.id, Entry.created_at < start)
        .order_by(Entry.created_at.desc(), Entry.id.desc())
        .limit(1)
    )
    rows = await db.execute(
        select(
            Entry.journal_id,
            Entry.created_at,
            Journal.kind,
            Journal.description,
            Entry.amount,
            Entry.balance_after,
        )
        .join(Journal, Journal.id == Entry.journal_id)
        .where(Entry.account_id == account.id, Entry.created_at >= start, Entry.created_at < end)
        .order_by(Entry.created_at, Entry.id)
    )
    lines = [StatementLine(*row) for row in rows]
    return Statement(
        bank_name=bank_name,
        account_number=number,
        account_type=account.type,
        currency=account.currency,
        customer_id=customer.id,
        customer_name=customer.full_name,
        period_from=since,
        period_to=until,
        opening_balance=opening or 0,
        lines=lines,
        generated_at=datetime.now(UTC),
    )


CSV_COLUMNS = ["posted_at", "transaction_id", "type", "description", "amount", "balance"]


def render_csv(statement: Statement) -> str:
    data = statement.as_dict()
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerow(
        {"posted_at": data["from"], "type": "opening_balance", "balance": data["opening_balance"]}
    )
    for entry in data["entries"]:
        writer.writerow({column: entry[column] for column in CSV_COLUMNS})
    writer.writerow(
        {"posted_at": data["to"], "type": "closing_balance", "balance": data["closing_balance"]}
    )
    return buffer.getvalue()


def _latin1(text: str | None) -> str:
    return (text or "").encode("latin-1", "replace").decode("latin-1")


def _render_pdf(statement: Statement) -> bytes:
    # Imported here: fpdf2 takes most of a second to import, which every worker would pay
    # at start-up for a feature most requests never use.
    from fpdf import FPDF

    data = statement.as_dict()
    pdf = FPDF(orientation="P", unit="mm", format="A4")
    pdf.set_title(f"Statement {statement.account_number}")
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.alias_nb_pages()

    def footer() -> None:
        pdf.set_y(-12)
        pdf.set_font("Helvetica", size=8)
        pdf.cell(0, 6, f"Page {pdf.page_no()} of {{nb}}", align="C")

    pdf.footer = footer  # type: ignore[method-assign]
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 10, _latin1(statement.bank_name), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=10)
    for label, value in (
        ("Customer", f"{statement.customer_name} ({statement.customer_id})"),
        ("Account", f"{statement.account_number} ({statement.account_type}, {statement.currency})"),
        ("Period", f"{data['from']} to {data['to']}"),
        ("Opening balance", data["opening_balance"]),
        ("Total in", data["total_in"]),
        ("Total out", data["total_out"]),
        ("Closing balance", data["closing_balance"]),
    ):
        pdf.cell(40, 6, label)
        pdf.cell(0, 6, _latin1(value), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    widths = (38, 22, 22, 60, 24, 24)
    headers = ("Posted (UTC)", "Txn", "Type", "Description", "Amount", "Balance")

    def header_row() -> None:
        pdf.set_font("Helvetica", "B", 9)
        for width, title in zip(widths, headers, strict=True):
            pdf.cell(
                width, 6, title, border="B", align="R" if title in ("Amount", "Balance") else "L"
            )
        pdf.ln()
        pdf.set_font("Helvetica", size=8)

    header_row()
    for entry in data["entries"]:
        if pdf.will_page_break(6):
            pdf.add_page()
            header_row()
        values = (
            entry["posted_at"][:19].replace("T", " "),
            entry["transaction_id"],
            entry["type"],
            _latin1(entry["description"])[:40],
            entry["amount"],
            entry["balance"],
        )
        for index, (width, value) in enumerate(zip(widths, values, strict=True)):
            pdf.cell(width, 6, value, align="R" if index >= 4 else "L")
        pdf.ln()
    return bytes(pdf.output())


async def render_pdf(statement: Statement) -> bytes:
    return await anyio.to_thread.run_sync(_render_pdf, statement)
