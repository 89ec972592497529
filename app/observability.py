"""What operators see: Prometheus metrics at GET /metrics and one JSON log line per request.

Every request is reported once, by the edge middleware (`app.problems.EdgeMiddleware`),
after the app has answered: by then routing has put the matched route in the scope, so
the route *template* (`/api/accounts/{account_number}`) labels the metrics, never the raw
path, and the number of time series stays bounded. Money movements are counted from the
same report (route template + status), so no service has to know about metrics.

Values read from elsewhere (the job queue, the connection pool) are computed when
Prometheus scrapes, not per request.

`bank serve --workers N` runs N processes; prometheus_client's multiprocess mode then
keeps each process's values in files under `<data dir>/metrics` (wiped at start) and
/metrics, answered by whichever worker gets the scrape, adds them up.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import Scope

from app.context import caller_var, request_id_var
from app.db import Database
from app.services import jobs, scoring
from app.settings import Settings

log = logging.getLogger(__name__)
access_log = logging.getLogger("app.access")

UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
MONEY_MOVEMENTS = {
    ("POST", "/api/transactions/transfer"): "transfer",
    ("POST", "/api/transactions/deposit"): "deposit",
    ("POST", "/api/transactions/withdrawal"): "withdrawal",
}
REPLAYED_HEADER = b"idempotent-replayed"
# Seconds; the money path is expected in the low milliseconds, statements and KYC
# uploads can take a second or more.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
POOL_SAMPLE_SECONDS = 5.0

# No `*_created` series next to every counter and histogram: they double the series for
# a timestamp nobody graphs, and multiprocess mode leaves them out anyway.
disable_created_metrics()


def money_outcome(status: int) -> str:
    """completed (2xx; `replayed` when the answer is an idempotent replay), rejected
    (4xx: refused by a rule, invalid, unauthenticated), failed (5xx, or no answer)."""
    if status >= 500 or status == 0:
        return "failed"
    return "rejected" if status >= 400 else "completed"


class _JobQueueCollector(Collector):
    """The job queue as of the last scrape (set by `Metrics.exposition` just before)."""

    def __init__(self) -> None:
        self.stats: jobs.QueueStats | None = None
        self.scoring: scoring.ScoringQueue | None = None

    def describe(self) -> Iterable[Any]:
        return ()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = self.stats
        if stats is None:  # the database did not answer; leave the series out
            return
        by_state = GaugeMetricFamily(
            "bank_jobs", "Background jobs by state (done jobs are not counted)", labels=["state"]
        )
        for state, count in stats.by_state.items():
            by_state.add_metric([state], count)
        yield by_state
        yield GaugeMetricFamily(
            "bank_job_lag_seconds",
            "Age of the oldest job that is due and not being run (0 when none)",
            value=stats.oldest_due_seconds,
        )
        if self.scoring is not None:
            yield GaugeMetricFamily(
                "bank_fraud_scoring_queued",
                "Movements committed and not yet scored",
                value=self.scoring.queued,
            )
            yield GaugeMetricFamily(
                "bank_fraud_scoring_lag_seconds",
                "Age of the oldest movement waiting for its fraud score (0 when none)",
                value=self.scoring.oldest_seconds,
            )


class Metrics:
    """The app's metrics. Per-request work is one dict lookup for pre-bound label
    children, a counter increment and a histogram observation."""

    def __init__(self, database: Database, *, multiproc_dir: Path | None) -> None:
        self.database = database
        self.multiproc_dir = multiproc_dir
        own = CollectorRegistry()
        labels = ("route", "method", "status")
        self.requests = Counter(
            "bank_http_requests", "HTTP requests answered", labels, registry=own
        )
        self.latency = Histogram(
            "bank_http_request_duration_seconds",
            "Time to answer an HTTP request, until the last body byte is handed to the server",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=own,
        )
        self.money = Counter(
            "bank_money_movements",
            "Money movements requested over HTTP, by outcome",
            ("kind", "outcome"),
            registry=own,
        )
        self.pool_checked_out = Gauge(
            "bank_db_pool_checked_out",
            "Database connections in use (summed over the live worker processes)",
            registry=own,
            multiprocess_mode="livesum",
        )
        self.pool_size = Gauge(
            "bank_db_pool_size",
            "Connections each pool keeps open (summed over the live worker processes)",
            registry=own,
            multiprocess_mode="livesum",
        )
        self.job_queue = _JobQueueCollector()
        if multiproc_dir is None:
            ProcessCollector(registry=own)
            own.register(self.job_queue)
            self.exposed = own
        else:
            # Each worker writes its values to files; the scraped worker reads them all.
            # The job queue is the same database for everyone: read once, at scrape time.
            self.exposed = CollectorRegistry()
            MultiProcessCollector(self.exposed, path=str(multiproc_dir))
            self.exposed.register(self.job_queue)
        self._children: dict[tuple[str, str, int], tuple[Any, Any, Any, Any]] = {}
        self.sample_pool()

    def observe(
        self,
        route: str,
        method: str,
        status: int,
        seconds: float,
        response_headers: Sequence[tuple[bytes, bytes]],
    ) -> None:
        children = self._children.get((route, method, status))
        if children is None:
            children = self._bind(route, method, status)
        requests, latency, money, replayed = children
        requests.inc()
        latency.observe(seconds)
        if money is not None:
            if replayed is not None and any(k == REPLAYED_HEADER for k, _ in response_headers):
                replayed.inc()
            else:
                money.inc()

    def _bind(self, route: str, method: str, status: int) -> tuple[Any, Any, Any, Any]:
        known = method in METHODS
        label_method = method if known else "other"
        kind = MONEY_MOVEMENTS.get((method, route))
        children = (
            self.requests.labels(route, label_method, str(status)),
            self.latency.labels(route, label_method, str(status)),
            self.money.labels(kind, money_outcome(status)) if kind else None,
            self.money.labels(kind, "replayed") if kind and 200 <= status < 300 else None,
        )
        # Any method string a client sends would otherwise grow this cache without end.
        if known:
            self._children[(route, method, status)] = children
        return children

    def sample_pool(self) -> None:
        pool = self.database.engine.pool
        checked_out = getattr(pool, "checkedout", None)
        size = getattr(pool, "size", None)
        if callable(checked_out) and callable(size):
            self.pool_checked_out.set(checked_out())
            self.pool_size.set(size())

    async def sample_pool_forever(self) -> None:
        """Multiprocess mode: keep this worker's pool figures fresh for whichever worker
        answers the scrape."""
        while True:
            self.sample_pool()
            await asyncio.sleep(POOL_SAMPLE_SECONDS)

    async def exposition(self) -> bytes:
        try:
            self.job_queue.stats = await jobs.queue_stats(self.database)
            self.job_queue.scoring = await scoring.queue_stats(self.database)
        except Exception:
            log.warning("job queue statistics unavailable", exc_info=True)
            self.job_queue.stats = None
        self.sample_pool()
        # Reading every worker's files is blocking I/O: keep it off the event loop.
        return await anyio.to_thread.run_sync(generate_latest, self.exposed)

    def forget_dead_workers(self) -> None:
        """Drop the live gauges of worker processes that are gone (a crash or a restart
        by the supervisor); their counters stay, as they should."""
        if self.multiproc_dir is None:
            return
        for path in glob.glob(str(self.multiproc_dir / "gauge_live*_*.db")):
            pid = path.rsplit("_", 1)[1].removesuffix(".db")
            if pid.isdigit() and not _alive(int(pid)):
                mark_process_dead(int(pid), str(self.multiproc_dir))

    def worker_stopped(self) -> None:
        if self.multiproc_dir is not None:
            mark_process_dead(os.getpid(), str(self.multiproc_dir))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, under another user
    return True


class RequestObserver:
    """What the edge middleware calls once per request, after the answer."""

    def __init__(
        self, metrics: Metrics | None, *, log_requests: bool, static_paths: Iterable[str]
    ) -> None:
        self.metrics = metrics
        self.log_requests = log_requests
        # Paths served by routes that leave no route in the scope (the docs pages) or
        # answered before routing (a 413 on the registration path): literal, so bounded.
        self.static_paths = frozenset(static_paths)

    def template(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is not None:
            # The route as declared; routers are included without a prefix of their own.
            return getattr(route, "path", UNMATCHED)
        path = scope["path"]
        return path if path in self.static_paths else UNMATCHED

    def request_done(
        self,
        scope: Scope,
        status: int,
        seconds: float,
        response_headers: Sequence[tuple[bytes, bytes]],
    ) -> None:
        route = self.template(scope)
        metrics = self.metrics
        if metrics is not None:
            metrics.observe(route, scope["method"], status, seconds, response_headers)
        if self.log_requests:
            caller = caller_var.get()
            client = scope.get("client")
            access_log.info(
                "request",
                extra={
                    "fields": {
                        "request_id": request_id_var.get(),
                        "method": scope["method"],
                        "route": route,
                        "status": status,
                        "duration_ms": round(seconds * 1000, 3),
                        "client_ip": client[0] if client else None,
                        "user_id": caller.user_id if caller is not None else None,
                    }
                },
            )


def build_metrics(settings: Settings, database: Database) -> Metrics | None:
    if not settings.metrics_enabled:
        return None
    multiproc_dir = settings.metrics_multiproc_dir
    if multiproc_dir is not None:
        multiproc_dir.mkdir(parents=True, exist_ok=True)
    return Metrics(database, multiproc_dir=multiproc_dir)


def request_observer(
    settings: Settings, metrics: Metrics | None, *, static_paths: Iterable[str]
) -> RequestObserver | None:
    """None when there is nothing to observe: the edge then does no extra work at all."""
    if metrics is None and not settings.json_logs:
        return None
    return RequestObserver(metrics, log_requests=settings.json_logs, static_paths=static_paths)


def literal_paths(routes: Iterable[BaseRoute]) -> list[str]:
    """The app's paths without parameters (included routers are not walked: their routes
    put themselves in the scope)."""
    paths = (getattr(route, "path", None) for route in routes)
    return [path for path in paths if path is not None and "{" not in path]


def metrics_endpoint(metrics: Metrics) -> Callable[[], Awaitable[Response]]:
    async def scrape() -> Response:
        return Response(await metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return scrape


@contextlib.asynccontextmanager
async def running(metrics: Metrics | None) -> AsyncIterator[None]:
    """The worker-lifetime part of metrics (lifespan of the app)."""
    if metrics is None or metrics.multiproc_dir is None:
        yield
        return
    metrics.forget_dead_workers()
    sampler = asyncio.create_task(metrics.sample_pool_forever(), name="metrics-pool-sampler")
    try:
        yield
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        metrics.worker_stopped()


# -- logs -------------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line. A record's `fields` (passed as `extra={"fields": …}`)
    are merged in; any record logged while a request runs carries its request id."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        elif (request_id := request_id_var.get()) is not None:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stdout is at the time (test runners swap it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(settings: Settings) -> None:
    """JSON lines on stdout for the `app` loggers when JSON logs are on (one handler per
    process, however many apps are built); the default text logging otherwise. Records
    still propagate, so a handler on the root logger (pytest's caplog) sees them too."""
    logger = logging.getLogger("app")
    logger.setLevel(logging.INFO)
    ours = [h for h in logger.handlers if isinstance(h.formatter, JsonFormatter)]
    if settings.json_logs and not ours:
        handler = _StdoutHandler()
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    elif not settings.json_logs:
        for handler in ours:
            logger.removeHandler(handler)


def server_log_config() -> dict[str, Any]:
    """uvicorn's own lines (start, stop, errors) as JSON too, so the output stays one JSON
    object per line; passed to uvicorn by `bank serve` when JSON logs are on."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            }
        },
        "loggers": {
            "uvicorn": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
        },
    }
