"""The layout the README describes ("How the code is laid out"), checked against the code:
SQL text and engine differences live in the store (app/store) and the storage package
(app/db), services hold rules, and the layers import downwards only."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parent.parent / "app"
SQL_TEXT = re.compile(
    r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|WITH\s+\w+\s+AS)\b",
    re.IGNORECASE | re.DOTALL,
)
ENGINE_BRANCH = re.compile(r"\bis_sqlite\b|\bdialect\b|postgresql|sqlite")


def _modules(folder: str) -> list[Path]:
    return sorted((APP / folder).rglob("*.py"))


def _strings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        if id(node) not in docstrings
    ]


def _code(path: Path) -> str:
    """The module without comments and docstrings."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
        if docstring and isinstance(first.value.value, str):  # type: ignore[union-attr]
            body[0] = ast.Pass()  # type: ignore[index]
    return ast.unparse(tree)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("path", _modules("services") + _modules("routers"), ids=str)
def test_services_and_routers_hold_no_sql_text_and_no_engine_branch(path):
    assert not [s for s in _strings(path) if SQL_TEXT.search(s)], "SQL text: app/store"
    assert not ENGINE_BRANCH.search(_code(path)), "an engine branch: app/store or app/db"


@pytest.mark.parametrize("path", _modules("db"), ids=str)
def test_each_storage_module_stays_small(path):
    assert len(path.read_text().splitlines()) < 300


def test_driver_internals_are_touched_only_inside_app_db():
    private = re.compile(r"\._connection\b|_start_transaction|\._transaction\b|\._tx\b")
    drivers = re.compile(r"\b(aiosqlite|asyncpg|sqlite3)\b")
    for path in APP.rglob("*.py"):
        if path.is_relative_to(APP / "db"):
            continue
        code = _code(path)
        assert not private.search(code), path
        assert not [m for m in _imports(path) if drivers.match(m)], path


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("services", ("app.routers", "app.problems", "app.deps", "app.main", "fastapi")),
        ("store", ("app.services", "app.routers", "app.schemas", "app.context")),
        ("schemas", ("app.services", "app.store", "app.db")),
        ("db", ("app.services", "app.store", "app.routers", "app.schemas")),
    ],
)
def test_layers_import_downwards_only(layer, forbidden):
    for path in _modules(layer):
        wrong = [m for m in _imports(path) if m.startswith(forbidden)]
        assert not wrong, f"{path} imports {wrong}"
