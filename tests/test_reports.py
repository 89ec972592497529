"""The compliance report (issue 21; API.md §8): its figures equal the ledger's."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select

from app.models import Journal
from tests.helpers import problem
from tests.ledger_helpers import deposit, funded_account, transfer, withdraw


async def test_the_summary_figures_equal_the_ledgers(bank, app, database):
    _, headers, a = await funded_account(bank, "80000.00")
    _, other, b = await funded_account(bank, "500.00")
    assert (await transfer(bank.client, headers, a, b, "12500.00")).status_code == 201
    assert (await withdraw(bank.client, other, b, "99.99")).status_code == 201
    held = await withdraw(bank.client, headers, a, "50000.00")
    assert held.json()["status"] == "pending_review"
    assert (await deposit(bank.client, headers, a, "10000.00")).status_code == 201
    admin = await bank.staff()
    decided = await bank.client.post(
        f"/api/admin/transactions/{held.json()['transaction_id']}/reject",
        json={"reason": "Customer did not ask for it"},
        headers=admin,
    )
    assert decided.status_code == 200
    loan = await bank.client.post(
        "/api/loans",
        json={
            "product": "personal",
            "principal": "3000.00",
            "term_months": 12,
            "monthly_income": "4000.00",
            "account_number": b,
            "purpose": "Car repair",
        },
        headers=other,
    )
    approved = await bank.client.post(
        f"/api/admin/loans/{loan.json()['loan_id']}/approve", headers=admin
    )
    assert approved.status_code == 200
    today = datetime.now(UTC).date().isoformat()
    auditor = await bank.staff("auditor")
    response = await bank.client.get(
        "/api/audit/reports/summary", params={"from": today, "to": today}, headers=auditor
    )
    assert response.status_code == 200, response.text
    report = response.json()
    async with database.session() as db:
        journals = list((await db.scalars(select(Journal))).all())
    expected: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for j in journals:
        expected[(j.kind, j.status)][0] += 1
        expected[(j.kind, j.status)][1] += j.amount
    assert {
        (t["type"], t["status"]): [t["count"], round(float(t["sum"]) * 100)]
        for t in report["transactions"]
    } == {k: v for k, v in expected.items()}
    large = sorted(
        str(j.id)
        for j in journals
        if j.amount >= 1_000_000 and j.kind in ("deposit", "withdrawal", "transfer")
    )
    assert sorted(m["transaction_id"] for m in report["large_movements"]) == large
    assert {m["amount"] for m in report["large_movements"]} >= {"80000.00", "12500.00", "10000.00"}
    assert report["holds"] == [{"outcome": "rejected", "count": 1, "sum": "50000.00"}]
    assert report["loans"] == [
        {"status": "active", "delinquency": "current", "count": 1, "outstanding": "3000.00"}
    ]
    assert {"kyc_outcome": "verified", "count": 2} in report["customers"]
    actions = {(s["action"], s["count"]) for s in report["staff_actions"]}
    assert ("transaction.reject", 1) in actions and ("loan.approve", 1) in actions
    assert report["sla_breaches"] == 0
    # SLA breaches are as of the reading, and the report says when that was.
    as_of = datetime.fromisoformat(report["as_of"])
    assert abs(as_of - datetime.now(UTC)) < timedelta(minutes=1)
    assert report["flags"]["opened"] == 0 and report["flags"]["median_minutes_to_resolve"] is None
    as_csv = await bank.client.get(
        "/api/audit/reports/summary",
        params={"from": today, "to": today, "format": "csv"},
        headers=auditor,
    )
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    moved = [r for r in rows if r["section"] == "transactions"]
    assert sum(int(r["count"]) for r in moved) == len(journals)
    (csv_as_of,) = [r["key"] for r in rows if r["section"] == "as_of"]
    assert datetime.fromisoformat(csv_as_of) >= as_of  # read a moment later
    pdf = await bank.client.get(
        "/api/audit/reports/summary",
        params={"from": today, "to": today, "format": "pdf"},
        headers=auditor,
    )
    assert pdf.content.startswith(b"%PDF")


async def test_the_summary_needs_a_period_in_order(bank):
    auditor = await bank.staff("auditor")
    url = "/api/audit/reports/summary"
    problem(
        await bank.client.get(
            url, params={"from": "2026-12-02", "to": "2026-12-01"}, headers=auditor
        ),
        422,
        "validation_error",
    )
    problem(
        await bank.client.get(url, params={"from": "2026-12-02"}, headers=auditor),
        422,
        "validation_error",
    )
    customer = (await bank.customer())[1]
    problem(
        await bank.client.get(
            url, params={"from": "2026-12-01", "to": "2026-12-01"}, headers=customer
        ),
        403,
        "forbidden",
    )


async def test_the_loans_are_as_they_stood_on_the_periods_last_day(bank, app):
    """A report of a past period shows each loan as it stood on that period's last day:
    pending before it was paid out, its delinquency then (a payment made later does not
    cure it), the principal outstanding then, and paid off only from the day it was."""
    from tests.test_loans import active_loan, loan_of, move_clock, repay

    headers, number, loan, _ = await active_loan(bank, app, on=date(2027, 1, 15))
    loan_id = loan["loan_id"]
    auditor = await bank.staff("auditor")

    async def loans_on(day: date) -> list[tuple[str, str, str]]:
        response = await bank.client.get(
            "/api/audit/reports/summary",
            params={"from": day.isoformat(), "to": day.isoformat()},
            headers=auditor,
        )
        assert response.status_code == 200, response.text
        return [(x["status"], x["delinquency"], x["outstanding"]) for x in response.json()["loans"]]

    move_clock(app, date(2027, 3, 20))  # February's and March's installments unpaid
    assert await loans_on(date(2027, 1, 10)) == [("pending", "current", "0.00")]
    assert await loans_on(date(2027, 1, 31)) == [("active", "current", "10000.00")]
    assert await loans_on(date(2027, 3, 1)) == [("active", "1-30", "10000.00")]
    assert await loans_on(date(2027, 3, 19)) == [("active", "31-60", "10000.00")]
    overdue = (await loan_of(bank, headers, loan_id))["overdue_amount"]
    paid = await repay(bank, headers, loan_id, overdue, number)
    assert paid.status_code == 201, paid.text
    left = paid.json()["loan"]["outstanding_principal"]
    assert left == "8415.08"  # 10,000.00 less two installments' principal (788.52 + 796.40)
    # The past does not change: on 1 March and 19 March it was still late, and owed all.
    assert await loans_on(date(2027, 3, 1)) == [("active", "1-30", "10000.00")]
    assert await loans_on(date(2027, 3, 19)) == [("active", "31-60", "10000.00")]
    assert await loans_on(date(2027, 3, 20)) == [("active", "current", left)]
    move_clock(app, date(2027, 3, 25))
    payoff = (await loan_of(bank, headers, loan_id))["payoff_amount"]
    closed = await repay(bank, headers, loan_id, payoff, number)
    assert closed.status_code == 201 and closed.json()["loan"]["status"] == "paid_off"
    assert await loans_on(date(2027, 3, 24)) == [("active", "current", left)]
    assert await loans_on(date(2027, 3, 25)) == [("paid_off", "current", "0.00")]
    assert await loans_on(date(2027, 3, 1)) == [("active", "1-30", "10000.00")]
