"""Concurrency and atomicity (issue 3, item 4): 1,000 random concurrent transfers among 20
accounts, first through the ASGI app in this process, then against a real
`bank serve --workers 2`. Afterwards the money is all there to the cent, nothing is
negative, every answer was a 201 or a 4xx problem (never a 5xx), each 201 is exactly one
transfer journal, and the ledger proves every stored balance."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from tests.helpers import document_files, registration_form
from tests.ledger_helpers import (
    PROBLEM_JSON,
    cents,
    deposit,
    entry_sums,
    funded_account,
    journal_count,
    open_account,
    sql,
    stored_balances,
    unbalanced_journals,
    verify_books,
    withdraw,
)

CUSTOMERS = 5
ACCOUNTS_EACH = 4
TRANSFERS = 1000
START = 1000_00  # cents in each account before the storm
EXPECTED_REFUSALS = {"insufficient_funds", "daily_limit_exceeded"}


@dataclass(frozen=True)
class Planned:
    source: int
    target: int
    amount: int  # cents


def plan_transfers(seed: int, accounts: int) -> list[Planned]:
    rng = random.Random(seed)
    plan = []
    for _ in range(TRANSFERS):
        source, target = rng.sample(range(accounts), 2)
        plan.append(Planned(source, target, rng.randint(1_00, 400_00)))
    return plan


def money(minor: int) -> str:
    return f"{minor // 100}.{minor % 100:02d}"


def transfer_body(numbers: list[str], item: Planned) -> dict[str, str]:
    return {
        "from_account": numbers[item.source],
        "to_account": numbers[item.target],
        "amount": money(item.amount),
    }


async def check_storm(
    app: FastAPI,
    numbers: list[str],
    plan: list[Planned],
    responses: list[httpx.Response],
    before: dict[str, int],
    journals_before: int,
) -> None:
    statuses: dict[int, int] = defaultdict(int)
    expected = {number: before[number] for number in numbers}
    refusals: set[str] = set()
    for item, response in zip(plan, responses, strict=True):
        statuses[response.status_code] += 1
        assert response.status_code < 500, response.text
        if response.status_code == 201:
            body = response.json()
            assert body["type"] == "transfer" and body["status"] == "completed"
            assert body["from_account"] == numbers[item.source]
            assert body["to_account"] == numbers[item.target]
            assert cents(body["amount"]) == item.amount
            assert cents(body["balance_after"]) >= 0
            expected[numbers[item.source]] -= item.amount
            expected[numbers[item.target]] += item.amount
        else:
            assert 400 <= response.status_code < 500, response.text
            assert response.headers["content-type"].startswith(PROBLEM_JSON), response.text
            problem = response.json()
            assert problem["status"] == response.status_code and problem["title"]
            refusals.add(problem["code"])
    completed = statuses[201]
    assert refusals <= EXPECTED_REFUSALS, (refusals, dict(statuses))
    # The storm is meaningful: most transfers went through.
    assert completed >= TRANSFERS // 2, dict(statuses)

    after = await stored_balances(app)
    assert sum(after[n] for n in numbers) == sum(before[n] for n in numbers)
    assert min(after.values()) >= 0
    assert {n: after[n] for n in numbers} == expected  # no lost update, nothing half-applied
    assert await journal_count(app) - journals_before == completed
    assert await journal_count(app, "transfer") == completed

    report = await verify_books(app)
    assert report.balanced, report.mismatches
    assert report.totals["USD"]["net"] == "0.00"
    assert await unbalanced_journals(app) == []
    ledger = await entry_sums(app)
    assert {n: ledger[n] for n in numbers} == expected
    await assert_each_entry_steps_its_balance(app)


async def assert_each_entry_steps_its_balance(app: FastAPI) -> None:
    """Each account's entries, in the order they were written, step its balance one by
    one: no two movements ever read the same starting balance."""
    running: dict[int, int] = defaultdict(int)
    for account_id, value, balance_after in await sql(
        app, "SELECT account_id, amount, balance_after FROM entries ORDER BY id"
    ):
        running[account_id] += int(value)
        assert running[account_id] == int(balance_after), account_id


async def test_concurrent_cash_movements_state_the_cash_accounts_balance_exactly(bank, app):
    """Deposits and withdrawals of several customers at once all move the bank's cash
    account: each of its entries states its balance after that movement, as each
    customer account's do."""
    customers = [await funded_account(bank, "100.00") for _ in range(6)]

    async def move(i: int) -> httpx.Response:
        _, headers, number = customers[i % len(customers)]
        if i % 2:
            return await deposit(bank.client, headers, number, "1.00")
        return await withdraw(bank.client, headers, number, "0.50")

    responses = await asyncio.gather(*(move(i) for i in range(36)))
    assert [r.status_code for r in responses] == [201] * 36, [r.text for r in responses]
    await assert_each_entry_steps_its_balance(app)
    assert (await verify_books(app)).balanced


async def test_a_thousand_concurrent_transfers_through_the_app(bank, app):
    numbers: list[str] = []
    owners: dict[str, dict[str, str]] = {}
    for _ in range(CUSTOMERS):
        _, headers = await bank.customer()
        for _ in range(ACCOUNTS_EACH):
            number = (await open_account(bank.client, headers))["account_number"]
            response = await bank.client.post(
                "/api/transactions/deposit",
                json={"account_number": number, "amount": money(START)},
                headers=headers,
            )
            assert response.status_code == 201, response.text
            numbers.append(number)
            owners[number] = headers
    before = await stored_balances(app)
    journals_before = await journal_count(app)
    plan = plan_transfers(2026, len(numbers))

    responses = await asyncio.gather(
        *(
            bank.client.post(
                "/api/transactions/transfer",
                json=transfer_body(numbers, item),
                headers=owners[numbers[item.source]],
            )
            for item in plan
        )
    )

    await check_storm(app, numbers, plan, list(responses), before, journals_before)
    auditor = await bank.staff("auditor")
    report = (await bank.client.get("/api/audit/ledger", headers=auditor)).json()
    assert report["balanced"] is True and report["mismatches"] == []
    assert report["journals_checked"] == await journal_count(app)


# --- against a real server with two worker processes ----------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_server(settings: Any, workdir: Path) -> Any:
    """`bank serve --workers 2` on a free loopback port, on the test's database; always
    stopped (SIGTERM, then SIGKILL to its process group) when the block ends."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANK_")}
    env.update(
        BANK_DATABASE_URL=settings.db_url,
        BANK_DATA_DIR=str(settings.data_dir),
        BANK_JWT_SECRET=settings.jwt_secret,
        BANK_PII_SECRET=settings.pii_secret,
        BANK_ENV="test",
        BANK_ARGON2_TIME_COST="1",
        BANK_ARGON2_MEMORY_KIB="1024",
    )
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "bank"),
                "serve",
                "--workers",
                "2",
                "--port",
                str(port),
            ],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield f"http://127.0.0.1:{port}", process, log_path
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def server_log(path: Path) -> str:
    return path.read_text(errors="replace")


async def wait_until_ready(client: httpx.AsyncClient, process: Any, log_path: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, server_log(log_path)
        with contextlib.suppress(httpx.TransportError):
            if (await client.get("/health/ready")).status_code == 200:
                return
        await asyncio.sleep(0.2)
    raise AssertionError("server not ready in 90 s:\n" + server_log(log_path))


async def http_customer(client: httpx.AsyncClient) -> dict[str, str]:
    """Register over HTTP, log in, and wait for the background KYC check to pass."""
    form = registration_form()
    registered = await client.post("/api/customers/register", data=form, files=document_files())
    assert registered.status_code == 201, registered.text
    login = await client.post(
        "/api/auth/token", data={"username": form["username"], "password": form["password"]}
    )
    assert login.status_code == 200, login.text
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    deadline = time.monotonic() + 20
    while (await client.get("/api/customers/me", headers=headers)).json()["status"] != "Active":
        assert time.monotonic() < deadline, "KYC did not complete"
        await asyncio.sleep(0.1)
    return headers


async def test_a_thousand_concurrent_transfers_against_two_server_workers(app, settings, tmp_path):
    async with contextlib.AsyncExitStack() as stack:
        base_url, process, log_path = stack.enter_context(running_server(settings, tmp_path))
        client = await stack.enter_async_context(
            httpx.AsyncClient(
                base_url=base_url,
                timeout=httpx.Timeout(60.0, connect=10.0),
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
            )
        )
        await wait_until_ready(client, process, log_path)

        numbers: list[str] = []
        owners: dict[str, dict[str, str]] = {}
        for _ in range(CUSTOMERS):
            headers = await http_customer(client)
            for _ in range(ACCOUNTS_EACH):
                opened = await client.post(
                    "/api/accounts", json={"type": "checking"}, headers=headers
                )
                assert opened.status_code == 201, opened.text
                number = opened.json()["account_number"]
                funded = await client.post(
                    "/api/transactions/deposit",
                    json={"account_number": number, "amount": money(START)},
                    headers=headers,
                )
                assert funded.status_code == 201, funded.text
                numbers.append(number)
                owners[number] = headers
        before = await stored_balances(app)
        journals_before = await journal_count(app)
        plan = plan_transfers(4242, len(numbers))
        gate = asyncio.Semaphore(64)

        async def send(item: Planned) -> httpx.Response:
            async with gate:
                return await client.post(
                    "/api/transactions/transfer",
                    json=transfer_body(numbers, item),
                    headers=owners[numbers[item.source]],
                )

        responses = await asyncio.wait_for(
            asyncio.gather(*(send(item) for item in plan)), timeout=300
        )
        assert process.poll() is None, server_log(log_path)
        # Both workers served: otherwise this would be the single-process test again.
        # (Checked loosely: the log names each worker's pid when it starts.)
        assert server_log(log_path).count("Started server process") == 2

    await check_storm(app, numbers, plan, list(responses), before, journals_before)
