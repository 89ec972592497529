"""The books (issue 3, item 2): every journal balances, stored balances equal the sum of
their entries, the reconciliation report and `bank verify` notice when they do not,
entries cannot be changed, and random sequences of movements keep the balances a simple
model predicts."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from app import store
from app.cli import cli
from app.db import unit_of_work
from app.models import JournalKind
from tests.helpers import Bank
from tests.ledger_helpers import (
    amount,
    balance,
    bank_with,
    entry_sums,
    funded_account,
    journal_count,
    open_account,
    problem,
    sql,
    stored_balances,
    transfer,
    unbalanced_journals,
    verify_books,
    withdraw,
)


async def test_audit_ledger_reports_balanced_books(bank, app):
    _, headers, a = await funded_account(bank, "300.00")
    _, other_headers, b = await funded_account(bank, "45.50")
    assert (await withdraw(bank.client, headers, a, "0.99")).status_code == 201
    assert (await transfer(bank.client, headers, a, b, "100.01")).status_code == 201
    assert (await transfer(bank.client, other_headers, b, a, "20.00")).status_code == 201
    auditor = await bank.staff("auditor")

    response = await bank.client.get("/api/audit/ledger", headers=auditor)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["balanced"] is True
    assert report["mismatches"] == []
    assert report["journals_checked"] == await journal_count(app) == 5
    assert report["accounts_checked"] == await sql_count(app, "accounts") == 3  # + cash
    assert report["totals"] == {
        "USD": {
            "customer_balances": "344.51",
            "internal_balances": "-344.51",
            "net": "0.00",
        }
    }
    assert await stored_balances(app) == {a: 219_00, b: 125_51}
    assert await unbalanced_journals(app) == []
    # Customers may not read the books; admins may.
    assert (await bank.client.get("/api/audit/ledger", headers=headers)).status_code == 403
    admin = await bank.staff("admin")
    assert (await bank.client.get("/api/audit/ledger", headers=admin)).json()["balanced"] is True


async def sql_count(app: Any, table: str) -> int:
    return int((await sql(app, f"SELECT count(*) FROM {table}"))[0][0])  # noqa: S608


def run_bank_verify(settings: Any, monkeypatch: pytest.MonkeyPatch, workdir: Any) -> Any:
    monkeypatch.chdir(workdir)  # no stray .env
    env = {
        "BANK_DATABASE_URL": settings.db_url,
        "BANK_DATA_DIR": str(settings.data_dir),
        "BANK_JWT_SECRET": settings.jwt_secret,
        "BANK_PII_SECRET": settings.pii_secret,
        "BANK_ENV": "test",
    }
    return CliRunner().invoke(cli, ["verify"], env=env)


async def test_a_balance_changed_behind_the_apps_back_is_reported(
    bank, app, settings, monkeypatch, tmp_path
):
    _, headers, number = await funded_account(bank, "80.00")
    ok = await asyncio.to_thread(run_bank_verify, settings, monkeypatch, tmp_path)
    assert ok.exit_code == 0, ok.output
    assert "ledger: 1 journals, 2 accounts, balanced" in ok.output

    await sql(app, "UPDATE accounts SET balance = balance + 1000 WHERE number = :n", n=number)
    assert await balance(bank.client, headers, number) == "90.00"  # the cache lies

    auditor = await bank.staff("auditor")
    report = (await bank.client.get("/api/audit/ledger", headers=auditor)).json()
    assert report["balanced"] is False
    assert {
        "kind": "balance_mismatch",
        "account_number": number,
        "stored": "90.00",
        "ledger": "80.00",
    } in report["mismatches"]
    assert report["totals"]["USD"]["net"] == "10.00"

    service = await verify_books(app)
    assert service.balanced is False
    assert service.mismatches == report["mismatches"]

    broken = await asyncio.to_thread(run_bank_verify, settings, monkeypatch, tmp_path)
    assert broken.exit_code == 1
    assert "NOT BALANCED" in broken.output
    assert number in broken.output


async def test_ledger_entries_refuse_update_and_delete(bank, app):
    _, _, number = await funded_account(bank, "10.00")
    entries = await sql_count(app, "entries")
    for statement in (
        "UPDATE entries SET amount = amount + 1",
        "UPDATE entries SET created_at = created_at",
        "DELETE FROM entries",
    ):
        with pytest.raises(DBAPIError, match="immutable"):
            await sql(app, statement)
    assert await sql_count(app, "entries") == entries == 2
    assert (await verify_books(app)).balanced
    assert (await entry_sums(app))[number] == 10_00


async def test_an_unbalanced_journal_is_never_written(bank, app):
    _, headers, number = await funded_account(bank, "10.00")
    database = app.state.database
    async with database.session() as db:
        with pytest.raises(store.UnbalancedJournal):
            async with unit_of_work(db) as tx:
                locked = await store.lock_movement(tx, [number])
                await store.post_journal(
                    tx,
                    locked,
                    store.NewJournal(JournalKind.deposit, 500, "USD", None, None, None),
                    [(locked.accounts[number], 500)],
                )
    assert await journal_count(app) == 1
    assert await balance(bank.client, headers, number) == "10.00"


@pytest.mark.postgres_only
async def test_postgres_refuses_an_unbalanced_journal_at_commit_whoever_writes_it(bank, app):
    _, _, number = await funded_account(bank, "10.00")
    database = app.state.database
    with pytest.raises(DBAPIError, match="does not balance"):
        async with database.engine.begin() as conn:
            account_id = (
                await conn.execute(text("SELECT id FROM accounts WHERE number = :n"), {"n": number})
            ).scalar_one()
            journal_id = (
                await conn.execute(
                    text(
                        "INSERT INTO journals (kind, status, amount, currency, created_at) "
                        "VALUES ('deposit', 'completed', 5, 'USD', now()) RETURNING id"
                    )
                )
            ).scalar_one()
            await conn.execute(
                text(
                    "INSERT INTO entries (journal_id, account_id, currency, amount, "
                    "balance_after, created_at) VALUES (:j, :a, 'USD', 5, 1005, now())"
                ),
                {"j": journal_id, "a": account_id},
            )
    assert await journal_count(app) == 1


# --- property: random movements against an in-memory model ------------------------------


@dataclass
class Books:
    """Customers shared by all examples; each example opens fresh accounts."""

    bank: Bank
    owners: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture
async def books(tmp_path, database_url):  # type: ignore[no-untyped-def]
    # A daily limit out of reach: the model here is about balances, not limits.
    async with bank_with(tmp_path, database_url, daily_limit=Decimal("1000000000.00")) as bank:
        yield Books(bank)


ACCOUNTS = 3  # accounts 0 and 1 belong to one customer, account 2 to another
cents = st.integers(min_value=1, max_value=400_00)
index = st.integers(min_value=0, max_value=ACCOUNTS - 1)
as_json_number = st.booleans()
operations = st.lists(
    st.one_of(
        st.tuples(st.just("deposit"), index, index, cents, as_json_number),
        st.tuples(st.just("withdrawal"), index, index, cents, as_json_number),
        st.tuples(st.just("transfer"), index, index, cents, as_json_number),
    ),
    min_size=1,
    max_size=10,
)


def body_text(fields: dict[str, str], minor: int, json_number: bool) -> str:
    value = amount(minor) if json_number else f'"{amount(minor)}"'
    pairs = [f'"{k}": "{v}"' for k, v in fields.items()] + [f'"amount": {value}']
    return "{" + ", ".join(pairs) + "}"


@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
async def test_random_movements_match_a_simple_model_and_the_books_balance(books, ops):
    bank = books.bank
    if not books.owners:
        books.owners = [(await bank.customer())[1] for _ in range(2)]
    owner_of = [books.owners[0], books.owners[0], books.owners[1]]
    numbers = [
        (await open_account(bank.client, owner_of[i]))["account_number"] for i in range(ACCOUNTS)
    ]
    model = [0] * ACCOUNTS

    for kind, source, target, minor, json_number in ops:
        headers = {**owner_of[source], "Content-Type": "application/json"}
        if kind == "transfer":
            fields = {"from_account": numbers[source], "to_account": numbers[target]}
        else:
            fields = {"account_number": numbers[source]}
        response = await bank.client.post(
            f"/api/transactions/{kind}",
            content=body_text(fields, minor, json_number),
            headers=headers,
        )
        if kind == "transfer" and source == target:
            problem(response, 422, "same_account")
            continue
        if kind != "deposit" and minor > model[source]:
            problem(response, 422, "insufficient_funds")
            continue
        assert response.status_code == 201, response.text
        if kind == "deposit":
            model[source] += minor
        else:
            model[source] -= minor
            if kind == "transfer":
                model[target] += minor
        assert response.json()["amount"] == amount(minor)
        assert response.json()["balance_after"] == amount(model[source])

    for i, number in enumerate(numbers):
        assert await balance(bank.client, owner_of[i], number) == amount(model[i])
    ledger = await entry_sums(bank.app)
    assert [ledger[n] for n in numbers] == model
    report = await verify_books(bank.app)
    assert report.balanced, report.mismatches
