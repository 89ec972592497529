"""A/B of two builds of the server, side by side: each serves its own copy of one seeded
database, and short bursts of transfers alternate between them (A B B A …), so this
machine's drift (±25 % within minutes) falls on both alike instead of on whichever ran
second. The books of both are verified afterwards.

    git worktree add /tmp/base <commit> && python -m venv /tmp/base/.venv \\
        && /tmp/base/.venv/bin/pip install -e '/tmp/base[dev]'
    python -m bench.ab --a /tmp/base/.venv/bin/bank --engine sqlite    # B: this checkout
    python -m bench.ab --a /tmp/base/.venv/bin/bank --engine postgres
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench import server
from bench.__main__ import OPENING_MINOR, Run, login_all, transfer_factory
from bench.loadgen import run_load
from bench.seed import seed_customers


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    parser.add_argument("--a", required=True, help="the `bank` executable of build A")
    parser.add_argument("--b", default=server.BANK, help="build B's (default: this one)")
    parser.add_argument(
        "--a-env", action="append", default=[], metavar="NAME=VALUE", help="for build A only"
    )
    parser.add_argument(
        "--b-env", action="append", default=[], metavar="NAME=VALUE", help="for build B only"
    )
    parser.add_argument("--engine", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--workers", type=int, help="default: 2 (SQLite), 4 (PostgreSQL)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=6, help="bursts per build")
    parser.add_argument("--burst", type=float, default=6.0, help="seconds")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "BANK_BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
        ),
    )
    args = parser.parse_args(argv)
    workers = args.workers or (2 if args.engine == "sqlite" else 4)
    builds = {"A": args.a, "B": args.b}
    workdir = Path(tempfile.mkdtemp(prefix="bank-ab-"))
    template = Run(args.engine, 0, args.pg_url, workdir)
    runs = {
        "A": Run(args.engine, 1, args.pg_url, workdir),
        "B": Run(args.engine, 2, args.pg_url, workdir),
    }
    try:
        template.create()
        seeded = asyncio.run(
            seed_customers(
                template.settings, count=100, accounts_each=1, opening_minor=OPENING_MINOR
            )
        )
        for run in runs.values():
            run.create_from(template)
        bursts = _alternate(builds, runs, seeded, workers, args)
        summary = {
            label: {
                "transfers_per_s": [b["per_second"] for b in found],
                "mean_per_s": round(statistics.mean(b["per_second"] for b in found), 1),
                "median_p99_ms": statistics.median(b["p99_ms"] for b in found),
                "errors_5xx": sum(b["errors_5xx"] for b in found),
                "books_verified": _verified(builds[label], runs[label]),
            }
            for label, found in bursts.items()
        }
    finally:
        for run in (*runs.values(), template):
            run.drop()
        shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "engine": args.engine,
        "workers": workers,
        "builds": builds,
        "env": {"A": args.a_env, "B": args.b_env},
        **summary,
    }
    print(json.dumps(report, indent=2))
    a, b = summary["A"]["mean_per_s"], summary["B"]["mean_per_s"]
    print(
        f"B / A: transfers/s {b / a:.3f}, median p99 "
        f"{summary['B']['median_p99_ms'] / summary['A']['median_p99_ms']:.3f}"
    )


def _alternate(
    builds: dict[str, str],
    runs: dict[str, Run],
    seeded: list[Any],
    workers: int,
    args: argparse.Namespace,
) -> dict[str, list[dict[str, Any]]]:
    servers = {}
    try:
        for label, bank in builds.items():
            run = runs[label]
            # Not from a source tree: uvicorn puts its working folder first on the path, so
            # the worker processes of build A would import this checkout's `app`.
            extra = dict(item.split("=", 1) for item in getattr(args, f"{label.lower()}_env"))
            servers[label] = server.Server(
                {**run.env, **extra},
                workers,
                run.data_dir / "server.log",
                bank=bank,
                cwd=run.data_dir,
            )
            servers[label].__enter__()
        # Each build logs its users in on its own copy: an access token names its session,
        # which lives in that copy's database.
        tokens = {label: login_all(running.base_url, seeded) for label, running in servers.items()}
        found: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
        for n in range(args.rounds):
            for label in ("A", "B") if n % 2 == 0 else ("B", "A"):
                port = servers[label].port
                make = transfer_factory(tokens[label], seeded, f"127.0.0.1:{port}")
                result = asyncio.run(
                    run_load(
                        "127.0.0.1",
                        port,
                        concurrency=args.concurrency,
                        duration_s=args.burst,
                        make_request=make,
                        ok_status=201,
                    )
                )
                found[label].append(result.summary())
                print(label, found[label][-1]["per_second"], found[label][-1]["p99_ms"], flush=True)
        return found
    finally:
        for running in servers.values():
            running.__exit__(None, None, None)


def _verified(bank: str, run: Run) -> bool:
    done = subprocess.run(
        [bank, "verify"], env={**os.environ, **run.env}, capture_output=True, check=False
    )
    return done.returncode == 0


if __name__ == "__main__":
    main()
