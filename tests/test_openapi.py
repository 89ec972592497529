"""The OpenAPI schema that Swagger UI, ReDoc and Postman read."""


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
