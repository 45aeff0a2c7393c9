"""The soak test's child process: steady protected load, sampled for growth (see test_soak.py).

Run as ``python soak_child.py SYNC_URL ASYNC_URL SECONDS INTERVAL WARM_UP``. It instruments buttress
with the OpenTelemetry SDK (an in-memory metric reader, a tracer provider with no exporter),
then runs a steady load for SECONDS through three pipelines: sync threads with requests and
httpx against SYNC_URL, and asyncio tasks with aiohttp against ASYNC_URL (one task per call,
every twentieth cancelled), one of them behind a cache and a fallback. The parent switches the
servers' faults on and off meanwhile. Every INTERVAL seconds it prints a sample line
``sample: {...}`` (resident memory, descriptors, threads, metric series, calls so far), and at
the end ``result: {...}``: the calls made, any invariant broken, and the metric series first
seen after WARM_UP seconds (to tell a leak from a label that showed up late). Measuring here
keeps the test harness's own allocations out of the figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import aiohttp  # noqa: E402
import httpx  # noqa: E402
import requests  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from tests.reliability._pipelines import FALLBACK_VALUE, Ledger, Spec, violations  # noqa: E402

import buttress  # noqa: E402
from buttress import telemetry  # noqa: E402
from buttress.telemetry import semconv  # noqa: E402

SYNC_THREADS = 4
ASYNC_WORKERS = 40
POOL = 8
"""aiohttp's connections: fewer than the 16 calls its two pipelines' bulkheads let through."""
PAUSE = 0.002
"""Seconds each caller rests between calls: a steady load that leaves the machine some CPU."""
FAILURES = (requests.RequestException, httpx.TransportError, aiohttp.ClientError, TimeoutError)
SPEC = Spec(policies=frozenset({"retry", "breaker", "timeout", "bulkhead", "rate_limit"}))
CACHED = Spec(policies=SPEC.policies | {"cache", "fallback"})


def server_error(result: object) -> bool:
    """The retry's result predicate: a 5xx answer."""
    return isinstance(result, tuple) and isinstance(result[0], int) and result[0] >= 500  # noqa: PLR2004


def pipeline(name: str, cached: bool = False) -> buttress.Pipeline:
    """One of the soak's pipelines: the usual HTTP policies, optionally a cache and a fallback."""
    return buttress.Pipeline(
        name,
        retry=buttress.Retry(
            on=(*FAILURES, buttress.TimeoutError),
            attempts=3,
            backoff=buttress.constant(0.01),
            on_result=server_error,
            budget=buttress.RetryBudget(),
        ),
        breaker=buttress.CircuitBreaker(
            failure_rate_threshold=0.6,
            window_size=40,
            minimum_calls=20,
            open_duration=0.5,
            failure_on_result=server_error,
        ),
        timeout=buttress.Timeout(attempt=0.2, total=2.0),
        bulkhead=buttress.Bulkhead(max_concurrent=8, max_queue=64, max_wait=1.0),
        rate_limit=buttress.RateLimit(rate=3000.0, burst=200, max_wait=0.5),
        cache=buttress.Cache(ttl=0.2, max_entries=32, key=lambda path: path) if cached else None,
        fallback=buttress.Fallback(value=FALLBACK_VALUE, on=FAILURES) if cached else None,
        kind="http",
    )


def rss_bytes() -> int:
    """Resident memory of this process."""
    fields = Path("/proc/self/statm").read_text(encoding="ascii").split()
    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")


def threads_now() -> int:
    """Threads of this process, as the kernel counts them."""
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise RuntimeError("no Threads line in /proc/self/status")


def measure() -> dict[str, int]:
    """Resident memory, descriptors and threads now (a few small /proc reads)."""
    return {
        "rss": rss_bytes(),
        "fds": sum(1 for _ in Path("/proc/self/fd").iterdir()),
        "threads": threads_now(),
    }


def series_keys(reader: InMemoryMetricReader) -> set[str]:
    """The metric series buttress exports now (one collection): name and labels of each."""
    data = reader.get_metrics_data()
    if data is None:
        return set()
    return {
        metric.name + " " + str(sorted(dict(point.attributes or {}).items()))
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        if scope.scope.name == semconv.METER_NAME
        for metric in scope.metrics
        for point in metric.data.data_points
    }


def main() -> None:
    """Run the load, print the samples and the result."""
    sync_url, async_url = sys.argv[1], sys.argv[2]
    seconds, interval, warm_up = (float(arg) for arg in sys.argv[3:6])
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    tracers = TracerProvider()
    telemetry.instrument(meter_provider=meters, tracer_provider=tracers)
    guards = {"sync": pipeline("soak-sync"), "async": pipeline("soak-async")}
    guards["cached"] = pipeline("soak-cached", cached=True)
    ledgers = {name: Ledger(expected=FAILURES) for name in guards}
    stop = threading.Event()

    def sync_caller(index: int) -> None:
        client: Any = requests.Session() if index % 2 else httpx.Client()
        guard, ledger = guards["sync"], ledgers["sync"]

        def get() -> tuple[int, bytes]:
            answer = client.get(sync_url + "/soak", timeout=0.2)
            return answer.status_code, answer.content

        with client:
            while not stop.is_set():
                ledger.start()
                try:
                    result = guard.call(get)
                except Exception as exc:  # booked; the invariants judge
                    ledger.raised(exc)
                else:
                    ledger.returned(result, server_error)
                time.sleep(PAUSE)

    known: set[str] = set()
    late: list[str] = []

    async def load() -> list[dict[str, Any]]:
        samples: list[dict[str, Any]] = []
        # A pool smaller than the calls wanting it stays full: the descriptors it holds do not
        # swing with the load from one sample to the next.
        connector = aiohttp.TCPConnector(limit=POOL)
        async with aiohttp.ClientSession(async_url, connector=connector) as session:

            async def get(path: str) -> tuple[int, bytes]:
                async with session.get(path) as answer:
                    return answer.status, await answer.read()

            async def one(name: str, path: str) -> None:
                guard, ledger = guards[name], ledgers[name]
                ledger.start()
                try:
                    result = await guard.acall(get, path)
                except asyncio.CancelledError:
                    ledger.end("cancelled")
                    raise
                except Exception as exc:  # booked; the invariants judge
                    ledger.raised(exc)
                else:
                    ledger.returned(result, server_error)

            async def worker(index: int) -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    name = "cached" if index % 4 == 0 else "async"
                    task = asyncio.create_task(one(name, f"/soak/{n % 50}"))
                    if n % 20 == 0:
                        await asyncio.sleep(0.001)
                        task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):  # the one we cancelled
                        await task
                    await asyncio.sleep(PAUSE)

            async def sampler() -> None:
                started = time.monotonic()
                while True:
                    elapsed = time.monotonic() - started
                    keys = series_keys(reader)
                    sample = {
                        "t": round(elapsed, 2),
                        "clock": time.monotonic(),  # the parent's clock too: one per host
                        **measure(),
                        "series": len(keys),
                        "calls": sum(ledger.started for ledger in ledgers.values()),
                    }
                    samples.append(sample)
                    if elapsed > warm_up:
                        late.extend(f"{elapsed:.0f}s {key}" for key in sorted(keys - known))
                    known.update(keys)
                    print("sample:", json.dumps(sample), flush=True)
                    if elapsed >= seconds:
                        stop.set()
                        return
                    await asyncio.sleep(interval)

            workers = [asyncio.create_task(worker(i)) for i in range(ASYNC_WORKERS)]
            await sampler()
            await asyncio.wait(workers, timeout=30)
        return samples

    pool = [
        threading.Thread(target=sync_caller, args=(i,), name=f"soak-{i}", daemon=True)
        for i in range(SYNC_THREADS)
    ]
    for thread in pool:
        thread.start()
    asyncio.run(load())
    for thread in pool:
        thread.join(30)
    problems: list[str] = [f"thread {t.name} still running" for t in pool if t.is_alive()]
    checked = 0
    for name, guard in guards.items():
        found, n = violations(guard, CACHED if name == "cached" else SPEC, ledgers[name])
        problems += [f"{name}: {problem}" for problem in found]
        checked += n
    outcomes = {name: guard.stats.by_outcome() for name, guard in guards.items()}
    telemetry.uninstrument()
    meters.shutdown()
    tracers.shutdown()
    result = {
        "calls": sum(ledger.started for ledger in ledgers.values()),
        "cancelled": sum(ledger.seen["cancelled"] for ledger in ledgers.values()),
        "outcomes": outcomes,
        "checked": checked,
        "problems": problems,
        "late_series": late[:30],
    }
    print("result:", json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
