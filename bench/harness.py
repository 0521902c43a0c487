"""Shared pieces of the benchmarks: a real server process on a free port against a real database
process, latency statistics, concurrent client loops."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from fhir_server.devdb import free_port, start_embedded


@dataclass
class Figures:
    name: str
    clients: int
    operations: int
    seconds: float
    latencies: list[float]

    @property
    def throughput(self) -> float:
        return self.operations / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] * 1000

    def row(self) -> str:
        return (f"{self.name:<34} {self.clients:>7} {self.operations:>6} {self.throughput:>10.0f} "
                f"{self.percentile(50):>9.2f} {self.percentile(95):>9.2f}")


HEADER = f"{'workload':<34} {'clients':>7} {'ops':>6} {'ops/s':>10} {'p50 ms':>9} {'p95 ms':>9}"


@contextmanager
def database() -> Iterator[str]:
    uri = os.environ.get("FHIR_BENCH_MONGODB_URI")
    if uri:
        yield uri
        return
    # on disk: the in-memory store's fixed cache overflows at the search benchmark's 100k resources
    with tempfile.TemporaryDirectory(prefix="espace-bench-") as folder:
        db = start_embedded(folder)
        try:
            yield db.uri
        finally:
            db.stop()


@contextmanager
def server(mongodb_uri: str, database_name: str, extra_env: dict[str, str] | None = None) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "FHIR_MONGODB_URI": mongodb_uri, "FHIR_MONGODB_DB": database_name,
           "FHIR_PORT": str(port), **(extra_env or {})}
    process = subprocess.Popen([sys.executable, "-m", "fhir_server.cli", "serve"], env=env,
                               stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/fhir"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/metadata", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("the server did not start")
        time.sleep(0.2)
    try:
        yield base
    finally:
        process.terminate()
        process.wait(20)


def run_concurrently(name: str, clients: int, operations: int, action: Callable[[int], None]) -> Figures:
    """Run `action(i)` for i in range(operations) spread over `clients` threads; time each call."""
    latencies: list[float] = []

    def worker(indexes: range) -> list[float]:
        own = []
        for i in indexes:
            started = time.perf_counter()
            action(i)
            own.append(time.perf_counter() - started)
        return own

    chunks = [range(c, operations, clients) for c in range(clients)]
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for result in pool.map(worker, chunks):
            latencies.extend(result)
    return Figures(name, clients, operations, time.perf_counter() - started, latencies)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0
