"""Targets of issue 9 (and of the product, loans and audit scenarios), the markdown table
and the chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _setting(
    results: dict[str, Any], engine: str, workers: int, concurrency: int
) -> dict[str, Any] | None:
    for run in results["engines"].get(engine, {}).get("runs", []):
        if run["workers"] == workers:
            for s in run["settings"]:
                if s["concurrency"] == concurrency:
                    return s
    return None


def _run(results: dict[str, Any], engine: str, workers: int) -> dict[str, Any] | None:
    for run in results["engines"].get(engine, {}).get("runs", []):
        if run["workers"] == workers:
            return run
    return None


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = []

    def add(name: str, value: Any, limit: str, ok: bool) -> None:
        targets.append({"target": name, "value": value, "limit": limit, "pass": bool(ok)})

    for engine, workers, share, p99_limit in (("sqlite", 2, 0.5, 50.0), ("postgres", 4, 0.4, 80.0)):
        s = _setting(results, engine, workers, 32)
        if s is None:
            continue
        t, f = s["transfers"], s["framework_ceiling"]
        ratio = t["per_second"] / f["per_second"] if f["per_second"] else 0.0
        label = f"{engine} {workers}w c=32"
        add(
            f"{label}: transfers/s vs framework ceiling",
            round(ratio, 3),
            f">= {share}",
            ratio >= share,
        )
        add(f"{label}: p99 ms", t["p99_ms"], f"<= {p99_limit}", t["p99_ms"] <= p99_limit)
        if engine == "sqlite":
            add(f"{label}: transfers/s", t["per_second"], ">= 1000", t["per_second"] >= 1000)
    for engine, data in results["engines"].items():
        for run in data["runs"]:
            label = f"{engine} {run['workers']}w"
            fives = sum(s["transfers"]["errors_5xx"] for s in run["settings"])
            add(f"{label}: 5xx responses", fives, "== 0", fives == 0)
            books = run["books"]
            add(
                f"{label}: books conserved and verified",
                books["conserved"] and books["bank_verify"],
                "true",
                books["conserved"] and books["bank_verify"],
            )
            add(f"{label}: cold start s", run["ready_s"], "<= 3", run["ready_s"] <= 3)
            if "hot_accounts" in run:
                hot = run["hot_accounts"]
                add(
                    f"{label}: hot accounts c=128 5xx",
                    hot["errors_5xx"],
                    "== 0",
                    hot["errors_5xx"] == 0,
                )
    scale = results.get("scale")
    if scale:
        for item in scale.get("targets", []):
            targets.append(item)
    if results.get("product"):
        from bench import product

        targets += product.targets(results["product"])
    if results.get("loans"):
        from bench import loans

        targets += loans.targets(results["loans"])
    if results.get("audit"):
        from bench import audit_books

        targets += audit_books.targets(results["audit"])
    return targets


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"\n## Benchmark {results['date']} ({results['machine']['cpus']} CPUs, "
        f"Python {results['machine']['python']})",
        "",
        f"Raw ceiling (stdlib sqlite3, same transaction shape): "
        f"{results['raw_ceiling']['sqlite_full_per_s']:.0f}/s synchronous=FULL, "
        f"{results['raw_ceiling']['sqlite_normal_per_s']:.0f}/s NORMAL.",
        _pgbench_line(results),
        "",
        "| engine | workers | clients | transfers/s | p50 ms | p95 ms | p99 ms | max ms "
        "| 5xx | /auth/me per s | vs framework | vs raw (sqlite3 / pgbench) | client CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for engine, data in results["engines"].items():
        for run in data["runs"]:
            for s in run["settings"]:
                t, f = s["transfers"], s["framework_ceiling"]
                ratio = t["per_second"] / f["per_second"] if f["per_second"] else 0
                raw = raw_ceiling(results, engine, s["concurrency"])
                vs_raw = f"{t['per_second'] / raw:.2f}" if raw else "n/a"
                lines.append(
                    f"| {engine} | {run['workers']} | {s['concurrency']} | {t['per_second']:.0f} "
                    f"| {t['p50_ms']:.1f} | {t['p95_ms']:.1f} | {t['p99_ms']:.1f} "
                    f"| {t['max_ms']:.0f} | {t['errors_5xx']} | {f['per_second']:.0f} "
                    f"| {ratio:.2f} | {vs_raw} "
                    f"| {t['client_cpu_share']:.0%} |"
                )
            if "hot_accounts" in run:
                hot = run["hot_accounts"]
                lines.append(
                    f"| {engine} hot pair | {run['workers']} | 128 | {hot['per_second']:.0f} "
                    f"| {hot['p50_ms']:.1f} | {hot['p95_ms']:.1f} | {hot['p99_ms']:.1f} "
                    f"| {hot['max_ms']:.0f} | {hot['errors_5xx']} | | | | "
                    f"{hot['client_cpu_share']:.0%} |"
                )
    scale = results.get("scale")
    if scale:
        lines += ["", "| scale measurement | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in scale.get("measurements", {}).items()]
    if results.get("product"):
        from bench import product

        lines += product.markdown(results["product"])
    if results.get("loans"):
        from bench import loans

        lines += loans.markdown(results["loans"])
    if results.get("audit"):
        from bench import audit_books

        lines += audit_books.markdown(results["audit"])
    lines += ["", "| target | value | limit | result |", "|---|---|---|---|"]
    lines += [
        f"| {t['target']} | {t['value']} | {t['limit']} | {'pass' if t['pass'] else 'FAIL'} |"
        for t in results["targets"]
    ]
    return "\n".join(lines)


def raw_ceiling(results: dict[str, Any], engine: str, concurrency: int) -> float | None:
    """The storage's own ceiling that an engine's transfers are compared with: the stdlib
    sqlite3 loop for SQLite, pgbench at the same client count for PostgreSQL."""
    raw = results["raw_ceiling"]
    if engine == "sqlite":
        return raw["sqlite_full_per_s"]
    return raw.get("postgres_pgbench_tps", {}).get(str(concurrency))


def _pgbench_line(results: dict[str, Any]) -> str:
    tps = results["raw_ceiling"].get("postgres_pgbench_tps")
    if not tps:
        return ""
    counts = ", ".join(f"{v:.0f} tps at {c} clients" for c, v in tps.items())
    return f"PostgreSQL ceiling (pgbench TPC-B-like, scratch database): {counts}."


def chart(results: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for engine, data in results["engines"].items():
        for run in data["runs"]:
            xs = [s["concurrency"] for s in run["settings"]]
            label = f"{engine} {run['workers']}w"
            left.plot(
                xs, [s["transfers"]["per_second"] for s in run["settings"]], "o-", label=label
            )
            right.plot(xs, [s["transfers"]["p99_ms"] for s in run["settings"]], "o-", label=label)
    for axis, title in ((left, "transfers/s"), (right, "p99 latency (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrent clients")
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
        axis.legend()
    fig.suptitle(f"Transfers over HTTP, {results['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
