"""
Write ``docs/sample-metrics.txt``: what ``/metrics`` shows after a small deterministic scenario.

Usage (from the repository root)::

    .venv/bin/python tests/telemetry/make_sample.py

The scenario runs on a FakeClock, so durations and waits are exact; it touches every metric in
``buttress.telemetry.semconv`` (``tests/telemetry/test_prometheus.py`` runs it too and checks
that). Only the ``buttress_*`` lines are kept, sorted; the file is documentation, not a fixture.
"""

from __future__ import annotations

import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, start_http_server

import buttress
from buttress import telemetry
from buttress.testing import FakeClock

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "docs" / "sample-metrics.txt"


class _QueueWatch:
    """Signals when a call joins a bulkhead queue."""

    def __init__(self) -> None:
        self.queued = threading.Event()

    def __call__(self, event: telemetry.Event) -> None:
        if isinstance(event, telemetry.BulkheadQueued):
            self.queued.set()


def _flaky(failures: int, error: type[Exception] = ConnectionError) -> object:
    calls = []

    def fn() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise error("flaky")
        return "ok"

    return fn


def _fail() -> None:
    raise ConnectionError("refused")


def scenario(clock: FakeClock) -> None:
    """Retries, a breaker trip, bulkhead queueing, rejections, timeouts, cache, fallback, waits."""
    no_budget = {"budget": None, "backoff": buttress.constant(0.2)}

    # api.example.com: retries (back-off and Retry-After), a breaker that trips, then rejects.
    api = buttress.protect(
        "api.example.com",
        kind="http",
        retry=buttress.Retry(on=ConnectionError, attempts=3, **no_budget),
        breaker=buttress.CircuitBreaker(
            window_size=4, minimum_calls=4, failure_rate_threshold=0.75, open_duration=30.0
        ),
        clock=clock,
    )
    for _ in range(3):
        api.call(_flaky(1))
    slow_down = buttress.protect(
        "billing",
        kind="http",
        retry=buttress.Retry(
            on=ConnectionError, attempts=2, retry_after=lambda outcome: 1.5, budget=None
        ),
        clock=clock,
    )
    slow_down.call(_flaky(1))
    with suppress(ConnectionError):
        slow_down.call(_fail)  # retried once after 1.5 s, then out of attempts
    for _ in range(2):
        with suppress(ConnectionError, buttress.CircuitOpenError):
            api.call(_fail)

    # orders-db: a bulkhead with one slot; a second call queues for 0.05 s.
    db = buttress.protect(
        "orders-db",
        kind="db",
        bulkhead=buttress.Bulkhead(max_concurrent=1, max_queue=10, max_wait=30.0),
        clock=clock,
    )
    watch = _QueueWatch()
    remove = telemetry.add_hook(watch)
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        entered.set()
        release.wait(30)

    holder = threading.Thread(target=db.call, args=(hold,))
    holder.start()
    entered.wait(30)
    waiter = threading.Thread(target=db.call, args=(lambda: None,))
    waiter.start()
    watch.queued.wait(30)
    remove()
    clock.advance(0.05)
    release.set()
    holder.join(30)
    waiter.join(30)

    # openai/gpt-4o: a rate limit that makes one call wait 0.25 s; a fallback.
    llm = buttress.protect(
        "openai/gpt-4o",
        kind="llm",
        rate_limit=buttress.RateLimit(rate=4.0, burst=1, max_wait=1.0),
        fallback=buttress.Fallback(value="canned answer", on=ConnectionError),
        clock=clock,
    )
    llm.call(lambda: "answer")
    llm.call(lambda: "answer")  # waits 0.25 s for its token
    clock.advance(1.0)
    llm.call(_fail)  # answered by the fallback

    # payments: a rate limit that allows no wait rejects the second call at once.
    payments = buttress.protect(
        "payments",
        kind="http",
        rate_limit=buttress.RateLimit(rate=1.0, burst=1, max_wait=0),
        clock=clock,
    )
    payments.call(lambda: "charged")
    with suppress(buttress.RateLimitedError):
        payments.call(lambda: "charged")

    # geo: a cache (miss then hit) and a total timeout reached while waiting for a token.
    geo = buttress.protect(
        "geo",
        cache=buttress.Cache(key=lambda city: city),
        retry=buttress.Retry(
            on=ConnectionError, attempts=3, budget=None, backoff=buttress.constant(0.0)
        ),
        rate_limit=buttress.RateLimit(rate=1.0, burst=1, max_wait=10.0),
        timeout=buttress.Timeout(attempt=0.5, total=1.0),
        order=(
            "fallback",
            "cache",
            "bulkhead",
            "timeout",
            "retry",
            "rate_limit",
            "breaker",
            "attempt_timeout",
        ),
        clock=clock,
    )
    geo.call(lambda city: city.upper(), "paris")
    clock.advance(1.0)
    geo.call(lambda city: city.upper(), "paris")
    with suppress(buttress.TimeoutError):
        geo.call(lambda city: _fail(), "lyon")

    # search: observe mode, reporting the rejection and the retry it would have made.
    search = buttress.protect(
        "search",
        retry=buttress.Retry(on=ConnectionError, attempts=3, budget=None),
        rate_limit=buttress.RateLimit(rate=1.0, burst=1, max_wait=0),
        observe=True,
        clock=clock,
    )
    search.call(lambda: "hit")
    with suppress(ConnectionError):
        search.call(_fail)


@contextmanager
def serving(registry: CollectorRegistry) -> Iterator[str]:
    """Serve *registry* on an ephemeral port of 127.0.0.1; yield the /metrics URL."""
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def scrape(url: str) -> str:
    """GET *url* and return the body."""
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - our own http URL
        return response.read().decode("utf-8")


@contextmanager
def instrumented() -> Iterator[CollectorRegistry]:
    """buttress instrumented into a Prometheus reader on a private registry."""
    registry = CollectorRegistry()
    reader = PrometheusMetricReader(registry=registry)
    provider = MeterProvider(metric_readers=[reader])
    telemetry.instrument(meter_provider=provider)
    try:
        yield registry
    finally:
        telemetry.uninstrument()
        provider.shutdown()


def buttress_lines(text: str) -> list[str]:
    """The sample lines of buttress metrics, sorted."""
    return sorted(line for line in text.splitlines() if line.startswith("buttress_"))


def main() -> int:
    """Run the scenario, scrape /metrics over HTTP and write the sample."""
    buttress.reset_targets()
    with instrumented() as registry, serving(registry) as url:
        scenario(FakeClock(start=0.0))
        text = scrape(url)
    SAMPLE.write_text("\n".join(buttress_lines(text)) + "\n", encoding="utf-8")
    sys.stdout.write(f"wrote {SAMPLE.relative_to(ROOT)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
