"""Durable background jobs.

A job row is written in the same transaction as the change that needs it. Right after
the response a background task runs it; a sweeper (at start-up and every few seconds)
runs whatever a crash or restart left queued, or running past its lease. Claiming is a
conditional UPDATE, so a job runs at most once at a time across every process; the
handler's changes and the job's `done` mark commit in one transaction, so its effect
happens exactly once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Database, Tx, database_of, retry_on_conflict, unit_of_work
from app.models import Job, JobKind
from app.services import accrual, holds, kyc

log = logging.getLogger(__name__)

Handler = Callable[[AsyncSession, Tx, dict[str, Any]], Awaitable[None]]
"""Runs one job in the transaction that marks it done: the session and its `Tx`."""

# Every kind of job and what runs it (jobs are queued with app.store.enqueue_job).
HANDLERS: dict[str, Handler] = {
    JobKind.kyc_check: kyc.run_check,
    JobKind.hold_expiry: holds.expire,
    JobKind.loan_accrual: accrual.run_job,
}
MAX_ATTEMPTS = 20
MAX_BACKOFF_SECONDS = 3600
"""A failing job is retried after 2, 4, 8 … seconds, at most an hour apart: twenty
attempts span about nine hours, so an outage of the database or of a service a handler
calls does not drop the work. Then it is `failed` (the `bank_jobs{state="failed"}` gauge)
until `bank jobs retry` queues it again."""


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(2**attempts, MAX_BACKOFF_SECONDS))


def _claimable(now: datetime) -> Any:
    return or_(
        (Job.status == "queued") & (Job.run_after <= now),
        (Job.status == "running") & (Job.lease_until < now),
    )


@retry_on_conflict
async def _claim(db: AsyncSession, job_id: int, lease_seconds: int) -> bool:
    now = database_of(db).clock()
    async with unit_of_work(db):
        result = await db.execute(
            update(Job)
            .where(Job.id == job_id, _claimable(now))
            .values(
                status="running",
                attempts=Job.attempts + 1,
                lease_until=now + timedelta(seconds=lease_seconds),
            )
        )
        return result.rowcount == 1


@retry_on_conflict
async def _complete(db: AsyncSession, job_id: int) -> None:
    async with unit_of_work(db) as tx:
        # Locked until COMMIT: a runner whose lease ran out and the one that took the job
        # over cannot both get past this check; the second finds the job done.
        job = await db.get(Job, job_id, with_for_update=True, populate_existing=True)
        if job is None or job.status != "running":
            return
        await HANDLERS[job.kind](db, tx, job.payload)
        job.status = "done"
        job.finished_at = datetime.now(UTC)
        job.lease_until = None


async def _fail(db: AsyncSession, job_id: int, error: str) -> None:
    async with unit_of_work(db):
        job = await db.get(Job, job_id, with_for_update=True, populate_existing=True)
        if job is None or job.status != "running":
            return  # another runner finished it meanwhile; do not reopen it
        job.last_error = error[:2000]
        job.lease_until = None
        if job.attempts >= MAX_ATTEMPTS:
            job.status = "failed"
            job.finished_at = datetime.now(UTC)
        else:
            job.status = "queued"
            job.run_after = datetime.now(UTC) + backoff(job.attempts)


async def run_job(database: Database, job_id: int) -> bool:
    """Run one job if nobody else holds it. Returns whether this call ran it."""
    async with database.session() as db:
        if not await _claim(db, job_id, database.settings.job_lease_seconds):
            return False
        try:
            await _complete(db, job_id)
        except Exception as exc:
            log.exception("job %s failed", job_id)
            await _fail(db, job_id, f"{type(exc).__name__}: {exc}")
            return False
        return True


async def sweep(database: Database, limit: int = 100) -> int:
    """Run jobs that are due and unclaimed (or whose runner died). Returns how many ran."""
    async with database.session() as db:
        now = database.clock()  # what is due: a test moves this clock
        # Several API processes sweep at once; each takes different rows (SQLite, whose
        # writers take turns anyway, has no row locks: SQLAlchemy leaves the clause out).
        query = (
            select(Job.id)
            .where(_claimable(now))
            .order_by(Job.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        async with db.begin():
            job_ids = list((await db.scalars(query)).all())
    ran = 0
    for job_id in job_ids:
        ran += await run_job(database, job_id)
    return ran


async def retry_failed(database: Database, kind: str | None = None) -> int:
    """Queue every job that gave up (`failed`) again, due now, with its attempts counted
    afresh (`bank jobs retry`). Returns how many."""
    async with database.session() as db, unit_of_work(db):
        query = update(Job).where(Job.status == "failed")
        if kind is not None:
            query = query.where(Job.kind == kind)
        result = await db.execute(
            query.values(status="queued", attempts=0, run_after=database.clock(), finished_at=None)
        )
        return int(result.rowcount)


# States worth watching. `done` is left out: it only grows, and counting it would read
# the whole table at every scrape.
WATCHED_STATES = ("queued", "running", "failed")


@dataclass(frozen=True, slots=True)
class QueueStats:
    by_state: dict[str, int]
    oldest_due_seconds: float
    """Age of the oldest job that is due and unclaimed (or whose lease ran out): how far
    the runners are behind. 0 when nothing is waiting."""


async def queue_stats(database: Database) -> QueueStats:
    """The job queue as a monitor sees it; both queries are served by ix_jobs_pending."""
    now = datetime.now(UTC)
    # Queued jobs have been due since run_after, abandoned ones since their lease ran out.
    due_since = case((Job.status == "queued", Job.run_after), else_=Job.lease_until)
    async with database.session() as db:
        counts = await db.execute(
            select(Job.status, func.count())
            .where(Job.status.in_(WATCHED_STATES))
            .group_by(Job.status)
        )
        by_state = dict.fromkeys(WATCHED_STATES, 0) | {row[0]: row[1] for row in counts}
        oldest = await db.scalar(select(func.min(due_since)).where(_claimable(now)))
    lag = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
    return QueueStats(by_state=by_state, oldest_due_seconds=lag)


async def sweeper_loop(database: Database) -> None:
    while True:
        try:
            await sweep(database)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job sweep failed")
        await asyncio.sleep(database.settings.job_sweep_seconds)
