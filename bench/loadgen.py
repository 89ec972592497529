"""A lean HTTP/1.1 load generator: keep-alive connections over asyncio streams, request
bytes built before the clock starts, one response parsed by status line and
Content-Length. It measures the server, not an HTTP client library: httpx spends more
CPU per request than the endpoints it would be timing, and client and server share the
machine's two cores."""

from __future__ import annotations

import asyncio
import random
import resource
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    concurrency: int
    duration_s: float
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    client_cpu_s: float = 0.0
    ok_status: int = 201

    @property
    def completed(self) -> int:
        return sum(self.statuses.values())

    @property
    def ok(self) -> int:
        return self.statuses.get(self.ok_status, 0)

    @property
    def throughput(self) -> float:
        return self.ok / self.duration_s if self.duration_s else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
        return ordered[index]

    def summary(self) -> dict[str, object]:
        return {
            "concurrency": self.concurrency,
            "duration_s": round(self.duration_s, 3),
            "requests": self.completed,
            "ok": self.ok,
            "per_second": round(self.throughput, 1),
            "p50_ms": round(self.percentile(50), 2),
            "p95_ms": round(self.percentile(95), 2),
            "p99_ms": round(self.percentile(99), 2),
            "max_ms": round(max(self.latencies_ms, default=0.0), 2),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors_5xx": sum(v for k, v in self.statuses.items() if k >= 500),
            "client_cpu_s": round(self.client_cpu_s, 3),
            "client_cpu_share": round(self.client_cpu_s / self.duration_s, 3)
            if self.duration_s
            else 0.0,
        }


def build_request(
    method: str, path: str, host: str, headers: dict[str, str], body: bytes = b""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: keep-alive"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
            break
    body = await reader.readexactly(length) if length else b""
    return status, body


async def run_load(
    host: str,
    port: int,
    *,
    concurrency: int,
    duration_s: float,
    make_request: Callable[[random.Random], bytes],
    ok_status: int,
    max_requests: int = 2_000_000,
    on_tick: Callable[[int], None] | None = None,
    seed: int = 7,
) -> LoadResult:
    """Closed loop: `concurrency` connections each send a request, wait for the answer,
    and send the next, until `duration_s` has passed (or max_requests were sent)."""
    result = LoadResult(concurrency=concurrency, duration_s=0.0, ok_status=ok_status)
    # One connection at a time, with a pause for the server to accept it: opened all at
    # once, the first uvicorn worker to wake accepted most of them, and a 2-worker run
    # measured one worker (the /auth/me ceiling swung between 3,100 and 5,500/s).
    connections = []
    for _ in range(concurrency):
        connections.append(await asyncio.open_connection(host, port))
        await asyncio.sleep(0.005)
    deadline = time.perf_counter() + duration_s
    sent = 0
    cpu_start = resource.getrusage(resource.RUSAGE_SELF)

    async def worker(index: int) -> None:
        nonlocal sent
        rng = random.Random(seed * 1000 + index)
        reader, writer = connections[index]
        try:
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                payload = make_request(rng)
                started = time.perf_counter()
                writer.write(payload)
                status, _ = await _read_response(reader)
                result.latencies_ms.append((time.perf_counter() - started) * 1000)
                result.statuses[status] += 1
                if on_tick is not None:
                    on_tick(1)
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.wait_for(
        asyncio.gather(*(worker(i) for i in range(concurrency))), timeout=duration_s + 60
    )
    result.duration_s = time.perf_counter() - started
    cpu_end = resource.getrusage(resource.RUSAGE_SELF)
    result.client_cpu_s = (cpu_end.ru_utime - cpu_start.ru_utime) + (
        cpu_end.ru_stime - cpu_start.ru_stime
    )
    return result
