"""Staff accounts (API.md §2, §7): created by an admin through the API, never by
self-registration; the creation is audited."""

from __future__ import annotations

import asyncio

import pytest

from app.models import User
from tests.helpers import audit_records, count, error_fields, problem, widen_uniqueness_races


def _staff(username: str = "audrey", **changes: str) -> dict[str, str]:
    body = {
        "username": username,
        "email": f"{username}@bank.example",
        "password": "auditor-pass-phrase-1",
        "role": "auditor",
    }
    body.update(changes)
    return body


async def test_admin_creates_an_auditor_who_can_read_the_audit_log(bank, database):
    admin = await bank.staff("admin")
    response = await bank.client.post("/api/admin/users", json=_staff(), headers=admin)
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"user_id", "username", "email", "role", "is_active", "created_at"}
    assert body["is_active"] is True
    assert (body["username"], body["email"], body["role"]) == (
        "audrey",
        "audrey@bank.example",
        "auditor",
    )
    assert "password" not in response.text
    tokens = await bank.token("audrey", "auditor-pass-phrase-1")
    assert tokens["role"] == "auditor"
    logs = await bank.client.get(
        "/api/audit/logs", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert logs.status_code == 200
    admin_id = (await bank.client.get("/api/auth/me", headers=admin)).json()["user_id"]
    record = (await audit_records(database, "staff.create"))[-1]
    assert (record.actor_id, record.actor_role, record.entity_id) == (
        admin_id,
        "admin",
        body["user_id"],
    )
    assert record.details == {"username": "audrey", "role": "auditor"}


async def test_admin_creates_another_admin(bank):
    admin = await bank.staff("admin")
    response = await bank.client.post(
        "/api/admin/users", json=_staff("second.admin", role="admin"), headers=admin
    )
    assert response.status_code == 201, response.text
    assert (await bank.token("second.admin", "auditor-pass-phrase-1"))["role"] == "admin"


@pytest.mark.parametrize("role", ["customer", "auditor"])
async def test_only_admins_create_staff(bank, database, role):
    if role == "customer":
        _, headers = await bank.customer()
    else:
        headers = await bank.staff(role)
    response = await bank.client.post("/api/admin/users", json=_staff(), headers=headers)
    problem(response, 403, "forbidden")
    problem(await bank.client.post("/api/admin/users", json=_staff()), 401, "not_authenticated")
    assert await count(database, User, User.username == "audrey") == 0


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"username": "AUDREY", "email": "other@bank.example"}, "username_taken"),
        ({"username": "someone", "email": "Audrey@Bank.Example"}, "email_taken"),
    ],
)
async def test_duplicate_staff_is_409(bank, changes, code):
    admin = await bank.staff("admin")
    assert (
        await bank.client.post("/api/admin/users", json=_staff(), headers=admin)
    ).status_code == 201
    body = _staff() | {k: v.lower() if k == "username" else v for k, v in changes.items()}
    problem(await bank.client.post("/api/admin/users", json=body, headers=admin), 409, code)


async def test_a_staff_username_may_not_collide_with_a_customer(bank):
    registered, _ = await bank.customer()
    admin = await bank.staff("admin")
    response = await bank.client.post(
        "/api/admin/users", json=_staff(registered["username"]), headers=admin
    )
    problem(response, 409, "username_taken")


async def test_concurrent_creation_of_one_staff_user_admits_one(bank, database, monkeypatch):
    admin = await bank.staff("admin")
    widen_uniqueness_races(monkeypatch, database)
    responses = await asyncio.gather(
        *(bank.client.post("/api/admin/users", json=_staff(), headers=admin) for _ in range(3))
    )
    assert sorted(r.status_code for r in responses) == [201, 409, 409], [r.text for r in responses]
    for response in responses:
        if response.status_code == 409:
            problem(response, 409, "username_taken")
    assert await count(database, User, User.username == "audrey") == 1


@pytest.mark.parametrize(
    ("changes", "status", "code", "field"),
    [
        ({"password": "short"}, 422, "weak_password", "password"),
        ({"password": "administrator"}, 422, "weak_password", "password"),
        (
            {"password": "Audrey-Long-Name", "username": "audrey-long-name"},
            422,
            "weak_password",
            "password",
        ),
        ({"role": "customer"}, 422, "validation_error", "role"),
        ({"username": "x"}, 422, "validation_error", "username"),
        ({"email": "not-an-email"}, 422, "validation_error", "email"),
    ],
)
async def test_staff_creation_validates_the_request(bank, database, changes, status, code, field):
    admin = await bank.staff("admin")
    users = await count(database, User)
    response = await bank.client.post("/api/admin/users", json=_staff(**changes), headers=admin)
    body = problem(response, status, code)
    assert [e["field"] for e in body["errors"]] == [field]
    assert await count(database, User) == users


async def test_registration_cannot_create_staff(bank):
    # A `role` part is refused outright (issue 18), and the user is not created.
    response = await bank.register(username="sneaky", role="admin")
    problem(response, 422, "validation_error")
    assert error_fields(response) == {"role"}
    assert (await bank.login("sneaky", "correct-horse-battery")).status_code == 401
