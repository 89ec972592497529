"""Authentication (API.md §2): login, lockout, refresh rotation and reuse detection,
logout, password change, /api/auth/me, and refusal of every kind of bad access token."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from jose import jwt
from sqlalchemy import select, update

from app.errors import InvalidToken
from app.models import LoginThrottle, RefreshToken, User
from app.security import Principal, Security
from tests.helpers import audit_records, count, execute, problem, registration_form

PASSWORD = "correct-horse-battery"
TOKEN_KEYS = {"access_token", "refresh_token", "token_type", "expires_in", "role"}


async def _register(bank, username: str = "mona") -> dict:
    response = await bank.register(username=username)
    assert response.status_code == 201, response.text
    return response.json()


def _bearer(tokens: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def _refresh(bank, refresh_token: str):
    return await bank.client.post("/api/auth/refresh", json={"refresh_token": refresh_token})


# --- login --------------------------------------------------------------------------


async def test_login_returns_a_token_pair(bank, settings):
    registered = await _register(bank)
    response = await bank.login("mona", PASSWORD)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == TOKEN_KEYS
    assert body["token_type"] == "bearer"
    assert body["role"] == "customer"
    assert body["expires_in"] == settings.access_token_minutes * 60
    me = await bank.client.get("/api/auth/me", headers=_bearer(body))
    assert me.status_code == 200
    assert me.json()["customer_id"] == registered["customer_id"]


async def test_login_accepts_any_case_and_the_email_address(bank):
    assert (await bank.register(username="nora", email="Nora.Mail@Example.com")).status_code == 201
    assert (await bank.login("NORA", PASSWORD)).status_code == 200
    assert (await bank.login("nora.mail@EXAMPLE.com", PASSWORD)).status_code == 200


async def test_wrong_password_and_unknown_user_get_the_same_answer(bank):
    await _register(bank, "paula")
    wrong = await bank.login("paula", "not-the-password")
    unknown = await bank.login("nobody-here", "not-the-password")
    for response in (wrong, unknown):
        problem(response, 401, "invalid_credentials")
        assert response.headers["www-authenticate"] == "Bearer"
    strip = lambda body: {k: v for k, v in body.items() if k != "request_id"}  # noqa: E731
    assert strip(wrong.json()) == strip(unknown.json())


async def test_an_unknown_user_costs_a_password_check_like_a_known_one(bank, monkeypatch):
    await _register(bank, "pablo")
    context = bank.app.state.security._context
    checked: list[str] = []
    original = context.verify

    def counting_verify(secret, hashed):
        checked.append(hashed[:10])
        return original(secret, hashed)

    monkeypatch.setattr(context, "verify", counting_verify)
    await bank.login("pablo", "not-the-password")
    await bank.login("no-such-user", "not-the-password")
    assert len(checked) == 2
    assert all(h.startswith("$argon2id$") for h in checked)


async def test_login_outcomes_are_audited(bank, database):
    registered = await _register(bank, "quinn")
    await bank.login("quinn", "wrong-password-1")
    await bank.token("quinn", PASSWORD)
    records = await audit_records(database, "auth.login")
    assert [(r.outcome, r.details.get("username")) for r in records] == [
        ("failed", "quinn"),
        ("success", None),
    ]
    success = records[1]
    async with database.session() as db:
        user_id = await db.scalar(select(User.id).where(User.username == "quinn"))
    assert (success.actor_id, success.actor_role) == (str(user_id), "customer")
    assert success.ip == "203.0.113.7"
    assert registered["customer_id"]


async def test_login_requires_the_form_fields(bank):
    response = await bank.client.post("/api/auth/token", data={"username": "x"})
    problem(response, 422, "validation_error")
    assert {e["field"] for e in response.json()["errors"]} == {"password"}


async def test_a_deactivated_user_cannot_log_in(bank, database):
    await _register(bank, "rita")
    await execute(database, "UPDATE users SET is_active = false WHERE username = 'rita'")
    problem(await bank.login("rita", PASSWORD), 401, "invalid_credentials")


# --- lockout ------------------------------------------------------------------------


async def test_repeated_failures_lock_the_username_across_app_instances(
    bank, settings, database, another_client
):
    await _register(bank, "sam")
    for _ in range(settings.login_max_failures):
        problem(await bank.login("sam", "wrong-password!"), 401, "invalid_credentials")
    locked = await bank.login("sam", PASSWORD)  # even the right password
    problem(locked, 423, "account_locked")
    retry_after = int(locked.headers["retry-after"])
    assert 0 < retry_after <= settings.login_lockout_minutes * 60
    async with database.session() as db:
        row = await db.get(LoginThrottle, "sam")
    assert row is not None and row.locked_until > datetime.now(UTC)
    # Another process on the same database refuses too: the lock lives in the database.
    other = await another_client()
    problem(
        await other.post("/api/auth/token", data={"username": "SAM", "password": PASSWORD}),
        423,
        "account_locked",
    )
    denied = [r for r in await audit_records(database, "auth.login") if r.outcome == "denied"]
    assert len(denied) == 2


async def test_lockout_applies_to_unknown_usernames_too(bank, settings):
    for _ in range(settings.login_max_failures):
        await bank.login("ghost", "whatever-password")
    problem(await bank.login("ghost", "whatever-password"), 423, "account_locked")


async def test_lockout_ends_when_its_time_is_up(bank, settings, database):
    await _register(bank, "tara")
    for _ in range(settings.login_max_failures):
        await bank.login("tara", "wrong-password!")
    problem(await bank.login("tara", PASSWORD), 423, "account_locked")
    past = datetime.now(UTC) - timedelta(hours=1)
    await execute(
        database,
        "UPDATE login_throttle SET locked_until = :t, window_started_at = :t",
        t=past,
    )
    assert (await bank.login("tara", PASSWORD)).status_code == 200


async def test_a_successful_login_resets_the_failure_count(bank, settings):
    await _register(bank, "uma")
    for _ in range(2):
        for _ in range(settings.login_max_failures - 1):
            problem(await bank.login("uma", "wrong-password!"), 401, "invalid_credentials")
        assert (await bank.login("uma", PASSWORD)).status_code == 200


async def test_concurrent_failures_are_all_counted(bank, settings, database):
    await _register(bank, "vera")
    attempts = settings.login_max_failures * 2
    responses = await asyncio.gather(
        *(bank.login("vera", "wrong-password!") for _ in range(attempts))
    )
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {401, 423}, [r.text for r in responses]
    assert statuses.count(401) == settings.login_max_failures
    problem(await bank.login("vera", PASSWORD), 423, "account_locked")


# --- refresh, reuse, logout -----------------------------------------------------------


async def test_refresh_rotates_the_pair(bank, database):
    await _register(bank, "will")
    first = await bank.token("will", PASSWORD)
    response = await _refresh(bank, first["refresh_token"])
    assert response.status_code == 200, response.text
    second = response.json()
    assert set(second) == TOKEN_KEYS
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert (await bank.client.get("/api/auth/me", headers=_bearer(second))).status_code == 200
    # The new one refreshes again; tokens are kept only as hashes.
    assert (await _refresh(bank, second["refresh_token"])).status_code == 200
    async with database.session() as db:
        hashes = set((await db.scalars(select(RefreshToken.token_hash))).all())
    assert first["refresh_token"] not in hashes
    assert hashlib.sha256(first["refresh_token"].encode()).hexdigest() in hashes
    assert len(await audit_records(database, "auth.refresh")) == 2


async def test_reusing_a_rotated_refresh_token_revokes_the_whole_family(bank, database):
    await _register(bank, "xena")
    first = await bank.token("xena", PASSWORD)
    other_session = await bank.token("xena", PASSWORD)
    second = (await _refresh(bank, first["refresh_token"])).json()
    third = (await _refresh(bank, second["refresh_token"])).json()

    reuse = await _refresh(bank, first["refresh_token"])
    problem(reuse, 401, "token_reused")
    assert reuse.headers["www-authenticate"] == "Bearer"
    # The newest token of the family is dead too (the thief may hold it) ...
    problem(await _refresh(bank, third["refresh_token"]), 401, "invalid_token")
    assert (await _refresh(bank, second["refresh_token"])).status_code == 401
    # ... but a separate login is another family and survives.
    assert (await _refresh(bank, other_session["refresh_token"])).status_code == 200
    [record, *_] = await audit_records(database, "auth.refresh_reuse")
    assert record.outcome == "denied"


async def test_a_refresh_token_presented_twice_at_once_succeeds_once(bank):
    await _register(bank, "yara")
    tokens = await bank.token("yara", PASSWORD)
    responses = await asyncio.gather(*(_refresh(bank, tokens["refresh_token"]) for _ in range(3)))
    assert sorted(r.status_code for r in responses) == [200, 401, 401]
    for response in responses:
        if response.status_code == 401:
            problem(response, 401, "token_reused")
    # Two holders of one token: the family is revoked, the winner's new token included.
    [winner] = [r.json() for r in responses if r.status_code == 200]
    assert (await _refresh(bank, winner["refresh_token"])).status_code == 401


async def test_a_deactivated_users_session_cannot_be_refreshed(bank, database):
    await _register(bank, "yusuf")
    tokens = await bank.token("yusuf", PASSWORD)
    await execute(database, "UPDATE users SET is_active = false WHERE username = 'yusuf'")
    problem(await _refresh(bank, tokens["refresh_token"]), 401, "invalid_token")


async def test_an_unknown_or_expired_refresh_token_is_refused(bank, database):
    await _register(bank, "zoe")
    tokens = await bank.token("zoe", PASSWORD)
    problem(await _refresh(bank, "not-a-real-token"), 401, "invalid_token")
    await execute(
        database, "UPDATE refresh_tokens SET expires_at = :t", t=datetime.now(UTC) - timedelta(1)
    )
    problem(await _refresh(bank, tokens["refresh_token"]), 401, "invalid_token")


async def test_refresh_requires_a_token_in_the_body(bank):
    problem(await bank.client.post("/api/auth/refresh", json={}), 422, "validation_error")


async def test_logout_revokes_the_session(bank, database):
    await _register(bank, "adam")
    tokens = await bank.token("adam", PASSWORD)
    other = await bank.token("adam", PASSWORD)
    response = await bank.client.post(
        "/api/auth/logout", json={"refresh_token": tokens["refresh_token"]}, headers=_bearer(tokens)
    )
    assert response.status_code == 204
    assert response.content == b""
    problem(await _refresh(bank, tokens["refresh_token"]), 401, "invalid_token")
    assert (await _refresh(bank, other["refresh_token"])).status_code == 200
    [record] = await audit_records(database, "auth.logout")
    assert record.details == {"revoked": True}
    # A session that ended is not a stolen token: no reuse alarm.
    assert await audit_records(database, "auth.refresh_reuse") == []
    denied = [r for r in await audit_records(database, "auth.refresh") if r.outcome == "denied"]
    assert [r.details["reason"] for r in denied] == ["revoked"]


async def test_logout_revokes_tokens_rotated_from_the_login(bank):
    await _register(bank, "beth")
    tokens = await bank.token("beth", PASSWORD)
    rotated = (await _refresh(bank, tokens["refresh_token"])).json()
    response = await bank.client.post(
        "/api/auth/logout",
        json={"refresh_token": rotated["refresh_token"]},
        headers=_bearer(tokens),
    )
    assert response.status_code == 204
    assert (await _refresh(bank, rotated["refresh_token"])).status_code == 401


async def test_logout_cannot_revoke_someone_elses_session(bank):
    await _register(bank, "carl")
    await _register(bank, "dina")
    carl = await bank.token("carl", PASSWORD)
    dina = await bank.token("dina", PASSWORD)
    response = await bank.client.post(
        "/api/auth/logout", json={"refresh_token": dina["refresh_token"]}, headers=_bearer(carl)
    )
    assert response.status_code == 204
    assert (await _refresh(bank, dina["refresh_token"])).status_code == 200


async def test_logout_requires_an_access_token(bank):
    await _register(bank, "egon")
    tokens = await bank.token("egon", PASSWORD)
    response = await bank.client.post(
        "/api/auth/logout", json={"refresh_token": tokens["refresh_token"]}
    )
    problem(response, 401, "not_authenticated")
    assert response.headers["www-authenticate"] == "Bearer"


# --- password change ------------------------------------------------------------------


async def _change(bank, tokens: dict, current: str, new: str):
    return await bank.client.post(
        "/api/auth/password",
        json={"current_password": current, "new_password": new},
        headers=_bearer(tokens),
    )


async def test_password_change_ends_every_session(bank, database):
    await _register(bank, "fred")
    mine = await bank.token("fred", PASSWORD)
    elsewhere = await bank.token("fred", PASSWORD)
    response = await _change(bank, mine, PASSWORD, "a-brand-new-passphrase")
    assert response.status_code == 204
    problem(await bank.login("fred", PASSWORD), 401, "invalid_credentials")
    assert (await bank.login("fred", "a-brand-new-passphrase")).status_code == 200
    problem(await _refresh(bank, elsewhere["refresh_token"]), 401, "invalid_token")
    problem(await _refresh(bank, mine["refresh_token"]), 401, "invalid_token")
    assert len(await audit_records(database, "auth.password_change")) == 1


@pytest.mark.parametrize(
    ("new", "why"),
    [("short-pw", "10"), ("qwertyuiop", "common"), ("GRETA.LONGNAME", "username")],
)
async def test_password_change_enforces_the_policy(bank, database, new, why):
    form = registration_form(username="greta.longname")
    assert (await bank.register(**form)).status_code == 201
    tokens = await bank.token("greta.longname", PASSWORD)
    response = await _change(bank, tokens, PASSWORD, new)
    body = problem(response, 422, "weak_password")
    assert body["errors"][0]["field"] == "new_password"
    assert why in body["detail"]
    assert (await bank.login("greta.longname", PASSWORD)).status_code == 200
    assert (await _refresh(bank, tokens["refresh_token"])).status_code == 200
    assert await audit_records(database, "auth.password_change") == []


async def test_password_change_requires_the_current_password(bank):
    await _register(bank, "hugo")
    tokens = await bank.token("hugo", PASSWORD)
    response = await _change(bank, tokens, "not-my-password", "a-brand-new-passphrase")
    body = problem(response, 422, "invalid_current_password")
    assert body["errors"][0]["field"] == "current_password"
    assert (await bank.login("hugo", PASSWORD)).status_code == 200


async def test_password_change_requires_an_access_token(bank):
    response = await bank.client.post(
        "/api/auth/password", json={"current_password": "a", "new_password": "b"}
    )
    problem(response, 401, "not_authenticated")


# --- /api/auth/me ----------------------------------------------------------------------


async def test_me_describes_a_customer(bank, database):
    registered = await _register(bank, "iris")
    tokens = await bank.token("iris", PASSWORD)
    async with database.session() as db:
        user_id = await db.scalar(select(User.id).where(User.username == "iris"))
    me = await bank.client.get("/api/auth/me", headers=_bearer(tokens))
    assert me.json() == {
        "user_id": str(user_id),
        "username": "iris",
        "role": "customer",
        "customer_id": registered["customer_id"],
    }


@pytest.mark.parametrize("role", ["admin", "auditor"])
async def test_me_describes_staff(bank, role):
    username, password = await bank.staff_user(role)
    tokens = await bank.token(username, password)
    assert tokens["role"] == role
    body = (await bank.client.get("/api/auth/me", headers=_bearer(tokens))).json()
    assert (body["username"], body["role"], body["customer_id"]) == (username, role, None)


# --- access tokens ---------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict, claims: dict, key: bytes, digest=hashlib.sha256) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing_input.encode(), digest).digest()
    return f"{signing_input}.{_b64(signature)}"


async def _live_session(bank) -> dict:
    """The claims of a real login's access token: forged tokens below name its user and
    its session, so only the forgery itself can be what is refused."""
    await _register(bank, "jack")
    tokens = await bank.token("jack", PASSWORD)
    return jwt.get_unverified_claims(tokens["access_token"])


def _claims(session: dict, role: str = "customer", **changes) -> dict:
    now = datetime.now(UTC)
    claims = {
        "sub": session["sub"],
        "role": role,
        "cid": None,
        "usr": "jack",
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=5)).timestamp()),
        "jti": uuid.uuid4().hex,
        "sid": session["sid"],
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not ...}


def _bad_tokens(secret: str, real: str, session: dict) -> dict[str, str]:
    key = secret.encode()
    header, payload, signature = real.split(".")
    escalated = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    escalated["role"] = "admin"
    none_header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    flipped = signature[:-4] + ("AAAA" if signature[-4:] != "AAAA" else "BBBB")
    past = int((datetime.now(UTC) - timedelta(minutes=1)).timestamp())
    return {
        "alg_none": f"{none_header}.{payload}.",
        "alg_none_with_signature": f"{none_header}.{payload}.{signature}",
        "tampered_signature": f"{header}.{payload}.{flipped}",
        "tampered_payload": f"{header}.{_b64(json.dumps(escalated).encode())}.{signature}",
        "wrong_key": jwt.encode(_claims(session), "another-secret-" + "z" * 40, algorithm="HS256"),
        "hs512_same_key": jwt.encode(_claims(session), secret, algorithm="HS512"),
        "rs256_header_hmac_signed": _forge({"alg": "RS256", "typ": "JWT"}, _claims(session), key),
        "expired": jwt.encode(_claims(session, exp=past), secret, algorithm="HS256"),
        "missing_exp": jwt.encode(_claims(session, exp=...), secret, algorithm="HS256"),
        "missing_sub": jwt.encode(_claims(session, sub=...), secret, algorithm="HS256"),
        "missing_role": jwt.encode(_claims(session, role=...), secret, algorithm="HS256"),
        "missing_session": jwt.encode(_claims(session, sid=...), secret, algorithm="HS256"),
        "garbage": "not.a.jwt",
        "empty_segments": "..",
    }


async def test_a_well_formed_token_signed_with_the_key_is_accepted(bank, settings):
    # The control for the refusals below: the same construction with nothing wrong.
    session = await _live_session(bank)
    token = jwt.encode(_claims(session), settings.jwt_secret, algorithm="HS256")
    response = await bank.client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    forged_style = _forge(
        {"alg": "HS256", "typ": "JWT"}, _claims(session), settings.jwt_secret.encode()
    )
    response = await bank.client.get(
        "/api/auth/me", headers={"Authorization": f"Bearer {forged_style}"}
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    "kind",
    [
        "alg_none",
        "alg_none_with_signature",
        "tampered_signature",
        "tampered_payload",
        "wrong_key",
        "hs512_same_key",
        "rs256_header_hmac_signed",
        "expired",
        "missing_exp",
        "missing_sub",
        "missing_role",
        "missing_session",
        "garbage",
        "empty_segments",
    ],
)
async def test_a_bad_access_token_is_refused(bank, settings, kind):
    session = await _live_session(bank)
    real = jwt.encode(_claims(session), settings.jwt_secret, algorithm="HS256")
    assert (
        await bank.client.get("/api/auth/me", headers={"Authorization": f"Bearer {real}"})
    ).status_code == 200
    token = _bad_tokens(settings.jwt_secret, real, session)[kind]
    response = await bank.client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    problem(response, 401, "invalid_token")
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("header", [None, "Bearer", "Basic dXNlcjpwYXNz", "Token abc"])
async def test_a_missing_access_token_is_refused(bank, header):
    headers = {"Authorization": header} if header else {}
    response = await bank.client.get("/api/auth/me", headers=headers)
    problem(response, 401, "not_authenticated")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_access_tokens_carry_the_contract_claims(bank, settings):
    await _register(bank, "lena")
    token = (await bank.token("lena", PASSWORD))["access_token"]
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, settings.jwt_secret, algorithms=["HS256"])
    assert {"exp", "iat", "sub", "role", "jti"} <= set(claims)
    assert claims["exp"] - claims["iat"] == settings.access_token_minutes * 60
    assert await count(bank.app.state.database, User) == 1


def test_a_remembered_token_still_expires_and_a_changed_one_is_verified_afresh(
    settings, monkeypatch
):
    """Verified access tokens are remembered (a gateway's JWT cache): the expiry is still
    checked on every use, and any other string (a tampered copy) is verified in full."""
    security = Security(settings)
    token, lifetime = security.create_access_token(Principal(7, "customer", 3, "jack", "s1"))
    first = security.decode_access_token(token)
    assert security.decode_access_token(token) is first  # remembered, not re-parsed
    header, payload, signature = token.split(".")
    escalated = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    escalated["role"] = "admin"
    with pytest.raises(InvalidToken):
        security.decode_access_token(f"{header}.{_b64(json.dumps(escalated).encode())}.{signature}")
    later = time.time() + lifetime + 1
    monkeypatch.setattr("app.security.time.time", lambda: later)
    with pytest.raises(InvalidToken):
        security.decode_access_token(token)


@pytest.mark.parametrize("size", [4097, 100_000])
async def test_an_overlong_password_is_a_wrong_password_not_a_500(bank, size):
    body, headers = await bank.customer()
    for username in (body["username"], "nobody-at-all"):
        response = await bank.client.post(
            "/api/auth/token", data={"username": username, "password": "x" * size}
        )
        problem(response, 401, "invalid_credentials")
    change = await bank.client.post(
        "/api/auth/password",
        json={"current_password": "x" * size, "new_password": "y" * size},
        headers=headers,
    )
    problem(change, 422, "validation_error")


# --- an access token dies with its session (issue 18) ---------------------------------


async def _me(bank, tokens: dict):
    return await bank.client.get("/api/auth/me", headers=_bearer(tokens))


async def test_after_logout_the_access_token_is_refused_at_once(bank):
    await _register(bank, "olga")
    ended = await bank.token("olga", PASSWORD)
    other = await bank.token("olga", PASSWORD)
    assert (await _me(bank, ended)).status_code == 200
    response = await bank.client.post(
        "/api/auth/logout", json={"refresh_token": ended["refresh_token"]}, headers=_bearer(ended)
    )
    assert response.status_code == 204
    problem(await _me(bank, ended), 401, "invalid_token")
    assert (await _me(bank, other)).status_code == 200  # another login of the same user


async def test_after_a_password_change_every_access_token_is_refused(bank):
    await _register(bank, "pia")
    mine = await bank.token("pia", PASSWORD)
    elsewhere = await bank.token("pia", PASSWORD)
    assert (await _change(bank, mine, PASSWORD, "a-brand-new-passphrase")).status_code == 204
    problem(await _me(bank, elsewhere), 401, "invalid_token")
    problem(await _me(bank, mine), 401, "invalid_token")
    fresh = await bank.token("pia", "a-brand-new-passphrase")
    assert (await _me(bank, fresh)).status_code == 200


async def test_after_a_refresh_reuse_the_family_access_tokens_are_refused(bank):
    await _register(bank, "quinn")
    first = await bank.token("quinn", PASSWORD)
    second = (await _refresh(bank, first["refresh_token"])).json()
    assert (await _me(bank, second)).status_code == 200
    problem(await _refresh(bank, first["refresh_token"]), 401, "token_reused")
    problem(await _me(bank, second), 401, "invalid_token")
    problem(await _me(bank, first), 401, "invalid_token")


async def test_a_session_ended_by_another_process_is_seen_within_the_check_interval(
    bank, database, monkeypatch
):
    """Another worker (or machine) ends the session in the database: this process trusts
    its cached answer for at most BANK_SESSION_CHECK_SECONDS, then asks again."""
    await _register(bank, "rosa")
    tokens = await bank.token("rosa", PASSWORD)
    assert (await _me(bank, tokens)).status_code == 200
    await _revoke_all_behind_the_apps_back(database)
    assert (await _me(bank, tokens)).status_code == 200  # not read yet: still trusted
    ttl = bank.app.state.security.revoked_sessions.ttl
    later = time.monotonic() + ttl + 0.01
    monkeypatch.setattr("app.security.time.monotonic", lambda: later)
    problem(await _me(bank, tokens), 401, "invalid_token")


async def _revoke_all_behind_the_apps_back(database) -> None:
    """What another worker's logout, or an admin disabling the user, writes."""
    async with database.session() as db:
        await db.execute(update(RefreshToken).values(revoked_at=datetime.now(UTC)))
        await db.commit()


async def test_one_read_of_the_revocation_feed_serves_every_session(bank, monkeypatch):
    """The session check costs the hot path nothing per session: each process reads
    which sessions were revoked once per interval, whatever the number of sessions."""
    await _register(bank, "tove")
    sessions = [await bank.token("tove", PASSWORD) for _ in range(5)]
    reads = 0
    original = bank.app.state.security.revoked_sessions.learn

    def counting(*args, **kwargs):
        nonlocal reads
        reads += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(bank.app.state.security.revoked_sessions, "learn", counting)
    # Within one interval (the clock held still: on a busy machine 15 requests may straddle
    # the end of one, and the next interval rightly reads again).
    now = time.monotonic()
    monkeypatch.setattr("app.security.time.monotonic", lambda: now)
    for tokens in sessions * 3:
        assert (await _me(bank, tokens)).status_code == 200
    assert reads <= 1
