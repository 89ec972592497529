"""The `bank` command line (issue 2 item 4), run in-process against the test database."""

from __future__ import annotations

import asyncio
from typing import Any

from typer.testing import CliRunner

from app.cli import cli
from app.models import User
from tests.helpers import count, customer_row, tamper_audit


def _env(settings: Any) -> dict[str, str]:
    return {
        "BANK_ENV": "test",
        "BANK_DATABASE_URL": settings.db_url,
        "BANK_DATA_DIR": str(settings.data_dir),
        "BANK_JWT_SECRET": settings.jwt_secret,
        "BANK_PII_SECRET": settings.pii_secret,
        "BANK_ARGON2_TIME_COST": "1",
        "BANK_ARGON2_MEMORY_KIB": "1024",
    }


async def _bank(settings: Any, *args: str) -> Any:
    # The commands call asyncio.run themselves, so they run on a thread of their own.
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, cli, list(args), env=_env(settings))


async def test_verify_passes_on_an_intact_chain_and_fails_on_a_tampered_one(
    bank, database, settings
):
    await bank.customer()
    await bank.customer()
    intact = await _bank(settings, "verify")
    assert intact.exit_code == 0, intact.output
    assert "valid" in intact.output and "INVALID" not in intact.output
    await tamper_audit(database, 3, "actor_role = 'admin'")
    tampered = await _bank(settings, "verify")
    assert tampered.exit_code == 1, tampered.output
    assert "INVALID at seq 3" in tampered.output


async def test_create_user_makes_staff_who_can_log_in(bank, database, settings):
    result = await _bank(
        settings,
        "create-user",
        "--username",
        "Carla",
        "--email",
        "carla@bank.example",
        "--password",
        "carla-staff-pass-1",
        "--role",
        "auditor",
    )
    assert result.exit_code == 0, result.output
    assert "created auditor carla" in result.output
    assert (await bank.token("carla", "carla-staff-pass-1"))["role"] == "auditor"


async def test_create_user_refuses_a_weak_password_a_duplicate_and_a_bad_role(
    bank, database, settings
):
    base = ["create-user", "--username", "dave", "--email", "dave@bank.example"]
    weak = await _bank(settings, *base, "--password", "password123", "--role", "admin")
    assert weak.exit_code == 1
    assert "too common" in weak.output
    bad_role = await _bank(settings, *base, "--password", "dave-staff-pass-1", "--role", "customer")
    assert bad_role.exit_code == 2
    assert await count(database, User) == 0
    ok = await _bank(settings, *base, "--password", "dave-staff-pass-1", "--role", "admin")
    assert ok.exit_code == 0, ok.output
    again = await _bank(settings, *base, "--password", "dave-staff-pass-1", "--role", "admin")
    assert again.exit_code == 1
    assert "taken" in again.output
    assert await count(database, User) == 1


async def test_demo_creates_staff_and_an_active_customer_once(bank, database, settings):
    first = await _bank(settings, "demo")
    assert first.exit_code == 0, first.output
    assert "demo-admin-pass-1" in first.output
    assert (await bank.token("admin", "demo-admin-pass-1"))["role"] == "admin"
    assert (await bank.token("auditor", "demo-auditor-pass-1"))["role"] == "auditor"
    demo = await bank.token("demo", "demo-customer-pass-1")
    assert demo["role"] == "customer"
    assert (await customer_row(database, 1001)).status == "Active"
    # An account to transfer to in the README's tour, printed, and kept on a second run.
    accounts = await bank.client.get(
        "/api/accounts", headers={"Authorization": f"Bearer {demo['access_token']}"}
    )
    [account] = accounts.json()["items"]
    assert account["type"] == "checking" and account["status"] == "active"
    assert f"checking account: {account['account_number']}" in first.output
    second = await _bank(settings, "demo")
    assert second.exit_code == 0, second.output
    assert await count(database, User) == 3
    assert f"checking account: {account['account_number']}" in second.output


async def test_jobs_retry_queues_the_jobs_that_gave_up_again(bank, database, settings):
    """After an outage outlasted a job's retries: `bank jobs retry [--kind K]`."""
    from app.models import Job
    from tests.helpers import execute

    await bank.customer()  # its KYC check is a job
    await execute(database, "UPDATE jobs SET status = 'failed', attempts = 20")
    other = await _bank(settings, "jobs", "retry", "--kind", "hold.expire")
    assert other.exit_code == 0 and "0 failed jobs queued again" in other.output, other.output
    retried = await _bank(settings, "jobs", "retry", "--kind", "kyc.check")
    assert retried.exit_code == 0 and "1 failed jobs queued again" in retried.output
    assert await count(database, Job, Job.status == "queued") == 1
