async def test_registration_returns_contract_body_and_kyc_activates(bank):
    response = await bank.register(username="alice", email="Alice@Example.com")
    assert response.status_code == 201, response.text
    assert response.json() == {
        "customer_id": "1001",
        "username": "alice",
        "email": "alice@example.com",
        "status": "Pending KYC Approval",
        "message": "Registration successful. KYC verification in progress.",
    }
    headers = await bank.headers("alice", "correct-horse-battery")
    me = await bank.client.get("/api/customers/me", headers=headers)
    assert me.json()["status"] == "Active"
