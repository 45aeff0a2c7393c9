# ruff: noqa: CPY001 -- the project uses no per-file copyright headers
"""
Per-call overhead of buttress against a raw call and against tenacity, stamina and pybreaker.

Run with ``make bench`` (or ``.venv/bin/python benchmarks/bench.py``). Not a test: it prints a
Markdown table. Method, in one run on one machine:

* every candidate is calibrated so that one repeat of N calls takes about ``--target-ms``;
* the repeats are interleaved round-robin (repeat 1 of every candidate, then repeat 2, ...), so
  machine noise hits all candidates alike;
* the reported cost is the best repeat divided by N (the median is shown too), timed with
  ``time.perf_counter_ns``. The ``for`` loop itself is included in every row, so compare rows
  with each other (the ``raw call`` row is the floor), not with zero.

Async candidates run N awaits inside one coroutine on one event loop that lives for the whole
run; the clock is read inside the coroutine, so scheduling the coroutine is not counted.

To add a row, append a ``Candidate`` to ``CANDIDATES`` (see ``_sync``/``_async`` below).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import json
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pybreaker
import stamina
import tenacity
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

import buttress

# A runner performs n calls and returns the elapsed nanoseconds for exactly those calls.
Runner = Callable[[int], int]
# A factory builds a runner (and whatever guard/breaker it needs) once, before calibration.
Factory = Callable[["Env"], Runner]

BUTTRESS_AVAILABLE = hasattr(buttress, "protect")
UNAVAILABLE = "buttress API not available"

# The floors: every row's "over raw" column is its cost minus its baseline row's cost.
RAW_CALL = "raw call"
RAW_AWAIT = "raw await"


def f(x: int) -> int:
    return x


async def af(x: int) -> int:
    return x


# --------------------------------------------------------------------------------------------
# Candidates


@dataclass(frozen=True)
class Candidate:
    name: str
    factory: Factory
    needs_buttress: bool = False
    baseline: str = RAW_CALL  # async rows use RAW_AWAIT

    @property
    def available(self) -> bool:
        return BUTTRESS_AVAILABLE or not self.needs_buttress


@dataclass
class Env:
    """Shared state for factories: the one event loop, and objects several rows reuse."""

    loop: asyncio.AbstractEventLoop
    cache: dict[str, Any] = field(default_factory=dict)

    def shared(self, key: str, build: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = build()
        return self.cache[key]


def _sync(loop_body: Callable[[int], None]) -> Runner:
    """Time a plain function that performs n calls."""

    def run(n: int) -> int:
        start = time.perf_counter_ns()
        loop_body(n)
        return time.perf_counter_ns() - start

    return run


def _async(env: Env, loop_body: Callable[[int], Awaitable[None]]) -> Runner:
    """Time a coroutine function that performs n awaits, inside the shared event loop."""

    async def timed(n: int) -> int:
        start = time.perf_counter_ns()
        await loop_body(n)
        return time.perf_counter_ns() - start

    def run(n: int) -> int:
        return env.loop.run_until_complete(timed(n))

    return run


def _default_pipeline(target: str) -> Any:
    return buttress.protect(
        target,
        retry=buttress.Retry(on=ConnectionError, attempts=3),
        breaker=buttress.CircuitBreaker(),
        timeout=buttress.Timeout(),
        bulkhead=buttress.Bulkhead(),
    )


def raw_call(env: Env) -> Runner:
    def body(n: int) -> None:
        for _ in range(n):
            f(1)

    return _sync(body)


def buttress_sync(env: Env) -> Runner:
    guard = env.shared("bench-sync", lambda: _default_pipeline("bench-sync"))
    if guard.call(f, 1) != 1:
        raise RuntimeError("guard.call(f, 1) did not return 1")

    def body(n: int) -> None:
        for _ in range(n):
            guard.call(f, 1)

    return _sync(body)


def buttress_decorated(env: Env) -> Runner:
    guard = env.shared("bench-sync", lambda: _default_pipeline("bench-sync"))
    g = guard(f)
    if g(1) != 1:
        raise RuntimeError("guard(f)(1) did not return 1")

    def body(n: int) -> None:
        for _ in range(n):
            g(1)

    return _sync(body)


def raw_await(env: Env) -> Runner:
    async def body(n: int) -> None:
        for _ in range(n):
            await af(1)

    return _async(env, body)


def buttress_async(env: Env) -> Runner:
    guard = env.shared("bench-async", lambda: _default_pipeline("bench-async"))
    if env.loop.run_until_complete(guard.acall(af, 1)) != 1:
        raise RuntimeError("await guard.acall(af, 1) did not return 1")

    async def body(n: int) -> None:
        for _ in range(n):
            await guard.acall(af, 1)

    return _async(env, body)


def tenacity_retry(env: Env) -> Runner:
    tf = tenacity.retry(
        stop=tenacity.stop_after_attempt(3),
        retry=tenacity.retry_if_exception_type(ConnectionError),
    )(f)

    def body(n: int) -> None:
        for _ in range(n):
            tf(1)

    return _sync(body)


def stamina_retry(env: Env) -> Runner:
    sf = stamina.retry(on=ConnectionError, attempts=3)(f)

    def body(n: int) -> None:
        for _ in range(n):
            sf(1)

    return _sync(body)


def pybreaker_breaker(env: Env) -> Runner:
    br = pybreaker.CircuitBreaker()

    def body(n: int) -> None:
        for _ in range(n):
            br.call(f, 1)

    return _sync(body)


def buttress_rejection(env: Env) -> Runner:
    guard = buttress.protect("bench-open", breaker=buttress.CircuitBreaker())
    guard.breaker.force_open()
    try:
        guard.call(f, 1)
    except buttress.CircuitOpenError:
        pass
    else:
        raise RuntimeError("force_open() breaker let a call through")

    def body(n: int) -> None:
        for _ in range(n):
            try:  # noqa: SIM105 - contextlib.suppress would add its own cost to every call
                guard.call(f, 1)
            except buttress.CircuitOpenError:
                pass

    return _sync(body)


def pybreaker_rejection(env: Env) -> Runner:
    br = pybreaker.CircuitBreaker()
    br.open()
    try:
        br.call(f, 1)
    except pybreaker.CircuitBreakerError:
        pass
    else:
        raise RuntimeError("open pybreaker let a call through")

    def body(n: int) -> None:
        for _ in range(n):
            try:  # noqa: SIM105 - contextlib.suppress would add its own cost to every call
                br.call(f, 1)
            except pybreaker.CircuitBreakerError:
                pass

    return _sync(body)


def _otel_telemetry(env: Env) -> Any:
    """One OTel SDK setup for the telemetry rows: a Prometheus reader and a tracer provider."""

    def build() -> Any:
        reader = PrometheusMetricReader(registry=CollectorRegistry())
        return buttress.telemetry.OTelTelemetry(
            meter_provider=MeterProvider(metric_readers=[reader]),
            tracer_provider=TracerProvider(),
        )

    return env.shared("otel", build)


def _with_telemetry(telemetry: Any, run: Runner) -> Runner:
    """Register the telemetry hook around each repeat only, so other rows run without it."""

    def wrapped(n: int) -> int:
        remove = buttress.telemetry.add_hook(telemetry)
        try:
            return run(n)
        finally:
            remove()

    return wrapped


def buttress_sync_otel(env: Env) -> Runner:
    telemetry = _otel_telemetry(env)
    guard = _default_pipeline("bench-sync-otel")
    guard.stats.sampler = telemetry.sampler(guard.target, guard.kind)

    def body(n: int) -> None:
        call = guard.call
        for _ in range(n):
            call(f, 1)

    return _with_telemetry(telemetry, _sync(body))


def buttress_async_otel(env: Env) -> Runner:
    telemetry = _otel_telemetry(env)
    guard = _default_pipeline("bench-async-otel")
    guard.stats.sampler = telemetry.sampler(guard.target, guard.kind)

    async def body(n: int) -> None:
        acall = guard.acall
        for _ in range(n):
            await acall(af, 1)

    return _with_telemetry(telemetry, _async(env, body))


def buttress_rejection_otel(env: Env) -> Runner:
    telemetry = _otel_telemetry(env)
    guard = buttress.protect("bench-open-otel", breaker=buttress.CircuitBreaker())
    guard.stats.sampler = telemetry.sampler(guard.target, guard.kind)
    guard.breaker.force_open()

    def body(n: int) -> None:
        for _ in range(n):
            try:  # noqa: SIM105 - contextlib.suppress would add its own cost to every call
                guard.call(f, 1)
            except buttress.CircuitOpenError:
                pass

    return _with_telemetry(telemetry, _sync(body))


BUTTRESS_SYNC = "buttress default pipeline (sync)"
BUTTRESS_SYNC_OTEL = "buttress default pipeline (sync) + OTel SDK, Prometheus reader"
BUTTRESS_REJECT = "buttress open-breaker rejection"
TENACITY = "tenacity retry"
PYBREAKER = "pybreaker breaker"
PYBREAKER_REJECT = "pybreaker open rejection"

CANDIDATES: list[Candidate] = [
    Candidate(RAW_CALL, raw_call),
    Candidate(BUTTRESS_SYNC, buttress_sync, needs_buttress=True),
    Candidate("buttress decorated (sync)", buttress_decorated, needs_buttress=True),
    Candidate(RAW_AWAIT, raw_await, baseline=RAW_AWAIT),
    Candidate(
        "buttress default pipeline (async)", buttress_async, needs_buttress=True, baseline=RAW_AWAIT
    ),
    Candidate(TENACITY, tenacity_retry),
    Candidate("stamina retry", stamina_retry),
    Candidate(PYBREAKER, pybreaker_breaker),
    Candidate(BUTTRESS_REJECT, buttress_rejection, needs_buttress=True),
    Candidate(PYBREAKER_REJECT, pybreaker_rejection),
    Candidate(BUTTRESS_SYNC_OTEL, buttress_sync_otel, needs_buttress=True),
    Candidate(
        "buttress default pipeline (async) + OTel SDK, Prometheus reader",
        buttress_async_otel,
        needs_buttress=True,
        baseline=RAW_AWAIT,
    ),
    Candidate(
        "buttress open-breaker rejection + OTel SDK", buttress_rejection_otel, needs_buttress=True
    ),
]

# (label, numerator row, denominator row, target: ratio must be <= this)
RATIOS: list[tuple[str, str, str, float]] = [
    ("buttress sync ÷ pybreaker", BUTTRESS_SYNC, PYBREAKER, 1.00),
    ("buttress sync ÷ tenacity", BUTTRESS_SYNC, TENACITY, 0.05),
    ("buttress rejection ÷ pybreaker rejection", BUTTRESS_REJECT, PYBREAKER_REJECT, 1.00),
    ("buttress sync with OTel ÷ pybreaker", BUTTRESS_SYNC_OTEL, PYBREAKER, 1.50),
]

# --------------------------------------------------------------------------------------------
# Measurement


@dataclass
class Result:
    name: str
    available: bool
    baseline: str
    n: int = 0
    repeats_ns: list[int] = field(default_factory=list)
    error: str | None = None

    @property
    def best(self) -> float:
        return min(self.repeats_ns) / self.n

    @property
    def median(self) -> float:
        return statistics.median(self.repeats_ns) / self.n


def calibrate(run: Runner, target_ns: int) -> int:
    """Find N so that run(N) takes about target_ns (this also warms the candidate up)."""
    n = 1
    while True:
        elapsed = max(run(n), 1)
        if elapsed >= target_ns // 10 or n >= 1 << 30:
            return max(1, round(n * target_ns / elapsed))
        n *= 10 if elapsed < target_ns // 1000 else 2


def measure(candidates: list[Candidate], repeats: int, target_ns: int) -> list[Result]:
    loop = asyncio.new_event_loop()
    try:
        env = Env(loop=loop)
        results = [Result(c.name, c.available, c.baseline) for c in candidates]
        runners: list[tuple[Result, Runner]] = []
        for candidate, result in zip(candidates, results, strict=True):
            if not candidate.available:
                continue
            try:
                run = candidate.factory(env)
                result.n = calibrate(run, target_ns)
            except Exception as exc:  # one broken row must not hide the others
                result.error = f"{type(exc).__name__}: {exc}"
                continue
            runners.append((result, run))
        for _ in range(repeats):
            for result, run in runners:
                gc.collect()
                result.repeats_ns.append(run(result.n))
        return results
    finally:
        loop.close()


# --------------------------------------------------------------------------------------------
# Reporting


def machine_info() -> dict[str, Any]:
    try:
        usable_cpus: int | None = len(os.sched_getaffinity(0))
    except AttributeError:
        usable_cpus = None
    versions = {}
    for dist in ("buttress", "tenacity", "stamina", "pybreaker", "opentelemetry-api"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus,
        "versions": versions,
    }


def ratio_rows(results: list[Result]) -> Iterator[dict[str, Any]]:
    by_name = {r.name: r for r in results if r.available and r.repeats_ns}
    for label, num, den, target in RATIOS:
        value = by_name[num].best / by_name[den].best if {num, den} <= by_name.keys() else None
        status = "n/a" if value is None else "PASS" if value <= target else "MISS"
        yield {"ratio": label, "value": value, "target": target, "status": status}


def render(results: list[Result], info: dict[str, Any], repeats: int, target_ns: int) -> str:
    by_name = {r.name: r for r in results if r.repeats_ns}
    lines = [
        (
            f"Python {info['python']} ({info['implementation']}) on {info['platform']}, "
            f"{info['cpu_count']} CPUs ({info['usable_cpus']} usable); best of {repeats} "
            f"repeats of ~{target_ns / 1e6:.0f} ms each, interleaved."
        ),
        "",
        "| row | ns/call (best) | ns/call (median) | over raw (ns) | calls/repeat |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        if not r.available:
            lines.append(f"| {r.name} | {UNAVAILABLE} | | | |")
            continue
        if r.error is not None:
            lines.append(f"| {r.name} | ERROR {r.error} | | | |")
            continue
        if not r.repeats_ns:
            continue
        base = by_name.get(r.baseline)
        over = f"{r.best - base.best:+.0f}" if base is not None and base is not r else ""
        lines.append(f"| {r.name} | {r.best:.0f} | {r.median:.0f} | {over} | {r.n:,} |")
    lines += ["", "| ratio (best ÷ best) | value | target | |", "|---|---:|---:|---|"]
    for row in ratio_rows(results):
        value = "n/a" if row["value"] is None else f"{row['value']:.3f}"
        lines.append(f"| {row['ratio']} | {value} | ≤ {row['target']:.2f} | {row['status']} |")
    return "\n".join(lines)


def to_json(results: list[Result], info: dict[str, Any], repeats: int, target_ns: int) -> Any:
    return {
        "machine": info,
        "settings": {"repeats": repeats, "target_ns_per_repeat": target_ns},
        "rows": [
            {
                "name": r.name,
                "available": r.available,
                "calls_per_repeat": r.n,
                "ns_per_call_best": r.best if r.repeats_ns else None,
                "ns_per_call_median": r.median if r.repeats_ns else None,
                "repeats_ns": r.repeats_ns,
                "error": r.error,
            }
            for r in results
            if not r.available or r.repeats_ns or r.error
        ],
        "ratios": list(ratio_rows(results)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="3 repeats of ~50 ms (smoke run)")
    parser.add_argument("--repeats", type=int, help="repeats per candidate (default 7)")
    parser.add_argument("--target-ms", type=float, help="duration of one repeat (default 200)")
    parser.add_argument(
        "--only", metavar="REGEX", help="run only rows whose name matches (re.search, no case)"
    )
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write results as JSON")
    parser.add_argument("--list", action="store_true", help="list the rows and exit")
    args = parser.parse_args(argv)

    if args.list:
        for c in CANDIDATES:
            print(f"{c.name}{'' if c.available else f'  ({UNAVAILABLE})'}")
        return 0

    repeats = args.repeats or (3 if args.quick else 7)
    target_ns = int((args.target_ms or (50 if args.quick else 200)) * 1e6)
    candidates = CANDIDATES
    if args.only:
        pattern = re.compile(args.only, re.IGNORECASE)
        candidates = [c for c in CANDIDATES if pattern.search(c.name)]
        if not candidates:
            parser.error(f"--only {args.only!r} matches no row (see --list)")
    if not BUTTRESS_AVAILABLE and any(c.needs_buttress for c in candidates):
        print(f"note: {UNAVAILABLE} (no buttress.protect); its rows are skipped\n", file=sys.stderr)

    results = measure(candidates, repeats, target_ns)
    info = machine_info()
    print(render(results, info, repeats, target_ns))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = to_json(results, info, repeats, target_ns)
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    errors = [r for r in results if r.error is not None]
    for r in errors:
        print(f"error: row {r.name!r} failed: {r.error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
