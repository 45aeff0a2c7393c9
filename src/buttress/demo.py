"""
A tour of buttress in under two seconds: ``python -m buttress.demo`` (or ``make demo``).

Every "dependency" here is an in-process function that fails on cue, so the demo needs no
network and shows the same thing on every machine. One hook prints each event as it happens:
what you read is exactly what an OpenTelemetry exporter or a log handler would receive.

Sections:

(a) retries heal a transient failure, inside a full guard (retry, breaker, timeouts, bulkhead);
(b) a dependency that stays down: the breaker opens, rejects without calling, then a probe
    closes it;
(c) a fallback serves the last known value while the breaker is open;
(d) asyncio: an attempt timeout really cancels a slow coroutine;
(e) overload: a bulkhead sheds low-priority work first, and a rate limiter says when to return;
(f) a summary of every event seen;
(g) telemetry: the same decisions as OpenTelemetry metrics, scraped in Prometheus format;
(h) zero-code activation: an unmodified ``requests`` script in a child interpreter, run without
    and with ``BUTTRESS_ENABLED=true`` against a local server that answers 503 once.

The numbers are small on purpose (a five-call window, a 0.5 s open state, 0.1 s timeouts) so the
demo runs in real time; production defaults are in docs/policies.md. Sections (g) and (h) need
the OpenTelemetry SDK, the Prometheus exporter and requests (development dependencies); without
them they print a note and are skipped.
"""

# ruff: noqa: T201 - a demo's output is the point: print to stdout, never to a logger.

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections import Counter
from dataclasses import fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import buttress
from buttress.telemetry import Event, add_hook

_HIDDEN = frozenset({"target", "kind"})


def _value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}s" if value < 1000 else f"{value:g}"
    return str(value)


def _describe(event: Event) -> str:
    """One line per event: its type, its target, then every field that says something."""
    details = " ".join(
        f"{f.name}={_value(getattr(event, f.name))}"
        for f in fields(event)
        if f.name not in _HIDDEN
        and getattr(event, f.name) is not None
        and not (f.name == "observed" and getattr(event, f.name) is False)
    )
    return f"    event  {type(event).__name__:<19} {event.target:<9} {details}"


def _heading(title: str) -> None:
    print(f"\n== {title}")


def _say(text: str) -> None:
    print(f"    {text}")


class Dependency:
    """A stand-in for a remote service: it fails with ConnectionError while ``down``."""

    def __init__(self, name: str, *, fail_first: int = 0) -> None:
        self.name = name
        self.calls = 0
        self.down = False
        self._fail_first = fail_first

    def __call__(self, request: str) -> str:
        """Answer *request*, or raise ConnectionError while down."""
        self.calls += 1
        if self.down or self.calls <= self._fail_first:
            raise ConnectionError(f"{self.name} unreachable")
        return f"{self.name}:{request}:ok"


def section_retries() -> None:
    """(a) A transient failure is retried and the caller only sees the success."""
    _heading("(a) retries: `payments` drops two connections, then answers")
    gateway = Dependency("gateway", fail_first=2)
    guard = buttress.protect(
        "payments",
        retry=buttress.Retry(
            on=ConnectionError, attempts=4, backoff=buttress.exponential(initial=0.05, max=0.2)
        ),
        breaker=buttress.CircuitBreaker(window_size=5, minimum_calls=5, open_duration=0.5),
        timeout=buttress.Timeout(attempt=1.0, total=3.0),
        bulkhead=buttress.Bulkhead(max_concurrent=10),
        # Jitter pinned to the middle of its range so the printed delays are the same every run.
        random=lambda: 0.5,
    )
    _say(f"guard: {guard!r}")

    @guard
    def charge(order: str) -> str:
        return gateway(order)

    result = charge("order-17")
    _say(f"charge('order-17') -> {result!r} after {gateway.calls} attempts")


def section_breaker() -> None:
    """(b) The breaker opens on a dead dependency, rejects fast, and closes after a probe."""
    _heading("(b) circuit breaker: `ledger` goes down and stays down")
    ledger = Dependency("ledger")
    guard = buttress.protect(
        "ledger",
        breaker=buttress.CircuitBreaker(
            window_size=5, minimum_calls=5, open_duration=0.5, half_open_calls=1
        ),
    )
    ledger.down = True
    for _ in range(5):
        with contextlib.suppress(ConnectionError):
            guard.call(ledger, "post")
    state = guard.breaker.state if guard.breaker is not None else None
    _say(f"5 calls failed with ConnectionError; the 5th filled the window; breaker: {state}")
    for _ in range(3):
        try:
            guard.call(ledger, "post")
        except buttress.CircuitOpenError as exc:
            after = f"{exc.retry_after:.2f}s" if exc.retry_after is not None else "unknown"
            _say(f"CircuitOpenError (retry_after={after}); ledger called {ledger.calls} times")
    _say("... 0.55 s later the open duration is over and ledger is back")
    time.sleep(0.55)
    ledger.down = False
    _say(f"probe: {guard.call(ledger, 'post')!r}; one good probe closes the breaker")


def section_fallback() -> None:
    """(c) While the breaker is open, a fallback answers with the last known good value."""
    _heading("(c) fallback: `fx-rates` serves its last known rate while the breaker is open")
    rates = Dependency("fx")
    last_known: dict[str, str] = {}

    def fetch_rate(pair: str) -> str:
        value = rates(pair)
        last_known[pair] = value
        return value

    def stale(exc: BaseException) -> str:
        # The handler gets the failure, so it can say why the answer is stale.
        return f"{last_known.get('EURUSD', 'unknown')} (stale: {type(exc).__name__})"

    guard = buttress.protect(
        "fx-rates",
        breaker=buttress.CircuitBreaker(window_size=5, minimum_calls=5, open_duration=0.5),
        # Only rejections are replaced: a failure still tells the caller the truth.
        fallback=buttress.Fallback(handler=stale, on=buttress.CircuitOpenError),
    )
    _say(f"fresh: {guard.call(fetch_rate, 'EURUSD')!r}")
    rates.down = True
    failures = 0
    while guard.breaker is not None and guard.breaker.state is buttress.CircuitState.CLOSED:
        try:
            guard.call(fetch_rate, "EURUSD")
        except ConnectionError:
            failures += 1
    _say(f"{failures} failures reached the caller before the breaker opened")
    for _ in range(2):
        _say(f"while open: {guard.call(fetch_rate, 'EURUSD')!r}")


async def section_async() -> None:
    """(d) An attempt timeout cancels a slow coroutine; a retry then gets the fast answer."""
    _heading("(d) asyncio: `search` hangs once; the attempt timeout cancels it")
    state = {"calls": 0, "cancelled": 0}

    async def search(query: str, *, hang: int) -> str:
        state["calls"] += 1
        try:
            if state["calls"] <= hang:
                await asyncio.sleep(5)  # a hung connection
        except asyncio.CancelledError:
            state["cancelled"] += 1
            raise
        return f"results for {query!r}"

    guard = buttress.protect(
        "search",
        retry=buttress.Retry(on=buttress.TimeoutError, attempts=2, backoff=buttress.constant(0.01)),
        timeout=buttress.Timeout(attempt=0.1, total=1.0),
    )
    started = time.perf_counter()
    result = await guard.acall(search, "resilience", hang=1)
    took = time.perf_counter() - started
    _say(f"-> {result} in {took:.2f}s; the hung attempt was cancelled: {state['cancelled']}")
    state["calls"] = 0
    try:
        await guard.acall(search, "resilience", hang=2)
    except buttress.TimeoutError as exc:
        _say(f"both attempts hang -> buttress.TimeoutError(scope={exc.scope!r}): {exc}")


async def section_overload() -> None:
    """(e) A full bulkhead displaces low-priority waiters; a rate limiter rejects with a hint."""
    _heading("(e) overload: `reports` has 1 slot and a 1-place queue; priority decides")
    guard = buttress.protect(
        "reports", bulkhead=buttress.Bulkhead(max_concurrent=1, max_queue=1, max_wait=1.0)
    )

    async def render(name: str) -> str:
        await asyncio.sleep(0.05)
        return name

    async def request(name: str, priority: int) -> None:
        try:
            _say(f"{await guard.options(priority=priority).acall(render, name)}: done")
        except buttress.BulkheadFullError as exc:
            _say(f"{name}: BulkheadFullError: {exc}")

    tasks = []
    for name, priority in (("batch-1", 0), ("batch-2", 0), ("checkout", 5), ("batch-3", 0)):
        _say(f"{name} arrives (priority {priority})")
        tasks.append(asyncio.create_task(request(name, priority)))
        await asyncio.sleep(0)  # let it reach the bulkhead before the next one arrives
    await asyncio.gather(*tasks)

    _heading("(e') rate limit: `sms` allows 2 per second with a burst of 2")
    sms = buttress.protect("sms", rate_limit=buttress.RateLimit(rate=2, burst=2))
    for n in range(1, 4):
        try:
            sms.call(str, n)
            _say(f"sms {n}: sent")
        except buttress.RateLimitedError as exc:
            _say(f"sms {n}: RateLimitedError, try again in {exc.retry_after:.2f}s")


_SCOPE_LABELS = re.compile(r'otel_scope_[a-z_]+="[^"]*",?')
_SHOWN_METRICS = (
    "buttress_calls_total",
    "buttress_retries_total",
    "buttress_rejections_total",
    "buttress_circuit_state",
)


class _PrintHandler(logging.Handler):
    """Prints log records in the demo's layout."""

    def emit(self, record: logging.LogRecord) -> None:
        """Print *record*."""
        print(f"    log    {record.levelname:<19} {record.getMessage()}")


def section_telemetry() -> None:
    """(g) instrument() publishes the decisions as metrics; a Prometheus reader serves them."""
    _heading("(g) telemetry: the same decisions as OpenTelemetry metrics (Prometheus format)")
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader  # noqa: PLC0415
        from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
        from prometheus_client import CollectorRegistry, generate_latest  # noqa: PLC0415
    except ImportError as exc:
        _say(f"skipped: the OpenTelemetry SDK or Prometheus exporter is not installed ({exc})")
        return
    # A private registry and provider: the demo sets no global provider, as an application
    # that configures its own SDK would not want a library to.
    registry = CollectorRegistry()
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
    buttress.telemetry.instrument(meter_provider=provider)
    # Breaker transitions are also log records on the `buttress` logger: show them here.
    logger = logging.getLogger("buttress")
    handler = _PrintHandler()
    logger.addHandler(handler)
    try:
        inventory = Dependency("inventory", fail_first=1)
        stock = buttress.protect(
            "inventory",
            retry=buttress.Retry(on=ConnectionError, backoff=buttress.constant(0.01)),
            breaker=buttress.CircuitBreaker(),
        )
        quotes = buttress.protect("quotes", breaker=buttress.CircuitBreaker())
        _say(f"inventory: {stock.call(inventory, 'sku-1')!r} after 1 retry")
        if quotes.breaker is not None:
            quotes.breaker.force_open()  # an operator's switch: reject without calling
        with contextlib.suppress(buttress.CircuitOpenError):
            quotes.call(str, "q-1")
        _say("quotes: breaker forced open, 1 call rejected")
        _say("scrape (buttress_* series of these two targets, non-zero, otel_scope_* labels cut):")
        for line in generate_latest(registry).decode().splitlines():
            if (
                line.startswith(_SHOWN_METRICS)
                and ('target="inventory"' in line or 'target="quotes"' in line)
                and not line.endswith(" 0.0")
            ):
                _say("  " + _SCOPE_LABELS.sub("", line))
    finally:
        logger.removeHandler(handler)
        buttress.telemetry.uninstrument()
        provider.shutdown()


class _FlakyHandler(BaseHTTPRequestHandler):
    """Counts requests; answers 503 to the first one after each reset, 200 afterwards."""

    requests = 0

    def do_GET(self) -> None:
        """Serve a GET."""
        cls = type(self)
        cls.requests += 1
        status = 503 if cls.requests == 1 else 200
        body = b"down" if status == 503 else b"fine"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        """Stay quiet."""


_CHILD = "import requests, sys; print(requests.get(sys.argv[1]).status_code)"
_CONFIG = '[defaults.http]\nretry.backoff = "constant"\nretry.backoff_initial = 0.01\n'


def section_zero_code() -> None:
    """(h) The same unmodified script, without and with BUTTRESS_ENABLED=true."""
    _heading("(h) zero-code activation: an unmodified `requests` script in a child interpreter")
    try:
        import requests  # noqa: F401, PLC0415
    except ImportError:
        _say("skipped: requests is not installed")
        return
    if not (Path(sysconfig.get_paths()["purelib"]) / "buttress.pth").exists():
        _say("skipped: buttress.pth is not installed in this interpreter (pip install buttress)")
        return
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FlakyHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/flaky"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BUTTRESS_", "OTEL_"))}
    base.update(NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "buttress.toml"
            config.write_text(_CONFIG)
            _say(f"server: {url} answers 503 to its first request, then 200")
            _say(f"child:  python -c {_CHILD!r} URL")
            runs: tuple[tuple[str, dict[str, str]], ...] = (
                ("without buttress", {}),
                (
                    "BUTTRESS_ENABLED=true",
                    {
                        "BUTTRESS_ENABLED": "true",
                        "BUTTRESS_CONFIG": str(config),
                        "OTEL_METRICS_EXPORTER": "none",
                        "OTEL_TRACES_EXPORTER": "none",
                    },
                ),
            )
            for label, extra in runs:
                _FlakyHandler.requests = 0
                child = subprocess.run(  # noqa: S603 - our own interpreter, fixed arguments
                    [sys.executable, "-c", _CHILD, url],
                    env={**base, **extra},
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=False,
                )
                seen = child.stdout.strip() or f"exit {child.returncode}: {child.stderr.strip()}"
                _say(
                    f"{label:<22} child saw {seen}; server counted "
                    f"{_FlakyHandler.requests} request(s)"
                )
            _say("(BUTTRESS_CONFIG sets a 0.01 s constant back-off; the template: 0.5 s and up)")
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def main() -> None:
    """Run every section, printing each event as it is emitted, then a summary."""
    seen: Counter[str] = Counter()

    def show(event: Event) -> None:
        seen[type(event).__name__] += 1
        print(_describe(event))

    started = time.perf_counter()
    remove = add_hook(show)
    try:
        print("buttress demo: every line marked `event` is a typed event delivered to a hook")
        section_retries()
        section_breaker()
        section_fallback()
        asyncio.run(section_async())
        asyncio.run(section_overload())
    finally:
        remove()
    _heading("(f) summary")
    counts = ", ".join(f"{name} {n}" for name, n in sorted(seen.items()))
    _say(f"{sum(seen.values())} events: {counts}")
    _say(f"targets: {', '.join(buttress.targets())}")
    section_telemetry()
    section_zero_code()
    print(f"\ndemo finished in {time.perf_counter() - started:.2f}s")


if __name__ == "__main__":
    main()
