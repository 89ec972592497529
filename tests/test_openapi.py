"""The OpenAPI schema that Swagger UI, ReDoc and Postman read, and the answers it
promises."""

from __future__ import annotations

from typing import Any

import httpx
from jsonschema import Draft202012Validator

from tests.ledger_helpers import deposit, funded_account, new_key, transfer


async def test_registration_form_is_flat_for_swagger_and_postman(client):
    schema = (await client.get("/openapi.json")).json()
    body = schema["paths"]["/api/customers/register"]["post"]["requestBody"]
    ref = body["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[-1]
    form = schema["components"]["schemas"][ref]
    assert "allOf" not in form
    fields = {
        "username",
        "email",
        "password",
        "full_name",
        "date_of_birth",
        "phone",
        "address",
        "national_id",
        "id_document",
        "address_proof",
    }
    assert fields <= set(form["properties"])
    assert fields <= set(form["required"])


async def test_every_operation_is_described_once_for_swagger_and_redoc(client):
    schema = (await client.get("/openapi.json")).json()
    assert "Idempotency-Key" in schema["info"]["description"]
    declared_tags = {tag["name"] for tag in schema["tags"]}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            assert len(operation["tags"]) == 1, (where, operation["tags"])
            assert operation["tags"][0] in declared_tags, where
            assert len(operation["description"]) > len(operation["summary"]) + 40, where
            for status, response in operation["responses"].items():
                if status.startswith("4"):
                    assert f"- `{status}` " in operation["description"], (where, status)
                    assert set(response["content"]) == {"application/problem+json"}, where
                    assert response["content"]["application/problem+json"]["schema"] == {
                        "$ref": "#/components/schemas/Problem"
                    }, where


async def test_docs_pages_load_their_assets_from_this_server(client):
    for page in ("/docs", "/redoc"):
        html = (await client.get(page)).text
        assert "cdn.jsdelivr.net" not in html and "fonts.googleapis.com" not in html, page
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
            if asset in html:
                src = html.split(asset)[0].rsplit('"', 1)[-1] + asset
                answer = await client.get(src)
                assert answer.status_code == 200 and len(answer.content) > 10_000, src


async def test_money_endpoints_document_their_errors(client):
    schema = (await client.get("/openapi.json")).json()
    expected = {
        ("/api/accounts", "post"): {"401", "403", "422"},
        ("/api/accounts/{account_number}/close", "post"): {"404", "409"},
        ("/api/accounts/{account_number}/statement", "get"): {"404", "422"},
        ("/api/transactions/deposit", "post"): {"403", "404", "409", "422"},
        ("/api/transactions/withdrawal", "post"): {"403", "404", "409", "422"},
        ("/api/transactions/transfer", "post"): {"403", "404", "409", "422"},
        ("/api/transactions", "get"): {"401", "422"},
        ("/api/transactions/{transaction_id}", "get"): {"404"},
        ("/api/admin/accounts/{account_number}", "patch"): {"403", "404", "409"},
        ("/api/audit/ledger", "get"): {"401", "403"},
    }
    for (path, method), statuses in expected.items():
        operation = schema["paths"][path][method]
        assert operation["summary"], path
        assert statuses <= set(operation["responses"]), (path, operation["responses"].keys())
    transfer = schema["paths"]["/api/transactions/transfer"]["post"]
    assert any(p["name"] == "Idempotency-Key" for p in transfer["parameters"])


def _check_against_schema(schema: dict[str, Any], response: httpx.Response) -> None:
    """The response's body against what the OpenAPI schema declares for its path, method,
    status and media type."""
    request = response.request
    method = request.method.lower()
    path = next(
        template
        for template, operations in schema["paths"].items()
        if _matches(template, request.url.path) and method in operations
    )
    declared = schema["paths"][path][method]["responses"]
    assert str(response.status_code) in declared, (path, response.status_code)
    media = response.headers["content-type"].split(";")[0]
    body_schema = declared[str(response.status_code)]["content"][media]["schema"]
    validator = Draft202012Validator({**body_schema, "components": schema["components"]})
    errors = [
        f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(response.json())
    ]
    assert not errors, (path, response.status_code, errors)


def _matches(template: str, path: str) -> bool:
    parts, given = template.split("/"), path.split("/")
    return len(parts) == len(given) and all(
        p == g or (p.startswith("{") and p.endswith("}")) for p, g in zip(parts, given, strict=True)
    )


async def test_every_money_answer_is_what_the_schema_declares(bank):
    """Money answers are serialized from typed views without a second validation (the
    fast path): this holds them to the schema the clients generate code from."""
    schema = (await bank.client.get("/openapi.json")).json()
    _, headers, source = await funded_account(bank, "100.00")
    _, _, target = await funded_account(bank, "0.00")
    key = new_key()
    answers = [
        await deposit(bank.client, headers, source, "12.34", key=new_key()),
        await bank.client.post(
            "/api/transactions/withdrawal",
            headers=headers,
            json={"account_number": source, "amount": "2.34", "description": "cash"},
        ),
        await transfer(bank.client, headers, source, target, "10.00", key=key),
        await transfer(bank.client, headers, source, target, "10.00", key=key),  # replayed
        await transfer(bank.client, headers, source, target, "1000.00"),  # refused
        await transfer(bank.client, headers, source, "12", "1.00"),  # invalid
    ]
    assert [a.status_code for a in answers] == [201, 201, 201, 201, 422, 422]
    assert answers[3].headers["idempotent-replayed"] == "true"
    listed = await bank.client.get("/api/transactions", headers=headers)
    one = await bank.client.get(
        f"/api/transactions/{answers[0].json()['transaction_id']}", headers=headers
    )
    for response in [*answers, listed, one]:
        _check_against_schema(schema, response)


async def test_the_schema_states_the_limits_the_app_applies(client):
    schema = (await client.get("/openapi.json")).json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if "requestBody" in operation:  # bodies that do not parse are 400
                assert "400" in operation["responses"], (method, path)
    form = schema["components"]["schemas"]["Body_register_api_customers_register_post"]
    assert form["properties"]["password"]["minLength"] == 10
    assert form["properties"]["password"]["maxLength"] == 128
    assert "pattern" in form["properties"]["username"]
    staff = schema["components"]["schemas"]["StaffCreate"]["properties"]["password"]
    assert (staff["minLength"], staff["maxLength"]) == (10, 128)
