"""Accounts (API.md §4): opening, numbers, ownership, listing, closing, freezing, and who
may move money (issue 3, item 1)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from tests.helpers import audit_records
from tests.ledger_helpers import (
    ACCOUNT_KEYS,
    account,
    balance,
    denied_audits,
    deposit,
    deposited,
    funded_account,
    luhn_valid,
    open_account,
    problem,
    register_pending,
    set_customer_status,
    stored_balances,
    transfer,
    unknown_number,
    withdraw,
    wrong_check_digit,
)


async def test_open_savings_and_checking_accounts_returns_contract_shape(bank):
    customer, headers = await bank.customer()
    before = datetime.now(UTC)
    for kind in ("savings", "checking"):
        response = await bank.client.post("/api/accounts", json={"type": kind}, headers=headers)
        assert response.status_code == 201, response.text
        body = response.json()
        assert set(body) == ACCOUNT_KEYS
        assert body["type"] == kind
        assert body["customer_id"] == customer["customer_id"]
        assert body["currency"] == "USD"
        assert body["balance"] == "0.00"
        assert body["available_balance"] == "0.00"
        assert body["status"] == "active"
        number = body["account_number"]
        assert len(number) == 12 and number.isdigit() and luhn_valid(number), number
        opened = datetime.fromisoformat(body["opened_at"].replace("Z", "+00:00"))
        assert opened.utcoffset() is not None and opened.utcoffset().total_seconds() == 0
        assert abs((opened - before).total_seconds()) < 60
        assert await account(bank.client, headers, number) == body


async def test_open_account_in_another_currency(bank):
    _, headers = await bank.customer()
    body = await open_account(bank.client, headers, "savings", currency="EUR")
    assert body["currency"] == "EUR"
    bad = await bank.client.post(
        "/api/accounts", json={"type": "savings", "currency": "euro"}, headers=headers
    )
    assert "currency" in {e["field"] for e in problem(bad, 422, "validation_error")["errors"]}
    bad = await bank.client.post("/api/accounts", json={"type": "loan"}, headers=headers)
    assert "type" in {e["field"] for e in problem(bad, 422, "validation_error")["errors"]}


async def test_account_numbers_are_distinct_luhn_valid_and_not_sequential(bank):
    _, headers = await bank.customer()
    numbers = [(await open_account(bank.client, headers))["account_number"] for _ in range(6)]
    assert len(set(numbers)) == 6
    assert all(luhn_valid(n) for n in numbers)
    payloads = [int(n[:-1]) for n in numbers]
    steps = {b - a for a, b in itertools.pairwise(payloads)}
    assert len(steps) > 1, f"account numbers follow a sequence: {numbers}"


async def test_customer_pending_kyc_cannot_open_an_account(bank, app):
    form = await register_pending(app)
    headers = await bank.headers(form["username"], form["password"])
    me = await bank.client.get("/api/customers/me", headers=headers)
    assert me.json()["status"] == "Pending KYC Approval"
    response = await bank.client.post("/api/accounts", json={"type": "savings"}, headers=headers)
    problem(response, 403, "kyc_required")
    listed = await bank.client.get("/api/accounts", headers=headers)
    assert listed.json()["items"] == []


async def test_customer_under_review_cannot_open_an_account(bank):
    _, headers = await bank.customer(full_name="Viktor Embargo")  # on the watch list
    me = await bank.client.get("/api/customers/me", headers=headers)
    assert me.json()["status"] == "Under Review"
    response = await bank.client.post("/api/accounts", json={"type": "checking"}, headers=headers)
    problem(response, 403, "kyc_required")


async def test_staff_cannot_open_customer_accounts(bank):
    admin = await bank.staff("admin")
    response = await bank.client.post("/api/accounts", json={"type": "checking"}, headers=admin)
    assert response.status_code == 403
    anonymous = await bank.client.post("/api/accounts", json={"type": "checking"})
    assert anonymous.status_code == 401


async def test_list_accounts_paginates_own_accounts_only(bank):
    _, headers = await bank.customer()
    _, other_headers = await bank.customer()
    others = await open_account(bank.client, other_headers)
    mine = [(await open_account(bank.client, headers))["account_number"] for _ in range(5)]

    seen: list[str] = []
    pages = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        response = await bank.client.get("/api/accounts", params=params, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        assert set(page) == {"items", "next_cursor"}
        pages.append(len(page["items"]))
        seen += [item["account_number"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [2, 2, 1]
    assert seen == mine  # opening order, no duplicates, no gaps
    assert others["account_number"] not in seen

    everything = await bank.client.get("/api/accounts", headers=headers)
    assert [a["account_number"] for a in everything.json()["items"]] == mine
    assert everything.json()["next_cursor"] is None
    too_many = await bank.client.get("/api/accounts", params={"limit": 501}, headers=headers)
    problem(too_many, 422, "validation_error")


async def test_another_customers_account_is_not_found_and_the_denial_is_audited(bank, app):
    _, headers = await bank.customer()
    _, owner_headers, theirs = await funded_account(bank, "10.00")
    unknown = unknown_number()

    hidden = await bank.client.get(f"/api/accounts/{theirs}", headers=headers)
    missing = await bank.client.get(f"/api/accounts/{unknown}", headers=headers)
    hidden_body = problem(hidden, 404, missing.json()["code"])
    missing_body = problem(missing, 404, "account_not_found")
    assert hidden_body["title"] == missing_body["title"]
    assert "10.00" not in hidden.text

    denials = await denied_audits(app, "account.read", theirs)
    assert len(denials) == 1
    assert await denied_audits(app, "account.read", unknown) == []
    # The owner still sees it.
    assert await balance(bank.client, owner_headers, theirs) == "10.00"


async def test_account_number_failing_luhn_is_422_and_valid_unknown_is_404(bank):
    _, headers = await bank.customer()
    number = (await open_account(bank.client, headers))["account_number"]
    for bad in (wrong_check_digit(number), "12345", "abcdefghijkl", number + "0"):
        response = await bank.client.get(f"/api/accounts/{bad}", headers=headers)
        body = problem(response, 422, "invalid_account_number")
        assert body["errors"][0]["field"] == "account_number"
    problem(
        await bank.client.get(f"/api/accounts/{unknown_number(1)}", headers=headers),
        404,
        "account_not_found",
    )
    bad_deposit = await deposit(bank.client, headers, wrong_check_digit(number), "5.00")
    problem(bad_deposit, 422, "invalid_account_number")


async def test_close_account_at_zero_balance(bank):
    _, headers = await bank.customer()
    number = (await open_account(bank.client, headers))["account_number"]
    await deposited(bank.client, headers, number, "5.00")
    assert (await withdraw(bank.client, headers, number, "5.00")).status_code == 201

    closed = await bank.client.post(f"/api/accounts/{number}/close", headers=headers)
    assert closed.status_code == 200, closed.text
    assert closed.json()["status"] == "closed"
    assert (await account(bank.client, headers, number))["status"] == "closed"
    problem(await deposit(bank.client, headers, number, "1.00"), 409, "account_not_active")
    again = await bank.client.post(f"/api/accounts/{number}/close", headers=headers)
    problem(again, 409, "account_not_active")


async def test_close_account_with_money_is_refused(bank):
    _, headers, number = await funded_account(bank, "0.01")
    response = await bank.client.post(f"/api/accounts/{number}/close", headers=headers)
    problem(response, 409, "balance_not_zero")
    assert (await account(bank.client, headers, number))["status"] == "active"


async def test_closing_someone_elses_account_is_not_found(bank, app):
    _, headers = await bank.customer()
    _, owner_headers = await bank.customer()
    theirs = (await open_account(bank.client, owner_headers))["account_number"]
    response = await bank.client.post(f"/api/accounts/{theirs}/close", headers=headers)
    problem(response, 404, "account_not_found")
    assert (await account(bank.client, owner_headers, theirs))["status"] == "active"
    assert len(await denied_audits(app, "account.close", theirs)) == 1


async def test_frozen_account_neither_sends_nor_receives(bank, app):
    _, headers, frozen = await funded_account(bank, "100.00")
    _, other_headers, other = await funded_account(bank, "100.00")
    admin = await bank.staff("admin")
    change = {"status": "frozen", "reason": "suspected fraud"}

    by_customer = await bank.client.patch(
        f"/api/admin/accounts/{frozen}", json=change, headers=headers
    )
    assert by_customer.status_code == 403
    response = await bank.client.patch(f"/api/admin/accounts/{frozen}", json=change, headers=admin)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "frozen"
    assert (await account(bank.client, headers, frozen))["status"] == "frozen"

    before = await stored_balances(app)
    problem(await deposit(bank.client, headers, frozen, "1.00"), 409, "account_not_active")
    problem(await withdraw(bank.client, headers, frozen, "1.00"), 409, "account_not_active")
    problem(await transfer(bank.client, headers, frozen, other, "1.00"), 409, "account_not_active")
    problem(
        await transfer(bank.client, other_headers, other, frozen, "1.00"),
        409,
        "account_not_active",
    )
    assert await stored_balances(app) == before

    thaw = {"status": "active", "reason": "cleared"}
    response = await bank.client.patch(f"/api/admin/accounts/{frozen}", json=thaw, headers=admin)
    assert response.json()["status"] == "active"
    assert (await transfer(bank.client, other_headers, other, frozen, "1.00")).status_code == 201
    assert await balance(bank.client, headers, frozen) == "101.00"


async def test_admin_status_change_validates_and_finds_the_account(bank):
    admin = await bank.staff("admin")
    _, _, number = await funded_account(bank, "1.00")
    no_reason = await bank.client.patch(
        f"/api/admin/accounts/{number}", json={"status": "frozen"}, headers=admin
    )
    problem(no_reason, 422, "validation_error")
    missing = await bank.client.patch(
        f"/api/admin/accounts/{unknown_number(2)}",
        json={"status": "frozen", "reason": "test"},
        headers=admin,
    )
    problem(missing, 404, "account_not_found")
    close_with_money = await bank.client.patch(
        f"/api/admin/accounts/{number}", json={"status": "closed", "reason": "test"}, headers=admin
    )
    problem(close_with_money, 409, "balance_not_zero")


async def test_a_closed_account_is_never_reopened_and_a_no_op_change_is_a_conflict(bank, app):
    admin = await bank.staff("admin")
    _, headers, number = await funded_account(bank, "0.00")
    same = await bank.client.patch(
        f"/api/admin/accounts/{number}", json={"status": "active", "reason": "again"}, headers=admin
    )
    assert problem(same, 409, "status_unchanged")["errors"][0]["field"] == "status"
    change = {"status": "frozen", "reason": "review"}
    assert (
        await bank.client.patch(f"/api/admin/accounts/{number}", json=change, headers=admin)
    ).status_code == 200
    again = await bank.client.patch(f"/api/admin/accounts/{number}", json=change, headers=admin)
    problem(again, 409, "status_unchanged")
    close = {"status": "closed", "reason": "customer request"}
    closed = await bank.client.patch(f"/api/admin/accounts/{number}", json=close, headers=admin)
    assert closed.json()["status"] == "closed"
    for status in ("active", "frozen", "closed"):
        reopen = await bank.client.patch(
            f"/api/admin/accounts/{number}",
            json={"status": status, "reason": "try to reopen"},
            headers=admin,
        )
        problem(reopen, 409, "account_closed")
    assert (await account(bank.client, headers, number))["status"] == "closed"
    changes = await audit_records(app.state.database, "account.status")
    assert [(r.details or {}).get("to") for r in changes if r.entity_id == number] == [
        "frozen",
        "closed",
    ]


async def test_suspended_customer_can_read_but_not_move_money(bank, app):
    customer, headers, number = await funded_account(bank, "50.00")
    _, _, other = await funded_account(bank, "1.00")
    await set_customer_status(app, customer["customer_id"], "Suspended")

    problem(await deposit(bank.client, headers, number, "1.00"), 403, "customer_suspended")
    problem(await withdraw(bank.client, headers, number, "1.00"), 403, "customer_suspended")
    problem(await transfer(bank.client, headers, number, other, "1.00"), 403, "customer_suspended")
    opened = await bank.client.post("/api/accounts", json={"type": "savings"}, headers=headers)
    problem(opened, 403, "customer_suspended")

    assert await balance(bank.client, headers, number) == "50.00"
    listed = await bank.client.get("/api/accounts", headers=headers)
    assert [a["account_number"] for a in listed.json()["items"]] == [number]
    history = await bank.client.get("/api/transactions", headers=headers)
    assert history.status_code == 200 and len(history.json()["items"]) == 1
    statement = await bank.client.get(f"/api/accounts/{number}/statement", headers=headers)
    assert statement.status_code == 200
    assert statement.json()["closing_balance"] == "50.00"


async def test_customer_not_active_cannot_move_money(bank, app):
    customer, headers, number = await funded_account(bank, "20.00")
    for status in ("Under Review", "KYC Rejected", "Closed", "Pending KYC Approval"):
        await set_customer_status(app, customer["customer_id"], status)
        problem(await deposit(bank.client, headers, number, "1.00"), 403, "kyc_required")
        problem(await withdraw(bank.client, headers, number, "1.00"), 403, "kyc_required")
    assert await balance(bank.client, headers, number) == "20.00"
    await set_customer_status(app, customer["customer_id"], "Active")
    assert (await withdraw(bank.client, headers, number, "1.00")).status_code == 201
