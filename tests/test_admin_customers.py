"""Customers and staff as admins manage them (issue 21; API.md §7): search, the file, KYC
decisions, document downloads, suspension that stops money at once, and disabling staff
whose sessions end at once."""

from __future__ import annotations

from typing import Any

from tests.helpers import PDF, PNG, Bank, audit_records, execute, problem
from tests.ledger_helpers import deposit, funded_account


async def admin_get(bank: Bank, admin: dict[str, str], url: str, **params: Any) -> Any:
    response = await bank.client.get(url, params=params, headers=admin)
    assert response.status_code == 200, response.text
    return response.json()


async def test_admins_find_customers_by_name_username_email_or_id(bank):
    first, _ = await bank.customer(full_name="Ada Lovelace", username="countess")
    second, _ = await bank.customer(full_name="Alan Turing", email="alan@bletchley.example")
    admin = await bank.staff()
    url = "/api/admin/customers"

    def ids(page: dict[str, Any]) -> list[str]:
        return [item["customer_id"] for item in page["items"]]

    assert ids(await admin_get(bank, admin, url, q="lovelace")) == [first["customer_id"]]
    assert ids(await admin_get(bank, admin, url, q="COUNT")) == [first["customer_id"]]
    assert ids(await admin_get(bank, admin, url, q="bletchley")) == [second["customer_id"]]
    assert ids(await admin_get(bank, admin, url, q=second["customer_id"])) == [
        second["customer_id"]
    ]
    assert ids(await admin_get(bank, admin, url, q="%")) == []  # no wildcard smuggling
    active = await admin_get(bank, admin, url, status="Active", limit=1)
    assert len(active["items"]) == 1 and active["next_cursor"]
    rest = await admin_get(bank, admin, url, status="Active", cursor=active["next_cursor"])
    assert ids(active) + ids(rest) == [first["customer_id"], second["customer_id"]]
    bad = await bank.client.get(url, params={"status": "Sleeping"}, headers=admin)
    assert bad.status_code == 422


async def test_a_customer_file_has_accounts_loans_flags_and_the_read_is_audited(bank, app):
    body, headers, number = await funded_account(bank, "250.00")
    admin = await bank.staff()
    loan = await bank.client.post(
        "/api/loans",
        json={
            "product": "personal",
            "principal": "2000.00",
            "term_months": 12,
            "monthly_income": "3000.00",
            "account_number": number,
            "purpose": "Bike",
        },
        headers=headers,
    )
    assert loan.status_code == 201
    file = await admin_get(bank, admin, f"/api/admin/customers/{body['customer_id']}")
    assert [a["account_number"] for a in file["accounts"]] == [number]
    assert file["accounts"][0]["balance"] == "250.00"
    assert [item["loan_id"] for item in file["loans"]] == [loan.json()["loan_id"]]
    assert file["loans"][0]["recommendation"] == "approve"
    assert file["flags"] == []
    assert file["national_id"].startswith("*****")
    reads = await audit_records(app.state.database, "customer.read")
    assert [(r.actor_role, r.entity_id, r.outcome) for r in reads] == [
        ("admin", body["customer_id"], "success")
    ]
    missing = await bank.client.get("/api/admin/customers/999999", headers=admin)
    problem(missing, 404, "customer_not_found")


async def test_kyc_decisions_move_a_customer_out_of_review_once(bank, app):
    body, headers = await bank.customer()
    cid = body["customer_id"]
    await execute(
        app.state.database,
        "UPDATE customers SET status = 'Under Review', kyc_status = 'review' WHERE id = :c",
        c=int(cid),
    )
    admin = await bank.staff()
    url = f"/api/admin/customers/{cid}/kyc"
    short = await bank.client.post(url, json={"decision": "approve", "reason": "x"}, headers=admin)
    assert short.status_code == 422
    done = await bank.client.post(
        url, json={"decision": "approve", "reason": "Documents checked"}, headers=admin
    )
    assert done.status_code == 200, done.text
    assert (done.json()["status"], done.json()["kyc"]["status"]) == ("Active", "verified")
    again = await bank.client.post(
        url, json={"decision": "reject", "reason": "Changed my mind"}, headers=admin
    )
    problem(again, 409, "already_decided")
    opened = await bank.client.post("/api/accounts", json={"type": "savings"}, headers=headers)
    assert opened.status_code == 201
    other, _ = await bank.customer()
    await execute(
        app.state.database,
        "UPDATE customers SET status = 'Under Review' WHERE id = :c",
        c=int(other["customer_id"]),
    )
    rejected = await bank.client.post(
        f"/api/admin/customers/{other['customer_id']}/kyc",
        json={"decision": "reject", "reason": "Forged passport"},
        headers=admin,
    )
    assert (rejected.json()["status"], rejected.json()["kyc"]["status"]) == (
        "KYC Rejected",
        "rejected",
    )
    records = await audit_records(app.state.database, "kyc.decide")
    assert [r.details["reason"] for r in records] == ["Documents checked", "Forged passport"]


async def test_a_document_downloads_by_id_as_an_attachment_and_is_audited(bank, app):
    body, _ = await bank.customer()
    other, _ = await bank.customer()
    admin = await bank.staff()
    file = await admin_get(bank, admin, f"/api/admin/customers/{body['customer_id']}")
    documents = {d["kind"]: d for d in file["kyc"]["documents"]}
    passport = documents["id_document"]
    url = f"/api/admin/customers/{body['customer_id']}/documents/{passport['document_id']}"
    response = await bank.client.get(url, headers=admin)
    assert response.status_code == 200
    assert response.content == PNG
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-disposition"].startswith("attachment;")
    assert f"id_document-{passport['document_id']}.png" in response.headers["content-disposition"]
    proof = documents["address_proof"]["document_id"]
    pdf = await bank.client.get(
        f"/api/admin/customers/{body['customer_id']}/documents/{proof}", headers=admin
    )
    assert pdf.content == PDF and pdf.headers["content-type"] == "application/pdf"
    # Another customer's document under this customer's id: 404, as a made-up id is.
    crossed = await bank.client.get(
        f"/api/admin/customers/{other['customer_id']}/documents/{passport['document_id']}",
        headers=admin,
    )
    problem(crossed, 404, "document_not_found")
    reads = await audit_records(app.state.database, "customer.document_read")
    assert [r.details["document_id"] for r in reads] == [passport["document_id"], proof]
    customer = await bank.client.get(url, headers=(await bank.customer())[1])
    problem(customer, 403, "forbidden")


async def test_suspension_stops_money_at_once_and_reactivation_restores_it(bank, app):
    body, headers, number = await funded_account(bank, "100.00")
    admin = await bank.staff()
    base = f"/api/admin/customers/{body['customer_id']}"
    suspended = await bank.client.post(
        f"{base}/suspend", json={"reason": "Court order 12"}, headers=admin
    )
    assert suspended.status_code == 200 and suspended.json()["status"] == "Suspended"
    problem(
        await deposit(bank.client, headers, number, "10.00"), 403, "customer_suspended"
    )  # the same token
    assert (await bank.client.get(f"/api/accounts/{number}", headers=headers)).status_code == 200
    problem(
        await bank.client.post(f"{base}/suspend", json={"reason": "again!"}, headers=admin),
        409,
        "already_decided",
    )
    back = await bank.client.post(
        f"{base}/reactivate", json={"reason": "Order lifted"}, headers=admin
    )
    assert back.status_code == 200 and back.json()["status"] == "Active"
    assert (await deposit(bank.client, headers, number, "10.00")).status_code == 201
    actions = [
        r.action
        for r in await audit_records(app.state.database)
        if r.action.startswith("customer.")
    ]
    assert actions[-2:] == ["customer.suspend", "customer.reactivate"]


async def test_a_disabled_staff_user_loses_every_session_at_once(bank, app):
    admin = await bank.staff()
    username, password = await bank.staff_user("auditor")
    tokens = await bank.token(username, password)
    auditor = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert (await bank.client.get("/api/audit/verify", headers=auditor)).status_code == 200
    users = await admin_get(bank, admin, "/api/admin/users", role="auditor")
    target = next(u for u in users["items"] if u["username"] == username)
    assert target["is_active"] is True
    url = f"/api/admin/users/{target['user_id']}/disable"
    done = await bank.client.post(url, json={"reason": "Left the bank"}, headers=admin)
    assert done.status_code == 200 and done.json()["is_active"] is False
    assert (await bank.client.get("/api/audit/verify", headers=auditor)).status_code == 401
    refreshed = await bank.client.post(
        "/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 401
    problem(await bank.login(username, password), 401, "invalid_credentials")
    problem(
        await bank.client.post(url, json={"reason": "Left the bank"}, headers=admin),
        409,
        "already_decided",
    )
    me = (await bank.client.get("/api/auth/me", headers=admin)).json()
    own = await bank.client.post(
        f"/api/admin/users/{me['user_id']}/disable", json={"reason": "tired"}, headers=admin
    )
    problem(own, 409, "cannot_disable_self")
    _customer, customer_headers = await bank.customer()
    customer_user = (await bank.client.get("/api/auth/me", headers=customer_headers)).json()[
        "user_id"
    ]
    problem(
        await bank.client.post(
            f"/api/admin/users/{customer_user}/disable", json={"reason": "no way"}, headers=admin
        ),
        404,
        "staff_not_found",
    )
    records = await audit_records(app.state.database, "staff.disable")
    assert [r.details["reason"] for r in records] == ["Left the bank"]


async def test_staff_read_any_customers_accounts_transactions_and_statements_audited(bank, app):
    _, headers, number = await funded_account(bank, "300.00")
    moved = await deposit(bank.client, headers, number, "25.00")
    for role in ("admin", "auditor"):
        staff = await bank.staff(role)
        got = await bank.client.get(f"/api/accounts/{number}", headers=staff)
        assert got.status_code == 200 and got.json()["balance"] == "325.00"
        listed = await bank.client.get(
            "/api/transactions", params={"account_number": number}, headers=staff
        )
        assert [t["amount"] for t in listed.json()["items"]] == ["25.00", "300.00"]
        assert listed.json()["items"][0]["balance_after"] == "325.00"
        one = await bank.client.get(
            f"/api/transactions/{moved.json()['transaction_id']}", headers=staff
        )
        assert one.status_code == 200 and one.json()["amount"] == "25.00"
        statement = await bank.client.get(f"/api/accounts/{number}/statement", headers=staff)
        assert statement.status_code == 200 and statement.json()["closing_balance"] == "325.00"
        unnamed = await bank.client.get("/api/transactions", headers=staff)
        problem(unnamed, 422, "validation_error")
        problem(await deposit(bank.client, staff, number, "1.00"), 403, "forbidden")  # reads only
    reads = await audit_records(app.state.database)
    staff_reads = [(r.actor_role, r.action) for r in reads if r.actor_role in ("admin", "auditor")]
    for role in ("admin", "auditor"):
        assert (role, "account.read") in staff_reads
        assert (role, "transaction.list") in staff_reads
        assert (role, "transaction.read") in staff_reads


async def test_auditors_list_every_customers_transactions_with_filters(bank):
    first, headers, number = await funded_account(bank, "500.00")
    _, _other_headers, _other = await funded_account(bank, "12000.00")
    await deposit(bank.client, headers, number, "40.00")
    auditor = await bank.staff("auditor")
    url = "/api/audit/transactions"
    everything = await admin_get(bank, auditor, url)
    assert [t["amount"] for t in everything["items"][:3]] == ["40.00", "12000.00", "500.00"]
    assert everything["items"][0]["customer_id"] == first["customer_id"]
    mine = await admin_get(bank, auditor, url, customer_id=first["customer_id"])
    assert [t["amount"] for t in mine["items"]] == ["40.00", "500.00"]
    large = await admin_get(bank, auditor, url, min_amount="10000.00")
    assert [t["amount"] for t in large["items"]] == ["12000.00"]
    page = await admin_get(bank, auditor, url, type="deposit", limit=1)
    rest = await admin_get(bank, auditor, url, type="deposit", cursor=page["next_cursor"])
    assert [t["amount"] for t in page["items"] + rest["items"]] == ["40.00", "12000.00", "500.00"]
    problem(await bank.client.get(url, headers=headers), 403, "forbidden")


async def test_an_admins_kyc_decision_is_never_overwritten_by_a_running_check(
    bank, app, monkeypatch
):
    import asyncio

    from app.services import jobs, kyc
    from tests.helpers import customer_row, register_without_kyc

    registration = await register_without_kyc(app)
    cid = registration.customer.id
    admin = await bank.staff()
    original = kyc.findings

    async def slow(db, customer):  # the check finds nothing, slowly
        await original(db, customer)
        await asyncio.sleep(0.5)
        return []

    monkeypatch.setattr(kyc, "findings", slow)
    check = asyncio.create_task(jobs.sweep(app.state.database))
    await asyncio.sleep(0.15)
    decided = await bank.client.post(
        f"/api/admin/customers/{cid}/kyc",
        json={"decision": "reject", "reason": "Forged passport"},
        headers=admin,
    )
    await check
    row = await customer_row(app.state.database, cid)
    if decided.status_code == 200:  # the admin came first: theirs stands
        assert row.status == "KYC Rejected"
    else:  # the check came first: the admin is told so
        problem(decided, 409, "already_decided")
        assert row.status == "Active"


async def test_a_linked_admin_decides_nothing_of_their_own_customer(bank, app):
    body, _ = await bank.customer()
    cid = body["customer_id"]
    admin = await bank.staff()
    other = await bank.staff()
    me = (await bank.client.get("/api/auth/me", headers=admin)).json()["user_id"]
    await execute(
        app.state.database,
        "UPDATE users SET linked_customer_id = :c WHERE id = :u",
        c=int(cid),
        u=int(me),
    )
    base = f"/api/admin/customers/{cid}"
    problem(
        await bank.client.post(f"{base}/suspend", json={"reason": "mine now"}, headers=admin),
        403,
        "conflict_of_interest",
    )
    assert (
        await bank.client.post(f"{base}/suspend", json={"reason": "Court order"}, headers=other)
    ).status_code == 200
    problem(
        await bank.client.post(f"{base}/reactivate", json={"reason": "mine again"}, headers=admin),
        403,
        "conflict_of_interest",
    )
    await execute(
        app.state.database, "UPDATE customers SET status = 'Under Review' WHERE id = :c", c=int(cid)
    )
    problem(
        await bank.client.post(
            f"{base}/kyc", json={"decision": "approve", "reason": "looks fine"}, headers=admin
        ),
        403,
        "conflict_of_interest",
    )
    problem(
        await bank.client.post(f"/api/admin/inbox/kyc_review:{cid}/take", headers=admin),
        403,
        "conflict_of_interest",
    )
    refused = [r for r in await audit_records(app.state.database) if r.outcome == "failed"]
    assert {r.details["code"] for r in refused} == {"conflict_of_interest"}


async def test_disabling_an_admin_puts_what_they_held_back_in_the_queue(bank, app):
    _, headers, number = await funded_account(bank, "0.00")
    applied = await bank.client.post(
        "/api/loans",
        json={
            "product": "personal",
            "principal": "2000.00",
            "term_months": 12,
            "monthly_income": "5000.00",
            "account_number": number,
            "purpose": "Bike",
        },
        headers=headers,
    )
    assert applied.status_code == 201
    username, password = await bank.staff_user()
    leaving = await bank.headers(username, password)
    held = await bank.client.post("/api/admin/inbox/next", headers=leaving)
    assert held.json()["entity_id"] == applied.json()["loan_id"]
    admin = await bank.staff()
    users = await admin_get(bank, admin, "/api/admin/users", role="admin")
    target = next(u for u in users["items"] if u["username"] == username)
    done = await bank.client.post(
        f"/api/admin/users/{target['user_id']}/disable", json={"reason": "Left"}, headers=admin
    )
    assert done.status_code == 200
    (item,) = (await admin_get(bank, admin, "/api/admin/inbox"))["items"]
    assert item["assigned_to"] is None


async def test_a_linked_admin_touches_neither_their_customers_accounts_nor_lists(bank, app):
    """The rule holds wherever an admin acts on a customer: account status, the block and
    allow lists (adding or removing), and a held transfer into the customer's account (a
    linked admin could otherwise release money to their own customer)."""
    from tests.ledger_helpers import transfer

    mine, _, my_account = await funded_account(bank, "0.00")
    _, sender, source = await funded_account(bank, "60000.00")
    admin, other = await bank.staff(), await bank.staff()
    me = (await bank.client.get("/api/auth/me", headers=admin)).json()["user_id"]
    await execute(
        app.state.database,
        "UPDATE users SET linked_customer_id = :c WHERE id = :u",
        c=int(mine["customer_id"]),
        u=int(me),
    )
    held = await transfer(bank.client, sender, source, my_account, "50000.00")
    assert held.json()["status"] == "pending_review"
    entry = await bank.client.post(
        "/api/admin/fraud/lists",
        json={"list": "block", "target_type": "account", "target": my_account, "reason": "case 7"},
        headers=other,
    )
    assert entry.status_code == 201
    attempts = [
        ("PATCH", f"/api/admin/accounts/{my_account}", {"status": "frozen", "reason": "mine"}),
        (
            "POST",
            "/api/admin/fraud/lists",
            {
                "list": "allow",
                "target_type": "customer",
                "target": mine["customer_id"],
                "rules": ["velocity"],
                "reason": "mine",
            },
        ),
        ("DELETE", f"/api/admin/fraud/lists/{entry.json()['entry_id']}", None),
        ("POST", f"/api/admin/transactions/{held.json()['transaction_id']}/approve", {}),
    ]
    for method, url, body in attempts:
        response = await bank.client.request(method, url, json=body, headers=admin)
        problem(response, 403, "conflict_of_interest")
    refused = [
        r.action
        for r in await audit_records(app.state.database)
        if r.outcome == "failed" and r.actor_id == me
    ]
    assert refused == [
        "account.status",
        "fraud.allow_listed",
        "fraud.list_entry_deleted",
        "transaction.approve",
    ]
    # Nothing changed, and another admin may do each.
    lists = (await bank.client.get("/api/admin/fraud/lists", headers=other)).json()["items"]
    assert [e["entry_id"] for e in lists] == [entry.json()["entry_id"]]
    frozen = await bank.client.patch(
        f"/api/admin/accounts/{my_account}",
        json={"status": "frozen", "reason": "Court order"},
        headers=other,
    )
    assert frozen.status_code == 200 and frozen.json()["status"] == "frozen"
    held_now = await bank.client.get(
        f"/api/admin/transactions/{held.json()['transaction_id']}", headers=other
    )
    assert held_now.json()["status"] == "pending_review"
