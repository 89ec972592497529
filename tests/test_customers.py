"""Customer profiles (API.md §3): what a profile shows, who may read it (others get the
same 404 as for a customer that does not exist, and the denial is audited), staff reads
audited, and self-service updates."""

from __future__ import annotations

import asyncio

import pytest

from app.models import User
from tests.helpers import PDF, PNG, audit_records, count, problem, widen_uniqueness_races

PROFILE_KEYS = {
    "customer_id",
    "username",
    "email",
    "full_name",
    "date_of_birth",
    "phone",
    "address",
    "national_id",
    "status",
    "kyc",
    "created_at",
}
DOCUMENT_KEYS = {"document_id", "kind", "content_type", "size", "sha256", "uploaded_at"}


async def test_profile_shows_the_contract_fields_and_masks_the_national_id(bank):
    registered, headers = await bank.customer(
        username="olga",
        full_name="Olga Example",
        national_id="NL123456789",
        date_of_birth="1985-02-03",
    )
    response = await bank.client.get(f"/api/customers/{registered['customer_id']}", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == PROFILE_KEYS
    assert body["customer_id"] == registered["customer_id"]
    assert (body["username"], body["full_name"], body["date_of_birth"]) == (
        "olga",
        "Olga Example",
        "1985-02-03",
    )
    assert body["national_id"] == "*****6789"
    assert "NL123456789" not in response.text
    assert body["created_at"].endswith(("Z", "+00:00"))
    kyc = body["kyc"]
    assert set(kyc) == {"status", "reasons", "checked_at", "documents"}
    assert [d["kind"] for d in kyc["documents"]] == ["id_document", "address_proof"]
    for document, content in zip(kyc["documents"], (PNG, PDF), strict=True):
        assert set(document) == DOCUMENT_KEYS
        assert document["size"] == len(content)
    assert kyc["documents"][1]["content_type"] == "application/pdf"
    # Never a hash, a secret or a storage path.
    for leak in ("password", "argon2", "storage", "hmac", "kyc/"):
        assert leak not in response.text
    me = await bank.client.get("/api/customers/me", headers=headers)
    assert me.json() == body


async def test_another_customers_profile_is_indistinguishable_from_a_missing_one(bank, database):
    a, a_headers = await bank.customer()
    b, _ = await bank.customer()
    theirs = await bank.client.get(f"/api/customers/{b['customer_id']}", headers=a_headers)
    missing = await bank.client.get("/api/customers/999999", headers=a_headers)
    bodies = [problem(r, 404, "customer_not_found") for r in (theirs, missing)]
    shapes = [
        {k: v for k, v in body.items() if k not in ("request_id", "detail")} for body in bodies
    ]
    assert shapes[0] == shapes[1]
    assert bodies[0]["detail"].replace(b["customer_id"], "X") == bodies[1]["detail"].replace(
        "999999", "X"
    )
    assert b["username"] not in theirs.text
    # An id that is not digits names no customer at all: no such path.
    garbage = await bank.client.get("/api/customers/not-a-number", headers=a_headers)
    problem(garbage, 404, "not_found")
    denied = [r for r in await audit_records(database, "customer.read") if r.outcome == "denied"]
    assert [(r.entity_id, r.actor_role) for r in denied] == [
        (b["customer_id"], "customer"),
        ("999999", "customer"),
    ]
    assert all(r.ip == "203.0.113.7" and r.request_id for r in denied)
    assert a["customer_id"] not in {r.entity_id for r in denied}


async def test_a_customer_reading_their_own_profile_by_id_is_not_a_denial(bank, database):
    registered, headers = await bank.customer()
    response = await bank.client.get(f"/api/customers/{registered['customer_id']}", headers=headers)
    assert response.status_code == 200
    assert await audit_records(database, "customer.read") == []


@pytest.mark.parametrize("role", ["admin", "auditor"])
async def test_staff_can_read_any_profile_and_the_read_is_audited(bank, database, role):
    registered, _ = await bank.customer()
    staff_headers = await bank.staff(role)
    response = await bank.client.get(
        f"/api/customers/{registered['customer_id']}", headers=staff_headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["username"] == registered["username"]
    [record] = await audit_records(database, "customer.read")
    assert (record.outcome, record.actor_role, record.entity_type, record.entity_id) == (
        "success",
        role,
        "customer",
        registered["customer_id"],
    )
    missing = await bank.client.get("/api/customers/424242", headers=staff_headers)
    problem(missing, 404, "customer_not_found")


async def test_profiles_require_authentication(bank):
    registered, _ = await bank.customer()
    for path in (f"/api/customers/{registered['customer_id']}", "/api/customers/me"):
        response = await bank.client.get(path)
        problem(response, 401, "not_authenticated")
    response = await bank.client.patch("/api/customers/me", json={"phone": "+14155550199"})
    problem(response, 401, "not_authenticated")


async def test_staff_have_no_customer_me(bank):
    headers = await bank.staff("admin")
    problem(await bank.client.get("/api/customers/me", headers=headers), 403, "forbidden")


async def test_patch_me_updates_email_phone_and_address_and_is_audited(bank, database):
    registered, headers = await bank.customer(username="pete")
    response = await bank.client.patch(
        "/api/customers/me",
        json={"email": "Pete.New@Example.com", "phone": "+447700900123", "address": "1 New Road"},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["email"], body["phone"], body["address"]) == (
        "pete.new@example.com",
        "+447700900123",
        "1 New Road",
    )
    again = (await bank.client.get("/api/customers/me", headers=headers)).json()
    assert again == body
    # The login email is the new one.
    assert (await bank.login("pete.new@example.com", "correct-horse-battery")).status_code == 200
    [record] = await audit_records(database, "customer.update")
    assert (record.outcome, record.entity_id, record.actor_role) == (
        "success",
        registered["customer_id"],
        "customer",
    )
    assert record.details == {"fields": ["address", "email", "phone"]}


async def test_patch_me_with_one_field_leaves_the_others(bank):
    _, headers = await bank.customer(phone="+14155550123", address="10 Downing Street, London")
    response = await bank.client.patch(
        "/api/customers/me", json={"phone": "+14155550100"}, headers=headers
    )
    body = response.json()
    assert (body["phone"], body["address"]) == ("+14155550100", "10 Downing Street, London")


async def test_patch_me_refuses_an_email_already_registered(bank, database):
    other, _ = await bank.customer(email="taken@example.com")
    registered, headers = await bank.customer()
    response = await bank.client.patch(
        "/api/customers/me",
        json={"email": "TAKEN@example.com", "phone": "+14155550111"},
        headers=headers,
    )
    body = problem(response, 409, "email_taken")
    assert body["errors"][0]["field"] == "email"
    # Nothing changed (not even the phone), and no update was audited.
    me = (await bank.client.get("/api/customers/me", headers=headers)).json()
    assert (me["email"], me["phone"]) == (registered["email"], "+14155550123")
    assert await audit_records(database, "customer.update") == []
    assert other["email"] == "taken@example.com"


async def test_patch_me_keeping_the_same_email_is_fine(bank):
    registered, headers = await bank.customer()
    response = await bank.client.patch(
        "/api/customers/me", json={"email": registered["email"].upper()}, headers=headers
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "nope"}, "email"),
        ({"phone": "12345"}, "phone"),
        ({"address": "abc"}, "address"),
    ],
)
async def test_patch_me_validates_fields(bank, body, field):
    _, headers = await bank.customer()
    response = await bank.client.patch("/api/customers/me", json=body, headers=headers)
    problem(response, 422, "validation_error")
    assert [e["field"] for e in response.json()["errors"]] == [field]


async def test_patch_me_cannot_change_other_fields(bank, database):
    registered, headers = await bank.customer(username="quentin")
    response = await bank.client.patch(
        "/api/customers/me",
        json={"username": "admin", "status": "Active", "full_name": "Someone Else"},
        headers=headers,
    )
    assert response.status_code in (200, 422)
    me = (await bank.client.get("/api/customers/me", headers=headers)).json()
    assert me["username"] == "quentin"
    assert me["full_name"] != "Someone Else"
    assert await count(database, User, User.username == "admin") == 0
    assert registered["customer_id"] == me["customer_id"]


async def test_customers_racing_for_one_email_one_wins(bank, database, monkeypatch):
    contenders = [(await bank.customer())[1] for _ in range(4)]
    widen_uniqueness_races(monkeypatch, database)
    responses = await asyncio.gather(
        *(
            bank.client.patch("/api/customers/me", json={"email": "race@example.com"}, headers=h)
            for h in contenders
        )
    )
    assert sorted(r.status_code for r in responses) == [200, 409, 409, 409], [
        r.text for r in responses
    ]
    for loser in (r for r in responses if r.status_code == 409):
        problem(loser, 409, "email_taken")
    assert await count(database, User, User.email == "race@example.com") == 1
    assert len(await audit_records(database, "customer.update")) == 1
