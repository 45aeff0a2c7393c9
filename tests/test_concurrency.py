"""The whole pipeline under threads and tasks, and the testing helpers that tests lean on."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import buttress
from buttress._config import CONFIG
from buttress.telemetry import (
    BulkheadDequeued,
    BulkheadQueued,
    CallRejected,
    CircuitStateChanged,
    Event,
    RetryScheduled,
)
from buttress.telemetry._hooks import emit, get_hooks
from buttress.testing import FakeClock, capture_events, set_active, set_testing

THREADS = 16
CALLS_PER_THREAD = 200
TASKS = 64
CALLS_PER_TASK = 50
QUEUE_EVENTS = (BulkheadQueued, BulkheadDequeued)


class Gauge:
    """Counts calls in progress and remembers the most seen at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current = 0
        self.max = 0
        self.entered = 0

    def enter(self) -> None:
        with self._lock:
            self.current += 1
            self.entered += 1
            self.max = max(self.max, self.current)

    def leave(self) -> None:
        with self._lock:
            self.current -= 1


def full_guard(name: str) -> buttress.Pipeline:
    """Retry, breaker, timeouts and a bulkhead of four with a queue."""
    return buttress.protect(
        name,
        retry=buttress.Retry(
            on=ConnectionError, attempts=3, backoff=buttress.constant(0.0), budget=None
        ),
        breaker=buttress.CircuitBreaker(),
        timeout=buttress.Timeout(),
        bulkhead=buttress.Bulkhead(max_concurrent=4, max_wait=5.0),
    )


def in_threads(worker: Callable[[int], None], count: int = THREADS) -> None:
    """Run worker(0..count-1) in threads released together, and re-raise the first failure."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def start(index: int) -> None:
        try:
            barrier.wait(10)
            worker(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [] == [t.name for t in threads if t.is_alive()]
    if errors:
        raise errors[0]


def test_threads_never_exceed_the_bulkhead_and_get_their_own_results() -> None:
    """16 threads x 200 calls: at most 4 run at once, each gets its value, nothing is left held."""
    guard = full_guard("threads")
    gauge = Gauge()
    wrong: list[tuple[int, int]] = []

    def work(x: int) -> int:
        gauge.enter()
        try:
            time.sleep(0)  # yield the GIL so that calls overlap
            return x * 2
        finally:
            gauge.leave()

    def worker(index: int) -> None:
        for i in range(CALLS_PER_THREAD):
            x = index * 10_000 + i
            result = guard.call(work, x)
            if result != 2 * x:
                wrong.append((x, result))

    in_threads(worker)

    bulkhead = guard.bulkhead
    assert bulkhead is not None
    assert [] == wrong
    assert THREADS * CALLS_PER_THREAD == gauge.entered
    assert 1 < gauge.max <= 4
    assert (0, 0) == (bulkhead.active, bulkhead.queued)
    assert buttress.CircuitState.CLOSED == guard.breaker.state  # type: ignore[union-attr]


def test_tasks_never_exceed_the_bulkhead_and_get_their_own_results() -> None:
    """64 tasks on one loop: at most 4 run at once, each gets its value, nothing is left held."""
    guard = full_guard("tasks")
    gauge = Gauge()

    async def work(x: int) -> int:
        gauge.enter()
        try:
            await asyncio.sleep(0)
            return x * 2
        finally:
            gauge.leave()

    async def worker(index: int) -> list[tuple[int, int]]:
        wrong = []
        for i in range(CALLS_PER_TASK):
            x = index * 10_000 + i
            result = await guard.acall(work, x)
            if result != 2 * x:
                wrong.append((x, result))
        return wrong

    async def main() -> list[list[tuple[int, int]]]:
        return await asyncio.gather(*(worker(i) for i in range(TASKS)))

    results = asyncio.run(main())

    bulkhead = guard.bulkhead
    assert bulkhead is not None
    assert [[]] * TASKS == results
    assert TASKS * CALLS_PER_TASK == gauge.entered
    assert 1 < gauge.max <= 4
    assert (0, 0) == (bulkhead.active, bulkhead.queued)


def test_transient_failures_are_retried_and_the_counts_add_up() -> None:
    """Every fifth call fails once: each call still succeeds and attempts = calls + failures."""
    guard = full_guard("mixed")
    gauge = Gauge()
    lock = threading.Lock()
    failed_once: set[int] = set()

    def work(x: int) -> int:
        gauge.enter()
        try:
            time.sleep(0)
            if x % 5 == 0:  # callers stagger these, so the breaker sees about one in six fail
                with lock:
                    first = x not in failed_once
                    failed_once.add(x)
                if first:
                    raise ConnectionError(f"transient {x}")
            return x * 2
        finally:
            gauge.leave()

    wrong: list[int] = []

    def worker(index: int) -> None:
        for i in range(CALLS_PER_THREAD):
            x = index * 10_001 + i  # offset per thread, so threads do not all fail at once
            if guard.call(work, x) != 2 * x:
                wrong.append(x)

    with capture_events() as events:
        in_threads(worker)

    calls = THREADS * CALLS_PER_THREAD
    transient = calls // 5
    bulkhead = guard.bulkhead
    assert bulkhead is not None
    assert [] == wrong
    assert transient == len(failed_once)
    assert calls + transient == gauge.entered
    assert transient == len([e for e in events if isinstance(e, RetryScheduled)])
    queued = [e for e in events if isinstance(e, BulkheadQueued)]
    assert len(queued) == len([e for e in events if isinstance(e, BulkheadDequeued)])
    assert [] == [e for e in events if not isinstance(e, (RetryScheduled, *QUEUE_EVENTS))]
    assert gauge.max <= 4
    assert (0, 0) == (bulkhead.active, bulkhead.queued)


def test_no_call_reaches_the_function_once_threads_see_the_breaker_open(clock: FakeClock) -> None:
    """
    A call started after its thread saw the breaker open never runs; the breaker trips once.

    Calls admitted just before the trip may still run (at most one per other thread), so the
    check is on the state each thread saw before calling, recorded by the function it reached.
    """
    guard = buttress.protect(
        "tripping",
        breaker=buttress.CircuitBreaker(window_size=20, minimum_calls=20, open_duration=300.0),
        clock=clock,
    )
    breaker = guard.breaker
    assert breaker is not None
    local = threading.local()
    lock = threading.Lock()
    seen: list[tuple[buttress.CircuitState, buttress.CircuitState]] = []
    outcomes: dict[str, int] = {"ConnectionError": 0, "CircuitOpenError": 0}

    def failing() -> None:
        with lock:
            seen.append((local.before, breaker.state))
        time.sleep(0)
        raise ConnectionError("down")

    def worker(_: int) -> None:
        for _ in range(50):
            local.before = breaker.state
            try:
                guard.call(failing)
            except (ConnectionError, buttress.CircuitOpenError) as exc:
                with lock:
                    outcomes[type(exc).__name__] += 1

    with capture_events() as events:
        in_threads(worker)

    before = [b for b, _ in seen]
    stragglers = [inside for _, inside in seen if inside is buttress.CircuitState.OPEN]
    transitions = [(e.from_state, e.to_state) for e in events if isinstance(e, CircuitStateChanged)]
    assert [] == [b for b in before if b is buttress.CircuitState.OPEN]
    assert 20 <= len(seen) <= 20 + THREADS - 1
    assert len(stragglers) <= THREADS - 1
    assert {"ConnectionError": len(seen), "CircuitOpenError": THREADS * 50 - len(seen)} == outcomes
    assert [("closed", "open")] == transitions
    assert outcomes["CircuitOpenError"] == len([e for e in events if isinstance(e, CallRejected)])
    assert buttress.CircuitState.OPEN == breaker.state


# -- buttress.testing -------------------------------------------------------------------------


def test_fake_clock_advance_moves_time_and_never_sleeps() -> None:
    """advance() moves monotonic() by exactly the amount given and records no sleep."""
    clock = FakeClock(start=5.0)

    clock.advance(2.5)
    clock.advance(0)

    assert (7.5, []) == (clock.monotonic(), clock.sleeps)


def test_fake_clock_refuses_to_go_backwards() -> None:
    """advance(-1) raises ValueError naming the value, and time stays where it was."""
    clock = FakeClock()

    with pytest.raises(ValueError, match=r"seconds=-1"):
        clock.advance(-1)
    assert 1000.0 == clock.monotonic()


def test_fake_clock_sleep_and_asleep_record_and_advance() -> None:
    """sleep() and asleep() advance time and record each requested delay, in order."""
    clock = FakeClock(start=0.0)

    clock.sleep(1.0)
    asyncio.run(clock.asleep(0.25))
    clock.sleep(0.0)

    assert (1.25, [1.0, 0.25, 0.0]) == (clock.monotonic(), clock.sleeps)


def test_fake_clock_negative_sleep_is_recorded_but_does_not_rewind() -> None:
    """A negative sleep request is kept in sleeps for the test to see, and time stays put."""
    clock = FakeClock(start=3.0)

    clock.sleep(-2.0)

    assert (3.0, [-2.0]) == (clock.monotonic(), clock.sleeps)


def test_fake_clock_sleeps_from_many_threads_are_all_counted() -> None:
    """Sixteen threads sleeping 500 times each move the clock by exactly their sum."""
    clock = FakeClock(start=0.0)

    def worker(_: int) -> None:
        for _ in range(500):
            clock.sleep(1.0)

    in_threads(worker)

    assert (8000.0, 8000) == (clock.monotonic(), len(clock.sleeps))


def event(name: str) -> Event:
    """A distinguishable event."""
    return Event(target=name, kind="function")


def test_capture_events_captures_only_inside_its_block() -> None:
    """Events emitted before and after the block are not captured; the hook is removed."""
    hooks_before = get_hooks()
    emit(event("before"))

    with capture_events() as events:
        emit(event("inside"))

    emit(event("after"))
    assert ["inside"] == [e.target for e in events]
    assert hooks_before == get_hooks()


def test_capture_events_nests() -> None:
    """An outer capture sees everything in its block; an inner one only its own block."""
    with capture_events() as outer:
        emit(event("a"))
        with capture_events() as inner:
            emit(event("b"))
        emit(event("c"))

    assert (["a", "b", "c"], ["b"]) == ([e.target for e in outer], [e.target for e in inner])


def test_capture_events_removes_its_hook_when_the_block_raises() -> None:
    """An exception inside the block still unregisters the capturing hook."""
    hooks_before = get_hooks()

    with pytest.raises(KeyError), capture_events():
        raise KeyError("boom")

    assert hooks_before == get_hooks()


def test_capture_events_sees_pipeline_decisions(clock: FakeClock) -> None:
    """A real decision (a rejection by a forced-open breaker) reaches the capture."""
    guard = buttress.protect("cap", breaker=buttress.CircuitBreaker(), clock=clock)
    guard.breaker.force_open()  # type: ignore[union-attr]

    with capture_events() as events, pytest.raises(buttress.CircuitOpenError):
        guard.call(lambda: None)

    assert [("cap", "circuit_open")] == [
        (e.target, e.reason) for e in events if isinstance(e, CallRejected)
    ]


def switches() -> tuple[bool, bool, int]:
    """The process-wide switches that set_active and set_testing change."""
    return CONFIG.active, CONFIG.testing, CONFIG.testing_attempts


def test_set_active_applies_at_once_and_restores_on_exit() -> None:
    """set_active(False) takes effect when called; leaving its block restores the old value."""
    with set_active(False):
        inside = buttress.is_active()

    assert (False, True) == (inside, buttress.is_active())


def test_set_active_nests() -> None:
    """Nested set_active blocks each restore the value they found."""
    seen = []
    with set_active(False):
        seen.append(buttress.is_active())
        with set_active(True):
            seen.append(buttress.is_active())
        seen.append(buttress.is_active())
    seen.append(buttress.is_active())

    assert [False, True, False, True] == seen


def test_set_testing_nests_and_restores_attempts() -> None:
    """Nested set_testing blocks restore both the flag and the attempt cap they found."""
    seen = []
    with set_testing(True, attempts=3):
        seen.append(switches())
        with set_testing(False):
            seen.append(switches())
        seen.append(switches())
    seen.append(switches())

    assert [(True, True, 3), (True, False, 1), (True, True, 3), (True, False, 1)] == seen


def test_set_active_and_set_testing_nest_within_each_other() -> None:
    """Mixed nesting restores every switch in last-in first-out order."""
    seen = []
    with set_testing(True, attempts=2):
        with set_active(False):
            seen.append(switches())
        seen.append(switches())
    seen.append(switches())

    assert [(False, True, 2), (True, True, 2), (True, False, 1)] == seen


def test_set_testing_and_set_active_restore_only_their_own_switch() -> None:
    """Leaving a set_testing block does not undo a set_active made inside it, and vice versa."""
    with set_testing(True):
        set_active(False)  # e.g. an emergency switch-off while a test-mode block runs
    after_testing_block = switches()
    CONFIG.active, CONFIG.testing, CONFIG.testing_attempts = True, False, 1
    with set_active(False):
        set_testing(True, attempts=4)
    after_active_block = switches()

    assert (False, False, 1) == after_testing_block
    assert (True, True, 4) == after_active_block


def test_set_testing_refuses_zero_attempts_and_changes_nothing() -> None:
    """attempts=0 is a ConfigurationError naming attempts, raised before any switch moves."""
    before = switches()

    with pytest.raises(buttress.ConfigurationError, match="attempts"):
        set_testing(True, attempts=0)
    assert before == switches()


def test_set_active_false_bypasses_the_pipeline_in_threads() -> None:
    """While inactive, calls from many threads pass straight through a forced-open breaker."""
    guard = buttress.protect("off", breaker=buttress.CircuitBreaker())
    guard.breaker.force_open()  # type: ignore[union-attr]
    results: list[Any] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        value = guard.call(lambda: index)
        with lock:
            results.append(value)

    with set_active(False):
        in_threads(worker)

    assert list(range(THREADS)) == sorted(results)
