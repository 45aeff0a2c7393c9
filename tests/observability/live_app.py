"""
A tiny service protected by buttress that serves /metrics: the live Prometheus test scrapes it.

Usage: python live_app.py PORT SECONDS. It loops over a scripted scenario for SECONDS: retries
(back-off and server-asked), a breaker that trips and recovers, bulkhead queueing, rate-limit
waits and rejections, timeouts, a cache, fallbacks on an LLM-style RateLimitError, observe mode.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from contextlib import suppress

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, start_http_server

import buttress
from buttress import telemetry


class RateLimitError(Exception):
    """What an LLM SDK raises on HTTP 429."""


def main() -> int:
    port, seconds = int(sys.argv[1]), float(sys.argv[2])
    registry = CollectorRegistry()
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
    telemetry.instrument(meter_provider=provider)
    start_http_server(port, addr="127.0.0.1", registry=registry)
    rnd = random.Random(7)

    def flaky(p: float, error: type[Exception] = ConnectionError) -> str:
        if rnd.random() < p:
            raise error("flaky")
        return "ok"

    api = buttress.protect(
        "api.example.com",
        kind="http",
        retry=buttress.Retry(
            on=ConnectionError, attempts=3, budget=None, backoff=buttress.constant(0.005)
        ),
        breaker=buttress.CircuitBreaker(
            window_size=6, minimum_calls=6, failure_rate_threshold=0.5, open_duration=0.5
        ),
    )
    db = buttress.protect(
        "orders-db",
        kind="db",
        bulkhead=buttress.Bulkhead(max_concurrent=1, max_queue=2, max_wait=0.05),
    )
    gpt = buttress.protect(
        "openai/gpt-4o",
        kind="llm",
        retry=buttress.Retry(
            on=RateLimitError, attempts=2, budget=None, retry_after=lambda outcome: 0.01
        ),
        rate_limit=buttress.RateLimit(rate=8.0, burst=1, max_wait=1.0),
        fallback=buttress.Fallback(value="canned", on=RateLimitError),
    )
    claude = buttress.protect(
        "anthropic/claude",
        kind="llm",
        rate_limit=buttress.RateLimit(rate=5.0, burst=1, max_wait=0),
    )
    geo = buttress.protect(
        "geo",
        cache=buttress.Cache(key=lambda city: city),
        timeout=buttress.Timeout(attempt=0.02, total=0.05),
    )
    search = buttress.protect(
        "search",
        retry=buttress.Retry(on=ConnectionError, attempts=3, budget=None),
        rate_limit=buttress.RateLimit(rate=5.0, burst=1, max_wait=0),
        observe=True,
    )

    def db_worker() -> None:
        while not stop.is_set():
            with suppress(buttress.ResilienceError):
                db.call(time.sleep, 0.02)

    stop = threading.Event()
    workers = [threading.Thread(target=db_worker, daemon=True) for _ in range(4)]
    for w in workers:
        w.start()
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        i += 1
        # Phases of 3 s: healthy, then a failing dependency that trips the breaker.
        bad = (i // 60) % 2 == 1
        with suppress(ConnectionError, buttress.ResilienceError):
            api.call(flaky, 0.9 if bad else 0.1)
        with suppress(RateLimitError, buttress.ResilienceError):
            gpt.call(flaky, 0.5, RateLimitError)
        with suppress(buttress.ResilienceError):
            claude.call(lambda: "answer")
        with suppress(Exception):
            geo.call(
                lambda city: time.sleep(0.03 if city == "slow" else 0) or city,
                rnd.choice(["paris", "lyon", "slow", str(i)]),
            )
        with suppress(ConnectionError):
            search.call(flaky, 0.3)
        time.sleep(0.05)
    stop.set()
    for w in workers:
        w.join(5)
    telemetry.uninstrument()
    provider.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
