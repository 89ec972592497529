"""Issue 18: input that is refused, and input that is kept exactly as sent."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.helpers import PDF, PNG, document_files, registration_form
from tests.ledger_helpers import (
    account,
    error_fields,
    funded_account,
    new_key,
    open_account,
    problem,
)


@pytest.mark.parametrize(
    "extra",
    [{"ammount": "10.00"}, {"x": 1}, {"balance_after": "0.00"}, {"status": "posted"}],
)
async def test_an_unknown_field_on_a_money_body_is_refused_and_moves_nothing(bank, extra):
    _body, headers, number = await funded_account(bank, "100.00")
    body = {"account_number": number, "amount": "10.00", **extra}
    for path in ("/api/transactions/deposit", "/api/transactions/withdrawal"):
        response = await bank.client.post(
            path, json=body, headers={**headers, "Idempotency-Key": new_key()}
        )
        problem(response, 422, "validation_error")
        assert error_fields(response) == set(extra), response.text
    assert (await account(bank.client, headers, number))["balance"] == "100.00"


async def test_unknown_fields_are_refused_on_every_json_body(bank):
    _body, headers, number = await funded_account(bank, "100.00")
    admin = await bank.staff("admin")
    cases = [
        ("POST", "/api/accounts", headers, {"type": "savings", "overdraft": "1000.00"}),
        (
            "POST",
            "/api/transactions/transfer",
            headers,
            {"from_account": number, "to_account": number, "amount": "1.00", "fee": "0"},
        ),
        ("PATCH", "/api/customers/me", headers, {"full_name": "Someone Else"}),
        ("PATCH", "/api/customers/me", headers, {"status": "Active"}),
        ("POST", "/api/auth/refresh", {}, {"refresh_token": "x", "scope": "all"}),
        (
            "POST",
            "/api/auth/password",
            headers,
            {"current_password": "a", "new_password": "b", "confirm": "b"},
        ),
        (
            "PATCH",
            f"/api/admin/accounts/{number}",
            admin,
            {"status": "frozen", "reason": "checks", "notify": True},
        ),
        (
            "POST",
            "/api/admin/users",
            admin,
            {
                "username": "x1x",
                "email": "a@b.co",
                "password": "p" * 12,
                "role": "admin",
                "superuser": True,
            },
        ),
    ]
    for method, path, auth, body in cases:
        response = await bank.client.request(method, path, json=body, headers=auth)
        problem(response, 422, "validation_error")
        known = {
            "type",
            "from_account",
            "to_account",
            "amount",
            "refresh_token",
            "current_password",
            "new_password",
            "status",
            "reason",
            "username",
            "email",
            "password",
            "role",
        }
        unknown = set(body) - known if path != "/api/customers/me" else set(body)
        assert unknown <= error_fields(response), (path, response.text)
    me = (await bank.client.get("/api/customers/me", headers=headers)).json()
    assert me["full_name"] != "Someone Else" and me["status"] == "Active"
    assert (await account(bank.client, headers, number))["status"] == "active"


@pytest.mark.parametrize(
    "amount", [" 10.00 ", "+10.00", "10.00 ", "-10.00", "1e1", "10.000", "10.", ".5", "0x10", "١٠"]
)
async def test_an_amount_is_digits_and_at_most_two_decimals(bank, amount):
    _body, headers, number = await funded_account(bank, "100.00")
    response = await bank.client.post(
        "/api/transactions/deposit",
        json={"account_number": number, "amount": amount},
        headers={**headers, "Idempotency-Key": new_key()},
    )
    problem(response, 422, "validation_error")
    assert error_fields(response) == {"amount"}
    assert (await account(bank.client, headers, number))["balance"] == "100.00"


@pytest.mark.parametrize("amount", ["10", "10.5", "10.50", "0010.50"])
async def test_plain_amounts_are_accepted(bank, amount):
    _body, headers, number = await funded_account(bank, "0.00")
    response = await bank.client.post(
        "/api/transactions/deposit",
        json={"account_number": number, "amount": amount},
        headers={**headers, "Idempotency-Key": new_key()},
    )
    assert response.status_code == 201, response.text
    assert response.json()["amount"] == str(Decimal(amount).quantize(Decimal("0.01")))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("full_name", "Eve\x00 Null"),
        ("full_name", "Mallory \u202eyrollam"),
        ("full_name", "Tab\x1bEscape"),
        ("address", "1 Main St\x07"),
        ("address", "12 \u2066Isolated\u2069 Road"),
    ],
)
async def test_control_and_bidi_override_characters_in_names_are_refused(client, field, value):
    response = await client.post(
        "/api/customers/register",
        data=registration_form(**{field: value}),
        files=document_files(),
    )
    problem(response, 422, "validation_error")
    assert error_fields(response) == {field}


async def test_names_in_any_script_with_combining_marks_are_stored_as_sent(bank):
    name = "Zoë Ñúñez-Ο\u0301λγα \u05e9\u05dc\u05d5\u05dd \U0001f600"
    combining = "Jose\u0301 Nguye\u0302\u0303n"  # decomposed: kept decomposed
    for full_name in (name, combining):
        _body, headers = await bank.customer(full_name=full_name)
        me = (await bank.client.get("/api/customers/me", headers=headers)).json()
        assert me["full_name"] == full_name


async def test_a_description_with_a_control_character_is_refused(bank):
    _body, headers, number = await funded_account(bank, "100.00")
    other = (await open_account(bank.client, headers))["account_number"]
    response = await bank.client.post(
        "/api/transactions/transfer",
        json={
            "from_account": number,
            "to_account": other,
            "amount": "1.00",
            "description": "rent\x00",
        },
        headers={**headers, "Idempotency-Key": new_key()},
    )
    problem(response, 422, "validation_error")
    assert error_fields(response) == {"description"}


@pytest.mark.parametrize(
    "path",
    [
        "/api/accounts/..%2F..%2Fetc%2Fpasswd",
        "/api/accounts/%2e%2e",
        "/api/accounts/..\\..",
        "/api/accounts/1000%00000016",
    ],
)
async def test_traversal_in_a_path_parameter_is_an_invalid_account_number(bank, path):
    _body, headers, _number = await funded_account(bank, "0.00")
    response = await bank.client.get(path, headers=headers)
    assert response.status_code in (404, 422), response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    if response.status_code == 422:
        assert response.json()["code"] == "invalid_account_number"


def _zip_archive() -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("payload.txt", "not what the reviewer sees")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (PDF + _zip_archive(), 415, "unsupported_media_type"),  # a PDF/ZIP polyglot
        (PNG + _zip_archive(), 415, "unsupported_media_type"),
        (b"", 422, "validation_error"),  # a zero-byte file
        (b"PK\x03\x04" + b"\x00" * 40, 415, "unsupported_media_type"),
    ],
)
async def test_a_document_is_judged_by_what_it_holds(client, content, status, code):
    response = await client.post(
        "/api/customers/register",
        data=registration_form(),
        files=document_files(id_document=("passport.pdf", content, "application/pdf")),
    )
    problem(response, status, code)
    assert error_fields(response) == {"id_document"}


async def test_a_png_named_pdf_is_stored_as_the_png_it_is(bank):
    form = registration_form()
    response = await bank.client.post(
        "/api/customers/register",
        data=form,
        files=document_files(id_document=("passport.pdf", PNG, "application/pdf")),
    )
    assert response.status_code == 201, response.text
    headers = await bank.headers(form["username"], form["password"])
    me = (await bank.client.get("/api/customers/me", headers=headers)).json()
    documents = me["kyc"]["documents"]
    kinds = {d["kind"]: d["content_type"] for d in documents}
    assert kinds["id_document"] == "image/png"


async def test_deeply_nested_json_is_a_malformed_body_not_a_500(bank):
    _body, headers, _number = await funded_account(bank, "0.00")
    deep = b"[" * 100_000 + b"]" * 100_000
    for path in ("/api/auth/refresh", "/api/transactions/deposit", "/api/accounts"):
        response = await bank.client.post(
            path, content=deep, headers={**headers, "Content-Type": "application/json"}
        )
        problem(response, 400, "malformed_request")
    not_utf8 = b'{"type": "\xff\xfe savings"}'
    response = await bank.client.post(
        "/api/accounts", content=not_utf8, headers={**headers, "Content-Type": "application/json"}
    )
    assert response.status_code in (400, 422), response.text


@pytest.mark.parametrize(
    ("path", "unknown"),
    [
        ("/api/transactions?acount_number=100000000016", {"acount_number"}),
        ("/api/transactions?limit=5&sort=amount&order=desc", {"sort", "order"}),
        ("/api/accounts?status=closed", {"status"}),
        ("/api/accounts/{number}/statement?format=csv&fromdate=2026-01-01", {"fromdate"}),
    ],
)
async def test_an_unknown_query_parameter_is_refused_not_ignored(bank, path, unknown):
    _body, headers, number = await funded_account(bank, "1.00")
    response = await bank.client.get(path.format(number=number), headers=headers)
    problem(response, 422, "validation_error")
    assert error_fields(response) == unknown


async def test_an_unknown_query_parameter_is_refused_on_staff_and_auth_endpoints(bank):
    auditor = await bank.staff("auditor")
    response = await bank.client.get("/api/audit/logs?outcom=denied", headers=auditor)
    problem(response, 422, "validation_error")
    assert error_fields(response) == {"outcom"}
    response = await bank.client.get("/api/auth/me?debug=1", headers=auditor)
    assert error_fields(response) == {"debug"}


async def test_registration_refuses_a_form_field_it_does_not_know(client, database):
    response = await client.post(
        "/api/customers/register",
        data={**registration_form(), "role": "admin", "status": "Active"},
        files=document_files(),
    )
    problem(response, 422, "validation_error")
    assert error_fields(response) == {"role", "status"}


@pytest.mark.parametrize("field", ["full_name", "address", "username"])
async def test_registration_refuses_a_text_field_that_is_not_utf8(client, field):
    form = registration_form()
    raw = form.pop(field).encode() + b"\xe9\xff"  # Latin-1 bytes, not UTF-8
    files = {**document_files(), field: (None, raw)}
    response = await client.post("/api/customers/register", data=form, files=files)
    problem(response, 422, "validation_error")
    assert error_fields(response) == {field}
