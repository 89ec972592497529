"""The package as a new user installs it: build a wheel in a temporary folder, install it
(not editable) into a fresh virtual environment, then, from an empty folder with nothing
of the source tree around, `bank migrate`, `bank serve` and `GET /health/ready` -> 200.
Also: the wheel carries the migrations and Swagger UI's files, and none of the tests."""

from __future__ import annotations

import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from bench.server import ROOT, Server
from checks.live import run_step

MUST_SHIP = (
    "app/migrations/env.py",
    "app/migrations/script.py.mako",
    "app/data/watchlist.txt",
    "app/data/fraud_rules.toml",
    "app/data/loan_products.toml",
)
MUST_NOT_SHIP = ("tests/", "bench/", "checks/")


def check_contents(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    missing = [name for name in MUST_SHIP if name not in names]
    if not any(name.startswith("app/migrations/versions/") for name in names):
        missing.append("app/migrations/versions/*")
    stray = [name for name in names if name.startswith(MUST_NOT_SHIP)]
    if missing or stray:
        raise SystemExit(f"wheel contents: missing {missing}, should not ship {stray[:5]}")
    print(f"  ok: {wheel.name} holds {len(names)} files, migrations included, no tests")


def get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 (loopback)
        return answer.status


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bank-package-") as tmp:
        work = Path(tmp)
        print("== build the wheel")
        run_step(
            [sys.executable, "-m", "build", "--wheel", "--outdir", work / "dist", ROOT], cwd=work
        )
        (wheel,) = (work / "dist").glob("bank-*.whl")
        check_contents(wheel)

        print("== install it into a fresh virtual environment")
        venv = work / "venv"
        run_step([sys.executable, "-m", "venv", venv], cwd=work)
        run_step([venv / "bin" / "pip", "install", "--quiet", wheel], cwd=work)

        print("== migrate and serve from an empty folder")
        empty = work / "empty"
        empty.mkdir()
        env = {"BANK_DATA_DIR": str(work / "data"), "PATH": str(venv / "bin")}
        bank = str(venv / "bin" / "bank")
        run_step([bank, "migrate"], cwd=empty, env=env)
        with Server(env, 1, work / "server.log", bank=bank, cwd=empty) as server:
            for path in ("/health/ready", "/docs", "/redoc", "/openapi.json"):
                status = get(server.base_url + path)
                if status != 200:
                    raise SystemExit(f"GET {path} -> {status}")
                print(f"  ok: GET {path} -> 200")
        leftovers = sorted(path.name for path in empty.iterdir())
        if leftovers:
            raise SystemExit(f"the server wrote into the working folder: {leftovers}")
    print("package test passed")


if __name__ == "__main__":
    main()
