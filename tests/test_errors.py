"""The edges of the API (API.md §1): problem+json for every error, request ids, optional
trailing slashes, body limits, health and the OpenAPI documents."""

from __future__ import annotations

import logging
import re

import httpx
import pytest

from app.main import create_app
from tests.conftest import base_settings
from tests.helpers import problem

HEX_ID = re.compile(r"^[0-9a-f]{32}$")


async def test_unknown_path_is_a_problem_404(client):
    response = await client.get("/api/no-such-thing")
    body = problem(response, 404, "not_found")
    assert body["title"] == "Not Found"


async def test_wrong_method_is_a_problem_405(client):
    response = await client.delete("/api/auth/token")
    problem(response, 405, "method_not_allowed")
    assert "POST" in response.headers["allow"]


async def test_malformed_json_is_a_problem_400(client):
    response = await client.post(
        "/api/auth/refresh",
        content=b'{"refresh_token": "abc"',
        headers={"Content-Type": "application/json"},
    )
    body = problem(response, 400, "malformed_request")
    assert "errors" not in body


async def test_validation_errors_name_each_field(client):
    response = await client.post("/api/auth/refresh", json={"refresh_token": ""})
    body = problem(response, 422, "validation_error")
    assert body["errors"] == [{"field": "refresh_token", "message": body["errors"][0]["message"]}]
    assert body["errors"][0]["message"]
    assert "refresh_token" in body["detail"]


async def test_a_json_body_of_the_wrong_shape_is_422(client):
    response = await client.post("/api/auth/refresh", json=["refresh_token"])
    problem(response, 422, "validation_error")


@pytest.mark.parametrize("path", ["/api/auth/me/", "/api/auth/me//", "/health/live/"])
async def test_trailing_slash_is_optional_without_a_redirect(bank, path):
    headers = await bank.staff()
    response = await bank.client.get(path, headers=headers)
    assert response.status_code == 200, response.text
    assert "location" not in response.headers


async def test_trailing_slash_works_for_posts_too(bank):
    username, password = await bank.staff_user()
    response = await bank.client.post(
        "/api/auth/token/", data={"username": username, "password": password}
    )
    assert response.status_code == 200, response.text


async def test_a_client_request_id_is_echoed(client):
    ok = await client.get("/health/live", headers={"X-Request-ID": "trace-42.a:b_c-d"})
    assert ok.headers["x-request-id"] == "trace-42.a:b_c-d"
    missing = await client.get("/nowhere", headers={"X-Request-ID": "trace-43"})
    assert missing.headers["x-request-id"] == "trace-43"
    assert missing.json()["request_id"] == "trace-43"


@pytest.mark.parametrize("sent", [None, "", "has spaces", "x" * 129, "inject\u00e9"])
async def test_a_request_id_is_generated_when_absent_or_unsafe(client, sent):
    headers = {"X-Request-ID": sent.encode("utf-8")} if sent is not None else {}
    first = await client.get("/health/live", headers=headers)
    second = await client.get("/health/live", headers=headers)
    assert HEX_ID.match(first.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_an_unexpected_exception_is_a_500_problem_without_a_trace(app, client, caplog):
    async def explode() -> None:
        raise RuntimeError("secret detail: /srv/bank/app.py password=hunter2")

    app.add_api_route("/api/test-explode", explode, methods=["GET"])
    with caplog.at_level(logging.ERROR):
        response = await client.get("/api/test-explode", headers={"X-Request-ID": "boom-1"})
    body = problem(response, 500, "internal_error")
    assert body["request_id"] == "boom-1"
    for leak in ("secret detail", "hunter2", "Traceback", "RuntimeError", "app.py"):
        assert leak not in response.text
    # The operator still gets the trace, tagged with the request id.
    assert any("boom-1" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_an_oversized_json_body_is_a_413_problem(client, settings):
    big = b'{"refresh_token": "' + b"a" * settings.request_max_bytes + b'"}'
    response = await client.post(
        "/api/auth/refresh", content=big, headers={"Content-Type": "application/json"}
    )
    problem(response, 413, "payload_too_large")


async def test_an_oversized_streamed_body_without_length_is_a_413_problem(client, settings):
    async def chunks():
        yield b'{"refresh_token": "'
        for _ in range(settings.request_max_bytes // 4096 + 2):
            yield b"a" * 4096
        yield b'"}'

    response = await client.post(
        "/api/auth/refresh", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    problem(response, 413, "payload_too_large")


async def test_a_body_just_under_the_limit_is_read(client):
    response = await client.post("/api/auth/refresh", json={"refresh_token": "a" * 400})
    problem(response, 401, "invalid_token")


async def test_health_endpoints(client):
    assert (await client.get("/health/live")).json() == {"status": "ok"}
    ready = await client.get("/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"status": "ok"})


async def test_ready_is_503_when_the_database_is_unreachable(tmp_path):
    not_a_database = tmp_path / "a-directory.db"
    not_a_database.mkdir()
    settings = base_settings(tmp_path / "data", f"sqlite+aiosqlite:///{not_a_database}")
    application = create_app(settings)
    transport = httpx.ASGITransport(app=application)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            response = await c.get("/health/ready")
            assert response.status_code == 503
            assert response.json() == {"status": "unavailable"}
            assert (await c.get("/health/live")).status_code == 200
    finally:
        await application.state.database.dispose()


async def test_openapi_documents_every_endpoint(client):
    schema = (await client.get("/openapi.json")).json()
    assert schema["openapi"].startswith("3.")
    operations = [
        (path, method, op)
        for path, methods in schema["paths"].items()
        for method, op in methods.items()
    ]
    for path in (
        "/api/auth/token",
        "/api/auth/refresh",
        "/api/auth/logout",
        "/api/auth/password",
        "/api/auth/me",
        "/api/customers/register",
        "/api/customers/me",
        "/api/customers/{customer_id}",
        "/api/audit/logs",
        "/api/audit/verify",
        "/api/admin/users",
    ):
        assert path in schema["paths"], path
    for path, method, op in operations:
        assert op.get("summary"), f"{method.upper()} {path} has no summary"
        if path.startswith("/api/") and path != "/api/auth/token":
            errors = [code for code in op["responses"] if code.startswith(("4", "5"))]
            assert errors, f"{method.upper()} {path} lists no error responses"
    register = schema["paths"]["/api/customers/register"]["post"]["responses"]
    assert {"409", "413", "415", "422"} <= set(register)


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_interactive_docs_are_served(client, path):
    response = await client.get(path)
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("OPTIONS", "/api/accounts", "GET, POST"),
        ("DELETE", "/api/customers/me", "GET, PATCH"),
        ("GET", "/api/customers/register", "POST"),
        ("OPTIONS", "/api/transactions/deposit", "POST"),
        ("OPTIONS", "/api/transactions/12", "GET"),
        ("PUT", "/api/accounts/100000000009", "GET"),
    ],
)
async def test_a_405_names_every_method_the_path_serves(client, method, path, allowed):
    response = await client.request(method, path)
    problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == allowed


async def test_dates_are_only_yyyy_mm_dd_never_a_number(bank):
    from tests.ledger_helpers import error_fields, funded_account

    _body, headers, number = await funded_account(bank)
    for query in ("to=0", "from=1700000000", "to=2026-1-5"):
        response = await bank.client.get(
            f"/api/accounts/{number}/statement?{query}", headers=headers
        )
        problem(response, 422, "validation_error")
        assert error_fields(response) == {query.split("=")[0]}, query
    response = await bank.client.get("/api/transactions?from=0", headers=headers)
    assert error_fields(response) == {"from"}
    ok = await bank.client.get(f"/api/accounts/{number}/statement?to=2026-01-05", headers=headers)
    assert ok.status_code == 200


async def test_a_date_of_birth_must_be_a_date_not_a_number(client):
    from tests.helpers import document_files, error_fields, registration_form

    response = await client.post(
        "/api/customers/register",
        data=registration_form(date_of_birth="0"),
        files=document_files(),
    )
    problem(response, 422, "validation_error")
    assert error_fields(response) == {"date_of_birth"}
