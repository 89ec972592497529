"""The reviewers' inbox (issue 21; API.md §7): every kind of item waiting for a person,
oldest first with its SLA deadline; `next` hands out each item once, even to admins
asking at once; take-overs are explicit and audited; four-eyes holds here too."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.helpers import Bank, audit_records, execute, problem
from tests.ledger_helpers import funded_account, transfer, withdraw


async def inbox(bank: Bank, admin: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    response = await bank.client.get("/api/admin/inbox", params=params, headers=admin)
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def apply(
    bank: Bank, headers: dict[str, str], number: str, principal: str = "2000.00"
) -> str:
    body = {
        "product": "personal" if float(principal) <= 50000 else "home",
        "principal": principal,
        "term_months": 24 if float(principal) <= 50000 else 120,
        "monthly_income": "90000.00",
        "account_number": number,
        "purpose": "Inbox test",
    }
    response = await bank.client.post("/api/loans", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["loan_id"]


async def one_of_each(bank: Bank, app: Any) -> dict[str, str]:
    """A KYC review, a pending loan, an open flag and a held transaction, in that order."""
    review, _ = await bank.customer()
    await execute(
        app.state.database,
        "UPDATE customers SET status = 'Under Review' WHERE id = :c",
        c=int(review["customer_id"]),
    )
    _, headers, number = await funded_account(bank, "90000.00")
    _, _, target = await funded_account(bank, "0.00")
    loan_id = await apply(bank, headers, number)
    for _ in range(3):
        assert (await transfer(bank.client, headers, number, target, "9500.00")).status_code == 201
    await app.state.scorer.drain()
    flag_id = (await bank.client.get("/api/admin/flags", headers=await bank.staff())).json()[
        "items"
    ][0]["flag_id"]
    held = await withdraw(bank.client, headers, number, "50000.00")
    assert held.json()["status"] == "pending_review"
    return {
        "kyc_review": review["customer_id"],
        "loan_approval": loan_id,
        "fraud_flag": flag_id,
        "held_transaction": held.json()["transaction_id"],
    }


async def test_every_kind_waits_oldest_first_with_its_deadline(bank, app):
    ids = await one_of_each(bank, app)
    admin = await bank.staff()
    items = await inbox(bank, admin)
    assert [(i["kind"], i["entity_id"]) for i in items] == list(ids.items())
    assert all(i["assigned_to"] is None and i["overdue"] is False for i in items)
    held = items[3]
    due = datetime.fromisoformat(held["due_at"]) - datetime.fromisoformat(held["created_at"])
    assert due == timedelta(hours=4)
    kyc = items[0]
    assert datetime.fromisoformat(kyc["due_at"]) - datetime.fromisoformat(
        kyc["created_at"]
    ) == timedelta(hours=24)
    app.state.database.clock = lambda: datetime.now(UTC) + timedelta(hours=5)
    late = {i["kind"]: i["overdue"] for i in await inbox(bank, admin)}
    assert late == {
        "kyc_review": False,
        "loan_approval": False,
        "fraud_flag": False,
        "held_transaction": True,
    }
    assert [i["kind"] for i in await inbox(bank, admin, kind="fraud_flag")] == ["fraud_flag"]
    first = await inbox(bank, admin, limit=2)
    response = await bank.client.get("/api/admin/inbox", params={"limit": 2}, headers=admin)
    rest = await inbox(bank, admin, cursor=response.json()["next_cursor"])
    assert [i["item_id"] for i in first + rest] == [i["item_id"] for i in items]


async def test_next_hands_out_the_oldest_and_take_over_is_audited(bank, app, database):
    ids = await one_of_each(bank, app)
    first, second = await bank.staff(), await bank.staff()
    me = (await bank.client.get("/api/auth/me", headers=first)).json()["user_id"]
    got = await bank.client.post("/api/admin/inbox/next", headers=first)
    assert got.status_code == 200 and got.json()["item_id"] == f"kyc_review:{ids['kyc_review']}"
    assert got.json()["assigned_to"] == me
    other = await bank.client.post("/api/admin/inbox/next", headers=second)
    assert other.json()["item_id"] == f"loan_approval:{ids['loan_approval']}"
    third = await bank.client.post("/api/admin/inbox/next", headers=first)
    assert third.json()["item_id"] == f"fraud_flag:{ids['fraud_flag']}"
    flag = (await bank.client.get(f"/api/admin/flags/{ids['fraud_flag']}", headers=first)).json()
    assert flag["assigned_to"] == me  # the flag's own holder
    taken = await bank.client.post(
        f"/api/admin/inbox/kyc_review:{ids['kyc_review']}/take", headers=second
    )
    assert taken.status_code == 200 and taken.json()["assigned_to"] != me
    records = await audit_records(database, "inbox.take_over")
    assert [(r.entity_type, r.details["from"]) for r in records] == [("customer", me)]
    assert len(await audit_records(database, "inbox.assign")) == 3
    await bank.client.post("/api/admin/inbox/next", headers=second)  # the held transaction
    assert (await bank.client.post("/api/admin/inbox/next", headers=second)).status_code == 204
    gone = await bank.client.post("/api/admin/inbox/loan_approval:999999/take", headers=second)
    problem(gone, 404, "inbox_item_not_found")
    customer = (await bank.customer())[1]
    problem(await bank.client.get("/api/admin/inbox", headers=customer), 403, "forbidden")
    problem(await bank.client.post("/api/admin/inbox/next", headers=customer), 403, "forbidden")


async def test_admins_asking_at_once_never_get_the_same_item(bank, app, another_client):
    _, headers, number = await funded_account(bank, "0.00")
    loans = [await apply(bank, headers, number) for _ in range(6)]
    admins = [await bank.staff() for _ in range(6)]
    clients = [bank.client] + [await another_client() for _ in range(5)]
    answers = await asyncio.gather(
        *(c.post("/api/admin/inbox/next", headers=h) for c, h in zip(clients, admins, strict=True))
    )
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    handed = sorted(a.json()["entity_id"] for a in answers)
    assert handed == sorted(loans)
    holders = {a.json()["assigned_to"] for a in answers}
    assert len(holders) == 6


async def test_the_first_approver_of_a_four_eyes_loan_is_not_handed_it_again(bank, app):
    _, headers, number = await funded_account(bank, "0.00")
    loan_id = await apply(bank, headers, number, principal="150000.00")
    first, second = await bank.staff(), await bank.staff()
    got = await bank.client.post("/api/admin/inbox/next", headers=first)
    assert got.json()["entity_id"] == loan_id
    approved = await bank.client.post(f"/api/admin/loans/{loan_id}/approve", headers=first)
    assert approved.json()["approvals"] == 1
    (item,) = await inbox(bank, first)
    assert item["assigned_to"] is None  # back in the queue for a second admin
    assert (await bank.client.post("/api/admin/inbox/next", headers=first)).status_code == 204
    again = await bank.client.post("/api/admin/inbox/next", headers=second)
    assert again.json()["entity_id"] == loan_id


async def test_a_linked_admin_decides_none_of_their_customers_items(bank, app):
    """Four-eyes of every kind: an admin whose user is linked to the customer is never
    handed, and may not take, assign or decide, that customer's loan, flag or held
    transaction; each refusal is audited as failed and changes nothing."""
    ids = await one_of_each(bank, app)
    admin, other = await bank.staff(), await bank.staff()
    held = await bank.client.get(
        f"/api/admin/transactions/{ids['held_transaction']}", headers=other
    )
    customer_id = held.json()["customer_id"]
    me = (await bank.client.get("/api/auth/me", headers=admin)).json()["user_id"]
    await execute(
        app.state.database,
        "UPDATE users SET linked_customer_id = :c WHERE id = :u",
        c=int(customer_id),
        u=int(me),
    )
    handed = await bank.client.post("/api/admin/inbox/next", headers=admin)
    assert handed.json()["kind"] == "kyc_review"  # the only item not of their customer
    assert (await bank.client.post("/api/admin/inbox/next", headers=admin)).status_code == 204
    transaction = f"/api/admin/transactions/{ids['held_transaction']}"
    flag = f"/api/admin/flags/{ids['fraud_flag']}"
    loan = f"/api/admin/loans/{ids['loan_approval']}"
    attempts = [
        (f"{transaction}/approve", {"reason": "mine"}),
        (f"{transaction}/reject", {"reason": "mine"}),
        (f"{flag}/assign", None),
        (f"{flag}/resolve", {"decision": "legitimate", "note": "mine"}),
        (f"{loan}/approve", {"reason": "mine"}),
        (f"{loan}/reject", {"reason": "mine"}),
        (f"/api/admin/inbox/held_transaction:{ids['held_transaction']}/take", None),
        (f"/api/admin/inbox/fraud_flag:{ids['fraud_flag']}/take", None),
        (f"/api/admin/inbox/loan_approval:{ids['loan_approval']}/take", None),
    ]
    for url, body in attempts:
        problem(await bank.client.post(url, json=body, headers=admin), 403, "conflict_of_interest")
    refused = [
        r
        for r in await audit_records(app.state.database)
        if r.outcome == "failed" and r.actor_id == me
    ]
    assert [r.action for r in refused] == [
        "transaction.approve",
        "transaction.reject",
        "fraud.flag_assigned",
        "fraud.flag_resolved",
        "loan.approve",
        "loan.reject",
        "inbox.take_over",
        "inbox.take_over",
        "inbox.take_over",
    ]
    assert {r.details["code"] for r in refused} == {"conflict_of_interest"}
    # Nothing changed: every item still waits, and another admin decides them.
    waiting = {(i["kind"], i["entity_id"], i["assigned_to"]) for i in await inbox(bank, other)}
    assert {
        ("held_transaction", ids["held_transaction"], None),
        ("fraud_flag", ids["fraud_flag"], None),
        ("loan_approval", ids["loan_approval"], None),
    } <= waiting
    approved = await bank.client.post(f"{transaction}/approve", json={}, headers=other)
    assert approved.status_code == 200 and approved.json()["status"] == "completed"
    resolved = await bank.client.post(
        f"{flag}/resolve", json={"decision": "legitimate", "note": "checked"}, headers=other
    )
    assert resolved.status_code == 200 and resolved.json()["status"] == "resolved"
