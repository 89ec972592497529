"""The password policy of API.md §3, shared by registration, staff creation and change."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from app.errors import WeakPassword

MIN_LENGTH = 10
MAX_LENGTH = 128
# The lengths the policy allows, for the OpenAPI schema; the policy itself answers with
# `weak_password` (and names the rule) rather than a generic length error.
PASSWORD_SCHEMA = {"minLength": MIN_LENGTH, "maxLength": MAX_LENGTH}
# The most bytes a password the policy allows can take in UTF-8.
MAX_PASSWORD_BYTES = 4 * MAX_LENGTH
COMMON_PASSWORDS_FILE = Path(__file__).resolve().parent / "data" / "common_passwords.txt"


@cache
def common_passwords() -> frozenset[str]:
    lines = COMMON_PASSWORDS_FILE.read_text().splitlines()
    entries = (line.strip().lower() for line in lines if not line.startswith("#"))
    return frozenset(entry for entry in entries if entry)


def password_problem(password: str, *, username: str = "", email: str = "") -> str | None:
    if len(password) < MIN_LENGTH:
        return f"must be at least {MIN_LENGTH} characters long"
    if len(password) > MAX_LENGTH:
        return f"must be at most {MAX_LENGTH} characters long"
    lowered = password.lower()
    if username and lowered == username.lower():
        return "must not be the username"
    if email and (lowered == email.lower() or lowered == email.split("@")[0].lower()):
        return "must not be the email address"
    if lowered in common_passwords():
        return "is too common"
    return None


def check_password_policy(password: str, *, username: str, email: str, field: str) -> None:
    if problem := password_problem(password, username=username, email=email):
        raise WeakPassword(f"Password {problem}.", field=field)
