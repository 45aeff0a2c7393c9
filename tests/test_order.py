"""Policy order: what may move, what is refused, and that a moved policy really runs per attempt."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import pytest

import buttress
from buttress._order import ADMISSIONS, DEFAULT_LAYOUT, DEFAULT_ORDER, parse_order
from buttress.testing import FakeClock

RULES = (
    "fallback and cache come first",
    "timeout comes directly before retry",
    "attempt_timeout comes last",
    "rate_limit, bulkhead and breaker each sit before or after retry in that relative order",
)


def order_with(inside: set[str]) -> tuple[str, ...]:
    """The default order with the admission policies in *inside* moved after retry."""
    outer = [a for a in ADMISSIONS if a not in inside]
    inner = [a for a in ADMISSIONS if a in inside]
    return ("fallback", "cache", *outer, "timeout", "retry", *inner, "attempt_timeout")


class Flaky:
    """Raises ConnectionError the first *failures* times, then returns "ok"."""

    def __init__(self, failures: int, during: Callable[[], object] | None = None) -> None:
        self.failures = failures
        self.calls = 0
        self.during = during
        self.seen: list[object] = []

    def __call__(self) -> str:
        self.calls += 1
        if self.during is not None:
            self.seen.append(self.during())
        if self.calls <= self.failures:
            raise ConnectionError("transient")
        return "ok"


def run(mode: str, guard: buttress.Pipeline, fn: Callable[[], Any]) -> Any:
    """Call *fn* through *guard* with the sync or the async driver."""
    if mode == "sync":
        return guard.call(fn)

    async def afn() -> Any:
        return fn()

    return asyncio.run(guard.acall(afn))


def test_no_order_is_the_default_layout() -> None:
    """parse_order(None) and the spelled-out default both give the documented default."""
    assert DEFAULT_LAYOUT is parse_order(None)
    assert DEFAULT_LAYOUT == parse_order(list(DEFAULT_ORDER))
    assert DEFAULT_ORDER == DEFAULT_LAYOUT.order
    assert (frozenset({"rate_limit", "bulkhead"}), frozenset({"breaker"})) == (
        DEFAULT_LAYOUT.outer,
        DEFAULT_LAYOUT.inner,
    )


@pytest.mark.parametrize(
    "inside",
    [set(c) for n in range(4) for c in itertools.combinations(ADMISSIONS, n)],
    ids=lambda s: "inside:" + ("+".join(sorted(s)) or "none"),
)
def test_each_admission_policy_may_sit_inside_or_outside_retry(inside: set[str]) -> None:
    """All eight placements of rate_limit, bulkhead and breaker around retry are accepted."""
    order = order_with(inside)

    layout = parse_order(order)

    assert (frozenset(inside), frozenset(ADMISSIONS) - frozenset(inside)) == (
        layout.inner,
        layout.outer,
    )
    assert order == layout.order
    assert (
        order
        == buttress.protect(
            "placed",
            retry=buttress.Retry(on=ConnectionError),
            breaker=buttress.CircuitBreaker(),
            timeout=buttress.Timeout(),
            bulkhead=buttress.Bulkhead(),
            rate_limit=buttress.RateLimit(),
            cache=buttress.Cache(),
            fallback=buttress.Fallback(value=None),
            order=order,
        ).describe()
    )


@pytest.mark.parametrize(
    "order",
    [
        pytest.param(
            (
                "fallback",
                "memo",
                "rate_limit",
                "bulkhead",
                "timeout",
                "retry",
                "breaker",
                "attempt_timeout",
            ),
            id="unknown-name",
        ),
        pytest.param(
            (
                "fallback",
                "cache",
                "rate_limit",
                "bulkhead",
                "timeout",
                "retry",
                "retry",
                "attempt_timeout",
            ),
            id="duplicate",
        ),
        pytest.param(
            ("fallback", "cache", "rate_limit", "bulkhead", "timeout", "retry", "breaker"),
            id="missing-one",
        ),
        pytest.param((*DEFAULT_ORDER, "breaker"), id="extra-one"),
        pytest.param((), id="empty"),
        pytest.param("fallback", id="a-string"),
        pytest.param(
            (
                "fallback",
                "rate_limit",
                "bulkhead",
                "timeout",
                "retry",
                "cache",
                "breaker",
                "attempt_timeout",
            ),
            id="cache-inside-retry",
        ),
        pytest.param(
            (
                "cache",
                "fallback",
                "rate_limit",
                "bulkhead",
                "timeout",
                "retry",
                "breaker",
                "attempt_timeout",
            ),
            id="cache-before-fallback",
        ),
        pytest.param(
            (
                "fallback",
                "cache",
                "rate_limit",
                "bulkhead",
                "retry",
                "timeout",
                "breaker",
                "attempt_timeout",
            ),
            id="timeout-after-retry",
        ),
        pytest.param(
            (
                "fallback",
                "cache",
                "timeout",
                "rate_limit",
                "bulkhead",
                "retry",
                "breaker",
                "attempt_timeout",
            ),
            id="timeout-not-next-to-retry",
        ),
        pytest.param(
            (
                "fallback",
                "cache",
                "rate_limit",
                "bulkhead",
                "timeout",
                "retry",
                "attempt_timeout",
                "breaker",
            ),
            id="attempt-timeout-not-last",
        ),
        pytest.param(
            (
                "fallback",
                "cache",
                "bulkhead",
                "rate_limit",
                "timeout",
                "retry",
                "breaker",
                "attempt_timeout",
            ),
            id="admissions-swapped-outside",
        ),
        pytest.param(
            (
                "fallback",
                "cache",
                "timeout",
                "retry",
                "breaker",
                "bulkhead",
                "rate_limit",
                "attempt_timeout",
            ),
            id="admissions-swapped-inside",
        ),
    ],
)
def test_invalid_orders_are_refused_with_the_rules(order: tuple[str, ...]) -> None:
    """A refused order names itself and lists every rule an order must follow."""
    with pytest.raises(buttress.ConfigurationError) as info:
        parse_order(order)

    message = str(info.value)
    assert [] == [rule for rule in RULES if rule not in message]
    assert repr(tuple(order)) in message
    assert ", ".join(DEFAULT_ORDER) in message


def test_protect_refuses_an_invalid_order() -> None:
    """protect() validates the order at construction and registers nothing."""
    with pytest.raises(buttress.ConfigurationError, match="attempt_timeout comes last"):
        buttress.protect("bad", order=("attempt_timeout", *DEFAULT_ORDER[:-1]))
    assert [] == buttress.targets()


@pytest.mark.parametrize(
    ("policies", "order", "expected"),
    [
        pytest.param({}, None, (), id="nothing"),
        pytest.param({"retry": buttress.Retry(on=OSError)}, None, ("retry",), id="retry"),
        pytest.param(
            {"timeout": buttress.Timeout()},
            None,
            ("timeout", "attempt_timeout"),
            id="both-timeouts",
        ),
        pytest.param(
            {"timeout": buttress.Timeout(attempt=None, total=5.0)},
            None,
            ("timeout",),
            id="total-only",
        ),
        pytest.param(
            {"timeout": buttress.Timeout(attempt=1.0, total=None)},
            None,
            ("attempt_timeout",),
            id="attempt-only",
        ),
        pytest.param(
            {"timeout": buttress.Timeout(attempt=None, total=None)}, None, (), id="timeout-disabled"
        ),
        pytest.param(
            {
                "retry": buttress.Retry(on=OSError),
                "breaker": buttress.CircuitBreaker(),
                "cache": buttress.Cache(),
            },
            None,
            ("cache", "retry", "breaker"),
            id="cache-retry-breaker",
        ),
        pytest.param(
            {
                "retry": buttress.Retry(on=OSError),
                "breaker": buttress.CircuitBreaker(),
                "bulkhead": buttress.Bulkhead(),
                "rate_limit": buttress.RateLimit(),
            },
            order_with({"rate_limit", "bulkhead", "breaker"}),
            ("retry", "rate_limit", "bulkhead", "breaker"),
            id="all-admissions-inside",
        ),
        pytest.param(
            {
                "retry": buttress.Retry(on=OSError),
                "breaker": buttress.CircuitBreaker(),
                "bulkhead": buttress.Bulkhead(),
                "rate_limit": buttress.RateLimit(),
            },
            order_with({"rate_limit", "bulkhead"}),
            ("breaker", "retry", "rate_limit", "bulkhead"),
            id="breaker-out-others-in",
        ),
        pytest.param(
            {
                "retry": buttress.Retry(on=OSError),
                "breaker": buttress.CircuitBreaker(),
                "timeout": buttress.Timeout(),
                "fallback": buttress.Fallback(value=1),
            },
            order_with(set()),
            ("fallback", "breaker", "timeout", "retry", "attempt_timeout"),
            id="breaker-outside",
        ),
        pytest.param(
            {"breaker": buttress.CircuitBreaker(), "bulkhead": buttress.Bulkhead()},
            order_with({"bulkhead", "breaker"}),
            ("bulkhead", "breaker"),
            id="inside-without-retry",
        ),
    ],
)
def test_describe_lists_present_policies_in_layout_order(
    policies: dict[str, Any], order: tuple[str, ...] | None, expected: tuple[str, ...]
) -> None:
    """describe() shows only configured policies, outermost first, in the layout's order."""
    guard = buttress.protect("described", order=order, **policies)

    assert expected == guard.describe()
    assert "->".join(expected) in repr(guard)


class WatchingClock(FakeClock):
    """A fake clock that records a reading of the pipeline each time a back-off sleep starts."""

    def __init__(self) -> None:
        super().__init__()
        self.watch: Callable[[], object] = lambda: None
        self.during_sleep: list[object] = []

    def sleep(self, seconds: float) -> None:
        self.during_sleep.append(self.watch())
        super().sleep(seconds)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(
    ("inside", "held_while_backing_off"),
    [pytest.param(True, [0, 0], id="inside"), pytest.param(False, [1, 1], id="outside")],
)
def test_a_bulkhead_inside_retry_is_acquired_per_attempt(
    mode: str, inside: bool, held_while_backing_off: list[int]
) -> None:
    """Inside retry the slot is given back between attempts; outside it is held for the call."""
    clock = WatchingClock()
    guard = buttress.protect(
        "bh-order",
        retry=buttress.Retry(on=ConnectionError, attempts=3, backoff=buttress.constant(1.0)),
        bulkhead=buttress.Bulkhead(max_concurrent=1, max_queue=0),
        order=order_with({"bulkhead", "breaker"} if inside else {"breaker"}),
        clock=clock,
    )
    bulkhead = guard.bulkhead
    assert bulkhead is not None
    clock.watch = lambda: bulkhead.active
    flaky = Flaky(failures=2, during=lambda: bulkhead.active)

    assert "ok" == run(mode, guard, flaky)
    assert [1, 1, 1] == flaky.seen
    assert held_while_backing_off == clock.during_sleep
    assert 0 == bulkhead.active


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(
    ("inside", "tokens_left"),
    [pytest.param(True, 0, id="inside"), pytest.param(False, 2, id="outside")],
)
def test_a_rate_limit_inside_retry_spends_a_token_per_attempt(
    clock: FakeClock, mode: str, inside: bool, tokens_left: int
) -> None:
    """A call that takes three attempts empties a bucket of three when the limit is inside."""
    guard = buttress.protect(
        "rl-order",
        retry=buttress.Retry(on=ConnectionError, attempts=3, backoff=buttress.constant(0.0)),
        rate_limit=buttress.RateLimit(rate=1.0, burst=3),
        order=order_with({"rate_limit", "breaker"} if inside else {"breaker"}),
        clock=clock,
    )
    limiter = guard.rate_limiter
    assert limiter is not None
    flaky = Flaky(failures=2)

    assert "ok" == run(mode, guard, flaky)
    assert (3, tokens_left) == (flaky.calls, limiter.available)


def test_a_rate_limit_inside_retry_can_stop_the_retry_loop(clock: FakeClock) -> None:
    """With two tokens, the third attempt is refused by the limiter and the function is not run."""
    guard = buttress.protect(
        "rl-stop",
        retry=buttress.Retry(on=ConnectionError, attempts=3, backoff=buttress.constant(0.0)),
        rate_limit=buttress.RateLimit(rate=1.0, burst=2),
        order=order_with({"rate_limit", "breaker"}),
        clock=clock,
    )
    flaky = Flaky(failures=5)

    with pytest.raises(buttress.RateLimitedError):
        guard.call(flaky)
    assert 2 == flaky.calls
