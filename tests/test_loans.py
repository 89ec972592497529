"""Loans end to end (issue 20; API.md §6, §7): products and quotes, applications with a
recommendation, four-eyes approval, disbursement through the ledger, repayments with
their allocation, dry runs, and the daily accrual with late fees on a moved clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time
from typing import Any

import pytest

from app.services import accrual, jobs
from tests.helpers import Bank, audit_records, execute, problem
from tests.ledger_helpers import account, funded_account, scalar, verify_books, withdraw


def at(day: date, hour: int = 12) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=UTC)


def move_clock(app: Any, day: date) -> None:
    app.state.database.clock = lambda: at(day)


APPLICATION = {
    "product": "personal",
    "principal": "10000.00",
    "term_months": 12,
    "monthly_income": "5000.00",
    "purpose": "A new roof",
}


async def apply(bank: Bank, headers: dict[str, str], number: str, **fields: Any) -> Any:
    body = {**APPLICATION, "account_number": number, **fields}
    return await bank.client.post("/api/loans", json=body, headers=headers)


async def applied(bank: Bank, headers: dict[str, str], number: str, **fields: Any) -> dict:
    response = await apply(bank, headers, number, **fields)
    assert response.status_code == 201, response.text
    return response.json()


async def approve(bank: Bank, admin: dict[str, str], loan_id: str, **body: Any) -> Any:
    return await bank.client.post(
        f"/api/admin/loans/{loan_id}/approve", json=body or None, headers=admin
    )


async def active_loan(
    bank: Bank, app: Any, *, on: date = date(2027, 1, 15), funds: str = "20000.00", **fields: Any
) -> tuple[dict[str, str], str, dict[str, Any], dict[str, str]]:
    """A customer with `funds` and an active loan disbursed `on`: (headers, account, loan,
    admin headers)."""
    move_clock(app, on)
    _, headers, number = await funded_account(bank, funds)
    loan = await applied(bank, headers, number, **fields)
    admin = await bank.staff()
    response = await approve(bank, admin, loan["loan_id"])
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "active"
    return headers, number, response.json(), admin


async def loan_of(bank: Bank, headers: dict[str, str], loan_id: str) -> dict[str, Any]:
    response = await bank.client.get(f"/api/loans/{loan_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def repay(
    bank: Bank, headers: dict[str, str], loan_id: str, amount: str, source: str, **kw: Any
) -> Any:
    return await bank.client.post(
        f"/api/loans/{loan_id}/repayments",
        json={"amount": amount, "from_account": source},
        headers=headers,
        **kw,
    )


async def bank_balance(app: Any, code: str) -> int:
    return int(
        await scalar(app, "SELECT COALESCE(SUM(balance), 0) FROM accounts WHERE code = :c", c=code)
    )


def parts(answer: dict[str, Any]) -> dict[str, str]:
    return {p["part"]: p["amount"] for p in answer["allocation"]}


# --- products and quotes ------------------------------------------------------------


async def test_products_and_a_quote_need_no_login_and_match_the_reference(bank, app):
    move_clock(app, date(2027, 1, 31))
    products = (await bank.client.get("/api/loans/products")).json()["items"]
    assert {p["product"]: p["annual_rate"] for p in products} == {
        "personal": "11.99",
        "auto": "7.49",
        "home": "6.25",
    }
    response = await bank.client.post(
        "/api/loans/quote", json={"product": "personal", "principal": "10000.00", "term_months": 12}
    )
    assert response.status_code == 200, response.text
    quote = response.json()
    assert (quote["monthly_payment"], quote["total_interest"], quote["total_payable"]) == (
        "888.44",
        "661.31",
        "10661.31",
    )
    first, last = quote["schedule"][0], quote["schedule"][-1]
    assert (first["interest"], first["principal"], first["due_date"]) == (
        "99.92",
        "788.52",
        "2027-02-28",
    )
    assert (last["payment"], last["balance"], last["due_date"]) == ("888.47", "0.00", "2028-01-31")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"product": "personal", "principal": "999.99", "term_months": 12}, "principal"),
        ({"product": "personal", "principal": "50000.01", "term_months": 12}, "principal"),
        ({"product": "personal", "principal": "5000.00", "term_months": 5}, "term_months"),
        ({"product": "home", "principal": "60000.00", "term_months": 361}, "term_months"),
        ({"product": "boat", "principal": "5000.00", "term_months": 12}, "product"),
        ({"product": "auto", "principal": "5000.001", "term_months": 12}, "principal"),
        ({"product": "auto", "principal": 5000.5, "term_months": "x"}, "term_months"),
        ({"product": "auto", "principal": "5000.00", "term_months": "12"}, "term_months"),
        ({"product": "auto", "principal": "5000.00", "term_months": 12.0}, "term_months"),
    ],
)
async def test_a_quote_out_of_range_is_422_naming_the_field(bank, body, field):
    response = await bank.client.post("/api/loans/quote", json=body)
    assert response.status_code == 422, response.text
    assert field in {e["field"] for e in response.json()["errors"]}


# --- applications -------------------------------------------------------------------


async def test_an_application_is_pending_with_its_quote_and_idempotent(bank, app):
    _, headers, number = await funded_account(bank, "0.00")
    body = {**APPLICATION, "account_number": number}
    key = {"Idempotency-Key": "loan-1", **headers}
    first = await bank.client.post("/api/loans", json=body, headers=key)
    assert first.status_code == 201, first.text
    loan = first.json()
    assert (loan["status"], loan["monthly_payment"], loan["total_interest"]) == (
        "pending",
        "888.44",
        "661.31",
    )
    assert (loan["approvals"], loan["approvals_required"], loan["annual_rate"]) == (0, 1, "11.99")
    assert "recommendation" not in loan  # advice is for the admins
    again = await bank.client.post("/api/loans", json=body, headers=key)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == loan
    assert int(await scalar(app, "SELECT COUNT(*) FROM loans")) == 1
    other = await bank.client.post("/api/loans", json={**body, "term_months": 24}, headers=key)
    problem(other, 422, "idempotency_key_reused")
    listed = (await bank.client.get("/api/loans", headers=headers)).json()["items"]
    assert [item["loan_id"] for item in listed] == [loan["loan_id"]]


async def test_an_application_needs_an_active_customer_and_an_own_account(bank, app):
    body, headers, number = await funded_account(bank, "0.00")
    _, _other_headers, other_number = await funded_account(bank, "0.00")
    problem(await apply(bank, headers, other_number), 404, "account_not_found")
    problem(await apply(bank, headers, number, principal="60000.00"), 422, "validation_error")
    await execute(
        app.state.database,
        "UPDATE customers SET status = 'Suspended' WHERE id = :c",
        c=int(body["customer_id"]),
    )
    problem(await apply(bank, headers, number), 403, "customer_suspended")
    assert int(await scalar(app, "SELECT COUNT(*) FROM loans")) == 0


async def test_the_recommendation_gives_its_reasons_to_admins(bank, app):
    body, headers, number = await funded_account(bank, "0.00")
    admin = await bank.staff()
    plain = await applied(bank, headers, number, monthly_income="5000.00")
    # 888.44 + 4,442.21 of 9,000.00 over 60 months... over 2,000.00 of income: DTI above 40 %
    stretched = await applied(bank, headers, number, principal="20000.00", monthly_income="1500.00")
    views = {
        v["loan_id"]: v
        for v in (
            await bank.client.get("/api/admin/loans", params={"status": "pending"}, headers=admin)
        ).json()["items"]
    }
    assert (views[plain["loan_id"]]["recommendation"], views[plain["loan_id"]]["reasons"]) == (
        "approve",
        [],
    )
    assert views[plain["loan_id"]]["dti"] == "17.76"
    tight = views[stretched["loan_id"]]
    assert tight["recommendation"] == "decline"
    assert tight["reasons"] == ["dti_above_40", "amount_above_10x_income"]
    await execute(
        app.state.database,
        "UPDATE customers SET kyc_status = 'review' WHERE id = :c",
        c=int(body["customer_id"]),
    )
    review = await applied(bank, headers, number)
    detail = (await bank.client.get(f"/api/admin/loans/{review['loan_id']}", headers=admin)).json()
    assert (detail["recommendation"], detail["reasons"]) == ("review", ["kyc_under_review"])
    only = (
        await bank.client.get(
            "/api/admin/loans", params={"recommendation": "decline"}, headers=admin
        )
    ).json()
    assert [v["loan_id"] for v in only["items"]] == [stretched["loan_id"]]


async def test_another_loan_in_arrears_is_a_reason(bank, app):
    headers, number, _loan, _ = await active_loan(bank, app, on=date(2027, 1, 15))
    move_clock(app, date(2027, 2, 20))  # the first installment, due 2027-02-15, unpaid
    second = await applied(bank, headers, number)
    admin = await bank.staff()
    detail = (await bank.client.get(f"/api/admin/loans/{second['loan_id']}", headers=admin)).json()
    assert "loan_in_arrears" in detail["reasons"]


async def test_a_pending_application_can_be_withdrawn_once(bank, app):
    _, headers, number = await funded_account(bank, "0.00")
    loan = await applied(bank, headers, number)
    response = await bank.client.post(f"/api/loans/{loan['loan_id']}/withdraw", headers=headers)
    assert response.status_code == 200 and response.json()["status"] == "withdrawn"
    again = await bank.client.post(f"/api/loans/{loan['loan_id']}/withdraw", headers=headers)
    problem(again, 409, "already_decided")
    admin = await bank.staff()
    problem(await approve(bank, admin, loan["loan_id"]), 409, "already_decided")
    assert [r.action for r in await audit_records(app.state.database, "loan.withdraw")] == [
        "loan.withdraw"
    ]


# --- decisions ----------------------------------------------------------------------


async def test_approval_disburses_through_the_ledger_once(bank, app, database):
    move_clock(app, date(2027, 1, 31))
    _, headers, number = await funded_account(bank, "0.00")
    loan = await applied(bank, headers, number)
    admin = await bank.staff()
    response = await approve(bank, admin, loan["loan_id"], reason="Income verified")
    assert response.status_code == 200, response.text
    view = response.json()
    assert (view["status"], view["approvals"], view["outstanding_principal"]) == (
        "active",
        1,
        "10000.00",
    )
    assert view["next_due_date"] == "2027-02-28"
    assert view["payoff_amount"] == "10000.00"
    assert (await account(bank.client, headers, number))["balance"] == "10000.00"
    assert await bank_balance(app, "loans") == -1_000_000
    problem(await approve(bank, admin, loan["loan_id"]), 409, "already_decided")
    assert int(await scalar(app, "SELECT COUNT(*) FROM journals WHERE kind = 'disbursement'")) == 1
    schedule = (
        await bank.client.get(f"/api/loans/{loan['loan_id']}/schedule", headers=headers)
    ).json()
    assert [r["due_date"] for r in schedule["rows"][:2]] == ["2027-02-28", "2027-03-31"]
    assert sum(int(r["principal"].replace(".", "")) for r in schedule["rows"]) == 1_000_000
    history = (await bank.client.get("/api/transactions", headers=headers)).json()["items"]
    assert history[0]["type"] == "disbursement" and history[0]["amount"] == "10000.00"
    records = await audit_records(database, "loan.approve")
    assert records[0].details["reason"] == "Income verified"
    assert (await verify_books(app)).balanced


async def test_four_eyes_needs_two_different_admins(bank, app):
    _, headers, number = await funded_account(bank, "0.00")
    loan = await applied(
        bank, headers, number, product="home", principal="150000.00", term_months=240
    )
    assert loan["approvals_required"] == 2
    first, second = await bank.staff(), await bank.staff()
    once = await approve(bank, first, loan["loan_id"])
    assert once.status_code == 200 and (once.json()["status"], once.json()["approvals"]) == (
        "pending",
        1,
    )
    problem(await approve(bank, first, loan["loan_id"]), 409, "same_approver")
    assert (await account(bank.client, headers, number))["balance"] == "0.00"
    done = await approve(bank, second, loan["loan_id"])
    assert done.status_code == 200 and (done.json()["status"], done.json()["approvals"]) == (
        "active",
        2,
    )
    assert len(done.json()["approved_by"]) == 2
    assert (await account(bank.client, headers, number))["balance"] == "150000.00"


@pytest.mark.settings(four_eyes_threshold="5000.00")
async def test_the_threshold_comes_from_settings_and_a_linked_admin_never_decides(bank, app):
    body, headers, number = await funded_account(bank, "0.00")
    loan = await applied(bank, headers, number)
    assert loan["approvals_required"] == 2
    admin = await bank.staff()
    me = (await bank.client.get("/api/auth/me", headers=admin)).json()
    await execute(
        app.state.database,
        "UPDATE users SET linked_customer_id = :c WHERE id = :u",
        c=int(body["customer_id"]),
        u=int(me["user_id"]),
    )
    problem(await approve(bank, admin, loan["loan_id"]), 403, "conflict_of_interest")
    reject = await bank.client.post(
        f"/api/admin/loans/{loan['loan_id']}/reject", json={"reason": "Mine"}, headers=admin
    )
    problem(reject, 403, "conflict_of_interest")


async def test_concurrent_approvals_disburse_exactly_once(bank, app, another_client):
    _, headers, number = await funded_account(bank, "0.00")
    loan = await applied(bank, headers, number)
    admins = [await bank.staff() for _ in range(4)]
    clients = [bank.client, await another_client(), await another_client(), await another_client()]
    answers = await asyncio.gather(
        *(
            c.post(f"/api/admin/loans/{loan['loan_id']}/approve", headers=h)
            for c, h in zip(clients, admins, strict=True)
        )
    )
    assert sorted(a.status_code for a in answers) == [200, 409, 409, 409], [a.text for a in answers]
    assert int(await scalar(app, "SELECT COUNT(*) FROM journals WHERE kind = 'disbursement'")) == 1
    assert (await account(bank.client, headers, number))["balance"] == "10000.00"
    assert (await verify_books(app)).balanced


async def test_a_rejection_needs_a_reason_and_is_final(bank, app):
    _, headers, number = await funded_account(bank, "0.00")
    loan = await applied(bank, headers, number)
    admin = await bank.staff()
    url = f"/api/admin/loans/{loan['loan_id']}/reject"
    assert (await bank.client.post(url, json={}, headers=admin)).status_code == 422
    done = await bank.client.post(url, json={"reason": "Income not verified"}, headers=admin)
    assert done.status_code == 200 and done.json()["status"] == "rejected"
    assert done.json()["decision_reason"] == "Income not verified"
    problem(
        await bank.client.post(url, json={"reason": "again"}, headers=admin), 409, "already_decided"
    )


async def test_customers_get_403_on_admin_loans_and_404_on_anothers_loan(bank, app):
    _, headers, number = await funded_account(bank, "0.00")
    loan = await applied(bank, headers, number)
    _, stranger, stranger_account = await funded_account(bank, "100.00")
    for method, url in (
        ("GET", "/api/admin/loans"),
        ("GET", f"/api/admin/loans/{loan['loan_id']}"),
        ("POST", f"/api/admin/loans/{loan['loan_id']}/approve"),
    ):
        problem(await bank.client.request(method, url, headers=headers), 403, "forbidden")
    auditor = await bank.staff("auditor")
    problem(
        await bank.client.post(f"/api/admin/loans/{loan['loan_id']}/approve", headers=auditor),
        403,
        "forbidden",
    )
    problem(
        await bank.client.get(f"/api/loans/{loan['loan_id']}", headers=stranger),
        404,
        "loan_not_found",
    )
    problem(
        await bank.client.get(f"/api/loans/{loan['loan_id']}/schedule", headers=stranger),
        404,
        "loan_not_found",
    )
    problem(
        await bank.client.post(f"/api/loans/{loan['loan_id']}/withdraw", headers=stranger),
        404,
        "loan_not_found",
    )
    problem(
        await repay(bank, stranger, loan["loan_id"], "1.00", stranger_account),
        404,
        "loan_not_found",
    )
    assert (await bank.client.get("/api/loans", headers=stranger)).json()["items"] == []
    denied = await audit_records(app.state.database, "loan.read")
    assert [r.outcome for r in denied] == ["denied", "denied"]


# --- repayments ---------------------------------------------------------------------


async def test_installments_then_the_payoff_close_the_loan_to_the_cent(bank, app):
    headers, number, loan, _ = await active_loan(bank, app, on=date(2027, 1, 15), funds="1000.00")
    loan_id = loan["loan_id"]
    move_clock(app, date(2027, 2, 15))  # the first due date
    view = await loan_of(bank, headers, loan_id)
    assert (view["payoff_amount"], view["overdue_amount"], view["delinquency"]) == (
        "10099.92",
        "0.00",
        "current",
    )
    first = await repay(bank, headers, loan_id, "888.44", number)
    assert first.status_code == 201, first.text
    assert parts(first.json()) == {
        "fees": "0.00",
        "interest_due": "99.92",
        "principal_due": "788.52",
        "interest_accrued": "0.00",
        "future_principal": "0.00",
    }
    assert first.json()["loan"]["outstanding_principal"] == "9211.48"
    assert first.json()["rescheduled"] is False
    move_clock(app, date(2027, 3, 5))  # 18 days into the second period
    view = await loan_of(bank, headers, loan_id)
    daily = round(921148 * 0.1199 / 365)  # 3.03 a day, actual/365
    assert view["payoff_amount"] == f"{(921148 + 18 * daily) / 100:.2f}"
    over = await repay(bank, headers, loan_id, "20000.00", number)
    problem(over, 422, "payoff_exceeded")
    short = await repay(bank, headers, loan_id, "9211.48", number)
    problem(short, 422, "payoff_required")
    paid = await repay(bank, headers, loan_id, view["payoff_amount"], number)
    assert paid.status_code == 201, paid.text
    assert parts(paid.json())["interest_accrued"] == f"{18 * daily / 100:.2f}"
    assert paid.json()["loan"]["status"] == "paid_off"
    assert (await loan_of(bank, headers, loan_id))["status"] == "paid_off"
    interest = 9992 + 18 * daily
    assert (await account(bank.client, headers, number))[
        "balance"
    ] == f"{(100000 + 1000000 - 1000000 - interest) / 100:.2f}"
    assert await bank_balance(app, "loans") == 0
    assert await bank_balance(app, "loan_interest") == 0
    assert await bank_balance(app, "interest_income") == interest
    assert (await verify_books(app)).balanced
    problem(await repay(bank, headers, loan_id, "1.00", number), 409, "loan_not_active")
    rows = (await bank.client.get(f"/api/loans/{loan_id}/schedule", headers=headers)).json()["rows"]
    assert [(r["number"], r["status"]) for r in rows] == [(1, "paid"), (2, "paid")]
    assert sum(int(r["principal"].replace(".", "")) for r in rows) == 1_000_000
    assert rows[-1]["balance"] == "0.00" and rows[-1]["interest"] == f"{18 * daily / 100:.2f}"


async def test_an_extra_payment_lowers_the_installments_left(bank, app):
    headers, number, loan, _ = await active_loan(bank, app, on=date(2027, 1, 15))
    move_clock(app, date(2027, 1, 20))
    response = await repay(bank, headers, loan["loan_id"], "5000.00", number)
    assert response.status_code == 201, response.text
    answer = response.json()
    assert parts(answer)["future_principal"] == "5000.00"
    assert answer["rescheduled"] is True
    assert len(answer["schedule"]) == 12  # same term
    assert answer["loan"]["monthly_payment"] == "444.22"  # 5,000.00 over 12 months at 11.99 %
    rows = (
        await bank.client.get(f"/api/loans/{loan['loan_id']}/schedule", headers=headers)
    ).json()["rows"]
    # The 5,000.00 paid ahead stays on the next row, as paid: the row owes 444.22 and
    # the rows' principal parts still sum to the loan's.
    assert rows[0]["paid"] == "5000.00" and rows[0]["payment"] == "5444.22"
    assert rows[1]["payment"] == "444.22" and rows[-1]["balance"] == "0.00"
    assert sum(int(r["principal"].replace(".", "")) for r in rows) == 1_000_000
    assert (await loan_of(bank, headers, loan["loan_id"]))["outstanding_principal"] == "5000.00"
    assert (await verify_books(app)).balanced


async def test_a_dry_run_answers_the_same_and_changes_nothing(bank, app):
    headers, number, loan, _ = await active_loan(bank, app, on=date(2027, 1, 15))
    move_clock(app, date(2027, 2, 15))
    before = (
        await scalar(app, "SELECT COUNT(*) FROM journals"),
        await loan_of(bank, headers, loan["loan_id"]),
        (await account(bank.client, headers, number))["balance"],
    )
    dry = await repay(bank, headers, loan["loan_id"], "2000.00", number, params={"dry_run": "true"})
    assert dry.status_code == 200, dry.text
    assert dry.json()["dry_run"] is True and dry.json()["repayment_id"] is None
    after = (
        await scalar(app, "SELECT COUNT(*) FROM journals"),
        await loan_of(bank, headers, loan["loan_id"]),
        (await account(bank.client, headers, number))["balance"],
    )
    assert after == before
    real = await repay(bank, headers, loan["loan_id"], "2000.00", number)
    assert real.status_code == 201
    for name in ("allocation", "schedule", "rescheduled"):
        assert real.json()[name] == dry.json()[name]
    assert real.json()["loan"] == dry.json()["loan"]


async def test_a_repayment_is_idempotent_and_needs_the_funds(bank, app):
    headers, number, loan, _ = await active_loan(bank, app, funds="0.00")
    _, _, poor = await funded_account(bank, "0.00")
    key = {"Idempotency-Key": "repay-1", **headers}
    first = await repay(bank, key, loan["loan_id"], "100.00", number)
    second = await repay(bank, key, loan["loan_id"], "100.00", number)
    assert first.status_code == second.status_code == 201
    assert second.headers["Idempotent-Replayed"] == "true" and second.json() == first.json()
    assert int(await scalar(app, "SELECT COUNT(*) FROM loan_repayments")) == 1
    problem(await repay(bank, headers, loan["loan_id"], "100.00", poor), 404, "account_not_found")
    assert (await withdraw(bank.client, headers, number, "9000.00")).status_code == 201
    late = await repay(bank, headers, loan["loan_id"], "900.01", number)
    problem(late, 422, "insufficient_funds")


# --- accrual, arrears and fees --------------------------------------------------------


async def test_accrual_and_a_late_fee_post_once_per_day_with_a_moved_clock(bank, app, database):
    headers, _number, loan, _ = await active_loan(bank, app, on=date(2027, 1, 15), funds="0.00")
    move_clock(app, date(2027, 1, 25))
    done = await accrual.accrue_all(database)
    daily = round(1_000_000 * 0.1199 / 365)  # 3.28 a day
    assert [d.interest for d in done] == [10 * daily]
    again = await accrual.accrue_all(database)  # the same day: nothing more
    assert [d.posted for d in again] == [False]
    assert await bank_balance(app, "interest_income") == 10 * daily
    move_clock(app, date(2027, 2, 21))  # due 02-15, 5 days' grace: the fee on day 6
    await accrual.accrue_all(database)
    view = await loan_of(bank, headers, loan["loan_id"])
    assert (view["days_past_due"], view["delinquency"]) == (6, "1-30")
    assert view["overdue_amount"] == "913.44"  # 888.44 and the 25.00 fee
    assert await bank_balance(app, "fee_income") == 2500
    assert await bank_balance(app, "interest_income") == 9992 + 6 * round(1_000_000 * 0.1199 / 365)
    move_clock(app, date(2027, 3, 1))
    await accrual.accrue_all(database)
    assert await bank_balance(app, "fee_income") == 2500  # once per installment
    move_clock(app, date(2027, 5, 20))
    view = await loan_of(bank, headers, loan["loan_id"])  # read ahead of the job: the same figures
    assert (view["days_past_due"], view["delinquency"]) == (94, "90+")
    assert (await verify_books(app)).balanced


async def test_the_accrual_job_catches_up_after_downtime_and_requeues_itself(bank, app, database):
    _headers, _number, _loan, _ = await active_loan(bank, app, on=date(2027, 1, 15), funds="0.00")
    queued = await scalar(
        app, "SELECT COUNT(*) FROM jobs WHERE kind = 'loan.accrue' AND status = 'queued'"
    )
    assert int(queued) == 1
    app.state.database.clock = lambda: at(date(2027, 1, 15), hour=23)
    assert await jobs.sweep(database) == 0  # due at the next midnight
    move_clock(app, date(2027, 1, 20))
    assert await jobs.sweep(database) == 1  # one run catches up the five days missed
    daily = round(1_000_000 * 0.1199 / 365)
    assert await bank_balance(app, "interest_income") == 5 * daily
    assert (
        int(
            await scalar(
                app, "SELECT COUNT(*) FROM jobs WHERE kind = 'loan.accrue' AND status = 'queued'"
            )
        )
        == 1
    )
    assert (await verify_books(app)).balanced


async def test_the_ledger_check_holds_the_loan_accounts_to_the_loans(bank, app, database):
    _headers, _number, _loan, _ = await active_loan(bank, app, on=date(2027, 1, 15))
    move_clock(app, date(2027, 2, 25))  # interest accrued, one installment due with its fee
    await accrual.accrue_all(database)
    assert await bank_balance(app, "loan_interest") == -(
        9992 + 10 * round(1_000_000 * 0.1199 / 365) + 2500
    )
    assert (await verify_books(app)).balanced
    await execute(database, "UPDATE loans SET outstanding_principal = outstanding_principal - 1")
    report = await verify_books(app)
    assert [m["kind"] for m in report.mismatches] == ["loan_book_mismatch"]
    assert report.mismatches[0]["account"] == "loans"


async def test_the_schedule_downloads_as_csv_and_pdf(bank, app):
    headers, _, loan, _ = await active_loan(bank, app, on=date(2027, 1, 31))
    url = f"/api/loans/{loan['loan_id']}/schedule"
    csv = await bank.client.get(url, params={"format": "csv"}, headers=headers)
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert (
        csv.headers["content-disposition"]
        == f'attachment; filename="loan-{loan["loan_id"]}-schedule.csv"'
    )
    lines = csv.text.strip().splitlines()
    assert lines[0] == "number,due_date,payment,principal,interest,balance,fee,paid,status"
    assert lines[1] == "1,2027-02-28,888.44,788.52,99.92,9211.48,0.00,0.00,upcoming"
    assert lines[-1].startswith("12,2028-01-31,888.47,")
    pdf = await bank.client.get(url, params={"format": "pdf"}, headers=headers)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert pdf.headers["content-disposition"].endswith('schedule.pdf"')


async def test_a_repayment_on_a_clock_behind_the_accrual_takes_nothing_back(bank, app, database):
    headers, number, loan, _ = await active_loan(bank, app, on=date(2027, 1, 15))
    move_clock(app, date(2027, 2, 15))  # the due date, posted by the daily job
    await accrual.accrue_all(database)
    move_clock(app, date(2027, 2, 14))  # another host's clock, a day behind
    view = await loan_of(bank, headers, loan["loan_id"])
    assert view["payoff_amount"] == "10099.92"  # the interest that fell due is owed
    paid = await repay(bank, headers, loan["loan_id"], view["payoff_amount"], number)
    assert paid.status_code == 201 and paid.json()["loan"]["status"] == "paid_off"
    assert await bank_balance(app, "loan_interest") == 0
    assert (await verify_books(app)).balanced


async def test_a_customer_no_longer_active_is_paid_no_loan(bank, app):
    body, headers, number = await funded_account(bank, "0.00")
    loan = await applied(bank, headers, number)
    await execute(
        app.state.database,
        "UPDATE customers SET status = 'Suspended' WHERE id = :c",
        c=int(body["customer_id"]),
    )
    admin = await bank.staff()
    problem(await approve(bank, admin, loan["loan_id"]), 403, "customer_suspended")
    assert (await account(bank.client, headers, number))["balance"] == "0.00"
    refused = await audit_records(app.state.database, "loan.approve")
    assert [(r.outcome, r.details["code"]) for r in refused] == [("failed", "customer_suspended")]
    rejected = await bank.client.post(
        f"/api/admin/loans/{loan['loan_id']}/reject", json={"reason": "Suspended"}, headers=admin
    )
    assert rejected.status_code == 200  # a rejection still goes through


async def test_a_tiny_income_declines_instead_of_overflowing(bank):
    _, headers, number = await funded_account(bank, "0.00")
    loan = await applied(
        bank, headers, number, principal="50000.00", term_months=6, monthly_income="0.01"
    )
    admin = await bank.staff()
    detail = (await bank.client.get(f"/api/admin/loans/{loan['loan_id']}", headers=admin)).json()
    assert (detail["recommendation"], detail["dti"]) == ("decline", "9999.99")


async def test_a_loan_whose_accrual_job_gave_up_is_chained_again(bank, app, database, monkeypatch):
    """An accrual job that failed all its attempts (an outage longer than its retries)
    broke the loan's chain of daily jobs: `bank loans accrue` catches the loan up and
    queues that job again, so the next midnight runs; `bank jobs retry` after it finds
    nothing more to add (one chain per loan)."""
    await active_loan(bank, app, on=date(2027, 1, 15), funds="0.00")

    async def broken(db, tx, payload):
        raise RuntimeError("database restarting")

    monkeypatch.setitem(jobs.HANDLERS, "loan.accrue", broken)
    move_clock(app, date(2027, 1, 16))
    for _ in range(jobs.MAX_ATTEMPTS):
        await execute(database, "UPDATE jobs SET run_after = :t", t=at(date(2027, 1, 16), 0))
        await jobs.sweep(database)
    counts = "SELECT status, COUNT(*) FROM jobs WHERE kind = 'loan.accrue' GROUP BY status"
    assert {s: int(n) for s, n in (await _rows(app, counts))} == {"failed": 1}
    monkeypatch.undo()
    move_clock(app, date(2027, 1, 20))
    assert await jobs.sweep(database) == 0  # nothing waits: the chain is broken
    (done,) = await accrual.accrue_all(database)
    daily = round(1_000_000 * 0.1199 / 365)
    assert done.posted and await bank_balance(app, "interest_income") == 5 * daily
    assert {s: int(n) for s, n in (await _rows(app, counts))} == {"queued": 1}
    assert await jobs.retry_failed(database) == 0
    move_clock(app, date(2027, 1, 22))
    assert await jobs.sweep(database) == 1  # the chain runs again, by itself
    assert await bank_balance(app, "interest_income") == 7 * daily
    assert {s: int(n) for s, n in (await _rows(app, counts))} == {"done": 1, "queued": 1}


async def _rows(app: Any, sql: str) -> list[Any]:
    from sqlalchemy import text

    async with app.state.database.session() as db:
        return list((await db.execute(text(sql))).all())
