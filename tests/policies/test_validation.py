"""
Validation at construction: every type and range, huge and non-finite numbers, non-callables.

The bad values of issue 14: integers too large for a float, infinities where a finite number is
needed, unhashable values, callables that are not, and sizes that would allocate gigabytes. Each
is a ConfigurationError when the object is built, naming the parameter, the value (never a
secret) and what is accepted. The memory bounds are checked with tracemalloc.
"""

# ruff: noqa: SIM300 - house style asserts `expected == actual` (R15)

from __future__ import annotations

import asyncio
import math
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import settings
from tests.policies.test_bulkhead_state_machine import BulkheadCoreMachine

import buttress
import buttress.policies._bulkhead_core as bulkhead_core
from buttress import ConfigurationError, telemetry
from buttress._context import PolicyContext
from buttress._validate import MAX_COUNT, looks_secret, number, shown
from buttress.policies._bulkhead_core import EAGER_PERMITS, BulkheadCore
from buttress.policies._circuit_breaker import MAX_COUNT_WINDOW, MAX_TIME_WINDOW
from buttress.testing import FakeClock

SECRET = "sk-live-4f9a8b7c6d5e4f3a2b1c0d9e"


def error_of(make: Callable[[], object]) -> str:
    with pytest.raises(ConfigurationError) as info:
        make()
    return str(info.value)


def peak_bytes(make: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        make()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# -- what messages show ------------------------------------------------------------------------


class BrokenRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "None"),
        (1.5, "1.5"),
        (math.inf, "inf"),
        (12, "12"),
        (10**400, "<an integer of about 401 digits>"),
        ("count", "'count'"),
        ("x" * 41, "<41 characters, not shown>"),
        (SECRET, f"<{len(SECRET)} characters, not shown>"),
        (f"Bearer {SECRET}", f"<{len(SECRET) + 7} characters, not shown>"),
        ("password=hunter2", "<16 characters, not shown>"),
        ([1, 2], "[1, 2]"),
        ([0] * 1000, "<list of 1000 items, not shown>"),
        ([SECRET], "<list object, not shown>"),
        (BrokenRepr(), "<BrokenRepr object>"),
    ],
)
def test_shown_is_short_and_never_a_secret(value: object, expected: str) -> None:
    """Messages show short values; secrets, long values and broken reprs by their kind only."""
    assert expected == shown(value)


def test_shown_handles_integers_past_the_string_limit() -> None:
    """str() of an int above 4300 digits raises ValueError: shown() must not."""
    assert "<an integer of about 5001 digits>" == shown(10**5000)


@pytest.mark.parametrize("text", ["8081", "bogus", "none", "GET", "http://example.com/x"])
def test_ordinary_values_do_not_look_secret(text: str) -> None:
    assert not looks_secret(text)


# -- numbers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [10**400, -(10**400)])
def test_integers_beyond_a_float_are_out_of_range_not_overflow(value: int) -> None:
    """An int no float can hold is a ConfigurationError, not an OverflowError."""
    message = error_of(lambda: number("Owner", "seconds", value))

    assert message.startswith("Owner: seconds=<an integer of about 401 digits> is out of range")


def test_huge_integers_below_the_bound_name_the_bound() -> None:
    message = error_of(lambda: number("Owner", "rate", -(10**400), low=0))

    assert "Owner: seconds" not in message
    assert message.endswith("expected a number >= 0")


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: buttress.Timeout(attempt=10**400), "Timeout: attempt=<an integer of about 401"),
        (lambda: buttress.Bulkhead(max_wait=-(10**400)), "Bulkhead: max_wait=<an integer"),
        (lambda: buttress.Cache(ttl=10**400), "Cache: ttl=<an integer"),
        (lambda: buttress.Retry(on=OSError, deadline=10**400), "Retry: deadline=<an integer"),
        (lambda: buttress.RetryBudget(ratio=10**400), "RetryBudget: ratio=<an integer"),
        (lambda: buttress.exponential(multiplier=10**400), "exponential: multiplier=<an integer"),
        (lambda: buttress.RateLimit(rate=10**400), "RateLimit: rate=<an integer"),
        (lambda: buttress.RateLimit.per_minute(10**400), "RateLimit.per_minute: n=<an integer"),
        (lambda: buttress.HealthRules(slow_call_duration=10**400), "HealthRules: slow_call"),
        (lambda: buttress.health(window=10**400), "health: window=<an integer"),
        (lambda: buttress.CircuitBreaker(open_duration=10**400), "CircuitBreaker: open_duration"),
    ],
)
def test_overflowing_numbers_fail_at_construction(
    make: Callable[[], object], expected: str
) -> None:
    """The issue's OverflowErrors: each is a ConfigurationError naming the parameter."""
    assert error_of(make).startswith(expected)


@pytest.mark.parametrize(
    ("make", "parameter"),
    [
        (lambda: buttress.Retry(on=OSError, attempts=MAX_COUNT + 1), "attempts"),
        (lambda: buttress.Bulkhead(max_concurrent=MAX_COUNT + 1), "max_concurrent"),
        (lambda: buttress.Bulkhead(max_queue=10**400), "max_queue"),
        (lambda: buttress.RateLimit(burst=10**400), "burst"),
        (lambda: buttress.Cache(max_entries=2**63), "max_entries"),
        (lambda: buttress.CircuitBreaker(minimum_calls=10**18), "minimum_calls"),
        (lambda: buttress.configure(max_targets=10**400), "max_targets"),
    ],
)
def test_counts_stop_at_the_ceiling(make: Callable[[], object], parameter: str) -> None:
    """Every count accepts up to MAX_COUNT; the message names that ceiling."""
    message = error_of(make)

    assert f"{parameter}=" in message
    assert f"<= {MAX_COUNT}" in message


def test_a_count_at_the_ceiling_is_accepted() -> None:
    assert MAX_COUNT == buttress.Retry(on=OSError, attempts=MAX_COUNT).attempts


def test_set_limit_stops_at_the_ceiling() -> None:
    state = buttress.Bulkhead().bind(PolicyContext(target="t"))

    assert "limit=" in error_of(lambda: state.set_limit(10**400))


# -- callables ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "parameter"),
    [
        (lambda v: buttress.Retry(on=OSError, on_result=v), "on_result"),
        (lambda v: buttress.Retry(on=OSError, retry_after=v), "retry_after"),
        (lambda v: buttress.Retry(on=OSError, veto=v), "veto"),
        (lambda v: buttress.Retry(on=v), "on"),
        (lambda v: buttress.CircuitBreaker(failure_on_result=v), "failure_on_result"),
        (lambda v: buttress.CircuitBreaker(failure_on=v), "failure_on"),
        (lambda v: buttress.Cache(key=v), "key"),
        (lambda v: buttress.Fallback(handler=v), "handler"),
        (lambda v: buttress.Fallback(value=0, on=v), "on"),
        (lambda v: buttress.protect("t", random=v), "random"),
        (lambda v: buttress.protect("t", probe=v), "probe"),
        (lambda v: buttress.protect("t", clock=v), "clock"),
        (telemetry.add_hook, "hook"),
        (lambda v: telemetry.set_hooks([v]), "hooks"),
    ],
)
@pytest.mark.parametrize("value", [1, "f", [], 2.5])
def test_non_callables_are_refused_at_construction(
    make: Callable[[Any], object], parameter: str, value: object
) -> None:
    """Not a TypeError inside the first call: a ConfigurationError naming the parameter."""
    message = error_of(lambda: make(value))

    assert parameter in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("random", "expected"),
    [
        (ValueError, "protect: random=<class 'ValueError'> returned ValueError()"),
        (lambda: 1.0, "returned 1.0; expected a callable returning a float in [0, 1)"),
        (lambda: None, "returned None"),
        (lambda: 1 / 0, "raised ZeroDivisionError when called"),
    ],
)
def test_a_random_source_is_drawn_once_at_construction(random: object, expected: str) -> None:
    """A jitter source returning no float in [0, 1) failed with TypeError inside a retry."""
    assert expected in error_of(lambda: buttress.protect("t", random=random))


def test_a_table_for_a_fallback_is_refused_like_true(tmp_path: Any) -> None:
    """fallback = {} raised a Fallback error naming neither the file nor the key."""
    from buttress._settings import load_settings  # noqa: PLC0415

    path = tmp_path / "b.toml"
    path.write_text("[defaults.db]\nfallback = {}\n", encoding="utf-8")

    message = error_of(lambda: load_settings({"BUTTRESS_CONFIG": str(path)}))

    assert message.endswith(
        "defaults.db.fallback = {} is not accepted; expected false (a fallback is configured in "
        "code, a file can only remove it)"
    )


def test_a_clock_missing_a_method_is_named() -> None:
    class HalfClock:
        def monotonic(self) -> float:
            return 0.0

    message = error_of(lambda: buttress.protect("t", clock=HalfClock()))

    assert "missing: sleep, asleep" in message


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"template": [1]}, "protect: template=[1] is not accepted; expected a buttress.PolicySet"),
        ({"observe": "no"}, "protect: observe='no' is not accepted; expected True or False"),
        ({"critical": 1}, "protect: critical=1 is not accepted; expected True or False"),
        ({"replace": None}, "protect: replace=None is not accepted; expected True or False"),
        ({"order": 5}, "order=5 is not accepted"),
        ({"order": [[], "retry"]}, "order=([], 'retry') is not accepted"),
        ({"kind": []}, "protect: kind=[] is not accepted"),
    ],
)
def test_protect_checks_every_parameter(kwargs: dict[str, Any], expected: str) -> None:
    assert error_of(lambda: buttress.protect("t", **kwargs)).startswith(expected)


@pytest.mark.parametrize("name", [[], {}, 5, ""])
def test_protect_refuses_a_bad_name_before_the_registry_sees_it(name: object) -> None:
    """An unhashable name was a TypeError from the registry's dictionary."""
    assert "protect: name=" in error_of(lambda: buttress.protect(name))  # type: ignore[arg-type]


def test_an_unhashable_cache_key_is_refused_when_given() -> None:
    guard = buttress.protect("t", cache=buttress.Cache())

    message = error_of(lambda: guard.options(cache_key=[1]))

    assert message.startswith("options: cache_key=[1] is not accepted; expected a hashable")


def test_health_rules_must_be_health_rules() -> None:
    assert "health: rules=" in error_of(lambda: buttress.health(rules=0.5))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"host": None}, "start_health_server: host=None is not accepted"),
        ({"admin_token": 12345}, "start_health_server: admin_token (a int) is not accepted"),
    ],
)
def test_start_health_server_checks_its_types(kwargs: dict[str, Any], expected: str) -> None:
    assert error_of(lambda: buttress.start_health_server(0, **kwargs)).startswith(expected)


@pytest.mark.parametrize("names", ["requests", 5, [5], ["nope"]])
def test_integrations_instrument_refuses_what_is_not_a_list_of_names(names: object) -> None:
    from buttress.integrations import instrument  # noqa: PLC0415

    assert "integrations.instrument" in error_of(lambda: instrument(names))  # type: ignore[arg-type]


def test_telemetry_samples_per_second_is_checked() -> None:
    message = error_of(lambda: telemetry.instrument(samples_per_second=math.nan))

    assert message.startswith("telemetry.instrument: samples_per_second=nan is not accepted")


def test_a_retry_after_that_returns_no_number_is_ignored(clock: FakeClock) -> None:
    """A server-delay callable returning garbage leaves the back-off in charge."""
    guard = buttress.protect(
        "t",
        retry=buttress.Retry(
            on=ConnectionError, attempts=2, retry_after=lambda _: "soon", budget=None
        ),
        clock=clock,
    )
    calls = []

    def flaky() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError
        return 7

    assert 7 == guard.call(flaky)
    assert 1 == len(clock.sleeps)


def test_secrets_are_not_echoed_by_constructors() -> None:
    message = error_of(lambda: buttress.Retry(on=OSError, budget_exhausted=f"Bearer {SECRET}"))

    assert SECRET not in message
    assert "budget_exhausted=<" in message


# -- memory ------------------------------------------------------------------------------------


def test_a_huge_bulkhead_costs_nothing_up_front() -> None:
    """Bulkhead(max_concurrent=10**8) took 1.6 GiB: permits are now created as calls use them."""
    bulkhead = buttress.Bulkhead(max_concurrent=10**8)

    peak = peak_bytes(lambda: bulkhead.bind(PolicyContext(target="t")))

    assert peak < 1 * 2**20


def test_a_large_bulkhead_admits_exactly_its_limit() -> None:
    """Past the eager permits, slots come from the unissued count, exactly up to the limit."""
    limit = EAGER_PERMITS + 5
    state = buttress.Bulkhead(max_concurrent=limit, max_queue=0).bind(PolicyContext(target="t"))
    for _ in range(limit):
        state.acquire()

    with pytest.raises(buttress.BulkheadFullError):
        state.acquire()
    assert (limit, limit) == (state.active, state.limit)
    for _ in range(limit):
        state.release()
    assert 0 == state.active
    assert limit == len(state._free)  # the deque grew to what ran at once, no further


def test_a_large_bulkhead_admits_tasks_past_the_eager_permits() -> None:
    limit = EAGER_PERMITS + 3
    state = buttress.Bulkhead(max_concurrent=limit, max_queue=0).bind(PolicyContext(target="t"))

    async def fill_then_one_more() -> None:
        await asyncio.gather(*(state.acquire_async() for _ in range(limit)))
        with pytest.raises(buttress.BulkheadFullError):
            await state.acquire_async()

    asyncio.run(fill_then_one_more())
    assert limit == state.active


def test_set_limit_and_reset_keep_lazy_permits_exact() -> None:
    core = BulkheadCore(10**9, 0)
    assert core.try_enter()
    core.set_limit(10**9 + 0)
    assert 1 == core.active
    core.set_limit(5)  # below what is free: the unissued permits pay the debt
    assert (1, 5) == (core.active, core.limit)
    core.reset()  # after fork: every slot free again
    assert 0 == core.active
    core.set_limit(MAX_COUNT)
    assert 0 == core.active
    assert len(core.free) <= EAGER_PERMITS


class LazyPermitsMachine(BulkheadCoreMachine):
    """The bulkhead state machine with one eager permit: every other slot is created lazily."""

    def __init__(self) -> None:
        self.saved = bulkhead_core.EAGER_PERMITS
        bulkhead_core.EAGER_PERMITS = 1
        super().__init__()

    def teardown(self) -> None:
        bulkhead_core.EAGER_PERMITS = self.saved
        super().teardown()


TestLazyPermitsMachine = LazyPermitsMachine.TestCase
TestLazyPermitsMachine.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)


@pytest.mark.parametrize(
    ("kwargs", "bound"),
    [
        ({"window": "count", "window_size": MAX_COUNT_WINDOW}, 1 * 2**20),
        ({"window": "time", "window_size": MAX_TIME_WINDOW}, 1 * 2**20),
    ],
)
def test_the_largest_breaker_windows_are_small(kwargs: dict[str, Any], bound: int) -> None:
    """A time window of 10**8 s took 3.1 GiB: windows stop at a size that costs under 1 MiB."""
    breaker = buttress.CircuitBreaker(**kwargs)

    assert peak_bytes(lambda: breaker.bind(PolicyContext(target="t"))) < bound


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (
            {"window": "count", "window_size": MAX_COUNT_WINDOW + 1},
            f"window_size=100001 is out of range; expected an integer >= 1 and <= {MAX_COUNT_WINDOW}",
        ),
        (
            {"window": "time", "window_size": 10**8},
            f"window_size=100000000 is out of range; expected a number >= 1 and <= {MAX_TIME_WINDOW}",
        ),
        ({"window": "time", "window_size": math.inf}, "window_size=inf is out of range"),
    ],
)
def test_breaker_windows_above_their_bound_are_refused(
    kwargs: dict[str, Any], expected: str
) -> None:
    assert expected in error_of(lambda: buttress.CircuitBreaker(**kwargs))
