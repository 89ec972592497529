"""Rate limits (issue 18): per client address and per verified user on login,
registration, money movement and exports; 429 `rate_limited` with Retry-After; counted
in each process's memory, or in Redis so that several processes spend one budget."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlparse

import httpx
import pytest
from fastapi import FastAPI
from jose import jwt

from app.main import create_app
from app.ratelimit import LocalCounters
from app.settings import Settings
from tests.helpers import Bank
from tests.ledger_helpers import balance, deposit, funded_account, problem, transfer, withdraw

REDIS_URL = os.environ.get("BANK_TEST_REDIS_URL", "async+redis://127.0.0.1:6379")
PLENTY = "1000/minute"


def redis_reachable() -> bool:
    url = urlparse(REDIS_URL)
    try:
        with socket.create_connection((url.hostname or "127.0.0.1", url.port or 6379), 0.5):
            return True
    except OSError:
        return False


needs_redis = pytest.mark.skipif(not redis_reachable(), reason=f"no Redis at {REDIS_URL}")


@contextlib.asynccontextmanager
async def client_at(app: FastAPI, ip: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the same app from another address."""
    transport = httpx.ASGITransport(app=app, client=(ip, 40001))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def rate_limited(response: httpx.Response, *, window_s: int = 60) -> int:
    """Assert the 429 problem and return its Retry-After, whole seconds within the window."""
    problem(response, 429, "rate_limited")
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit(), retry_after
    assert 1 <= int(retry_after) <= window_s
    return int(retry_after)


async def wrong_login(client: httpx.AsyncClient, username: str) -> httpx.Response:
    return await client.post(
        "/api/auth/token", data={"username": username, "password": "not-the-password-1"}
    )


# --- login ----------------------------------------------------------------------------


@pytest.mark.settings(rate_limit_login_per_ip="3/minute")
async def test_logins_over_the_per_address_budget_are_429_with_retry_after(client, app):
    for n in range(3):
        problem(await wrong_login(client, f"nobody{n}"), 401, "invalid_credentials")
    rate_limited(await wrong_login(client, "nobody9"))
    async with client_at(app, "198.51.100.77") as elsewhere:
        problem(await wrong_login(elsewhere, "nobody9"), 401, "invalid_credentials")


@pytest.mark.settings(rate_limit_login_per_username="2/minute", rate_limit_login_per_ip=PLENTY)
async def test_logins_over_the_per_username_budget_are_429_whatever_the_case(bank):
    registered = await bank.register()
    assert registered.status_code == 201, registered.text
    username = registered.json()["username"]
    problem(await wrong_login(bank.client, username.upper()), 401, "invalid_credentials")
    problem(await wrong_login(bank.client, f" {username} "), 401, "invalid_credentials")
    # The right password too: the budget counts attempts, not failures.
    refused = await bank.login(username, "correct-horse-battery")
    rate_limited(refused)
    problem(await wrong_login(bank.client, "someone-else"), 401, "invalid_credentials")


@pytest.mark.settings(rate_limit_login_per_ip="1/minute")
async def test_a_malformed_login_form_spends_no_budget(client):
    """422s cost no password hash: only a form that parsed is counted."""
    for _ in range(3):
        response = await client.post("/api/auth/token", data={"username": "x"})
        problem(response, 422, "validation_error")
    problem(await wrong_login(client, "nobody"), 401, "invalid_credentials")
    rate_limited(await wrong_login(client, "nobody"))


# --- registration ---------------------------------------------------------------------


@pytest.mark.settings(rate_limit_registration_per_ip="2/minute")
async def test_registrations_over_the_per_address_budget_are_429(bank, app):
    for _ in range(2):
        assert (await bank.register()).status_code == 201
    rate_limited(await bank.register())
    async with client_at(app, "198.51.100.78") as elsewhere:
        assert (await Bank(elsewhere, app).register()).status_code == 201


# --- money movement -------------------------------------------------------------------


@pytest.mark.settings(rate_limit_money_per_user="4/minute")
async def test_deposits_withdrawals_and_transfers_share_one_per_user_budget(bank):
    _, headers, number = await funded_account(bank, "100.00")  # the first deposit
    _, other_headers, other = await funded_account(bank, "100.00")
    assert (await withdraw(bank.client, headers, number, "1.00")).status_code == 201
    assert (await transfer(bank.client, headers, number, other, "1.00")).status_code == 201
    assert (await deposit(bank.client, headers, number, "1.00")).status_code == 201
    for refused in (
        await deposit(bank.client, headers, number, "5.00"),
        await withdraw(bank.client, headers, number, "5.00"),
        await transfer(bank.client, headers, number, other, "5.00"),
    ):
        rate_limited(refused)
    assert await balance(bank.client, headers, number) == "99.00"  # a 429 moved nothing
    # Another customer at the same address has a budget of their own.
    assert (await deposit(bank.client, other_headers, other, "1.00")).status_code == 201


@pytest.mark.settings(rate_limit_money_per_ip="3/minute", rate_limit_money_per_user=PLENTY)
async def test_the_per_address_money_budget_covers_every_user_there(bank, app):
    _, first, first_number = await funded_account(bank, "100.00")
    _, second, second_number = await funded_account(bank, "100.00")
    assert (await deposit(bank.client, second, second_number, "1.00")).status_code == 201
    rate_limited(await deposit(bank.client, first, first_number, "1.00"))
    async with client_at(app, "198.51.100.79") as elsewhere:
        assert (await deposit(elsewhere, first, first_number, "1.00")).status_code == 201


@pytest.mark.settings(rate_limit_money_per_user="2/minute")
async def test_the_per_user_budget_is_spent_only_by_verified_tokens(bank, settings):
    """A token signed with another key that names the customer's user id is refused
    (401) and spends none of the customer's budget; so does no token at all."""
    _, headers, number = await funded_account(bank, "100.00")  # spends 1 of 2
    claims = jwt.get_unverified_claims(headers["Authorization"].removeprefix("Bearer "))
    forged = jwt.encode(claims, "another-key-" + "z" * 40, algorithm="HS256")
    for _ in range(4):
        response = await deposit(bank.client, {"Authorization": f"Bearer {forged}"}, number, "1.00")
        problem(response, 401, "invalid_token")
        problem(await deposit(bank.client, {}, number, "1.00"), 401, "not_authenticated")
    assert (await deposit(bank.client, headers, number, "1.00")).status_code == 201
    rate_limited(await deposit(bank.client, headers, number, "1.00"))


# --- exports --------------------------------------------------------------------------


@pytest.mark.settings(rate_limit_export_per_user="2/minute")
async def test_statement_exports_are_limited_per_user_and_json_is_not(bank):
    _, headers, number = await funded_account(bank, "10.00")
    path = f"/api/accounts/{number}/statement"
    for format in ("csv", "pdf"):
        response = await bank.client.get(path, params={"format": format}, headers=headers)
        assert response.status_code == 200, response.text
    rate_limited(await bank.client.get(path, params={"format": "csv"}, headers=headers))
    for _ in range(3):
        response = await bank.client.get(path, params={"format": "json"}, headers=headers)
        assert response.status_code == 200, response.text
    _, other_headers, other = await funded_account(bank, "10.00")
    response = await bank.client.get(
        f"/api/accounts/{other}/statement", params={"format": "pdf"}, headers=other_headers
    )
    assert response.status_code == 200, response.text


@pytest.mark.settings(rate_limit_export_per_user="1/minute")
async def test_audit_log_csv_exports_are_limited_per_user(bank):
    auditor = await bank.staff("auditor")
    response = await bank.client.get("/api/audit/logs?format=csv", headers=auditor)
    assert response.status_code == 200, response.text
    rate_limited(await bank.client.get("/api/audit/logs?format=csv", headers=auditor))
    assert (await bank.client.get("/api/audit/logs", headers=auditor)).status_code == 200
    admin = await bank.staff("admin")
    assert (await bank.client.get("/api/audit/logs?format=csv", headers=admin)).status_code == 200


# --- windows, the switch, the schema ---------------------------------------------------


@pytest.mark.settings(rate_limit_login_per_ip="1/second")
async def test_a_refused_client_is_served_again_once_retry_after_has_passed(client):
    problem(await wrong_login(client, "nobody"), 401, "invalid_credentials")
    retry_after = rate_limited(await wrong_login(client, "nobody"), window_s=1)
    await asyncio.sleep(retry_after + 0.05)
    problem(await wrong_login(client, "nobody"), 401, "invalid_credentials")


@pytest.mark.settings(
    rate_limits_enabled=False,
    rate_limit_login_per_ip="1/minute",
    rate_limit_money_per_user="1/hour",
)
async def test_rate_limits_switched_off_refuse_nothing(bank):
    _, headers, number = await funded_account(bank, "10.00")
    for _ in range(3):
        assert (await deposit(bank.client, headers, number, "1.00")).status_code == 201
        problem(await wrong_login(bank.client, "nobody"), 401, "invalid_credentials")


# The tighter budget second, and in a window that cannot roll over mid-test (with
# "2/second", three slow logins could straddle a second and all pass).
@pytest.mark.settings(rate_limit_login_per_ip="5/minute;2/hour")
async def test_several_budgets_of_one_kind_all_apply(client):
    for n in range(2):
        problem(await wrong_login(client, f"nobody{n}"), 401, "invalid_credentials")
    rate_limited(await wrong_login(client, "nobody3"), window_s=3600)


LIMITED_OPERATIONS = [
    ("post", "/api/auth/token"),
    ("post", "/api/customers/register"),
    ("post", "/api/transactions/deposit"),
    ("post", "/api/transactions/withdrawal"),
    ("post", "/api/transactions/transfer"),
    ("get", "/api/accounts/{account_number}/statement"),
    ("get", "/api/audit/logs"),
]


async def test_every_rate_limited_operation_declares_its_429(client):
    schema = (await client.get("/openapi.json")).json()
    for method, path in LIMITED_OPERATIONS:
        response = schema["paths"][path][method]["responses"]["429"]
        assert response["content"]["application/problem+json"]["schema"] == {
            "$ref": "#/components/schemas/Problem"
        }, (method, path)


def test_limits_that_do_not_parse_refuse_the_start(tmp_path):
    with pytest.raises(ValueError, match="not a rate limit"):
        Settings(_env_file=None, data_dir=tmp_path, rate_limit_money_per_user="lots")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="asyncio storage"):
        Settings(_env_file=None, data_dir=tmp_path, rate_limit_storage_url="redis://x:6379")  # type: ignore[call-arg]


# --- where the counters live ------------------------------------------------------------


@contextlib.asynccontextmanager
async def two_workers(settings: Settings, ip: str) -> AsyncIterator[list[Bank]]:
    """Two apps on one database, as two worker processes are, each with a client at
    the same address."""
    apps = [create_app(settings.model_copy()) for _ in range(2)]
    try:
        async with client_at(apps[0], ip) as first, client_at(apps[1], ip) as second:
            yield [Bank(first, apps[0]), Bank(second, apps[1])]
    finally:
        for application in apps:
            await application.state.database.dispose()


@pytest.mark.settings(rate_limit_login_per_ip="2/minute")
async def test_each_process_counts_in_its_own_memory_by_default(settings):
    async with two_workers(settings, "198.51.100.80") as workers:
        for worker in workers:
            for n in range(2):
                response = await wrong_login(worker.client, f"nobody{n}")
                problem(response, 401, "invalid_credentials")
            rate_limited(await wrong_login(worker.client, "nobody"))


@needs_redis
async def test_processes_sharing_redis_spend_one_budget(settings):
    prefix = f"test-{uuid.uuid4().hex}"
    shared = settings.model_copy(
        update={
            "rate_limit_storage_url": REDIS_URL,
            "rate_limit_key_prefix": prefix,
            "rate_limit_login_per_ip": "4/minute",
            "rate_limit_money_per_user": "3/minute",
        }
    )
    try:
        async with two_workers(shared, "198.51.100.81") as (first, second):
            # A customer's budget is one, whichever worker serves them: the deposit of
            # funded_account, then one on each worker, and the fourth is refused.
            _, headers, number = await funded_account(first, "10.00")  # and one login
            assert (await deposit(second.client, headers, number, "1.00")).status_code == 201
            assert (await deposit(first.client, headers, number, "1.00")).status_code == 201
            rate_limited(await deposit(second.client, headers, number, "1.00"))
            # So is an address's: the login above, then one per worker and one more.
            for worker in (second, first, second):
                problem(await wrong_login(worker.client, "nobody"), 401, "invalid_credentials")
            rate_limited(await wrong_login(first.client, "nobody"))
    finally:
        await _delete_redis_keys(prefix)


async def _delete_redis_keys(prefix: str) -> None:
    import coredis

    redis = coredis.Redis.from_url(REDIS_URL.removeprefix("async+"))
    keys = [key async for key in redis.scan_iter(match=f"*{prefix}*")]
    if keys:
        await redis.delete(keys)


@pytest.mark.settings(rate_limit_storage_url="async+redis://127.0.0.1:1")
async def test_an_unreachable_storage_lets_requests_through(bank, caplog):
    """A Redis outage must not stop payments or logins: requests pass unlimited (the
    daily limit and the login lockout live in the database) and the outage is logged."""
    with caplog.at_level(logging.WARNING, logger="app.ratelimit"):
        _, headers, number = await funded_account(bank, "10.00")
        assert (await deposit(bank.client, headers, number, "1.00")).status_code == 201
        problem(await wrong_login(bank.client, "nobody"), 401, "invalid_credentials")
    assert any("rate-limit storage failed" in r.getMessage() for r in caplog.records)


async def test_memory_counters_walk_their_keys_only_once_per_sweep_interval(monkeypatch):
    """limits' own memory storage starts a task that walks every key after nearly every
    hit (0.8 ms a hit with 10,000 keys); these counters sweep once per interval and
    start no task."""
    counters = LocalCounters()
    sweeps: list[float] = []
    original = counters.sweep

    def counted(now: float) -> None:
        sweeps.append(now)
        original(now)

    monkeypatch.setattr(counters, "sweep", counted)
    for n in range(2_000):
        assert await counters.incr(f"user-{n % 1000}", 60) == n // 1000 + 1
        await asyncio.sleep(0)
    assert len(sweeps) == 1
    assert counters.timer is None


async def test_memory_counters_start_a_new_window_once_one_expires():
    counters = LocalCounters()
    assert [await counters.incr("k", 0.05) for _ in range(3)] == [1, 2, 3]
    await counters.incr("other", 0.05)
    await asyncio.sleep(0.06)
    assert await counters.incr("k", 10) == 1
    counters.next_sweep = 0.0  # the sweep interval has passed: "other" is swept away
    await counters.incr("fresh", 10)
    assert set(counters.storage) == set(counters.expirations) == {"k", "fresh"}


async def test_the_default_counters_start_no_task_per_request(bank, app):
    """Through the app: the money path's hits are counted in the worker's memory, and
    the limiter started no expiry task (limits' own memory storage starts one)."""
    _, headers, number = await funded_account(bank, "10.00")
    for _ in range(3):
        assert (await deposit(bank.client, headers, number, "1.00")).status_code == 201
    storage = app.state.rate_limits.limiter.storage
    money = {key: n for key, n in storage.storage.items() if "/money_per_" in key}
    assert sorted(money.values()) == [4, 4]  # the customer's and the address's
    assert storage.timer is None
