"""Deposits, withdrawals and transfers (API.md §5): the contract's shape, amount parsing,
and every business rule's error code (issue 3, item 3)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tests.ledger_helpers import (
    TRANSACTION_KEYS,
    balance,
    bank_with,
    deposit,
    deposited,
    funded_account,
    is_money,
    journal_count,
    ledger_clock,
    open_account,
    problem,
    sql,
    stored_balances,
    transfer,
    unknown_number,
    verify_books,
    withdraw,
)


def assert_transaction(body: dict, **expected: object) -> None:
    assert set(body) == TRANSACTION_KEYS
    assert body["status"] == "completed"
    assert is_money(body["amount"]) and is_money(body["balance_after"])
    assert body["transaction_id"].isdigit()
    created = datetime.fromisoformat(body["created_at"].replace("Z", "+00:00"))
    assert created.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - created) < timedelta(minutes=5)
    for key, value in expected.items():
        assert body[key] == value, (key, body)


async def test_deposit_withdrawal_and_transfer_return_the_transaction(bank, app):
    _customer, headers = await bank.customer()
    a = (await open_account(bank.client, headers))["account_number"]
    b = (await open_account(bank.client, headers, "savings"))["account_number"]

    response = await deposit(bank.client, headers, a, "100.00", description="salary")
    assert response.status_code == 201, response.text
    assert_transaction(
        response.json(),
        type="deposit",
        amount="100.00",
        currency="USD",
        from_account=None,
        to_account=a,
        description="salary",
        balance_after="100.00",
    )
    response = await withdraw(bank.client, headers, a, "30.25")
    assert response.status_code == 201, response.text
    assert_transaction(
        response.json(),
        type="withdrawal",
        amount="30.25",
        from_account=a,
        to_account=None,
        description=None,
        balance_after="69.75",
    )
    response = await transfer(bank.client, headers, a, b, "19.75", description="rent")
    assert response.status_code == 201, response.text
    assert_transaction(
        response.json(),
        type="transfer",
        amount="19.75",
        from_account=a,
        to_account=b,
        description="rent",
        balance_after="50.00",
    )
    assert await balance(bank.client, headers, a) == "50.00"
    assert await balance(bank.client, headers, b) == "19.75"
    assert (await open_account(bank.client, headers))["balance"] == "0.00"
    assert await journal_count(app) == 3

    audited = await sql(
        app,
        "SELECT action, entity_id, actor_id FROM audit_log WHERE action LIKE 'transaction.%' "
        "AND outcome = 'success' ORDER BY seq",
    )
    assert [row[0] for row in audited] == [
        "transaction.deposit",
        "transaction.withdrawal",
        "transaction.transfer",
    ]
    assert audited[-1][1] == response.json()["transaction_id"]


async def test_json_number_and_decimal_string_amounts_are_both_accepted(bank):
    _, headers = await bank.customer()
    number = (await open_account(bank.client, headers))["account_number"]
    as_number = await bank.client.post(
        "/api/transactions/deposit",
        content=f'{{"account_number": "{number}", "amount": 12.5}}',
        headers={**headers, "Content-Type": "application/json"},
    )
    assert as_number.status_code == 201, as_number.text
    assert as_number.json()["amount"] == "12.50"
    as_string = await deposit(bank.client, headers, number, "12.50")
    assert as_string.json()["amount"] == "12.50"
    as_integer = await deposit(bank.client, headers, number, 7)
    assert as_integer.json()["amount"] == "7.00"
    # 0.1 + 0.2 as floats is 0.30000000000000004: the body must never pass through float.
    tenths = await bank.client.post(
        "/api/transactions/deposit",
        content=f'{{"account_number": "{number}", "amount": 0.30}}',
        headers={**headers, "Content-Type": "application/json"},
    )
    assert tenths.json()["balance_after"] == "32.30"
    assert await balance(bank.client, headers, number) == "32.30"


BAD_AMOUNTS = {
    "three decimal places": '"0.001"',
    "zero": "0",
    "zero string": '"0.00"',
    "negative": "-5",
    "negative string": '"-5.00"',
    "not a number": '"abc"',
    "overflows a double": "1e309",
    "NaN string": '"NaN"',
    "Infinity string": '"Infinity"',
    "40 digits": "1" + "0" * 39,
    "40-digit string": '"' + "9" * 40 + '"',
    "boolean": "true",
    "null": "null",
    "exponent string": '"1e3"',
}


async def test_bad_amounts_are_refused_naming_the_amount_field(bank, app):
    _, headers, number = await funded_account(bank, "100.00")
    other = (await open_account(bank.client, headers))["account_number"]
    json_headers = {**headers, "Content-Type": "application/json"}
    bodies = {
        "deposit": f'{{"account_number": "{number}", "amount": %s}}',
        "withdrawal": f'{{"account_number": "{number}", "amount": %s}}',
        "transfer": f'{{"from_account": "{number}", "to_account": "{other}", "amount": %s}}',
    }
    for endpoint, template in bodies.items():
        for case, raw in BAD_AMOUNTS.items():
            response = await bank.client.post(
                f"/api/transactions/{endpoint}", content=template % raw, headers=json_headers
            )
            body = problem(response, 422, "validation_error")
            assert [e["field"] for e in body["errors"]] == ["amount"], (endpoint, case, body)
    missing = await bank.client.post(
        "/api/transactions/deposit", json={"account_number": number}, headers=headers
    )
    assert "amount" in {e["field"] for e in problem(missing, 422, "validation_error")["errors"]}
    assert await journal_count(app) == 1
    assert await balance(bank.client, headers, number) == "100.00"


async def test_non_standard_json_constants_are_malformed(bank):
    _, headers, number = await funded_account(bank, "1.00")
    for raw in ("NaN", "Infinity", "-Infinity"):
        response = await bank.client.post(
            "/api/transactions/deposit",
            content=f'{{"account_number": "{number}", "amount": {raw}}}',
            headers={**headers, "Content-Type": "application/json"},
        )
        assert response.status_code in (400, 422), response.text
        assert response.headers["content-type"].startswith("application/problem+json")
    assert await balance(bank.client, headers, number) == "1.00"


async def test_withdrawal_and_transfer_refuse_overdraft(bank, app):
    _, headers, number = await funded_account(bank, "20.00")
    other = (await open_account(bank.client, headers))["account_number"]
    body = problem(await withdraw(bank.client, headers, number, "20.01"), 422, "insufficient_funds")
    assert body["errors"][0]["field"] == "amount"
    assert "20.00" in body["detail"]
    problem(await transfer(bank.client, headers, number, other, "50.00"), 422, "insufficient_funds")
    assert await balance(bank.client, headers, number) == "20.00"
    assert await journal_count(app) == 1
    # Exactly the balance is fine, and leaves zero.
    emptied = await withdraw(bank.client, headers, number, "20.00")
    assert emptied.status_code == 201 and emptied.json()["balance_after"] == "0.00"
    problem(await withdraw(bank.client, headers, number, "0.01"), 422, "insufficient_funds")


async def test_transfer_between_currencies_is_refused(bank, app):
    _, headers, usd = await funded_account(bank, "100.00")
    eur = (await open_account(bank.client, headers, "savings", currency="EUR"))["account_number"]
    assert (await deposit(bank.client, headers, eur, "10.00")).json()["currency"] == "EUR"
    problem(await transfer(bank.client, headers, usd, eur, "1.00"), 422, "currency_mismatch")
    problem(await transfer(bank.client, headers, eur, usd, "1.00"), 422, "currency_mismatch")
    assert await stored_balances(app) == {usd: 10000, eur: 1000}
    report = (
        await bank.client.get("/api/audit/ledger", headers=await bank.staff("auditor"))
    ).json()
    assert report["balanced"] is True
    assert report["totals"]["EUR"]["net"] == "0.00"
    assert report["totals"]["EUR"]["customer_balances"] == "10.00"


async def test_transfer_to_the_same_account_is_refused(bank, app):
    _, headers, number = await funded_account(bank, "100.00")
    body = problem(
        await transfer(bank.client, headers, number, number, "1.00"), 422, "same_account"
    )
    assert body["errors"][0]["field"] == "to_account"
    assert await journal_count(app) == 1


async def test_destination_that_does_not_exist_is_not_found(bank, app):
    _, headers, number = await funded_account(bank, "100.00")
    body = problem(
        await transfer(bank.client, headers, number, unknown_number(3), "1.00"),
        404,
        "account_not_found",
    )
    assert body["errors"][0]["field"] == "to_account"
    assert await balance(bank.client, headers, number) == "100.00"


async def test_source_must_be_the_callers_account(bank, app):
    _, headers, mine = await funded_account(bank, "100.00")
    _, owner_headers, theirs = await funded_account(bank, "100.00")
    problem(await transfer(bank.client, headers, theirs, mine, "1.00"), 404, "account_not_found")
    problem(await withdraw(bank.client, headers, theirs, "1.00"), 404, "account_not_found")
    problem(await deposit(bank.client, headers, theirs, "1.00"), 404, "account_not_found")
    assert await balance(bank.client, owner_headers, theirs) == "100.00"
    denied = await sql(
        app,
        "SELECT action FROM audit_log WHERE outcome = 'denied' AND entity_id = :n ORDER BY seq",
        n=theirs,
    )
    assert [row[0] for row in denied] == [
        "transaction.transfer",
        "transaction.withdrawal",
        "transaction.deposit",
    ]


async def test_transfer_to_another_customer_reveals_nothing_about_the_recipient(bank):
    sender, headers, source = await funded_account(bank, "500.00")
    recipient, recipient_headers, target = await funded_account(
        bank, "777.77", full_name="Rita Recipient"
    )
    response = await transfer(bank.client, headers, source, target, "100.00", description="gift")
    assert response.status_code == 201, response.text
    body = response.json()
    assert_transaction(body, from_account=source, to_account=target, balance_after="400.00")
    for secret in ("877.77", "777.77", "Rita", recipient["customer_id"], recipient["username"]):
        assert secret not in response.text
    # The sender's view of it, later, is just as discreet.
    again = await bank.client.get(f"/api/transactions/{body['transaction_id']}", headers=headers)
    assert again.json()["balance_after"] == "400.00"
    assert "877.77" not in again.text
    # The recipient got the money and sees their own balance on the same transaction.
    assert await balance(bank.client, recipient_headers, target) == "877.77"
    theirs = await bank.client.get(
        f"/api/transactions/{body['transaction_id']}", headers=recipient_headers
    )
    assert theirs.status_code == 200
    assert theirs.json()["balance_after"] == "877.77"
    assert "400.00" not in theirs.text
    assert sender["customer_id"] not in theirs.text


async def test_amount_above_the_per_transaction_maximum_is_refused(tmp_path, database_url):
    async with bank_with(tmp_path, database_url, max_transaction=Decimal("500.00")) as bank:
        _, headers, number = await funded_account(bank, "500.00")
        other = (await open_account(bank.client, headers))["account_number"]
        await deposited(bank.client, headers, number, "500.00")
        for response in (
            await deposit(bank.client, headers, number, "500.01"),
            await withdraw(bank.client, headers, number, "500.01"),
            await transfer(bank.client, headers, number, other, "500.01"),
        ):
            body = problem(response, 422, "amount_too_large")
            assert body["errors"][0]["field"] == "amount"
            assert "500.00" in body["detail"]
        assert await balance(bank.client, headers, number) == "1000.00"
        assert (await transfer(bank.client, headers, number, other, "500.00")).status_code == 201


async def test_daily_outgoing_limit_is_rolling_24h_over_withdrawals_and_transfers(
    tmp_path, database_url, monkeypatch
):
    async with bank_with(tmp_path, database_url, daily_limit=Decimal("1000.00")) as bank:
        _, headers, number = await funded_account(bank, "3000.00")  # deposits do not count
        _, other_headers, other = await funded_account(bank, "700.00")
        yesterday = datetime.now(UTC) - timedelta(hours=23)
        with ledger_clock(monkeypatch, yesterday):
            assert (await withdraw(bank.client, headers, number, "600.00")).status_code == 201
        assert (await transfer(bank.client, headers, number, other, "400.00")).status_code == 201

        for response in (
            await withdraw(bank.client, headers, number, "0.01"),
            await transfer(bank.client, headers, number, other, "0.01"),
        ):
            body = problem(response, 422, "daily_limit_exceeded")
            assert body["errors"][0]["field"] == "amount"
        # Deposits still work, and the recipient's own limit is untouched by what it received.
        assert (await deposit(bank.client, headers, number, "1500.00")).status_code == 201
        assert (await withdraw(bank.client, other_headers, other, "1000.00")).status_code == 201
        assert await balance(bank.client, headers, number) == "3500.00"

        # Two hours on, the withdrawal from 23 hours ago has left the 24-hour window.
        with ledger_clock(monkeypatch, datetime.now(UTC) + timedelta(hours=2)):
            problem(
                await withdraw(bank.client, headers, number, "600.01"), 422, "daily_limit_exceeded"
            )
            assert (await withdraw(bank.client, headers, number, "600.00")).status_code == 201


async def test_daily_limit_window_is_exact_to_the_second_at_its_first_minute(
    tmp_path, database_url, monkeypatch
):
    """The limit sums whole minutes from outgoing_minutes and, for the window's first
    minute, the journals themselves: a movement 10 s inside the window counts, 5 s
    after it left the window it does not."""
    async with bank_with(tmp_path, database_url, daily_limit=Decimal("1000.00")) as bank:
        _, headers, number = await funded_account(bank, "3000.00")
        base = datetime.now(UTC).replace(second=30, microsecond=0)
        with ledger_clock(monkeypatch, base - timedelta(hours=24) + timedelta(seconds=10)):
            assert (await withdraw(bank.client, headers, number, "600.00")).status_code == 201
        with ledger_clock(monkeypatch, base):
            problem(
                await withdraw(bank.client, headers, number, "400.01"), 422, "daily_limit_exceeded"
            )
            assert (await withdraw(bank.client, headers, number, "400.00")).status_code == 201
        with ledger_clock(monkeypatch, base + timedelta(seconds=15)):
            # The 600.00 left the window 5 s ago; the 400.00 of `base` still counts.
            problem(
                await withdraw(bank.client, headers, number, "600.01"), 422, "daily_limit_exceeded"
            )
            assert (await withdraw(bank.client, headers, number, "600.00")).status_code == 201


async def test_concurrent_withdrawals_of_one_customer_never_overrun_the_daily_limit(
    tmp_path, database_url
):
    """The limit is read under the customer's row lock: ten concurrent withdrawals of a
    fifth of the limit each, from five different accounts (so no account lock orders
    them), and exactly five pass."""
    async with bank_with(tmp_path, database_url, daily_limit=Decimal("100.00")) as bank:
        _, headers, first = await funded_account(bank, "100.00")
        numbers = [first]
        for _ in range(4):
            number = (await open_account(bank.client, headers))["account_number"]
            await deposited(bank.client, headers, number, "100.00")
            numbers.append(number)
        responses = await asyncio.gather(
            *(withdraw(bank.client, headers, numbers[n % 5], "20.00") for n in range(10))
        )
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [201] * 5 + [422] * 5, statuses
        for response in responses:
            if response.status_code == 422:
                problem(response, 422, "daily_limit_exceeded")


async def test_daily_limit_totals_are_reconciled_with_the_journals(bank, app):
    _, headers, number = await funded_account(bank, "100.00")
    _, _, other = await funded_account(bank, "1.00")
    assert (await withdraw(bank.client, headers, number, "10.00")).status_code == 201
    assert (await transfer(bank.client, headers, number, other, "5.00")).status_code == 201
    assert sum(row[0] for row in await sql(app, "SELECT amount FROM outgoing_minutes")) == 1500
    assert (await verify_books(app)).balanced

    await sql(app, "UPDATE outgoing_minutes SET amount = amount + 1")
    report = await verify_books(app)
    assert report.balanced is False
    assert {m["kind"] for m in report.mismatches} == {"outgoing_total_mismatch"}


async def test_money_endpoints_require_a_customer(bank):
    _, _, number = await funded_account(bank, "5.00")
    admin = await bank.staff("admin")
    assert (await deposit(bank.client, admin, number, "1.00")).status_code == 403
    anonymous = await deposit(bank.client, {}, number, "1.00")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"


async def test_trailing_slash_works_on_the_new_endpoints(bank):
    _, headers, number = await funded_account(bank, "5.00")
    listed = await bank.client.get("/api/accounts/", headers=headers)
    assert listed.status_code == 200
    assert [a["account_number"] for a in listed.json()["items"]] == [number]
    response = await bank.client.post(
        "/api/transactions/deposit/",
        json={"account_number": number, "amount": "1.00"},
        headers=headers,
    )
    assert response.status_code == 201
    assert response.json()["balance_after"] == "6.00"
