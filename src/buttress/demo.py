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
(f) a summary of every event seen.

The numbers are small on purpose (a five-call window, a 0.5 s open state, 0.1 s timeouts) so the
demo runs in real time; production defaults are in docs/policies.md.
"""

# ruff: noqa: T201 - a demo's output is the point: print to stdout, never to a logger.

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import fields

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
        retry=buttress.Retry(
            on=buttress.TimeoutError, attempts=2, backoff=buttress.constant(0.01)
        ),
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
    _say(f"targets: {', '.join(buttress.targets())}; ran in {time.perf_counter() - started:.2f}s")


if __name__ == "__main__":
    main()
