"""Audit coverage (issue 21): every state-changing endpoint names the audit actions it
records, in the OpenAPI schema (`x-audit-actions`), and each named action is one the code
records. A new POST, PATCH, PUT or DELETE without them fails here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from app.main import create_app

APP = Path(__file__).resolve().parent.parent / "app"
ACTION = re.compile(r"^[a-z_]+\.[a-z_]+$")


def recorded_actions() -> tuple[set[str], set[str]]:
    """Every action string outside the routers (whose `audited(...)` only name them), and
    the prefixes of those built with an f-string (`f"transaction.{kind}"`)."""
    exact: set[str] = set()
    prefixes: set[str] = set()
    for path in APP.rglob("*.py"):
        if path.is_relative_to(APP / "routers"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if ACTION.match(node.value):
                    exact.add(node.value)
            elif isinstance(node, ast.JoinedStr) and node.values:
                first = node.values[0]
                if isinstance(first, ast.Constant) and re.match(r"^[a-z_]+\.$", str(first.value)):
                    prefixes.add(str(first.value))
    return exact, prefixes


def test_every_state_changing_endpoint_names_audit_actions_the_code_records(tmp_path):
    from tests.conftest import base_settings

    schema = create_app(base_settings(tmp_path, None)).openapi()
    exact, prefixes = recorded_actions()
    missing, unknown = [], []
    for path, methods in schema["paths"].items():
        for method, op in methods.items():
            if method not in ("post", "patch", "put", "delete"):
                continue
            actions = op.get("x-audit-actions")
            if actions is None or (not actions and not op.get("x-not-audited")):
                missing.append(f"{method.upper()} {path}")
                continue
            for action in actions:
                known = action in exact or any(action.startswith(p) for p in prefixes)
                if not known:
                    unknown.append(f"{method.upper()} {path}: {action}")
    assert not missing, f"no audit action registered: {missing}"
    assert not unknown, f"named but never recorded: {unknown}"
    assert exact  # the walk found the actions at all


PUBLIC_WRITES = {
    "/api/auth/token",
    "/api/auth/refresh",
    "/api/auth/logout",
    "/api/auth/password",  # any user changes their own password
    "/api/customers/register",
    "/api/loans/quote",
}


def _concrete(path: str) -> str:
    """A path template with made-up ids that pass each parameter's pattern."""
    samples = {
        "{account_number}": "100000000016",
        "{item_id}": "loan_approval:1",
    }
    for name, value in samples.items():
        path = path.replace(name, value)
    return re.sub(r"\{[a-z_]+\}", "1", path)


async def test_an_auditor_writes_nothing_and_a_customer_reaches_no_staff_endpoint(bank, app):
    schema = app.openapi()
    auditor = await bank.staff("auditor")
    customer = (await bank.customer())[1]
    writes, staff_reads = [], []
    for path, methods in schema["paths"].items():
        for method in methods:
            if method in ("post", "patch", "put", "delete") and path not in PUBLIC_WRITES:
                writes.append((method, path))
            if path.startswith(("/api/admin", "/api/audit")):
                staff_reads.append((method, path))
    assert len(writes) > 20 and len(staff_reads) > 30
    for method, path in writes:
        response = await bank.client.request(method, _concrete(path), json={}, headers=auditor)
        assert response.status_code == 403, (method, path, response.status_code)
    for method, path in staff_reads:
        response = await bank.client.request(method, _concrete(path), json={}, headers=customer)
        assert response.status_code == 403, (method, path, response.status_code)
