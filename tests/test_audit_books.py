"""Point-in-time books (issue 21; API.md §8): after a mixed workload, every account's
balance at every instant an entry was posted equals the sum of its entries up to then,
and the trial balance then sums to zero."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from app.models import Account, Entry
from app.money import format_amount
from tests.helpers import Bank, problem
from tests.ledger_helpers import deposit, funded_account, transfer, withdraw


async def books(bank: Bank, headers: dict[str, str], at: str, **params: object) -> dict:
    response = await bank.client.get(
        "/api/audit/balances", params={"at": at, **params}, headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_the_books_at_every_recorded_instant_match_the_history(bank, app, database):
    _, first, a = await funded_account(bank, "1000.00")
    _, second, b = await funded_account(bank, "250.00")
    assert (await transfer(bank.client, first, a, b, "125.50")).status_code == 201
    assert (await withdraw(bank.client, second, b, "75.25")).status_code == 201
    assert (await deposit(bank.client, first, a, "9.99")).status_code == 201
    assert (await transfer(bank.client, second, b, a, "0.01")).status_code == 201
    async with database.session() as db:
        entries = (await db.execute(select(Entry.account_id, Entry.created_at, Entry.amount))).all()
        numbers = dict((await db.execute(select(Account.id, Account.number))).all())
    auditor = await bank.staff("auditor")
    instants = sorted({at for _, at, _ in entries})
    first_instant = instants[0] - timedelta(microseconds=1)
    for instant in [first_instant, *instants]:
        expected: dict[str, int] = defaultdict(int)
        for account_id, at, amount in entries:
            if at <= instant:
                expected[numbers[account_id]] += amount
        report = await books(bank, auditor, instant.isoformat())
        assert report["balanced"] is True
        seen = {row["account_number"]: row["balance"] for row in report["accounts"]}
        for number, total in expected.items():
            assert seen[number] == format_amount(total), (instant, number)
        assert all(seen[n] == "0.00" for n in seen if n not in expected)
    now = await books(bank, auditor, datetime.now(UTC).isoformat())
    assert {r["account_number"]: r["balance"] for r in now["accounts"]}[a] == "884.50"
    assert now["totals"]["USD"]["net"] == "0.00"
    assert now["totals"]["USD"]["customer_balances"] == "1184.74"  # cash in less cash out


async def test_balances_page_and_need_an_instant_with_its_offset(bank):
    for _ in range(3):
        await funded_account(bank, "10.00")
    auditor = await bank.staff("auditor")
    now = datetime.now(UTC).isoformat()
    page = await books(bank, auditor, now, limit=2)
    rest = await books(bank, auditor, now, cursor=page["next_cursor"])
    assert len(page["accounts"]) == 2 and len(rest["accounts"]) >= 2
    assert page["totals"] == rest["totals"]
    naive = await bank.client.get(
        "/api/audit/balances", params={"at": "2026-12-01T10:00:00"}, headers=auditor
    )
    problem(naive, 422, "validation_error")
    customer = (await bank.customer())[1]
    problem(
        await bank.client.get(
            "/api/audit/balances", params={"at": "2026-12-01T10:00:00Z"}, headers=customer
        ),
        403,
        "forbidden",
    )


async def test_an_account_at_an_instant_shows_its_balance_and_holds_then(bank, app, database):
    from tests.helpers import audit_records

    _, headers, number = await funded_account(bank, "60000.00")
    held = await withdraw(bank.client, headers, number, "50000.00")
    assert held.json()["status"] == "pending_review"
    admin = await bank.staff()
    rejected = await bank.client.post(
        f"/api/admin/transactions/{held.json()['transaction_id']}/reject",
        json={"reason": "not the customer"},
        headers=admin,
    )
    assert rejected.status_code == 200
    deposited = (await audit_records(database, "transaction.deposit"))[0].at
    placed = (await audit_records(database, "transaction.withdrawal"))[0].at
    decided = (await audit_records(database, "transaction.reject"))[0].at
    auditor = await bank.staff("auditor")

    async def at(instant) -> dict:
        response = await bank.client.get(
            f"/api/accounts/{number}", params={"at": instant.isoformat()}, headers=auditor
        )
        assert response.status_code == 200, response.text
        return response.json()

    before = await at(deposited - timedelta(seconds=1))
    assert (before["balance"], before["available_balance"]) == ("0.00", "0.00")
    during = await at(placed + (decided - placed) / 2)
    assert (during["balance"], during["available_balance"]) == ("60000.00", "10000.00")
    after = await at(decided + timedelta(microseconds=1))
    assert (after["balance"], after["available_balance"]) == ("60000.00", "60000.00")
    own = await bank.client.get(
        f"/api/accounts/{number}", params={"at": datetime.now(UTC).isoformat()}, headers=headers
    )
    assert own.json()["balance"] == "60000.00"


async def test_the_books_of_an_instant_not_yet_reached_are_refused(bank, app):
    """A later instant has no books yet: answering today's would give figures that change
    before then. 422 `at_in_future` naming `at`, on the database's clock."""
    _, headers, number = await funded_account(bank, "10.00")
    auditor = await bank.staff("auditor")
    soon = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    for url, who in (("/api/audit/balances", auditor), (f"/api/accounts/{number}", headers)):
        refused = problem(
            await bank.client.get(url, params={"at": soon}, headers=who), 422, "at_in_future"
        )
        assert refused["errors"][0]["field"] == "at"
    app.state.database.clock = lambda: datetime.now(UTC) + timedelta(minutes=2)
    assert (await books(bank, auditor, soon))["balanced"] is True


async def test_an_instant_is_iso_8601_with_its_offset_never_unix_seconds(bank):
    _, _headers, number = await funded_account(bank, "10.00")
    auditor = await bank.staff("auditor")
    for value in ("0.5", "1700000000", "-1", "2026-12-01", "2026-12-01T10:00:00"):
        books_at = await bank.client.get(
            "/api/audit/balances", params={"at": value}, headers=auditor
        )
        assert problem(books_at, 422, "validation_error")["errors"][0]["field"] == "at", value
        one = await bank.client.get(
            f"/api/accounts/{number}", params={"at": value}, headers=auditor
        )
        assert problem(one, 422, "validation_error")["errors"][0]["field"] == "at", value
    for value in ("2026-12-01T10:00:00Z", "2026-12-01T10:00:00.123456+02:00"):
        ok = await bank.client.get("/api/audit/balances", params={"at": value}, headers=auditor)
        assert ok.status_code == 200, (value, ok.text)
    admin = await bank.staff()
    entry = await bank.client.post(
        "/api/admin/fraud/lists",
        json={
            "list": "block",
            "target_type": "account",
            "target": number,
            "reason": "case 1",
            "expires_at": 4102444800,
        },
        headers=admin,
    )
    assert problem(entry, 422, "validation_error")["errors"][0]["field"] == "expires_at"
