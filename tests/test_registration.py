"""POST /api/customers/register: the contract body, each validation rule, and that a
failed registration writes nothing (no user, no customer, no file, no audit record)."""

from __future__ import annotations

import asyncio
import stat
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import text

from app.models import Customer, Job, KycDocument, User
from tests.helpers import (
    JPEG,
    PDF,
    PNG,
    audit_records,
    count,
    document_files,
    error_fields,
    problem,
    registration_form,
    stored_files,
    widen_uniqueness_races,
)


def _years_ago(years: int, days: int = 0) -> str:
    today = datetime.now(UTC).date()
    birth = date(today.year - years, today.month, 1 if today.day > 28 else today.day)
    return date.fromordinal(birth.toordinal() + days).isoformat()


async def _nothing_written(database, settings, *, users: int = 0, files: int = 0) -> None:
    assert await count(database, User) == users
    assert await count(database, Customer) == users
    assert await count(database, Job) == users
    assert len(stored_files(settings.kyc_dir)) == files
    assert len(await audit_records(database, "customer.register")) == users


async def test_registration_returns_exact_body_with_sequential_ids(bank):
    first = await bank.register(username="Bob.Smith", email="Bob@Example.COM")
    second = await bank.register(username="carol")
    assert first.status_code == 201, first.text
    assert first.json() == {
        "customer_id": "1001",
        "username": "bob.smith",
        "email": "bob@example.com",
        "status": "Pending KYC Approval",
        "message": "Registration successful. KYC verification in progress.",
    }
    assert second.status_code == 201
    assert second.json()["customer_id"] == "1002"


async def test_registration_stores_documents_by_content_under_random_names(
    bank, database, settings
):
    files = document_files(
        id_document=("../../etc/passwd.png", JPEG, "image/png"),
        address_proof=("statement.pdf", PDF, "text/plain"),
    )
    response = await bank.register(username="dora", files=files)
    assert response.status_code == 201, response.text
    stored = stored_files(settings.kyc_dir)
    assert len(stored) == 2
    assert all(settings.data_dir in p.parents for p in stored)
    assert not any("passwd" in p.name or "statement" in p.name for p in stored)
    assert sorted(p.read_bytes() for p in stored) == sorted([JPEG, PDF])
    async with database.session() as db:
        from sqlalchemy import select

        docs = (await db.scalars(select(KycDocument).order_by(KycDocument.kind))).all()
    # The content type comes from the magic bytes, not from what the client claimed.
    assert [(d.kind, d.content_type, d.size) for d in docs] == [
        ("address_proof", "application/pdf", len(PDF)),
        ("id_document", "image/jpeg", len(JPEG)),
    ]


async def test_registration_works_with_a_trailing_slash_and_takes_big_documents(bank, settings):
    # Two 2 MB scans: far above the general 1 MiB body limit, within the upload limit.
    scan = PDF + b"\x00" * (2 * 1024 * 1024)
    assert len(scan) > settings.request_max_bytes
    form = registration_form(username="erin")
    files = document_files(
        id_document=("scan.pdf", scan, "application/pdf"),
        address_proof=("scan2.pdf", scan, "application/pdf"),
    )
    response = await bank.client.post("/api/customers/register/", data=form, files=files)
    assert response.status_code == 201, response.text
    assert response.json()["username"] == "erin"


async def test_registration_keeps_secrets_protected_at_rest(bank, database, settings):
    response = await bank.register(username="fay", national_id="XY987654321")
    assert response.status_code == 201
    async with database.engine.connect() as conn:
        users = (await conn.execute(text("SELECT * FROM users"))).mappings().all()
        customers = (await conn.execute(text("SELECT * FROM customers"))).mappings().all()
    assert users[0]["password_hash"].startswith("$argon2id$")
    assert "correct-horse-battery" not in str(users)
    assert "XY987654321" not in str(customers)
    assert customers[0]["national_id_last4"] == "4321"
    for path in stored_files(settings.kyc_dir):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("email", "not-an-email"),
        ("email", "two@@example.com"),
        ("password", "short-pw"),
        ("password", "password1234"),
        ("date_of_birth", "17-05-1990"),
        ("date_of_birth", "2999-01-01"),
        ("phone", "4155550123"),
        ("phone", "+0123456789"),
        ("national_id", "12-34-56"),
        ("national_id", "123"),
        ("username", "ab"),
        ("username", "has space"),
        ("full_name", "X"),
        ("full_name", "X" * 101),
        ("address", "abc"),
    ],
)
async def test_registration_rejects_an_invalid_field(bank, database, settings, field, value):
    response = await bank.register(**{field: value})
    body = problem(response, 422, "validation_error")
    assert [e["field"] for e in body["errors"]] == [field]
    assert all(e["message"] for e in body["errors"])
    await _nothing_written(database, settings)


async def test_registration_rejects_a_password_equal_to_the_username(bank, database, settings):
    response = await bank.register(username="frankfurter", password="FrankFurter")
    body = problem(response, 422, "validation_error")
    assert error_fields(response) == {"password"}
    assert "username" in body["errors"][0]["message"]
    await _nothing_written(database, settings)


async def test_registration_rejects_a_password_equal_to_the_email(bank):
    response = await bank.register(email="longmailbox@example.com", password="LongMailbox")
    problem(response, 422, "validation_error")
    assert error_fields(response) == {"password"}


async def test_registration_refuses_a_customer_under_18(bank, database, settings):
    almost_18 = _years_ago(18, days=1)
    response = await bank.register(date_of_birth=almost_18)
    body = problem(response, 422, "validation_error")
    assert error_fields(response) == {"date_of_birth"}
    assert "18" in body["errors"][0]["message"]
    assert (await bank.register(date_of_birth=_years_ago(18))).status_code == 201
    await _nothing_written(database, settings, users=1, files=2)


async def test_registration_lists_every_bad_field(bank):
    response = await bank.register(email="nope", phone="12", national_id="!")
    problem(response, 422, "validation_error")
    assert error_fields(response) == {"email", "phone", "national_id"}


@pytest.mark.parametrize("missing", ["id_document", "address_proof"])
async def test_registration_requires_both_documents(bank, database, settings, missing):
    response = await bank.register(files=document_files(**{missing: None}))
    problem(response, 422, "validation_error")
    assert error_fields(response) == {missing}
    await _nothing_written(database, settings)


async def test_registration_with_no_form_names_every_required_field(bank):
    response = await bank.client.post("/api/customers/register", data={"username": "gina"})
    problem(response, 422, "validation_error")
    assert {"email", "password", "id_document", "address_proof"} <= error_fields(response)


@pytest.mark.parametrize(
    "content",
    [b"GIF89a" + b"\x00" * 32, b"MZ\x90\x00 an executable", b"<html>not a pdf</html>"],
)
async def test_registration_refuses_a_file_that_is_not_pdf_png_or_jpeg(
    bank, database, settings, content
):
    # The client says PDF; the bytes say otherwise.
    files = document_files(address_proof=("bill.pdf", content, "application/pdf"))
    response = await bank.register(files=files)
    body = problem(response, 415, "unsupported_media_type")
    assert body["errors"] == [{"field": "address_proof", "message": body["detail"]}]
    await _nothing_written(database, settings)


async def test_registration_refuses_an_empty_file(bank, database, settings):
    response = await bank.register(files=document_files(id_document=("a.png", b"", "image/png")))
    problem(response, 422, "validation_error")
    assert error_fields(response) == {"id_document"}
    await _nothing_written(database, settings)


@pytest.mark.settings(upload_max_bytes=2048)
async def test_registration_refuses_a_file_over_the_upload_limit(bank, database, settings):
    big = PNG + b"\x00" * 2048
    response = await bank.register(files=document_files(id_document=("big.png", big, "image/png")))
    body = problem(response, 413, "payload_too_large")
    assert body["errors"][0]["field"] == "id_document"
    await _nothing_written(database, settings)
    just_fits = PNG + b"\x00" * (2048 - len(PNG))
    ok = await bank.register(files=document_files(id_document=("ok.png", just_fits, "image/png")))
    assert ok.status_code == 201, ok.text


@pytest.mark.settings(upload_max_bytes=2048)
async def test_registration_body_far_over_the_limit_is_cut_off_at_the_edge(
    bank, database, settings
):
    huge = PNG + b"\x00" * 200_000
    response = await bank.register(
        files=document_files(id_document=("huge.png", huge, "image/png"))
    )
    problem(response, 413, "payload_too_large")
    await _nothing_written(database, settings)


async def test_a_six_megabyte_document_is_refused_with_413(bank, database, settings):
    huge = PDF + b"\x00" * (5 * 1024 * 1024 + 1)
    response = await bank.register(
        files=document_files(address_proof=("huge.pdf", huge, "application/pdf"))
    )
    problem(response, 413, "payload_too_large")
    await _nothing_written(database, settings)


@pytest.mark.parametrize(
    ("first", "second", "code", "field"),
    [
        ({"username": "hank"}, {"username": "HANK"}, "username_taken", "username"),
        ({"email": "ivy@example.com"}, {"email": "IVY@example.COM"}, "email_taken", "email"),
    ],
)
async def test_registration_refuses_a_duplicate_case_insensitively(
    bank, database, settings, first, second, code, field
):
    assert (await bank.register(**first)).status_code == 201
    response = await bank.register(**second)
    body = problem(response, 409, code)
    assert body["errors"][0]["field"] == field
    await _nothing_written(database, settings, users=1, files=2)


@pytest.mark.parametrize("field", ["username", "email"])
async def test_concurrent_duplicate_registrations_admit_exactly_one(
    bank, database, settings, monkeypatch, field
):
    widen_uniqueness_races(monkeypatch, database)
    value = "jack" if field == "username" else "jack@example.com"
    responses = await asyncio.gather(*(bank.register(**{field: value}) for _ in range(4)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201, 409, 409, 409], [r.text for r in responses]
    for response in responses:
        if response.status_code == 409:
            problem(response, 409, f"{field}_taken")
    # The losers' files were removed and their transactions left no audit record.
    await _nothing_written(database, settings, users=1, files=2)


async def test_registration_response_never_leaks_the_password_or_national_id(bank):
    response = await bank.register(national_id="SECRET987654", password="a-secret-passphrase")
    assert response.status_code == 201
    assert "SECRET987654" not in response.text
    assert "a-secret-passphrase" not in response.text
