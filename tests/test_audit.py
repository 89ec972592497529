"""The audit trail (issue 2 item 7, API.md §8): who may read it, filters, pagination,
CSV, the hash chain under concurrency and after tampering, the database's refusal to
change it, and that a rolled-back change leaves no record."""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.db import unit_of_work
from app.models import AuditRecord, Customer
from app.services import audit
from app.services.audit import GENESIS, SYSTEM, verify_chain
from app.store.audit import AUDIT_CHAIN_LOCK
from tests.helpers import (
    audit_records,
    count,
    execute,
    problem,
    registration_form,
    tamper_audit,
)

RECORD_KEYS = {
    "seq",
    "at",
    "actor_id",
    "actor_role",
    "action",
    "entity_type",
    "entity_id",
    "outcome",
    "ip",
    "request_id",
    "details",
    "prev_hash",
    "hash",
}


async def _logs(bank, headers, **params):
    response = await bank.client.get("/api/audit/logs", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def _verify(bank, headers) -> dict:
    response = await bank.client.get("/api/audit/verify", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def _service_verify(database) -> audit.ChainReport:
    async with database.session() as db:
        return await verify_chain(db)


# --- access ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/audit/logs", "/api/audit/verify"])
async def test_audit_endpoints_are_for_auditors_and_admins_only(bank, path):
    _, customer = await bank.customer()
    problem(await bank.client.get(path), 401, "not_authenticated")
    problem(await bank.client.get(path, headers=customer), 403, "forbidden")
    for role in ("auditor", "admin"):
        response = await bank.client.get(path, headers=await bank.staff(role))
        assert response.status_code == 200, response.text


async def test_a_request_refused_for_the_callers_role_is_audited(bank, database):
    _, customer = await bank.customer()
    me = (await bank.client.get("/api/auth/me", headers=customer)).json()
    problem(await bank.client.get("/api/audit/logs/", headers=customer), 403, "forbidden")
    auditor = await bank.staff("auditor")
    response = await bank.client.post("/api/admin/users", json={}, headers=auditor)
    problem(response, 403, "forbidden")
    records = await audit_records(database, "access.denied")
    assert [(r.actor_id, r.actor_role, r.entity_id, r.outcome) for r in records] == [
        (me["user_id"], "customer", "/api/audit/logs", "denied"),
        (records[1].actor_id, "auditor", "/api/admin/users", "denied"),
    ]
    assert records[0].details == {"method": "GET", "allowed_roles": ["admin", "auditor"]}
    assert records[1].details == {"method": "POST", "allowed_roles": ["admin"]}


async def test_there_is_no_way_to_change_the_log_through_the_api(bank):
    headers = await bank.staff("admin")
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        response = await bank.client.request(method, "/api/audit/logs", headers=headers)
        problem(response, 405, "method_not_allowed")
        response = await bank.client.request(method, "/api/audit/logs/1", headers=headers)
        assert response.status_code in (404, 405)


# --- records ------------------------------------------------------------------------------


async def test_records_have_the_contract_shape_and_form_a_chain(bank):
    await bank.customer()
    body = await _logs(bank, await bank.staff("auditor"))
    items = body["items"]
    assert body["next_cursor"] is None
    assert [r["action"] for r in items] == [
        "customer.register",
        "kyc.check",
        "auth.login",
        "staff.create",
        "auth.login",
    ]
    for record in items:
        assert set(record) == RECORD_KEYS
        assert record["outcome"] in ("success", "denied", "failed")
        assert record["at"].endswith(("Z", "+00:00"))
        assert len(record["hash"]) == 64
    assert [r["seq"] for r in items] == list(range(1, len(items) + 1))
    assert items[0]["prev_hash"] == GENESIS
    for previous, record in itertools.pairwise(items):
        assert record["prev_hash"] == previous["hash"]
    register = items[0]
    assert (register["entity_type"], register["entity_id"], register["actor_role"]) == (
        "customer",
        "1001",
        "customer",
    )
    assert register["ip"] == "203.0.113.7"
    assert register["request_id"]
    assert register["details"]["username"].startswith("user")
    assert {d["kind"] for d in register["details"]["documents"]} == {
        "id_document",
        "address_proof",
    }


async def test_logs_filter_by_action_actor_and_entity(bank):
    first, first_headers = await bank.customer()
    second, _ = await bank.customer()
    headers = await bank.staff("auditor")
    me = (await bank.client.get("/api/auth/me", headers=first_headers)).json()

    registrations = (await _logs(bank, headers, action="customer.register"))["items"]
    assert [r["entity_id"] for r in registrations] == [first["customer_id"], second["customer_id"]]

    mine = (await _logs(bank, headers, actor=me["user_id"]))["items"]
    assert mine and all(r["actor_id"] == me["user_id"] for r in mine)
    assert {r["action"] for r in mine} == {"customer.register", "auth.login"}

    about_second = (
        await _logs(bank, headers, entity_type="customer", entity_id=second["customer_id"])
    )["items"]
    assert {r["action"] for r in about_second} == {"customer.register", "kyc.check"}
    assert all(r["entity_id"] == second["customer_id"] for r in about_second)

    both = (await _logs(bank, headers, action="kyc.check", entity_id=first["customer_id"]))["items"]
    assert len(both) == 1
    assert (await _logs(bank, headers, action="no.such.action"))["items"] == []


async def test_logs_filter_by_date_range(bank):
    await bank.customer()
    headers = await bank.staff("auditor")
    today = datetime.now(UTC).date()
    yesterday, tomorrow = today - timedelta(days=1), today + timedelta(days=1)
    everything = (await _logs(bank, headers))["items"]
    assert len(everything) >= 3
    assert (await _logs(bank, headers, **{"from": today.isoformat()}))["items"] == everything
    assert (await _logs(bank, headers, to=today.isoformat()))["items"] == everything
    assert (await _logs(bank, headers, **{"from": tomorrow.isoformat()}))["items"] == []
    assert (await _logs(bank, headers, to=yesterday.isoformat()))["items"] == []
    window = {"from": yesterday.isoformat(), "to": today.isoformat()}
    assert (await _logs(bank, headers, **window))["items"] == everything
    bad = await bank.client.get("/api/audit/logs", params={"from": "25/11/2026"}, headers=headers)
    problem(bad, 422, "validation_error")
    assert bad.json()["errors"][0]["field"] == "from"


async def test_logs_paginate_with_a_cursor(bank, database):
    await bank.customer()
    await bank.customer()
    headers = await bank.staff("auditor")
    total = await count(database, AuditRecord)
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = await _logs(bank, headers, **params)
        assert len(page["items"]) <= 3
        seen += [r["seq"] for r in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    # total counts the records before this walk; reading the log writes nothing.
    assert seen == list(range(1, total + 1))
    assert pages == -(-total // 3)


async def test_a_cursor_is_stable_under_concurrent_inserts(bank):
    await bank.customer()
    headers = await bank.staff("auditor")
    first = await _logs(bank, headers, limit=2)
    await bank.customer()  # new records land at the end, after the cursor
    second = await _logs(bank, headers, limit=2, cursor=first["next_cursor"])
    assert second["items"][0]["seq"] == first["items"][-1]["seq"] + 1


@pytest.mark.parametrize(
    ("params", "field"),
    [({"cursor": "!!not-a-cursor"}, "cursor"), ({"limit": 0}, "limit"), ({"limit": 501}, "limit")],
)
async def test_bad_paging_parameters_are_422(bank, params, field):
    headers = await bank.staff("auditor")
    response = await bank.client.get("/api/audit/logs", params=params, headers=headers)
    problem(response, 422, "validation_error")
    assert response.json()["errors"][0]["field"] == field


async def test_logs_export_as_csv(bank):
    await bank.customer()
    headers = await bank.staff("auditor")
    as_json = (await _logs(bank, headers))["items"]
    response = await bank.client.get("/api/audit/logs", params={"format": "csv"}, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"].startswith("attachment")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert list(rows[0]) == list(as_json[0])
    assert [int(r["seq"]) for r in rows] == [r["seq"] for r in as_json]
    for row, record in zip(rows, as_json, strict=True):
        assert row["hash"] == record["hash"]
        assert row["action"] == record["action"]
        assert json.loads(row["details"]) == record["details"]


async def test_csv_export_streams_the_whole_filtered_range_in_one_download(bank, database):
    for _ in range(3):
        await bank.customer()
    headers = await bank.staff("auditor")
    everything = (await _logs(bank, headers, limit=500))["items"]
    response = await bank.client.get(
        "/api/audit/logs", params={"format": "csv", "limit": 2}, headers=headers
    )
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [int(r["seq"]) for r in rows] == [r["seq"] for r in everything]  # not a page
    assert "x-next-cursor" not in response.headers
    newest = await bank.client.get(
        "/api/audit/logs", params={"format": "csv", "order": "desc"}, headers=headers
    )
    seqs = [int(r["seq"]) for r in csv.DictReader(io.StringIO(newest.text))]
    assert seqs == sorted(seqs, reverse=True) and len(seqs) >= len(everything)
    batches = [
        [r.seq for r in batch]
        async for batch in audit.stream_records(database, filters=audit.LogFilter(), batch=3)
    ]
    assert [seq for batch in batches for seq in batch] == [r["seq"] for r in everything]
    assert max(len(b) for b in batches) == 3


async def test_logs_filter_by_outcome_request_id_and_actor_username_in_either_order(bank):
    _, customer = await bank.customer(username="filterme")
    await bank.client.get("/api/audit/logs", headers={**customer, "X-Request-ID": "req-audit-42"})
    headers = await bank.staff("auditor")
    (tagged,) = (await _logs(bank, headers, request_id="req-audit-42"))["items"]
    assert (tagged["action"], tagged["outcome"]) == ("access.denied", "denied")
    denied = (await _logs(bank, headers, outcome="denied"))["items"]
    assert denied and {r["outcome"] for r in denied} == {"denied"}
    mine = (await _logs(bank, headers, actor="filterme"))["items"]
    me = (await bank.client.get("/api/auth/me", headers=customer)).json()["user_id"]
    assert mine and {r["actor_id"] for r in mine} == {me}
    assert (await _logs(bank, headers, actor="nobody-by-that-name"))["items"] == []
    ascending = [r["seq"] for r in (await _logs(bank, headers, limit=500))["items"]]
    first = await _logs(bank, headers, order="desc", limit=2)
    rest = await _logs(bank, headers, order="desc", limit=500, cursor=first["next_cursor"])
    assert [r["seq"] for r in first["items"] + rest["items"]] == sorted(ascending, reverse=True)
    bad = await bank.client.get("/api/audit/logs", params={"outcome": "maybe"}, headers=headers)
    problem(bad, 422, "validation_error")


async def test_csv_export_defuses_spreadsheet_formulas(bank, database):
    # Ids in paths are digits now; a value a client chose may still reach a record.
    async with database.session() as db, unit_of_work(db) as tx:
        await audit.record(
            tx,
            actor=SYSTEM,
            action="customer.read",
            entity_type="customer",
            entity_id="=HYPERLINK(1)",
            outcome="denied",
        )
    headers = await bank.staff("auditor")
    response = await bank.client.get(
        "/api/audit/logs", params={"format": "csv", "action": "customer.read"}, headers=headers
    )
    [row] = list(csv.DictReader(io.StringIO(response.text)))
    assert row["outcome"] == "denied"
    assert row["entity_id"] == "'=HYPERLINK(1)"


# --- the chain ----------------------------------------------------------------------------


async def test_chain_stays_valid_under_a_burst_of_concurrent_registrations(bank, database):
    responses = await asyncio.gather(*(bank.register() for _ in range(20)))
    assert [r.status_code for r in responses] == [201] * 20, [r.text for r in responses]
    ids = sorted(int(r.json()["customer_id"]) for r in responses)
    assert len(set(ids)) == 20 and ids[0] == 1001
    headers = await bank.staff("auditor")
    rows = await count(database, AuditRecord)
    assert rows >= 41  # 20 registrations, 20 KYC checks, the auditor's creation
    report = await _verify(bank, headers)
    assert report == {"valid": True, "entries_checked": rows, "first_invalid_seq": None}
    seqs = [r.seq for r in await audit_records(database)]
    assert seqs == list(range(1, rows + 1))
    assert len(await audit_records(database, "customer.register")) == 20
    assert len(await audit_records(database, "kyc.check")) == 20


async def test_concurrent_appenders_form_one_unbroken_chain(app, database):
    async def append(n: int) -> None:
        async with database.session() as db, unit_of_work(db) as tx:
            await audit.record(tx, actor=SYSTEM, action="test.append", details={"n": n})

    await asyncio.gather(*(append(n) for n in range(30)))
    records = await audit_records(database)
    assert [r.seq for r in records] == list(range(1, 31))
    assert sorted(r.details["n"] for r in records) == list(range(30))
    assert await _service_verify(database) == audit.ChainReport(True, 30, None)


@pytest.mark.parametrize(
    "change",
    [
        "action = 'customer.delete'",
        "outcome = 'failed'",
        "actor_id = '999'",
        "ip = '10.0.0.1'",
        "entity_id = '1003'",
        "at = at + INTERVAL '1' DAY",
        'details = \'{"username": "someone-else"}\'',
    ],
)
async def test_a_record_altered_behind_the_apps_back_breaks_the_chain(bank, database, change):
    await bank.customer()
    await bank.customer()
    headers = await bank.staff("auditor")
    before = await _verify(bank, headers)
    assert before["valid"] is True
    target = (await audit_records(database, "customer.register"))[1].seq
    if "INTERVAL" in change and database.is_sqlite:
        change = "at = datetime(at, '+1 day')"
    await tamper_audit(database, target, change)
    report = await _verify(bank, headers)
    assert report["valid"] is False
    assert report["first_invalid_seq"] == target
    assert report["entries_checked"] == target
    assert await _service_verify(database) == audit.ChainReport(False, target, target)


async def test_a_record_rehashed_after_alteration_breaks_the_next_link(bank, database):
    await bank.customer()
    headers = await bank.staff("auditor")
    [login, *_] = await audit_records(database, "auth.login")
    # Turn the customer's successful login into a failed one, with a matching hash.
    forged = audit.compute_hash(
        seq=login.seq,
        at=login.at,
        actor_id=login.actor_id,
        actor_role=login.actor_role,
        action=login.action,
        entity_type=login.entity_type,
        entity_id=login.entity_id,
        outcome="failed",
        ip=login.ip,
        request_id=login.request_id,
        details=login.details,
        prev_hash=login.prev_hash,
    )
    assert forged != login.hash
    await tamper_audit(database, login.seq, f"outcome = 'failed', hash = '{forged}'")
    # The forged record is self-consistent; its successor's link gives it away.
    report = await _verify(bank, headers)
    assert (report["valid"], report["first_invalid_seq"]) == (False, login.seq + 1)


async def test_a_deleted_record_breaks_the_chain(bank, database):
    await bank.customer()
    headers = await bank.staff("auditor")
    if database.is_sqlite:
        await execute(database, "DROP TRIGGER audit_log_no_delete")
    else:
        await execute(database, "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change")
    await execute(database, "DELETE FROM audit_log WHERE seq = 2")
    report = await _verify(bank, headers)
    assert (report["valid"], report["first_invalid_seq"]) == (False, 3)


async def _unlock_log(database) -> None:
    if database.is_sqlite:
        await execute(database, "DROP TRIGGER audit_log_no_delete")
        await execute(database, "DROP TRIGGER audit_log_no_update")
    else:
        await execute(database, "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change")


async def test_a_record_deleted_and_reinserted_at_the_end_breaks_the_chain(bank, database):
    await bank.customer()
    headers = await bank.staff("auditor")
    last = (await _verify(bank, headers))["entries_checked"]
    await _unlock_log(database)
    # Record 2 taken out and put back after the last one, with its content and hash.
    await execute(database, "UPDATE audit_log SET seq = :new WHERE seq = 2", new=last + 1)
    report = await _verify(bank, headers)
    assert (report["valid"], report["first_invalid_seq"]) == (False, 3)


async def test_two_records_swapped_break_the_chain(bank, database):
    await bank.customer()
    headers = await bank.staff("auditor")
    await _unlock_log(database)
    await execute(database, "UPDATE audit_log SET seq = -1 WHERE seq = 3")
    await execute(database, "UPDATE audit_log SET seq = 3 WHERE seq = 4")
    await execute(database, "UPDATE audit_log SET seq = 4 WHERE seq = -1")
    report = await _verify(bank, headers)
    assert (report["valid"], report["first_invalid_seq"]) == (False, 3)


async def test_a_range_is_verified_with_its_link_to_the_record_before_it(bank, database):
    for _ in range(3):
        await bank.customer()
    headers = await bank.staff("auditor")
    whole = await _verify(bank, headers)
    last = whole["entries_checked"]

    async def verify(**params: int) -> dict:
        response = await bank.client.get("/api/audit/verify", params=params, headers=headers)
        assert response.status_code == 200, response.text
        return response.json()

    part = await verify(from_seq=3, to_seq=6)
    assert (part["valid"], part["entries_checked"]) == (True, 4)
    assert (await verify(from_seq=last))["entries_checked"] == 1
    await tamper_audit(database, 5, "ip = '10.9.9.9'")
    assert (await verify(from_seq=3, to_seq=6))["first_invalid_seq"] == 5
    assert (await verify(from_seq=6))["valid"] is True  # after the altered record: intact
    assert (await verify(to_seq=4))["valid"] is True
    bad = await bank.client.get("/api/audit/verify", params={"from_seq": 0}, headers=headers)
    problem(bad, 422, "validation_error")


async def test_records_cut_from_the_end_of_a_range_are_caught(bank, database):
    for _ in range(2):
        await bank.customer()
    headers = await bank.staff("auditor")
    last = (await _verify(bank, headers))["entries_checked"]
    if database.is_sqlite:
        await execute(database, "DROP TRIGGER audit_log_no_delete")
    else:
        await execute(database, "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change")
    await execute(database, "DELETE FROM audit_log WHERE seq IN (:a, :b)", a=last - 2, b=last - 1)
    response = await bank.client.get(
        "/api/audit/verify", params={"from_seq": 1, "to_seq": last - 1}, headers=headers
    )
    assert (response.json()["valid"], response.json()["first_invalid_seq"]) == (False, last)


async def test_an_empty_log_is_valid(bank, database):
    assert await _service_verify(database) == audit.ChainReport(True, 0, None)


# --- append-only in the database ------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET action = 'x' WHERE seq = 1",
        "UPDATE audit_log SET details = details",
        "DELETE FROM audit_log WHERE seq = 1",
        "DELETE FROM audit_log",
    ],
)
async def test_the_database_refuses_to_change_the_log(bank, database, statement):
    await bank.customer()
    before = [(r.seq, r.hash, r.action) for r in await audit_records(database)]
    with pytest.raises(DBAPIError) as refused:
        await execute(database, statement)
    assert "append-only" in str(refused.value)
    assert [(r.seq, r.hash, r.action) for r in await audit_records(database)] == before


async def test_the_database_refuses_to_empty_the_log(bank, database):
    await bank.customer()
    rows = await count(database, AuditRecord)
    # SQLite has no TRUNCATE (its DELETE without WHERE is refused above).
    statements = ["DELETE FROM audit_log WHERE seq > 0"]
    if not database.is_sqlite:
        statements.append("TRUNCATE audit_log")
    for statement in statements:
        with pytest.raises(DBAPIError, match="append-only"):
            await execute(database, statement)
    assert await count(database, AuditRecord) == rows


# --- the record commits with the change, or not at all ---------------------------------------


async def test_a_rolled_back_change_leaves_no_record(app, database):
    class Abort(Exception):
        pass

    async with database.session() as db:
        with pytest.raises(Abort):
            async with unit_of_work(db) as tx:
                await audit.record(tx, actor=SYSTEM, action="test.rolled_back")
                raise Abort
        async with unit_of_work(db) as tx:
            await audit.record(tx, actor=SYSTEM, action="test.committed")
    records = await audit_records(database)
    assert [(r.seq, r.action) for r in records] == [(1, "test.committed")]
    assert records[0].prev_hash == GENESIS


async def test_a_refused_registration_adds_no_record(bank, database):
    assert (await bank.register(username="rob")).status_code == 201
    duplicate = await bank.register(username="rob")
    problem(duplicate, 409, "username_taken")
    weak = await bank.register(password="short")
    problem(weak, 422, "validation_error")
    assert len(await audit_records(database, "customer.register")) == 1
    assert await count(database, Customer) == 1


async def test_a_refused_profile_update_adds_no_record(bank, database):
    await bank.customer(email="first@example.com")
    _, headers = await bank.customer()
    response = await bank.client.patch(
        "/api/customers/me", json={"email": "first@example.com"}, headers=headers
    )
    problem(response, 409, "email_taken")
    assert await audit_records(database, "customer.update") == []


async def test_records_carry_who_and_from_where(bank, database):
    form = registration_form(username="sally")
    await bank.client.post(
        "/api/customers/register",
        data=form,
        files={
            "id_document": ("a.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 16, "image/png"),
            "address_proof": ("b.pdf", b"%PDF-1.4 tiny", "application/pdf"),
        },
        headers={"X-Request-ID": "reg-sally-1"},
    )
    [record] = await audit_records(database, "customer.register")
    async with database.session() as db:
        user_id = await db.scalar(text("SELECT id FROM users WHERE username = 'sally'"))
    assert (record.actor_id, record.actor_role, record.ip, record.request_id) == (
        str(user_id),
        "customer",
        "203.0.113.7",
        "reg-sally-1",
    )


async def test_every_committed_record_is_sealed_into_the_chain_at_commit(bank, database, settings):
    """On PostgreSQL records are written to audit_pending and sealed by a deferred trigger
    at COMMIT (under the chain's advisory lock): after the commit nothing is left pending
    and the chain is whole. SQLite appends in place."""
    await bank.customer()
    await bank.staff("auditor")
    records = await audit_records(database)
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert len(records) >= 3
    assert (await _service_verify(database)).valid
    if not settings.is_sqlite:
        async with database.session() as db:
            assert await db.scalar(text("SELECT count(*) FROM audit_pending")) == 0
            source = await db.scalar(
                text("SELECT prosrc FROM pg_proc WHERE proname = 'audit_seal'")
            )
        assert f"pg_advisory_xact_lock({AUDIT_CHAIN_LOCK})" in source


async def test_benchmark_filler_records_extend_the_chain_validly(database):
    """bench.scale measures verification over a long log by topping it up with chained
    filler records (bench.books.pad_audit_log)."""
    from bench import books

    async with database.session() as db:
        assert await books.pad_audit_log(db, 25, batch=10) == 25
        assert await books.pad_audit_log(db, 25) == 0
    records = await audit_records(database, "bench.filler")
    assert [r.seq for r in records] == list(range(1, 26))
    assert await _service_verify(database) == audit.ChainReport(True, 25, None)


async def test_refused_money_movements_are_audited_as_failed(bank, database):
    from tests.ledger_helpers import funded_account, transfer, withdraw

    _, headers, number = await funded_account(bank, "100.00")
    _, _, target = await funded_account(bank, "0.00")
    problem(await withdraw(bank.client, headers, number, "100.01"), 422, "insufficient_funds")
    problem(await transfer(bank.client, headers, number, number, "1.00"), 422, "same_account")
    admin = await bank.staff()
    frozen = await bank.client.patch(
        f"/api/admin/accounts/{target}",
        json={"status": "frozen", "reason": "case 9"},
        headers=admin,
    )
    assert frozen.status_code == 200
    problem(await transfer(bank.client, headers, number, target, "1.00"), 409, "account_not_active")
    failed = [r for r in await audit_records(database) if r.outcome == "failed"]
    assert [(r.action, r.details["code"]) for r in failed] == [
        ("transaction.withdrawal", "insufficient_funds"),
        ("transaction.transfer", "account_not_active"),
    ]
    assert failed[0].details["field"] == "amount"
