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
