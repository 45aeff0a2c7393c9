"""
Every public call shape of buttress, with the types a user relies on.

This module is checked with ``mypy --strict`` by ``tests/test_typing_api.py`` and never run:
each assignment states the type the API must produce, so a regression in the annotations (a
decorator that loses the signature, a ``call`` that returns ``Any``) fails the check.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import buttress
from buttress import policies, telemetry, templates, testing


def add(a: int, b: int) -> int:
    return a + b


async def aadd(a: int, b: int) -> int:
    return a + b


def greet(name: str, *, punctuation: str = "!") -> str:
    return name + punctuation


guard: buttress.Pipeline = buttress.protect(
    "api",
    retry=buttress.Retry(
        on=(ConnectionError, TimeoutError),
        attempts=3,
        backoff=buttress.exponential(initial=0.1, max=2.0),
        on_result=lambda r: r is None,
        budget=buttress.RetryBudget(ratio=0.1),
    ),
    breaker=buttress.CircuitBreaker(failure_rate_threshold=0.5, window="time", window_size=30),
    timeout=buttress.Timeout(attempt=1.0, total=5.0),
    bulkhead=buttress.Bulkhead(max_concurrent=4, max_queue=8, max_wait=1.0),
    rate_limit=buttress.RateLimit(rate=5.0, burst=10),
    cache=buttress.Cache(ttl=30.0),
    fallback=buttress.Fallback(value=0),
    kind="http",
    clock=testing.FakeClock(),
    random=lambda: 0.5,
)
from_template: buttress.Pipeline = buttress.protect(
    "db", template=templates.database(), bulkhead=None, order=None, replace=True
)
policy_sets: list[buttress.PolicySet] = [templates.http(), templates.database(), templates.llm()]
rate_per_minute: buttress.RateLimit = buttress.RateLimit.per_minute(60)
backoffs: list[buttress.Backoff] = [
    buttress.constant(1.0),
    buttress.decorrelated(initial=0.1, max=1.0),
    buttress.exponential(),
]

# Decorating keeps the parameters and the return type, sync and async.
guarded: Callable[[int, int], int] = guard(add)
sum_of: int = guarded(1, 2)
aguarded: Callable[[int, int], Coroutine[Any, Any, int]] = guard(aadd)
greeted: str = guard(greet)("ada", punctuation="?")


@guard
def decorated(x: int) -> list[int]:
    return [x]


@guard
async def adecorated(x: int) -> list[int]:
    return [x]


@guard.options(priority=3)
def prioritised(x: int) -> bytes:
    return bytes(x)


listed: list[int] = decorated(1)
prioritised_bytes: bytes = prioritised(4)

# call / acall return the function's own return type and check its arguments.
called: int = guard.call(add, 1, 2)
called_kw: str = guard.call(greet, "ada", punctuation=".")
called_lambda: float = guard.call(lambda: 1.5)
with_options: int = guard.options(priority=3).call(add, 1, 2)
with_key: str = guard.options(cache_key=("user", 7)).call(greet, "bob")
options: buttress.CallOptions = guard.options(priority=-1, cache_key="k")


async def use_async() -> None:
    """Awaiting acall gives the coroutine function's result type."""
    total: int = await guard.acall(aadd, 1, 2)
    prioritised_total: int = await guard.options(priority=3).acall(aadd, 3, 4)
    awaited: list[int] = await adecorated(5)
    pending: Awaitable[int] = guard.acall(aadd, 1, 2)
    again: int = await pending
    print(total, prioritised_total, awaited, again)


# Registry functions.
names: list[str] = buttress.targets()
maybe: buttress.Pipeline | None = buttress.get_target("api")
description: tuple[str, ...] = guard.describe()
target_name: str = guard.target
target_kind: str = guard.kind
active: bool = buttress.is_active()
buttress.configure(max_targets=100, propagate_deadlines=True)
buttress.reset_targets()
left: float | None = buttress.remaining()

# Runtime state.
if guard.breaker is not None:
    state: buttress.CircuitState = guard.breaker.state
    snapshot: policies.CircuitSnapshot = guard.breaker.snapshot(0.0)
    rate: float | None = snapshot.failure_rate
    guard.breaker.force_open()
    guard.breaker.reset()
if guard.bulkhead is not None:
    running: int = guard.bulkhead.active
    waiting: int = guard.bulkhead.queued
    guard.bulkhead.set_limit(8)
    rejected_count: int = guard.bulkhead.clear_queue()
if guard.rate_limiter is not None:
    tokens: float = guard.rate_limiter.available

with buttress.no_retry():
    pass

# Exceptions and their attributes.
try:
    guard.call(add, 1, 2)
except buttress.CircuitOpenError as exc:
    open_target: str = exc.target
    open_reason: str = exc.reason
    open_after: float | None = exc.retry_after
except buttress.RejectedError as exc:
    rejected_reason: str = exc.reason
except buttress.TimeoutError as exc:
    timeout_seconds: float = exc.timeout
    timeout_scope: str = exc.scope
    builtin: TimeoutError = exc
except buttress.ResilienceError as exc:
    any_target: str = exc.target
config_error: ValueError = buttress.ConfigurationError("bad")
hierarchy: list[type[buttress.ResilienceError]] = [
    buttress.BulkheadFullError,
    buttress.RateLimitedError,
    buttress.RetryBudgetExhaustedError,
]

# Telemetry.


def hook(event: telemetry.Event) -> None:
    if isinstance(event, telemetry.RetryScheduled):
        delay: float = event.delay
        print(delay)


remove: Callable[[], None] = telemetry.add_hook(hook)
hooks: tuple[telemetry.Hook, ...] = telemetry.get_hooks()
telemetry.set_hooks([hook])
remove()

# Testing helpers.
clock = testing.FakeClock(start=0.0)
clock.advance(1.0)
clock.sleep(0.5)
now: float = clock.monotonic()
sleeps: list[float] = clock.sleeps
as_clock: buttress.Clock = clock
system: buttress.Clock = buttress.SystemClock()
with testing.capture_events() as events:
    captured: list[telemetry.Event] = events
with testing.set_active(False), testing.set_testing(True, attempts=2):
    pass
