"""The edge of the app (issue 18): request lines and headers above the limits are refused
with a problem, never a 5xx (414 `uri_too_long`, 431 `request_header_fields_too_large`),
and every response carries the security headers, errors and 404s included."""

from __future__ import annotations

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from app.main import create_app
from app.problems import (
    MAX_HEADER_BYTES,
    MAX_HEADERS_BYTES,
    MAX_PATH_BYTES,
    MAX_QUERY_BYTES,
    EdgeMiddleware,
)
from tests.conftest import base_settings
from tests.helpers import problem

HSTS = "max-age=31536000; includeSubDomains"


# --- request lines ----------------------------------------------------------------------


async def test_a_path_longer_than_2048_bytes_is_414_uri_too_long(client):
    body = problem(await client.get("/api/" + "a" * MAX_PATH_BYTES), 414, "uri_too_long")
    assert "2048" in body["detail"]
    at_the_limit = "/api/" + "a" * (MAX_PATH_BYTES - len("/api/"))
    problem(await client.get(at_the_limit), 404, "not_found")


async def test_the_path_is_measured_as_sent_percent_encoded(client):
    """Bytes on the wire: 700 'é' are 1,400 bytes of UTF-8 and 4,200 once encoded."""
    problem(await client.get("/api/" + "é" * 700), 414, "uri_too_long")


async def test_a_query_string_longer_than_8192_bytes_is_414(client):
    response = await client.get("/health/live?pad=" + "x" * MAX_QUERY_BYTES)
    body = problem(response, 414, "uri_too_long")
    assert "query string" in body["detail"]
    at_the_limit = "/health/live?pad=" + "x" * (MAX_QUERY_BYTES - len("pad="))
    # Past the edge; the app then refuses the parameter it does not declare (422).
    passed = await client.get(at_the_limit)
    assert passed.status_code == 422 and passed.json()["errors"][0]["field"] == "pad"


# --- headers ----------------------------------------------------------------------------


async def test_a_64_kib_header_is_431_request_header_fields_too_large(client):
    response = await client.get("/api/auth/me", headers={"X-Padding": "x" * 64 * 1024})
    body = problem(response, 431, "request_header_fields_too_large")
    assert "x-padding" in body["detail"]


async def test_one_header_over_8_kib_is_431(client):
    response = await client.get("/health/live", headers={"Cookie": "c" * MAX_HEADER_BYTES})
    problem(response, 431, "request_header_fields_too_large")


async def test_headers_over_16_kib_together_are_431(client):
    headers = {f"X-Part-{n}": "x" * 6000 for n in range(3)}
    response = await client.get("/health/live", headers=headers)
    body = problem(response, 431, "request_header_fields_too_large")
    assert str(MAX_HEADERS_BYTES) in body["detail"]


async def test_headers_within_the_limits_pass(client):
    headers = {"X-Part-1": "x" * 7000, "X-Part-2": "y" * 7000}
    assert (await client.get("/health/live", headers=headers)).status_code == 200


async def test_an_oversized_request_is_refused_before_its_body_is_read(client):
    """The 431 comes first: the (valid, small) body of a login is never looked at."""
    response = await client.post(
        "/api/auth/token",
        data={"username": "nobody", "password": "whatever-it-is-1"},
        headers={"X-Padding": "x" * 20_000},
    )
    problem(response, 431, "request_header_fields_too_large")


# --- security headers -------------------------------------------------------------------


def assert_security_headers(response: httpx.Response, *, api: bool) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    if api:
        assert response.headers.get_list("cache-control") == ["no-store"]
    else:
        assert "no-store" not in response.headers.get("cache-control", "")
    assert "strict-transport-security" not in response.headers  # not in production


async def test_every_api_answer_carries_the_security_headers(bank, app):
    async def explode() -> None:
        raise RuntimeError("boom")

    app.add_api_route("/api/test-explode", explode, methods=["GET"])
    headers = await bank.staff("auditor")
    client = bank.client
    answers = {
        200: await client.get("/api/auth/me", headers=headers),
        401: await client.get("/api/auth/me"),
        403: await client.get("/api/accounts", headers=headers),
        404: await client.get("/api/no-such-thing"),
        405: await client.delete("/api/auth/token"),
        413: await client.post("/api/auth/refresh", content=b"x" * (2 * 1024 * 1024)),
        414: await client.get("/api/" + "a" * 3000),
        422: await client.post("/api/auth/refresh", json={}),
        431: await client.get("/api/auth/me", headers={"X-Padding": "x" * 20_000}),
        500: await client.get("/api/test-explode"),
    }
    for status, response in answers.items():
        assert response.status_code == status, (status, response.text)
        assert_security_headers(response, api=True)


async def test_health_and_the_docs_keep_their_caching_and_get_nosniff(client):
    for path in ("/health/live", "/docs", "/openapi.json"):
        response = await client.get(path)
        assert response.status_code == 200, path
        assert_security_headers(response, api=False)


async def test_production_answers_add_strict_transport_security(tmp_path, database_url):
    settings = base_settings(tmp_path / "data", database_url, env="production", log_json=False)
    application = create_app(settings)
    transport = httpx.ASGITransport(app=application, client=("203.0.113.7", 50000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for path in ("/api/auth/me", "/api/no-such-thing", "/health/live"):
                response = await client.get(path)
                assert response.headers["strict-transport-security"] == HSTS, path
                assert response.headers["x-content-type-options"] == "nosniff"
    finally:
        await application.state.database.dispose()


@pytest.mark.parametrize(("path", "cached"), [("/api/thing", False), ("/static/thing", True)])
async def test_no_store_replaces_whatever_caching_an_api_endpoint_set(path, cached):
    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"cache-control", b"public, max-age=600"), (b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    edge = EdgeMiddleware(endpoint, default_limit=1024)
    transport = httpx.ASGITransport(app=edge)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get(path)
    expected = ["public, max-age=600"] if cached else ["no-store"]
    assert response.headers.get_list("cache-control") == expected
    assert response.headers["x-content-type-options"] == "nosniff"
