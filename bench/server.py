"""Start and stop a real `bank serve` on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BANK = str(Path(sys.executable).with_name("bank"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(
        self,
        env: dict[str, str],
        workers: int,
        log_path: Path,
        *,
        bank: str | None = None,
        cwd: Path = ROOT,
    ) -> None:
        self.env = {**os.environ, **env}
        self.bank = bank or BANK  # read now: bench.ab points BANK at another build
        self.cwd = cwd
        self.workers = workers
        self.port = free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_after_s = 0.0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        log = self.log_path.open("ab")
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [
                self.bank,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.cwd,
            start_new_session=True,
        )
        deadline = started + 60
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"bank serve exited early; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/health/ready", timeout=1) as r:  # noqa: S310
                    if r.status == 200:
                        self.ready_after_s = time.perf_counter() - started
                        # Every worker must be up, not just the first.
                        time.sleep(0.5 if self.workers > 1 else 0)
                        return self
            except OSError:
                time.sleep(0.05)
        self.__exit__(None, None, None)
        tail = self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""
        raise RuntimeError(f"{self.bank} serve did not become ready in 60 s:\n{tail}")

    def __exit__(self, *exc: object) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
