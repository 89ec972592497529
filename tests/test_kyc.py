"""Background KYC: a durable job queued with the registration, run right after the
response, and by the sweeper when a crash or restart left it unfinished."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from app.models import Job, JobKind, KycDocument
from app.services import jobs
from tests.helpers import audit_records, customer_row, execute, register_without_kyc, wait_for

WATCHLIST_REASON = "full name matches the watch list"
DUPLICATE_ID_REASON = "national id already used by another customer"


async def _status(bank, headers) -> dict:
    response = await bank.client.get("/api/customers/me", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def _job(database, job_id: int) -> Job:
    async with database.session() as db:
        job = await db.get(Job, job_id)
        assert job is not None
        return job


async def test_clean_registration_becomes_active_within_two_seconds(bank, database):
    body, headers = await bank.customer(username="kate")
    assert body["status"] == "Pending KYC Approval"

    async def active() -> bool:
        return (await _status(bank, headers))["status"] == "Active"

    assert await wait_for(active, within=2.0) < 2.0
    profile = await _status(bank, headers)
    assert profile["kyc"]["status"] == "verified"
    assert profile["kyc"]["reasons"] == []
    assert profile["kyc"]["checked_at"] is not None
    [check] = await audit_records(database, "kyc.check")
    assert check.actor_id == "system"
    assert check.entity_id == body["customer_id"]
    assert check.details == {"result": "Active", "reasons": []}


@pytest.mark.parametrize(
    "full_name",
    ["Viktor Embargo", "embargo, VIKTOR", "  Víktor   EMBÁRGO ", "Maria Blocked Person"],
)
async def test_watch_list_name_puts_the_customer_under_review(bank, database, full_name):
    _, headers = await bank.customer(full_name=full_name)
    profile = await _status(bank, headers)
    assert profile["status"] == "Under Review"
    assert profile["kyc"]["status"] == "review"
    assert profile["kyc"]["reasons"] == [WATCHLIST_REASON]
    [check] = await audit_records(database, "kyc.check")
    assert check.details == {"result": "Under Review", "reasons": [WATCHLIST_REASON]}


async def test_a_name_merely_resembling_the_watch_list_is_not_a_hit(bank):
    _, headers = await bank.customer(full_name="Viktor Embargo Jones")
    assert (await _status(bank, headers))["status"] == "Active"


async def test_a_custom_watch_list_file_is_used(bank, app, settings, tmp_path):
    custom = tmp_path / "list.txt"
    custom.write_text("# test list\nZed Quarantine\n", encoding="utf-8")
    settings.watchlist_path = custom
    settings.__dict__.pop("watchlist_file", None)  # drop the cached default path
    _, listed = await bank.customer(full_name="quarantine zed")
    _, default_name = await bank.customer(full_name="Viktor Embargo")
    assert (await _status(bank, listed))["status"] == "Under Review"
    assert (await _status(bank, default_name))["status"] == "Active"


async def test_duplicate_national_id_puts_the_second_customer_under_review(bank, database):
    _, first = await bank.customer(national_id="AB1234567")
    _, second = await bank.customer(national_id="ab1234567")
    assert (await _status(bank, first))["status"] == "Active"
    profile = await _status(bank, second)
    assert profile["status"] == "Under Review"
    assert profile["kyc"]["reasons"] == [DUPLICATE_ID_REASON]
    assert profile["national_id"] == "*****4567"


async def test_watch_list_and_duplicate_id_reasons_are_all_listed(bank):
    await bank.customer(national_id="ZZ99887766")
    _, headers = await bank.customer(national_id="ZZ99887766", full_name="Ana Lucia Restricted")
    reasons = (await _status(bank, headers))["kyc"]["reasons"]
    assert sorted(reasons) == sorted([WATCHLIST_REASON, DUPLICATE_ID_REASON])


async def test_a_document_altered_on_disk_puts_the_customer_under_review(app, database, settings):
    registration = await register_without_kyc(app)
    async with database.session() as db:
        doc = await db.scalar(select(KycDocument).where(KycDocument.kind == "id_document"))
    (settings.kyc_dir / doc.storage_name).write_bytes(b"\x89PNG\r\n\x1a\n tampered")
    assert await jobs.run_job(database, registration.job_id)
    customer = await customer_row(database, registration.customer.id)
    assert customer.status == "Under Review"
    assert customer.kyc_reasons == ["document unreadable or altered: id_document"]


async def test_registration_commits_a_queued_job_that_the_sweeper_runs(app, database):
    registration = await register_without_kyc(app, username="liam")
    job = await _job(database, registration.job_id)
    assert (job.kind, job.status, job.payload) == (
        JobKind.kyc_check,
        "queued",
        {"customer_id": registration.customer.id},
    )
    assert (await customer_row(database, registration.customer.id)).status == (
        "Pending KYC Approval"
    )

    assert await jobs.sweep(database) == 1

    assert (await customer_row(database, registration.customer.id)).status == "Active"
    job = await _job(database, registration.job_id)
    assert (job.status, job.attempts, job.lease_until) == ("done", 1, None)
    assert job.finished_at is not None
    assert await jobs.sweep(database) == 0
    assert len(await audit_records(database, "kyc.check")) == 1


async def test_sweeper_reclaims_a_job_whose_runner_died(app, database):
    registration = await register_without_kyc(app)
    past = datetime.now(UTC) - timedelta(seconds=5)
    await execute(
        database,
        "UPDATE jobs SET status = 'running', attempts = 1, lease_until = :t WHERE id = :id",
        t=past,
        id=registration.job_id,
    )
    assert await jobs.sweep(database) == 1
    assert (await customer_row(database, registration.customer.id)).status == "Active"
    job = await _job(database, registration.job_id)
    assert (job.status, job.attempts) == ("done", 2)


async def test_sweeper_leaves_a_job_whose_lease_is_still_held(app, database):
    registration = await register_without_kyc(app)
    future = datetime.now(UTC) + timedelta(minutes=5)
    await execute(
        database,
        "UPDATE jobs SET status = 'running', lease_until = :t WHERE id = :id",
        t=future,
        id=registration.job_id,
    )
    assert await jobs.sweep(database) == 0
    assert (await customer_row(database, registration.customer.id)).status == (
        "Pending KYC Approval"
    )
    assert await audit_records(database, "kyc.check") == []


async def test_a_done_job_set_back_to_queued_does_not_decide_twice(app, database):
    registration = await register_without_kyc(app)
    assert await jobs.run_job(database, registration.job_id)
    await execute(
        database, "UPDATE jobs SET status = 'queued' WHERE id = :id", id=registration.job_id
    )
    assert await jobs.sweep(database) == 1
    assert len(await audit_records(database, "kyc.check")) == 1


async def test_the_running_app_sweeps_at_start_up_and_every_few_seconds(app, database):
    left_by_crash = await register_without_kyc(app)

    def active(customer_id: int):
        async def check() -> bool:
            return (await customer_row(database, customer_id)).status == "Active"

        return check

    async with app.router.lifespan_context(app):
        await wait_for(active(left_by_crash.customer.id), within=2.0)
        # Queued while the app runs, with nobody running it right away (job_sweep_seconds
        # is 0.2 in the tests).
        later = await register_without_kyc(app)
        await wait_for(active(later.customer.id), within=2.0)


async def test_concurrent_runners_run_a_job_exactly_once(app, database):
    registration = await register_without_kyc(app)
    ran = await asyncio.gather(*(jobs.run_job(database, registration.job_id) for _ in range(6)))
    assert sorted(ran) == [False] * 5 + [True]
    assert len(await audit_records(database, "kyc.check")) == 1
    assert (await _job(database, registration.job_id)).attempts == 1


async def test_concurrent_sweepers_run_each_job_exactly_once(app, database):
    registrations = [await register_without_kyc(app) for _ in range(4)]
    ran = await asyncio.gather(*(jobs.sweep(database) for _ in range(3)))
    assert sum(ran) == 4
    checks = await audit_records(database, "kyc.check")
    assert sorted(int(r.entity_id) for r in checks) == sorted(r.customer.id for r in registrations)


async def test_a_failing_job_is_retried_later_then_given_up(app, database, monkeypatch):
    registration = await register_without_kyc(app)

    async def broken(db, tx, payload):
        raise RuntimeError("watch-list service unavailable")

    monkeypatch.setitem(jobs.HANDLERS, JobKind.kyc_check, broken)
    assert not await jobs.run_job(database, registration.job_id)
    job = await _job(database, registration.job_id)
    assert (job.status, job.attempts) == ("queued", 1)
    assert "watch-list service unavailable" in job.last_error
    assert job.run_after > datetime.now(UTC)
    assert await jobs.sweep(database) == 0  # backing off
    for attempt in range(2, jobs.MAX_ATTEMPTS + 1):
        await execute(
            database,
            "UPDATE jobs SET run_after = :t WHERE id = :id",
            t=datetime.now(UTC) - timedelta(seconds=1),
            id=registration.job_id,
        )
        assert not await jobs.run_job(database, registration.job_id)
        job = await _job(database, registration.job_id)
        assert job.attempts == attempt
        if attempt < jobs.MAX_ATTEMPTS:  # backing off, at most an hour apart
            wait = job.run_after - datetime.now(UTC)
            assert timedelta(0) < wait <= timedelta(seconds=jobs.MAX_BACKOFF_SECONDS)
    assert jobs.MAX_ATTEMPTS >= 20  # nine hours of retries: outlasts an outage
    job = await _job(database, registration.job_id)
    assert job.status == "failed" and job.finished_at is not None
    # The failed attempts changed nothing and audited nothing.
    assert (await customer_row(database, registration.customer.id)).status == (
        "Pending KYC Approval"
    )
    assert await audit_records(database, "kyc.check") == []
    # The outage is over: `bank jobs retry` queues it again and it runs, once.
    monkeypatch.undo()
    assert await jobs.retry_failed(database, JobKind.hold_expiry) == 0  # another kind
    assert await jobs.retry_failed(database, JobKind.kyc_check) == 1
    assert await jobs.sweep(database) == 1
    assert (await _job(database, registration.job_id)).status == "done"
    assert len(await audit_records(database, "kyc.check")) == 1
    assert await jobs.retry_failed(database) == 0


async def test_runners_that_both_hold_a_claim_still_run_the_job_once(app, database, monkeypatch):
    # As after a lease ran out while its runner was still busy and another runner took
    # the job over: both reach the completion step together.
    registration = await register_without_kyc(app)
    await execute(
        database, "UPDATE jobs SET status = 'running' WHERE id = :id", id=registration.job_id
    )

    async def always_claimed(db, job_id, lease_seconds):
        return True

    handler = jobs.HANDLERS[JobKind.kyc_check]
    calls = []

    async def slow_handler(db, tx, payload):
        calls.append(payload)
        await asyncio.sleep(0.1)
        await handler(db, tx, payload)

    monkeypatch.setattr(jobs, "_claim", always_claimed)
    monkeypatch.setitem(jobs.HANDLERS, JobKind.kyc_check, slow_handler)
    await asyncio.gather(*(jobs.run_job(database, registration.job_id) for _ in range(3)))
    assert len(calls) == 1
    assert len(await audit_records(database, "kyc.check")) == 1


async def test_a_late_failure_report_does_not_reopen_a_finished_job(app, database):
    registration = await register_without_kyc(app)
    assert await jobs.run_job(database, registration.job_id)
    async with database.session() as db:
        await jobs._fail(db, registration.job_id, "RuntimeError: from a runner that lost its lease")
    job = await _job(database, registration.job_id)
    assert (job.status, job.last_error) == ("done", None)
    assert await jobs.sweep(database) == 0
