"""Transaction history and account statements (API.md §4-5; issue 3, item 6).

Movements are posted at chosen past times by freezing the ledger's clock, so periods,
opening balances and date filters can be checked against known values."""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from pypdf import PdfReader
from sqlalchemy import inspect

from app.money import format_amount
from app.routers.customer import statement_out
from app.services import history, statements
from tests.ledger_helpers import (
    amount,
    balance,
    cents,
    denied_audits,
    deposit,
    deposited,
    funded_account,
    is_money,
    ledger_clock,
    open_account,
    problem,
    transfer,
    withdraw,
)

D1 = datetime(2025, 3, 5, 10, 0, tzinfo=UTC)
D2 = datetime(2025, 3, 20, 15, 30, tzinfo=UTC)
D3 = datetime(2025, 4, 2, 9, 0, tzinfo=UTC)


async def post_history(bank, monkeypatch):  # type: ignore[no-untyped-def]
    """Customer A's account sees: D1 +1000.00, -150.25; D2 -200.10, +75.05; D3 +10.00."""
    customer, headers = await bank.customer(full_name="Stella Statement")
    number = (await open_account(bank.client, headers, "savings"))["account_number"]
    _, other_headers, other = await funded_account(bank, "500.00")
    ids = []
    with ledger_clock(monkeypatch, D1):
        ids.append((await deposited(bank.client, headers, number, "1000.00"))["transaction_id"])
        ids.append(
            (await withdraw(bank.client, headers, number, "150.25")).json()["transaction_id"]
        )
    with ledger_clock(monkeypatch, D2):
        ids.append(
            (await transfer(bank.client, headers, number, other, "200.10")).json()["transaction_id"]
        )
        ids.append(
            (await transfer(bank.client, other_headers, other, number, "75.05")).json()[
                "transaction_id"
            ]
        )
    with ledger_clock(monkeypatch, D3):
        ids.append((await deposited(bank.client, headers, number, "10.00"))["transaction_id"])
    return customer, headers, number, ids


async def get_statement(bank, headers, number, since, until, fmt="json"):  # type: ignore[no-untyped-def]
    return await bank.client.get(
        f"/api/accounts/{number}/statement",
        params={"from": since.isoformat(), "to": until.isoformat(), "format": fmt},
        headers=headers,
    )


def check_arithmetic(statement: dict) -> None:
    """Running balances step from the opening balance; closing = opening + in - out."""
    running = cents(statement["opening_balance"])
    total_in = total_out = 0
    for entry in statement["entries"]:
        value = cents(entry["amount"])
        running += value
        total_in += max(value, 0)
        total_out += max(-value, 0)
        assert cents(entry["balance"]) == running, statement
    assert cents(statement["total_in"]) == total_in
    assert cents(statement["total_out"]) == total_out
    assert cents(statement["closing_balance"]) == running
    opening, closing = Decimal(statement["opening_balance"]), Decimal(statement["closing_balance"])
    assert opening + Decimal(statement["total_in"]) - Decimal(statement["total_out"]) == closing


def csv_totals(text: str) -> dict[str, object]:
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[0]["type"] == "opening_balance" and rows[-1]["type"] == "closing_balance"
    entries = rows[1:-1]
    amounts = [cents(row["amount"]) for row in entries]
    running = cents(rows[0]["balance"])
    for row, value in zip(entries, amounts, strict=True):
        running += value
        assert cents(row["balance"]) == running
    return {
        "opening_balance": rows[0]["balance"],
        "total_in": amount(sum(a for a in amounts if a > 0)),
        "total_out": amount(-sum(a for a in amounts if a < 0)),
        "closing_balance": rows[-1]["balance"],
        "transaction_ids": [row["transaction_id"] for row in entries],
    }


def pdf_text(content: bytes) -> str:
    assert content.startswith(b"%PDF")
    reader = PdfReader(io.BytesIO(content))
    return "\n".join(page.extract_text() for page in reader.pages)


async def test_statement_totals_agree_in_json_csv_and_pdf(bank, monkeypatch):
    customer, headers, number, ids = await post_history(bank, monkeypatch)
    march = (date(2025, 3, 1), date(2025, 3, 31))

    response = await get_statement(bank, headers, number, *march)
    assert response.status_code == 200, response.text
    statement = response.json()
    assert statement["account_number"] == number
    assert statement["customer_id"] == customer["customer_id"]
    assert statement["customer_name"] == "Stella Statement"
    assert statement["currency"] == "USD"
    assert (statement["from"], statement["to"]) == ("2025-03-01", "2025-03-31")
    assert statement["opening_balance"] == "0.00"
    assert statement["total_in"] == "1075.05"
    assert statement["total_out"] == "350.35"
    assert statement["closing_balance"] == "724.70"
    assert [e["transaction_id"] for e in statement["entries"]] == ids[:4]
    assert [e["amount"] for e in statement["entries"]] == ["1000.00", "-150.25", "-200.10", "75.05"]
    assert [e["type"] for e in statement["entries"]] == [
        "deposit",
        "withdrawal",
        "transfer",
        "transfer",
    ]
    assert all(is_money(e["balance"]) for e in statement["entries"])
    check_arithmetic(statement)

    as_csv = await get_statement(bank, headers, number, *march, fmt="csv")
    assert as_csv.status_code == 200
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert as_csv.headers["content-disposition"].startswith("attachment")
    assert number in as_csv.headers["content-disposition"]
    assert csv_totals(as_csv.text) == {
        "opening_balance": "0.00",
        "total_in": "1075.05",
        "total_out": "350.35",
        "closing_balance": "724.70",
        "transaction_ids": ids[:4],
    }

    as_pdf = await get_statement(bank, headers, number, *march, fmt="pdf")
    assert as_pdf.status_code == 200
    assert as_pdf.headers["content-type"] == "application/pdf"
    assert as_pdf.headers["content-disposition"].startswith("attachment")
    text = pdf_text(as_pdf.content)
    for expected in (
        number,
        "Open Core Bank",
        "Stella Statement",
        "2025-03-01",
        "2025-03-31",
        "1075.05",
        "350.35",
        "724.70",
        "-150.25",
        "Page 1 of 1",
    ):
        assert expected in text, expected


async def test_statement_of_a_later_period_opens_with_the_earlier_balance(bank, monkeypatch):
    _, headers, number, ids = await post_history(bank, monkeypatch)

    later = (await get_statement(bank, headers, number, date(2025, 3, 6), date(2025, 4, 30))).json()
    assert later["opening_balance"] == "849.75"
    assert [e["transaction_id"] for e in later["entries"]] == ids[2:]
    assert (later["total_in"], later["total_out"]) == ("85.05", "200.10")
    assert later["closing_balance"] == "734.70"
    check_arithmetic(later)
    as_csv = await get_statement(bank, headers, number, date(2025, 3, 6), date(2025, 4, 30), "csv")
    assert csv_totals(as_csv.text)["opening_balance"] == "849.75"
    as_pdf = await get_statement(bank, headers, number, date(2025, 3, 6), date(2025, 4, 30), "pdf")
    assert "849.75" in pdf_text(as_pdf.content)

    # `to` is inclusive and `from` starts at midnight UTC.
    one_day = (await get_statement(bank, headers, number, D2.date(), D2.date())).json()
    assert [e["transaction_id"] for e in one_day["entries"]] == ids[2:4]
    assert (one_day["opening_balance"], one_day["closing_balance"]) == ("849.75", "724.70")

    before = (await get_statement(bank, headers, number, date(2025, 1, 1), date(2025, 3, 4))).json()
    assert before["entries"] == []
    assert before["opening_balance"] == before["closing_balance"] == "0.00"

    since = (
        await get_statement(bank, headers, number, date(2025, 5, 1), date(2025, 12, 31))
    ).json()
    assert since["entries"] == []
    assert since["opening_balance"] == since["closing_balance"] == "734.70"
    assert await balance(bank.client, headers, number) == "734.70"


async def test_statement_entries_at_the_same_instant_keep_posting_order(bank, monkeypatch):
    _, headers, number = await funded_account(bank, "0.00")
    with ledger_clock(monkeypatch, D1):
        ids = [
            (await deposited(bank.client, headers, number, f"{n}.00"))["transaction_id"]
            for n in range(1, 6)
        ]
        ids.append((await withdraw(bank.client, headers, number, "15.00")).json()["transaction_id"])
    statement = (await get_statement(bank, headers, number, D1.date(), D1.date())).json()
    assert [e["transaction_id"] for e in statement["entries"]] == ids
    assert [e["balance"] for e in statement["entries"]] == [
        "1.00",
        "3.00",
        "6.00",
        "10.00",
        "15.00",
        "0.00",
    ]
    again = (await get_statement(bank, headers, number, D1.date(), D1.date())).json()
    assert again["entries"] == statement["entries"]


async def test_long_statement_pdf_numbers_its_pages(bank, monkeypatch):
    _, headers, number = await funded_account(bank, "0.00")
    with ledger_clock(monkeypatch, D1):
        for n in range(40):
            await deposited(bank.client, headers, number, f"{n + 1}.01")
    response = await get_statement(bank, headers, number, D1.date(), D1.date(), "pdf")
    reader = PdfReader(io.BytesIO(response.content))
    pages = len(reader.pages)
    assert pages >= 2
    text = pdf_text(response.content)
    for page in range(1, pages + 1):
        assert f"Page {page} of {pages}" in text
    total = sum(n + 1 for n in range(40)) + Decimal("0.40")
    assert f"{total:.2f}" in text  # total in and the closing balance
    json_statement = (await get_statement(bank, headers, number, D1.date(), D1.date())).json()
    assert json_statement["closing_balance"] == f"{total:.2f}"
    assert len(json_statement["entries"]) == 40


async def test_statement_requests_are_validated_and_private(bank, app):
    _, headers, number = await funded_account(bank, "10.00")
    _, other_headers = await bank.customer()
    hidden = await get_statement(bank, other_headers, number, date(2025, 1, 1), date(2025, 1, 31))
    problem(hidden, 404, "account_not_found")
    assert len(await denied_audits(app, "account.read", number)) == 1
    backwards = await get_statement(bank, headers, number, date(2025, 2, 1), date(2025, 1, 1))
    problem(backwards, 422, "validation_error")
    pdf_of_other = await get_statement(
        bank, other_headers, number, date(2025, 1, 1), date(2025, 1, 31), "pdf"
    )
    problem(pdf_of_other, 404, "account_not_found")
    bad_format = await bank.client.get(
        f"/api/accounts/{number}/statement", params={"format": "xml"}, headers=headers
    )
    problem(bad_format, 422, "validation_error")
    default_period = await bank.client.get(f"/api/accounts/{number}/statement", headers=headers)
    assert default_period.status_code == 200
    assert default_period.json()["to"] == datetime.now(UTC).date().isoformat()
    assert default_period.json()["closing_balance"] == "10.00"


def synthetic_statement(count: int) -> statements.Statement:
    """A statement of `count` entries without a database: every third one is a
    withdrawal with a long, partly non-Latin-1 description."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows, running = [], 5_000_000
    for n in range(count):
        value = -(n % 97 + 1) if n % 3 == 2 else n * 13 % 9_000 + 1
        running += value
        description = "Miete Januar, Straße 5 — Wohnung 12 " * 3 if n % 3 == 2 else None
        kind = "withdrawal" if n % 3 == 2 else "deposit"
        rows.append((1_000 + n, start + timedelta(minutes=n), kind, description, value, running))
    entries, total_in, total_out = statements.statement_entries(rows)
    return statements.Statement(
        bank_name="Open Core Bank",
        account_number="100000000017",
        account_type="checking",
        currency="USD",
        customer_id=1001,
        customer_name="Stella Statement",
        period_from=date(2026, 1, 1),
        period_to=date(2026, 1, 31),
        opening_balance=5_000_000,
        total_in=total_in,
        total_out=total_out,
        entries=entries,
        generated_at=start,
    )


PDF_ROW = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d +(\d+) +(\w+) +(.*?) +(-?\d+\.\d\d) +(-?\d+\.\d\d)$"
)


async def test_statement_pdf_of_many_entries_has_every_row_once_on_numbered_pages():
    statement = synthetic_statement(1_500)
    reader = PdfReader(io.BytesIO(await statements.render_pdf(statement)))
    pages = len(reader.pages)
    rows, numbered = [], 0
    for index, page in enumerate(reader.pages, start=1):
        text = page.extract_text()
        numbered += f"Page {index} of {pages}" in text
        rows += [m.groups() for line in text.splitlines() if (m := PDF_ROW.match(line.strip()))]
    assert pages >= 25 and numbered == pages
    assert [row[0] for row in rows] == [e["transaction_id"] for e in statement.entries]
    assert [(row[3], row[4]) for row in rows] == [
        (e["amount"], e["balance"]) for e in statement.entries
    ]
    # Descriptions are cut to the column and printed in Latin-1 ('?' for the rest).
    assert rows[2][2] == "Miete Januar, Straße 5 ? Wohnun"
    first_page = reader.pages[0].extract_text()
    closing = format_amount(statement.closing_balance)
    for expected in ("Open Core Bank", "Stella Statement (1001)", "2026-01-01 to 2026-01-31"):
        assert expected in first_page
    assert f"Closingbalance{closing}" in first_page.replace(" ", "")
    assert statement.entries[-1]["balance"] == closing


def test_statement_entries_total_in_and_out_in_minor_units():
    statement = synthetic_statement(1_000)
    amounts = [int(e["amount"].replace(".", "")) for e in statement.entries]
    assert statement.total_in == sum(a for a in amounts if a > 0)
    assert statement.total_out == -sum(a for a in amounts if a < 0)
    assert statement.closing_balance == 5_000_000 + sum(amounts)
    data = statement_out(statement).model_dump(mode="json", by_alias=True)
    check_arithmetic(data)
    assert data["entries"][0] == {
        "transaction_id": "1000",
        "posted_at": "2026-01-01T00:00:00Z",
        "type": "deposit",
        "description": None,
        "amount": "0.01",
        "balance": "50000.01",
    }
    as_csv = csv_totals(statements.render_csv(statement))
    assert as_csv["closing_balance"] == data["closing_balance"]
    assert (as_csv["total_in"], as_csv["total_out"]) == (data["total_in"], data["total_out"])


def test_statement_pdf_row_keeps_amounts_wider_than_their_column():
    statement = synthetic_statement(1)
    entry = {**statement.entries[0], "amount": "-98765432109876.54", "balance": "1.00"}
    (line,) = statements.pdf_lines(dataclasses.replace(statement, entries=[entry]))
    assert "-98765432109876.54" in line and line.endswith("1.00")


async def test_statement_of_many_movements_agrees_with_the_account(bank, monkeypatch):
    _, headers, number = await funded_account(bank, "0.00")
    _, _, other = await funded_account(bank, "0.00")
    ids = []
    for day in range(1, 21):
        with ledger_clock(monkeypatch, datetime(2025, 6, day, 12, tzinfo=UTC)):
            paid_in = await deposited(bank.client, headers, number, f"{day}.{day:02d}")
            moved = await transfer(bank.client, headers, number, other, f"0.{day:02d}")
            ids += [paid_in["transaction_id"], moved.json()["transaction_id"]]
    june = (date(2025, 6, 6), date(2025, 6, 30))
    statement = (await get_statement(bank, headers, number, *june)).json()
    check_arithmetic(statement)
    assert [e["transaction_id"] for e in statement["entries"]] == ids[10:]
    # Each day before the period: in d.0d, out 0.0d.
    assert statement["opening_balance"] == amount(sum(100 * d for d in range(1, 6)))
    assert statement["closing_balance"] == await balance(bank.client, headers, number)
    as_csv = csv_totals((await get_statement(bank, headers, number, *june, fmt="csv")).text)
    assert as_csv["transaction_ids"] == ids[10:]
    assert as_csv["closing_balance"] == statement["closing_balance"]
    text = pdf_text((await get_statement(bank, headers, number, *june, fmt="pdf")).content)
    found = [m.group(1) for line in text.splitlines() if (m := PDF_ROW.match(line.strip()))]
    assert found == ids[10:]


# --- history ---------------------------------------------------------------------------


async def list_ids(bank, headers, **params):  # type: ignore[no-untyped-def]
    response = await bank.client.get("/api/transactions", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return [item["transaction_id"] for item in response.json()["items"]]


async def test_history_is_newest_first_and_filters_by_account_and_date(bank, monkeypatch):
    _, headers, number, ids = await post_history(bank, monkeypatch)
    savings = (await open_account(bank.client, headers))["account_number"]
    own = (await transfer(bank.client, headers, number, savings, "4.70")).json()["transaction_id"]

    everything = await bank.client.get("/api/transactions", headers=headers)
    items = everything.json()["items"]
    assert [i["transaction_id"] for i in items] == [own, *reversed(ids)]
    created = [i["created_at"] for i in items]
    assert created == sorted(created, reverse=True)
    assert items[1]["balance_after"] == "734.70"
    assert all(is_money(i["amount"]) for i in items)

    assert await list_ids(bank, headers, account_number=savings) == [own]
    assert await list_ids(bank, headers, account_number=number) == [own, *reversed(ids)]
    march = await list_ids(bank, headers, **{"from": "2025-03-01", "to": "2025-03-31"})
    assert march == list(reversed(ids[:4]))
    assert await list_ids(bank, headers, **{"from": "2025-03-06", "to": "2025-03-20"}) == [
        ids[3],
        ids[2],
    ]
    assert await list_ids(bank, headers, **{"from": "2025-04-01"}) == [own, ids[4]]
    assert await list_ids(bank, headers, to="2025-03-05") == [ids[1], ids[0]]
    bad = await bank.client.get(
        "/api/transactions", params={"account_number": "123456789012"}, headers=headers
    )
    problem(bad, 422, "invalid_account_number")


async def test_history_shows_nothing_of_other_customers(bank):
    _, headers, mine = await funded_account(bank, "100.00")
    _, other_headers, theirs = await funded_account(bank, "100.00")
    await withdraw(bank.client, other_headers, theirs, "1.00")
    sent = (await transfer(bank.client, headers, mine, theirs, "2.00")).json()["transaction_id"]
    own_ids = await list_ids(bank, headers)
    assert len(own_ids) == 2 and own_ids[0] == sent
    # Filtering by someone else's account number finds only what touched the caller.
    assert await list_ids(bank, headers, account_number=theirs) == []
    assert len(await list_ids(bank, other_headers)) == 3


async def test_history_cursor_pagination_has_no_duplicates_or_gaps(bank):
    _, headers, number = await funded_account(bank, "0.00")
    posted = [
        (await deposited(bank.client, headers, number, f"{n}.00"))["transaction_id"]
        for n in range(1, 8)
    ]
    newest_first = list(reversed(posted))
    assert await list_ids(bank, headers) == newest_first

    first = (await bank.client.get("/api/transactions?limit=3", headers=headers)).json()
    assert [i["transaction_id"] for i in first["items"]] == newest_first[:3]
    # A movement arriving between pages must not shift the pages after the cursor.
    newer = (await deposited(bank.client, headers, number, "100.00"))["transaction_id"]
    seen = [i["transaction_id"] for i in first["items"]]
    cursor = first["next_cursor"]
    sizes = [len(first["items"])]
    while cursor is not None:
        response = await bank.client.get(
            "/api/transactions", params={"limit": 3, "cursor": cursor}, headers=headers
        )
        page = response.json()
        sizes.append(len(page["items"]))
        seen += [i["transaction_id"] for i in page["items"]]
        cursor = page["next_cursor"]
    assert sizes == [3, 3, 1]
    assert seen == newest_first
    assert newer not in seen
    assert (await list_ids(bank, headers, limit=1))[0] == newer

    broken = await bank.client.get("/api/transactions", params={"cursor": "!!"}, headers=headers)
    problem(broken, 422, "validation_error")


@pytest.mark.parametrize("merged", [True, False], ids=["per-account-ranges", "one-read"])
async def test_history_pages_over_several_accounts_list_each_transaction_once(
    bank, monkeypatch, merged
):
    if not merged:  # the path for customers with more accounts than MERGED_ACCOUNTS
        monkeypatch.setattr(history, "MERGED_ACCOUNTS", 0)
    _, headers, first = await funded_account(bank, "100.00")
    second = (await open_account(bank.client, headers, "savings"))["account_number"]
    _, _, stranger = await funded_account(bank, "0.00")
    posted, on_second = [(await list_ids(bank, headers))[0]], []
    for n in range(1, 7):
        if n % 3 == 0:  # between the customer's own accounts: one transaction, two entries
            moved = await transfer(bank.client, headers, first, second, f"{n}.00")
        elif n % 3 == 1:
            moved = await deposit(bank.client, headers, second, f"{n}.00")
        else:
            moved = await transfer(bank.client, headers, first, stranger, f"{n}.00")
        posted.append(moved.json()["transaction_id"])
        if n % 3 != 2:
            on_second.append(posted[-1])

    for params, expected in (
        ({}, posted[::-1]),
        ({"account_number": second}, on_second[::-1]),
    ):
        seen, cursor, pages = [], None, 0
        while True:
            page = await bank.client.get(
                "/api/transactions",
                params={**params, "limit": 2, **({"cursor": cursor} if cursor else {})},
                headers=headers,
            )
            body = page.json()
            seen += [item["transaction_id"] for item in body["items"]]
            pages += 1
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert seen == expected, params
        assert pages == (len(expected) + 1) // 2


async def test_history_page_is_a_backward_range_read_of_one_index(database, settings):
    """Page 100 costs what page 1 costs only if a page is read from an index ordered by
    (account_id, journal_id): the plan must neither sort nor read the account's whole
    history."""
    async with database.session() as db:
        conn = await db.connection()
        indexes = await conn.run_sync(lambda sync: inspect(sync).get_indexes("entries"))
        assert any(ix["column_names"][:2] == ["account_id", "journal_id"] for ix in indexes)
        query = history.journals_touching([1], before_id=500, since=None, until=None, limit=51)
        compiled = str(query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
        if settings.is_sqlite:
            rows = (await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")).all()
            plan = " | ".join(row[3] for row in rows)
            assert "INDEX" in plan and "(account_id=? AND journal_id<?)" in plan, plan
            assert "TEMP B-TREE" not in plan, plan
        else:
            # A test database is too small for costs to mean anything: forbid what the
            # index should make unnecessary, and see whether the plan still needs it.
            for switch in ("enable_seqscan", "enable_sort", "enable_hashagg", "enable_bitmapscan"):
                await conn.exec_driver_sql(f"SET LOCAL {switch} = off")
            rows = (await conn.exec_driver_sql(f"EXPLAIN {compiled}")).all()
            plan = " | ".join(row[0] for row in rows)
            assert "Index Only Scan Backward" in plan or "Index Scan Backward" in plan, plan
            assert "account_id = 1" in plan and "journal_id < 500" in plan, plan
            assert "Sort" not in plan, plan


async def test_one_transaction_is_visible_only_to_its_parties(bank, app):
    _, headers, number = await funded_account(bank, "50.00")
    _, stranger_headers = await bank.customer()
    tx = (await deposit(bank.client, headers, number, "5.00", description="cash")).json()

    own = await bank.client.get(f"/api/transactions/{tx['transaction_id']}", headers=headers)
    assert own.status_code == 200
    assert own.json() == tx
    listed = (await bank.client.get("/api/transactions", headers=headers)).json()["items"][0]
    assert listed == tx

    hidden = await bank.client.get(
        f"/api/transactions/{tx['transaction_id']}", headers=stranger_headers
    )
    problem(hidden, 404, "transaction_not_found")
    assert len(await denied_audits(app, "transaction.read", tx["transaction_id"])) == 1
    missing = await bank.client.get("/api/transactions/999999", headers=headers)
    assert problem(missing, 404, "transaction_not_found")["title"] == hidden.json()["title"]
    # Not digits: no such path (and /api/transactions/deposit is never a transaction id).
    problem(await bank.client.get("/api/transactions/abc", headers=headers), 404, "not_found")
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    assert await list_ids(bank, stranger_headers, **{"from": yesterday}) == []
