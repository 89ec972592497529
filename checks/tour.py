"""The README's tour, run as written against a fresh `make run`-like server: its shell
blocks in one bash (each curl made to fail on an error answer), then its httpx snippet,
twice (it must be re-runnable). Only the address changes: http://localhost:8000 becomes
the test server's. Run from the repository root, as the README assumes.

    python -m checks.tour
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from bench.server import ROOT
from checks.live import fresh_server, run_step

README = ROOT / "README.md"
SECTION = re.compile(r"^## A tour with curl\n(.*?)(?=^## )", re.S | re.M)
BLOCK = re.compile(r"^```(sh|python)\n(.*?)^```", re.S | re.M)
ADDRESS = "http://localhost:8000"
# Each curl of the tour fails the run on a 4xx or 5xx answer, showing the body.
STRICT_CURL = 'set -euo pipefail\ncurl() { command curl --fail-with-body "$@"; }\n'


def tour_blocks(readme: Path = README) -> tuple[list[str], list[str]]:
    section = SECTION.search(readme.read_text())
    if section is None:
        raise SystemExit("README.md has no '## A tour with curl' section")
    shell, python = [], []
    for kind, code in BLOCK.findall(section.group(1)):
        (shell if kind == "sh" else python).append(code)
    if not shell or not python:
        raise SystemExit("the tour needs its shell blocks and its httpx snippet")
    return shell, python


def at(base_url: str, script: str) -> str:
    return script.replace(ADDRESS, base_url)


def main() -> None:
    shell, python = tour_blocks()
    with fresh_server() as server:
        print(f"== the README tour against {server.base_url}")
        output = run_step(
            ["bash"],
            cwd=ROOT,
            stdin=at(server.base_url, STRICT_CURL + "\n".join(shell)),
            timeout=120,
        )
        if '"status":"Active"' not in output.replace(" ", ""):
            raise SystemExit(f"the tour's customer never became Active:\n{output[-2000:]}")
        for attempt in (1, 2):
            printed = run_step(
                [sys.executable, "-"], cwd=ROOT, stdin=at(server.base_url, "\n".join(python))
            )
            if printed.strip() != "100.00":  # what the snippet says it prints
                raise SystemExit(f"the httpx snippet printed {printed!r} (run {attempt})")
    for leftover in ("statement.pdf",):
        (ROOT / leftover).unlink(missing_ok=True)
    print("the README tour runs as written")


if __name__ == "__main__":
    main()
