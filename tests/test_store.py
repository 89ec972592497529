"""The store's guarantees to the features built on it: one posting function that refuses
what would not be a sound journal, writes that never lose sight of each other however
they are sent, and durable jobs queued from a money transaction."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, select

from app import store
from app.db import Sql, Tx, money_transaction, unit_of_work
from app.db.driver import Driver, Write
from app.models import Job, JobKind, JournalKind
from app.services import jobs
from app.services.ledger import TransactionView
from tests.ledger_helpers import balance, funded_account, journal_count

_ADD_THROTTLE = Sql(
    "INSERT INTO login_throttle (username, failures, window_started_at)"
    " VALUES (?, 0, CURRENT_TIMESTAMP)"
)
_COUNT_FAILURE = Sql("UPDATE login_throttle SET failures = failures + 1 WHERE username = ?")
_FAILURES = Sql("SELECT failures FROM login_throttle WHERE username = ?")


def _deposit(locked: store.Locked, number: str, amount: int) -> store.NewJournal:
    return store.NewJournal(
        JournalKind.deposit,
        amount,
        "USD",
        None,
        customer_id=None,
        initiated_by=None,
        to_account=locked.accounts[number],
    )


async def test_a_journal_names_only_accounts_locked_with_it(bank, app):
    _, headers, number = await funded_account(bank, "10.00")
    _, _, other = await funded_account(bank, "10.00")
    async with app.state.database.session() as db:
        with pytest.raises(ValueError, match="locked"):
            async with unit_of_work(db) as tx:
                locked = await store.lock_movement(tx, [number])
                elsewhere = await store.lock_movement(tx, [other])
                await store.post_journal(
                    tx,
                    locked,
                    _deposit(locked, number, 500),
                    [(locked.accounts[number], 500), (elsewhere.accounts[other], -500)],
                )
    assert await journal_count(app) == 2
    assert await balance(bank.client, headers, number) == "10.00"


async def test_a_lock_posts_one_journal(bank, app):
    _, headers, number = await funded_account(bank, "10.00")
    _, _, other = await funded_account(bank, "10.00")
    async with app.state.database.session() as db:
        with pytest.raises(ValueError, match="one journal"):
            async with unit_of_work(db) as tx:
                locked = await store.lock_movement(tx, [number, other])
                lines = [(locked.accounts[number], 100), (locked.accounts[other], -100)]
                await store.post_journal(tx, locked, _deposit(locked, number, 100), lines)
                await store.post_journal(tx, locked, _deposit(locked, number, 100), lines)
    assert await journal_count(app) == 2  # the two opening deposits: nothing of the above
    assert await balance(bank.client, headers, number) == "10.00"


async def test_a_write_always_sees_the_writes_before_it(database):
    """On PostgreSQL a money transaction sends its writes together, as one statement,
    whose parts cannot see each other's rows. A write that would need to (it changes
    rows of a table an earlier write touched) goes in a statement after them."""

    async def count_twice(tx: Tx) -> int:
        await tx.write(_ADD_THROTTLE, "someone")
        await tx.write(_COUNT_FAILURE, "someone")
        await tx.write(_COUNT_FAILURE, "someone")
        return (await tx.one(_FAILURES, "someone"))[0]

    assert await money_transaction(database, count_twice) == 2


async def test_a_money_transaction_queues_a_durable_job_with_its_writes(database):
    """A movement can queue a job (fraud scoring will, for every movement): the job
    commits with the movement, or not at all, and is there for a runner to run."""

    class Refused(Exception):
        pass

    async def refused(tx: Tx) -> None:
        await store.enqueue_job(tx, JobKind.kyc_check, {"customer_id": 0, "n": 1})
        raise Refused

    with pytest.raises(Refused):
        await money_transaction(database, refused)

    async def queues(tx: Tx) -> int:
        await tx.write(_ADD_THROTTLE, "someone")
        return await store.enqueue_job(tx, JobKind.kyc_check, {"customer_id": 0, "n": 2})

    job_id = await money_transaction(database, queues)
    async with database.session() as db:
        queued = (await db.scalars(select(Job))).all()
    assert [(job.id, job.kind, job.status, job.payload) for job in queued] == [
        (job_id, "kyc.check", "queued", {"customer_id": 0, "n": 2})
    ]
    assert await jobs.run_job(database, job_id)  # no such customer: nothing to check


@pytest.mark.postgres_only
async def test_a_job_queued_by_a_money_transaction_costs_no_round_trip_of_its_own(database):
    sent: list[str] = []
    await database.engine.dispose()  # every connection from here on is logged

    @event.listens_for(database.engine.sync_engine, "connect")
    def _log(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        dbapi_connection.driver_connection.add_query_logger(lambda q: sent.append(q.query))

    async def queues(tx: Tx) -> int:
        await tx.write(_ADD_THROTTLE, "someone")
        return await store.enqueue_job(tx, JobKind.kyc_check, {"customer_id": 0})

    await money_transaction(database, queues)
    writes = [query for query in sent if "login_throttle" in query or "jobs" in query]
    assert len(writes) == 1, sent
    assert "INSERT INTO login_throttle" in writes[0] and "INSERT INTO jobs" in writes[0]


def test_every_kind_of_job_has_its_handler():
    assert set(jobs.HANDLERS) == set(JobKind)


class _RecordingDriver(Driver):
    """A PostgreSQL-like driver that records what each round trip would send."""

    is_sqlite = False

    def __init__(self) -> None:
        self.sent: list[list[str]] = []

    async def one(self, sql: Sql, *args: Any) -> Any:
        self.sent.append([f"read {sql.sqlite}"])
        return None

    async def send(self, writes: list[Write], returning: Write | None = None) -> Any:
        self.sent.append([sql.sqlite for sql, _ in [*writes, *([returning] if returning else [])]])
        return (1,) if returning else None


async def test_kept_writes_go_together_unless_one_could_see_another():
    driver = _RecordingDriver()
    tx = Tx(driver, keeps_writes=True)
    insert_a, insert_b = Sql("INSERT INTO a (x) VALUES (?)"), Sql("INSERT INTO b (x) VALUES (?)")
    update_a = Sql("UPDATE a SET x = ? WHERE x = 0")
    prune_a = Sql("DELETE FROM a WHERE x < ?", disjoint=True)
    unknown = Sql("SELECT pg_notify('a', ?)")
    await tx.write(insert_a, 1)
    await tx.write(insert_b, 1)
    await tx.write(prune_a, 0)  # declared disjoint: goes with them
    await tx.write(update_a, 2)  # would not see the insert into a: sent after it
    await tx.write(unknown, "x")  # cannot be told: sent apart
    await tx.write(insert_b, 3)
    assert await tx.write_returning(Sql("INSERT INTO c (x) VALUES (?) RETURNING id"), 4) == (1,)
    await tx.flush()
    assert [len(statement) for statement in driver.sent] == [3, 1, 1, 2]
    assert driver.sent[1] == [update_a.sqlite] and driver.sent[2] == [unknown.sqlite]
    assert driver.sent[3][-1].startswith("INSERT INTO c")


def test_a_stored_answer_replays_whatever_version_of_the_view_filed_it():
    body = {
        "transaction_id": "7",
        "type": "transfer",
        "status": "completed",
        "amount": "1.00",
        "currency": "USD",
        "from_account": "100000000017",
        "to_account": "100000000025",
        "description": None,
        "created_at": "2026-12-01T00:00:00Z",
        "balance_after": "9.00",
        "a_field_since_dropped": 1,
    }
    view = TransactionView.stored(body)
    assert view.transaction_id == "7" and view.flagged is None
