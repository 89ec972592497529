"""Run the Postman collection with newman against a fresh server.

`python -m checks.postman` starts `bank serve` on an empty database with the demo users
(checks.live.fresh_server), runs postman/core-banking.postman_collection.json with the
local environment, its `baseUrl` pointed at that server, and exits with newman's exit
code: non-zero on any failed assertion. newman runs in postman/ (`--working-dir`), so the
collection's form-data files (`fixtures/passport.pdf`, …) resolve. Install newman first
with `cd postman && npm ci` (the Makefile's `postman` target does both).
"""

from __future__ import annotations

import subprocess
import sys
import time

from bench.server import ROOT
from checks.live import fresh_server

POSTMAN = ROOT / "postman"
NEWMAN = POSTMAN / "node_modules" / ".bin" / "newman"
COLLECTION = POSTMAN / "core-banking.postman_collection.json"
ENVIRONMENT = POSTMAN / "local.postman_environment.json"


def newman_command(base_url: str) -> list[str]:
    return [
        str(NEWMAN),
        "run",
        str(COLLECTION),
        "--environment",
        str(ENVIRONMENT),
        "--env-var",
        f"baseUrl={base_url}",
        "--working-dir",
        str(POSTMAN),
        "--no-insecure-file-read",
        "--color",
        "off",
    ]


def main() -> int:
    if not NEWMAN.exists():
        print(f"newman is not installed: run `cd {POSTMAN} && npm ci`", file=sys.stderr)
        return 2
    started = time.perf_counter()
    with fresh_server() as server:
        print(f"postman: server ready at {server.base_url} in {server.ready_after_s:.1f} s")
        code = subprocess.run(newman_command(server.base_url), cwd=POSTMAN, check=False).returncode
    outcome = "passed" if code == 0 else f"FAILED (newman exit code {code})"
    print(f"postman: collection {outcome} in {time.perf_counter() - started:.1f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
