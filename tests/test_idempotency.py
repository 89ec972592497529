"""Idempotency-Key on money movement (API.md §1): a replay answers the original response
and moves nothing; one key executes once, even under 50 concurrent requests."""

from __future__ import annotations

import asyncio

import pytest

from tests.ledger_helpers import (
    balance,
    deposit,
    funded_account,
    journal_count,
    new_key,
    open_account,
    problem,
    set_customer_status,
    stored_balances,
    transfer,
    withdraw,
)


@pytest.mark.parametrize("kind", ["deposit", "withdrawal", "transfer"])
async def test_replay_returns_the_original_answer_and_moves_money_once(bank, app, kind):
    _, headers, number = await funded_account(bank, "100.00")
    other = (await open_account(bank.client, headers))["account_number"]
    key = new_key()

    async def send():  # type: ignore[no-untyped-def]
        if kind == "deposit":
            return await deposit(bank.client, headers, number, "10.00", key=key)
        if kind == "withdrawal":
            return await withdraw(bank.client, headers, number, "10.00", key=key)
        return await transfer(bank.client, headers, number, other, "10.00", key=key)

    first = await send()
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    journals = await journal_count(app)
    balances = await stored_balances(app)
    for _ in range(2):
        replay = await send()
        assert replay.status_code == 201
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.json() == first.json()
    assert await journal_count(app) == journals
    assert await stored_balances(app) == balances
    expected = "110.00" if kind == "deposit" else "90.00"
    assert await balance(bank.client, headers, number) == expected


async def test_a_replay_answers_what_happened_even_after_the_customer_was_suspended(bank, app):
    """A client retrying a transfer that went through must learn that it did: the
    stored answer comes back whatever the customer's status is now; a new request is
    refused."""
    customer, headers, number = await funded_account(bank, "100.00")
    _, _, other = await funded_account(bank, "0.00")
    key = new_key()
    first = await transfer(bank.client, headers, number, other, "10.00", key=key)
    assert first.status_code == 201, first.text
    await set_customer_status(app, customer["customer_id"], "Suspended")
    replay = await transfer(bank.client, headers, number, other, "10.00", key=key)
    assert replay.status_code == 201, replay.text
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == first.json()
    fresh = await transfer(bank.client, headers, number, other, "10.00", key=new_key())
    problem(fresh, 403, "customer_suspended")
    assert await balance(bank.client, headers, number) == "90.00"


async def test_same_key_with_a_different_body_is_refused(bank, app):
    _, headers, number = await funded_account(bank, "100.00")
    other = (await open_account(bank.client, headers))["account_number"]
    key = new_key()
    assert (
        await transfer(bank.client, headers, number, other, "10.00", key=key)
    ).status_code == 201
    for response in (
        await transfer(bank.client, headers, number, other, "10.01", key=key),
        await transfer(bank.client, headers, number, other, "10.00", key=key, description="x"),
        await withdraw(bank.client, headers, number, "10.00", key=key),  # another operation
    ):
        problem(response, 422, "idempotency_key_reused")
    assert await balance(bank.client, headers, number) == "90.00"
    assert await journal_count(app) == 2
    # The same fields sent to another operation are another request.
    other_key = new_key()
    assert (await deposit(bank.client, headers, number, "5.00", key=other_key)).status_code == 201
    reused = await withdraw(bank.client, headers, number, "5.00", key=other_key)
    problem(reused, 422, "idempotency_key_reused")
    assert await balance(bank.client, headers, number) == "95.00"


async def test_equivalent_amounts_are_the_same_request(bank, app):
    _, headers, number = await funded_account(bank, "1.00")
    key = new_key()
    first = await deposit(bank.client, headers, number, "12.50", key=key)
    same = await bank.client.post(
        "/api/transactions/deposit",
        content=f'{{"account_number": "{number}", "amount": 12.5}}',
        headers={**headers, "Idempotency-Key": key, "Content-Type": "application/json"},
    )
    assert same.status_code == 201
    assert same.headers["idempotent-replayed"] == "true"
    assert same.json() == first.json()
    assert await balance(bank.client, headers, number) == "13.50"


async def test_keys_are_scoped_to_the_user(bank, app):
    _, headers, mine = await funded_account(bank, "0.00")
    _, other_headers, theirs = await funded_account(bank, "0.00")
    key = "shared-key-1"
    first = await deposit(bank.client, headers, mine, "5.00", key=key)
    second = await deposit(bank.client, other_headers, theirs, "7.00", key=key)
    assert first.status_code == second.status_code == 201
    assert "idempotent-replayed" not in second.headers
    assert second.json()["to_account"] == theirs
    assert await balance(bank.client, headers, mine) == "5.00"
    assert await balance(bank.client, other_headers, theirs) == "7.00"
    # Even the very same body from another user is that user's own request.
    replay = await deposit(bank.client, other_headers, theirs, "7.00", key=key)
    assert replay.headers["idempotent-replayed"] == "true"
    assert await balance(bank.client, other_headers, theirs) == "7.00"


async def test_fifty_concurrent_requests_with_one_key_execute_once(bank, app):
    _, headers, number = await funded_account(bank, "1000.00")
    other = (await open_account(bank.client, headers))["account_number"]
    journals = await journal_count(app)
    key = new_key()

    responses = await asyncio.gather(
        *(transfer(bank.client, headers, number, other, "25.00", key=key) for _ in range(50))
    )

    assert [r.status_code for r in responses] == [201] * 50, {r.text for r in responses}
    bodies = [r.json() for r in responses]
    assert all(body == bodies[0] for body in bodies)
    replayed = [r.headers.get("idempotent-replayed") for r in responses]
    assert replayed.count(None) == 1 and replayed.count("true") == 49
    assert await journal_count(app) == journals + 1
    assert await journal_count(app, "transfer") == 1
    assert await balance(bank.client, headers, number) == "975.00"
    assert await balance(bank.client, headers, other) == "25.00"


async def test_malformed_keys_are_refused(bank, app):
    _, headers, number = await funded_account(bank, "10.00")
    for bad in ("k" * 256, "caf\xe9".encode("latin-1"), "", "tab\there"):
        response = await bank.client.post(
            "/api/transactions/deposit",
            json={"account_number": number, "amount": "1.00"},
            headers={**headers, "Idempotency-Key": bad},  # type: ignore[dict-item]
        )
        body = problem(response, 422, "validation_error")
        assert [e["field"] for e in body["errors"]] == ["Idempotency-Key"], bad
    assert await balance(bank.client, headers, number) == "10.00"
    longest = await deposit(bank.client, headers, number, "1.00", key="~" * 255)
    assert longest.status_code == 201
    assert await balance(bank.client, headers, number) == "11.00"
