"""Operations (issue 9): Prometheus metrics at /metrics and JSON request logs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from app.main import create_app
from app.models import Job, ScoreQueue
from app.settings import Settings
from tests.helpers import problem, register_without_kyc
from tests.ledger_helpers import deposit, funded_account, new_key, open_account, transfer

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def test_requests_are_counted_and_timed_by_route_template(client):
    await client.get("/api/accounts/4000123456789010")
    await client.get("/api/accounts/4000123456789028/")
    await client.get("/no/such/page/12345")
    samples = await scrape(client)

    route = {"route": "/api/accounts/{account_number}", "method": "GET", "status": "401"}
    assert value(samples, "bank_http_requests_total", **route) == 2
    assert value(samples, "bank_http_request_duration_seconds_count", **route) == 2
    assert value(samples, "bank_http_request_duration_seconds_bucket", le="+Inf", **route) == 2
    assert value(samples, "bank_http_request_duration_seconds_sum", **route) > 0
    unmatched = {"route": "unmatched", "method": "GET", "status": "404"}
    assert value(samples, "bank_http_requests_total", **unmatched) == 1
    # Raw paths never become labels: the series stay bounded.
    labels = {v for _name, label_set in samples for _k, v in label_set}
    assert not any("4000123456789" in v or "12345" in v for v in labels)


async def test_a_transfer_is_counted_with_its_outcome(bank):
    _customer, headers = await bank.customer()
    source = (await open_account(bank.client, headers))["account_number"]
    target = (await open_account(bank.client, headers, "savings"))["account_number"]
    assert (await deposit(bank.client, headers, source, "100.00")).status_code == 201
    key = new_key()
    first = await transfer(bank.client, headers, source, target, "40.00", key=key)
    assert first.status_code == 201, first.text
    again = await transfer(bank.client, headers, source, target, "40.00", key=key)
    assert again.headers.get("idempotent-replayed") == "true"
    too_much = await transfer(bank.client, headers, source, target, "1000.00")
    assert too_much.status_code == 422, too_much.text

    samples = await scrape(bank.client)
    money = "bank_money_movements_total"
    assert value(samples, money, kind="deposit", outcome="completed") == 1
    assert value(samples, money, kind="transfer", outcome="completed") == 1
    assert value(samples, money, kind="transfer", outcome="replayed") == 1
    assert value(samples, money, kind="transfer", outcome="rejected") == 1
    assert value(samples, money, kind="withdrawal", outcome="completed") is None


async def test_job_lag_and_queue_depth_are_read_at_scrape_time(app, client, database):
    idle = await scrape(client)
    assert value(idle, "bank_jobs", state="queued") == 0
    assert value(idle, "bank_job_lag_seconds") == 0

    # A KYC job that a crash left queued five minutes ago, and nobody has run since.
    registration = await register_without_kyc(app)
    async with database.session() as db, db.begin():
        five_minutes_ago = datetime.now(UTC) - timedelta(minutes=5)
        await db.execute(
            update(Job).where(Job.id == registration.job_id).values(run_after=five_minutes_ago)
        )
    samples = await scrape(client)
    assert value(samples, "bank_jobs", state="queued") == 1
    assert value(samples, "bank_jobs", state="failed") == 0
    assert 300 <= value(samples, "bank_job_lag_seconds") < 360  # type: ignore[operator]


async def test_scoring_queue_depth_and_lag_are_read_at_scrape_time(app, bank, database):
    idle = await scrape(bank.client)
    assert value(idle, "bank_fraud_scoring_queued") == 0
    assert value(idle, "bank_fraud_scoring_lag_seconds") == 0
    _, _headers, _number = await funded_account(bank, "10.00")  # one deposit, queued
    two_minutes_ago = datetime.now(UTC) - timedelta(minutes=2)
    async with database.session() as db, db.begin():
        await db.execute(update(ScoreQueue).values(created_at=two_minutes_ago))
    samples = await scrape(bank.client)
    assert value(samples, "bank_fraud_scoring_queued") == 1
    assert 120 <= value(samples, "bank_fraud_scoring_lag_seconds") < 180  # type: ignore[operator]
    await app.state.scorer.drain()
    assert value(await scrape(bank.client), "bank_fraud_scoring_queued") == 0


async def test_connection_pool_use_is_exposed(client, settings):
    samples = await scrape(client)
    assert value(samples, "bank_db_pool_size") == settings.db_pool_size
    assert value(samples, "bank_db_pool_checked_out") == 0


async def test_metrics_are_served_but_stay_out_of_the_api_schema(client):
    assert (await client.get("/metrics")).status_code == 200
    schema = (await client.get("/openapi.json")).json()
    assert "/metrics" not in schema["paths"]


@pytest.mark.settings(metrics_enabled=False)
async def test_metrics_can_be_switched_off(client, settings):
    problem(await client.get("/metrics"), 404, "not_found")
    enabled = create_app(settings.model_copy(update={"metrics_enabled": True}))
    try:
        transport = httpx.ASGITransport(app=enabled)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as other:
            assert (await other.get("/metrics")).status_code == 200
    finally:
        await enabled.state.database.dispose()


def _json_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


@pytest.mark.settings(log_json=True)
async def test_each_request_writes_one_json_line_without_secrets(bank, capsys):
    _customer, headers = await bank.customer()
    token = headers["Authorization"].removeprefix("Bearer ")
    capsys.readouterr()
    me = await bank.client.get("/api/auth/me", headers={**headers, "X-Request-ID": "req-obs-1"})
    assert me.status_code == 200

    output = capsys.readouterr().out
    lines = [line for line in _json_lines(output) if line["logger"] == "app.access"]
    assert len(lines) == 1, output
    line = lines[0]
    assert line["request_id"] == "req-obs-1"
    assert line["method"] == "GET"
    assert line["route"] == "/api/auth/me"
    assert line["status"] == 200
    assert line["client_ip"] == "203.0.113.7"
    assert str(line["user_id"]) == me.json()["user_id"]
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] > 0
    assert token not in output and "Bearer" not in output


async def test_request_logs_are_off_by_default_outside_production(client, capsys, caplog):
    assert Settings(_env_file=None, env="production").json_logs
    assert not Settings(_env_file=None, env="development").json_logs
    assert Settings(_env_file=None, env="production", log_json=False).json_logs is False
    with caplog.at_level("INFO"):
        await client.get("/health/live")
    assert not [r for r in caplog.records if r.name == "app.access"]
    assert not _json_lines(capsys.readouterr().out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (local test server)
        return response.read().decode()


def _serve_two_workers(settings: Settings) -> None:
    metrics_dir = settings.data_dir / "metrics"
    metrics_dir.mkdir(parents=True, exist_ok=True)
    stale = metrics_dir / "counter_999999.db"
    stale.write_bytes(b"left over from an earlier run")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        key: item
        for key, item in os.environ.items()
        if not key.startswith("BANK_") and key != "PROMETHEUS_MULTIPROC_DIR"
    }
    env |= {
        "BANK_ENV": "test",
        "BANK_DATABASE_URL": settings.db_url,
        "BANK_DATA_DIR": str(settings.data_dir),
        "BANK_JWT_SECRET": str(settings.jwt_secret),
        "BANK_PII_SECRET": str(settings.pii_secret),
    }
    server = subprocess.Popen(
        [Path(sys.executable).with_name("bank"), "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60

    def until(condition: Any, what: str) -> None:
        while not condition():
            assert server.poll() is None, "bank serve exited"
            assert time.monotonic() < deadline, what
            time.sleep(0.1)

    def serving() -> bool:
        try:
            _get(f"{base}/health/live")
        except OSError:
            return False
        return True

    live = {"route": "/health/live", "method": "GET", "status": "200"}
    try:
        until(serving, "bank serve did not start")
        assert not stale.exists()
        # Each worker adds its pool to the live sum as soon as it starts.
        until(
            lambda: value(parse(_get(f"{base}/metrics")), "bank_db_pool_size") == 2 * 10,
            "the second worker did not start",
        )
        for _ in range(19):  # a new connection each: the kernel spreads them over workers
            _get(f"{base}/health/live")
        # Whichever worker answers a scrape sees every worker's counts.
        for _ in range(4):
            until(
                lambda: (
                    value(parse(_get(f"{base}/metrics")), "bank_http_requests_total", **live) == 20
                ),
                "the requests of both workers did not add up",
            )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            raise
    # Workers that stopped take their live gauges with them.
    assert not list(metrics_dir.glob("gauge_livesum_*.db"))


async def test_serve_with_two_workers_adds_up_their_metrics(settings):
    await asyncio.to_thread(_serve_two_workers, settings)
