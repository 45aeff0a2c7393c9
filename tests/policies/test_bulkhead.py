"""Tests for the priority bulkhead: config, fast path, queueing, hand-off, operations, events."""

# ruff: noqa: SIM300 - house style asserts `expected == actual` (R15)

from __future__ import annotations

import asyncio
import math
import threading
import time
from typing import TYPE_CHECKING

import pytest

from buttress._context import PolicyContext
from buttress._exceptions import BulkheadFullError, ConfigurationError
from buttress.policies._bulkhead import Bulkhead, BulkheadState
from buttress.telemetry._events import BulkheadDequeued, BulkheadQueued, CallRejected, Event
from buttress.testing import capture_events

if TYPE_CHECKING:
    from collections.abc import Callable


@pytest.fixture
def anyio_backend():
    """The bulkhead's async driver is asyncio-specific (futures, call_soon_threadsafe)."""
    return "asyncio"


WAIT = 5.0  # generous queue wait for tests where the slot always comes quickly


def make(events: list[Event] | None = None, *, observe_ctx: bool = False, **kw: object):
    """Bind a Bulkhead built from *kw* to a context whose events go to *events*."""
    sink = events if events is not None else []
    ctx = PolicyContext(target="db", kind="db", emit=sink.append, observe=observe_ctx)
    return Bulkhead(**kw).bind(ctx)  # type: ignore[arg-type]


async def queued_at_least(state: BulkheadState, n: int) -> None:
    """Let other tasks run until *n* calls are queued, failing if they never are."""
    for _ in range(10_000):
        if state.queued >= n:
            return
        await asyncio.sleep(0)
    pytest.fail(f"never saw {n} queued calls")


def wait_until(cond: Callable[[], bool], timeout: float = 2.0) -> None:
    """Yield the GIL until *cond* holds (a thread reached the queue), failing after *timeout*."""
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition never became true"
        time.sleep(0)


def spawn(state: BulkheadState, priority: int, log: list[object], name: object) -> threading.Thread:
    """Start a thread that acquires, logs *name* (or the error) and releases."""

    def run() -> None:
        try:
            state.acquire(priority)
        except BulkheadFullError as exc:
            log.append((name, exc))
            return
        log.append(name)
        state.release()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


# -- configuration ---------------------------------------------------------------------------


def test_defaults():
    """Bulkhead() uses resilience4j's 25 slots, a 100-call queue and a 1 s wait."""
    b = Bulkhead()

    assert (25, 100, 1.0, False) == (b.max_concurrent, b.max_queue, b.max_wait, b.observe)


def test_reprs():
    """Config and state reprs show the limits and the live counts."""
    state = make(max_concurrent=3)
    state.acquire(0, math.inf)

    assert "<Bulkhead max_concurrent=3 max_queue=100 max_wait=1s>" == repr(state.config)
    assert "<BulkheadState target='db' active=1/3 queued=0>" == repr(state)


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"max_concurrent": 0}, "max_concurrent=0 is out of range; expected an integer >= 1"),
        ({"max_concurrent": 2.5}, "max_concurrent=2.5 is not accepted"),
        ({"max_concurrent": True}, "max_concurrent=True is not accepted"),
        ({"max_queue": -1}, "Bulkhead: max_queue=-1 is out of range; expected an integer >= 0"),
        ({"max_wait": -0.5}, "Bulkhead: max_wait=-0.5 is out of range; expected a number >= 0"),
        ({"max_wait": "1s"}, "max_wait='1s' is not accepted"),
        ({"observe": "yes"}, "observe='yes' is not accepted"),
    ],
)
def test_validation_names_parameter_value_and_range(kw, expected):
    """Bad parameters raise ConfigurationError naming the parameter, the value and the range."""
    with pytest.raises(ConfigurationError) as info:
        Bulkhead(**kw)

    assert expected in str(info.value)


def test_max_wait_is_normalised_to_float():
    """An integer max_wait is stored as float seconds."""
    assert 2.0 == Bulkhead(max_wait=2).max_wait
    assert isinstance(Bulkhead(max_wait=2).max_wait, float)


# -- fast path -------------------------------------------------------------------------------


def test_fast_path_takes_and_returns_slots_silently():
    """Free slots are taken and returned without queueing or events."""
    events: list[Event] = []
    state = make(events, max_concurrent=2)

    state.acquire(0, math.inf)
    state.acquire(5, math.inf)
    taken = state.active
    state.release()

    assert (2, 1, 0, []) == (taken, state.active, state.queued, events)


@pytest.mark.anyio
async def test_async_fast_path():
    """acquire_async takes a free slot at once."""
    state = make(max_concurrent=1)

    await state.acquire_async(0, math.inf)

    assert 1 == state.active


# -- rejection -------------------------------------------------------------------------------


def test_full_queue_rejects_with_bulkhead_full():
    """With max_queue=0 a call beyond the limit is rejected at once, naming the target."""
    events: list[Event] = []
    state = make(events, max_concurrent=1, max_queue=0)
    state.acquire(0, math.inf)

    with pytest.raises(BulkheadFullError) as info:
        state.acquire(0, math.inf)

    assert "bulkhead_full" == info.value.reason
    assert "db" == info.value.target
    assert str(info.value).startswith("buttress: bulkhead for target 'db' is full (1 running")
    assert [CallRejected(target="db", kind="db", reason="bulkhead_full")] == events


def test_queue_timeout():
    """A queued call that gets no slot within max_wait leaves the queue with queue_timeout."""
    events: list[Event] = []
    state = make(events, max_concurrent=1, max_wait=0.02)
    state.acquire(0, math.inf)

    with pytest.raises(BulkheadFullError) as info:
        state.acquire(3, math.inf)

    assert "queue_timeout" == info.value.reason
    assert (1, 0) == (state.active, state.queued)
    assert [
        BulkheadQueued(target="db", kind="db", priority=3, queued=1),
        CallRejected(target="db", kind="db", reason="queue_timeout"),
    ] == events


def test_deadline_shortens_the_wait():
    """The call's deadline bounds the queue wait even when max_wait is longer."""
    state = make(max_concurrent=1, max_wait=WAIT)
    state.acquire(0, math.inf)
    start = time.monotonic()

    with pytest.raises(BulkheadFullError) as info:
        state.acquire(0, time.monotonic() + 0.02)

    assert "queue_timeout" == info.value.reason
    assert time.monotonic() - start < 1.0


def test_passed_deadline_rejects_without_queueing():
    """A call whose deadline has passed is rejected at once and never joins the queue."""
    events: list[Event] = []
    state = make(events, max_concurrent=1)
    state.acquire(0, math.inf)

    with pytest.raises(BulkheadFullError) as info:
        state.acquire(0, time.monotonic() - 1)

    assert "queue_timeout" == info.value.reason
    assert [CallRejected(target="db", kind="db", reason="queue_timeout")] == events


@pytest.mark.anyio
async def test_async_queue_timeout():
    """An async waiter times out like a thread does and leaves the queue."""
    state = make(max_concurrent=1, max_wait=0.02)
    await state.acquire_async(0, math.inf)

    with pytest.raises(BulkheadFullError) as info:
        await state.acquire_async(0, math.inf)

    assert ("queue_timeout", 0) == (info.value.reason, state.queued)


# -- queueing order and hand-off -------------------------------------------------------------


def test_threads_are_served_by_priority_then_fifo():
    """Queued threads get the slot highest priority first, arrival order within a priority."""
    state = make(max_concurrent=1, max_wait=WAIT)
    state.acquire(0, math.inf)
    log: list[object] = []
    threads = []
    for n, priority in enumerate([1, 5, 1, 5, 0, 9]):
        threads.append(spawn(state, priority, log, (priority, n)))
        wait_until(lambda n=n: state.queued == n + 1)

    state.release()
    for t in threads:
        t.join()

    assert [(9, 5), (5, 1), (5, 3), (1, 0), (1, 2), (0, 4)] == log


@pytest.mark.anyio
async def test_tasks_are_served_by_priority_then_fifo():
    """Queued asyncio tasks get the slot highest priority first, then in arrival order."""
    state = make(max_concurrent=1, max_wait=WAIT)
    await state.acquire_async(0, math.inf)
    log: list[tuple[int, int]] = []

    async def call(priority: int, n: int) -> None:
        await state.acquire_async(priority, math.inf)
        log.append((priority, n))
        state.release()

    tasks = []
    for n, priority in enumerate([0, 2, 0, 2, 7]):
        tasks.append(asyncio.create_task(call(priority, n)))
        await queued_at_least(state, n + 1)
    state.release()
    await asyncio.gather(*tasks)

    assert [(7, 4), (2, 1), (2, 3), (0, 0), (0, 2)] == log


def test_release_hands_the_slot_to_the_waiter():
    """Release gives the slot straight to the waiter: active stays at the limit."""
    events: list[Event] = []
    state = make(events, max_concurrent=1, max_wait=WAIT)
    state.acquire(0, math.inf)
    got = threading.Event()
    done = threading.Event()

    def waiter() -> None:
        state.acquire(4, math.inf)
        got.set()
        done.wait(WAIT)
        state.release()

    t = threading.Thread(target=waiter)
    t.start()
    wait_until(lambda: state.queued == 1)
    state.release()
    assert got.wait(WAIT)
    handed = (state.active, state.queued)
    done.set()
    t.join()

    assert (1, 0) == handed
    assert 0 == state.active
    assert isinstance(events[-1], BulkheadDequeued)
    assert 4 == events[-1].priority
    assert 0 <= events[-1].wait < WAIT


def test_full_queue_displaces_lower_priority_waiter():
    """A higher-priority newcomer takes the place of the newest lowest-priority waiter."""
    state = make(max_concurrent=1, max_queue=2, max_wait=WAIT)
    state.acquire(0, math.inf)
    log: list[object] = []
    low_old = spawn(state, 1, log, "low-old")
    wait_until(lambda: state.queued == 1)
    low_new = spawn(state, 1, log, "low-new")
    wait_until(lambda: state.queued == 2)
    high = spawn(state, 5, log, "high")
    low_new.join()
    queued_after = state.queued

    state.release()
    for t in (low_old, high):
        t.join()

    name, exc = log[0]  # type: ignore[misc]
    assert ("low-new", "bulkhead_full") == (name, exc.reason)
    assert "higher-priority call took its place" in str(exc)
    assert 2 == queued_after
    assert ["high", "low-old"] == log[1:]


def test_full_queue_rejects_equal_priority_newcomer():
    """A newcomer that does not outrank anyone in the full queue is rejected itself."""
    state = make(max_concurrent=1, max_queue=1, max_wait=WAIT)
    state.acquire(0, math.inf)
    log: list[object] = []
    t = spawn(state, 2, log, "first")
    wait_until(lambda: state.queued == 1)

    with pytest.raises(BulkheadFullError, match="is full"):
        state.acquire(2, math.inf)
    state.release()
    t.join()

    assert ["first"] == log


# -- operations ------------------------------------------------------------------------------


def test_clear_queue_rejects_every_waiter():
    """clear_queue rejects all waiters with a message saying the queue was cleared."""
    events: list[Event] = []
    state = make(events, max_concurrent=1, max_wait=WAIT)
    state.acquire(0, math.inf)
    log: list[object] = []
    threads = [spawn(state, p, log, p) for p in (1, 2, 3)]
    wait_until(lambda: state.queued == 3)

    cleared = state.clear_queue()
    for t in threads:
        t.join()

    assert 3 == cleared
    assert (1, 0) == (state.active, state.queued)
    assert {"bulkhead_full"} == {exc.reason for _, exc in log}  # type: ignore[misc]
    assert all("the queue was cleared" in str(exc) for _, exc in log)  # type: ignore[misc]
    rejected = [e for e in events if isinstance(e, CallRejected)]
    assert 3 == len(rejected)


def test_clear_empty_queue_returns_zero():
    """Clearing an empty queue rejects nobody."""
    assert 0 == make().clear_queue()


def test_set_limit_up_admits_waiters_at_once():
    """Raising the limit grants queued calls immediately."""
    state = make(max_concurrent=1, max_wait=WAIT)
    state.acquire(0, math.inf)
    admitted = threading.Semaphore(0)
    leave = threading.Event()

    def waiter() -> None:
        state.acquire(0, math.inf)
        admitted.release()
        leave.wait(WAIT)
        state.release()

    threads = [threading.Thread(target=waiter) for _ in range(2)]
    for t in threads:
        t.start()
    wait_until(lambda: state.queued == 2)

    state.set_limit(3)
    assert admitted.acquire(timeout=WAIT)
    assert admitted.acquire(timeout=WAIT)
    reading = (state.limit, state.active, state.queued)
    leave.set()
    for t in threads:
        t.join()

    assert (3, 3, 0) == reading


def test_set_limit_down_lets_in_flight_calls_finish():
    """Lowering the limit preempts nothing; new calls wait until active drops below it."""
    state = make(max_concurrent=3, max_queue=0)
    for _ in range(3):
        state.acquire(0, math.inf)

    state.set_limit(1)
    over = state.active
    with pytest.raises(BulkheadFullError):
        state.acquire(0, math.inf)
    state.release()
    state.release()
    with pytest.raises(BulkheadFullError):
        state.acquire(0, math.inf)
    state.release()
    state.acquire(0, math.inf)

    assert (3, 1, 1) == (over, state.active, state.limit)


def test_set_limit_validates():
    """set_limit refuses a limit below 1, naming the parameter."""
    expected = r"set_limit: limit=0 is out of range; expected an integer >= 1"
    with pytest.raises(ConfigurationError, match=expected):
        make().set_limit(0)


# -- asyncio specifics -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_cancelled_async_waiter_leaves_the_queue():
    """Cancelling a queued task removes it from the queue and re-raises CancelledError."""
    state = make(max_concurrent=1, max_wait=WAIT)
    await state.acquire_async(0, math.inf)
    task = asyncio.create_task(state.acquire_async(0, math.inf))
    await queued_at_least(state, 1)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    state.release()

    assert (0, 0) == (state.active, state.queued)


@pytest.mark.anyio
async def test_cancel_after_grant_gives_the_slot_back():
    """A task cancelled after its slot was granted but before it ran releases that slot."""
    state = make(max_concurrent=1, max_wait=WAIT)
    await state.acquire_async(0, math.inf)
    task = asyncio.create_task(state.acquire_async(0, math.inf))
    await queued_at_least(state, 1)

    state.release()  # grants the slot; the task has not run yet
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert (0, 0) == (state.active, state.queued)


def test_threads_and_event_loops_share_one_bulkhead():
    """A thread's release wakes a task on another loop, whose release wakes a thread."""
    state = make(max_concurrent=1, max_wait=WAIT)
    state.acquire(0, math.inf)
    log: list[object] = []

    async def task() -> None:
        await state.acquire_async(9, math.inf)
        log.append("task")
        state.release()

    loop_thread = threading.Thread(target=asyncio.run, args=(task(),))
    loop_thread.start()
    wait_until(lambda: state.queued == 1)
    worker = spawn(state, 1, log, "thread")
    wait_until(lambda: state.queued == 2)

    state.release()
    loop_thread.join()
    worker.join()

    assert ["task", "thread"] == log
    assert (0, 0) == (state.active, state.queued)


# -- observe mode and events -----------------------------------------------------------------


@pytest.mark.parametrize(("config_observe", "ctx_observe"), [(True, False), (False, True)])
def test_observe_mode_admits_and_reports(config_observe, ctx_observe):
    """Observe mode never blocks or raises: it admits over the limit and reports it."""
    events: list[Event] = []
    state = make(
        events, observe_ctx=ctx_observe, max_concurrent=1, max_queue=0, observe=config_observe
    )

    for _ in range(3):
        state.acquire(0, math.inf)
    over = state.active
    for _ in range(3):
        state.release()

    assert (3, 0) == (over, state.active)
    observed = CallRejected(target="db", kind="db", reason="bulkhead_full", observed=True)
    assert [observed, observed] == events


@pytest.mark.anyio
async def test_observe_mode_async():
    """Observe mode admits async calls over the limit too."""
    state = make(max_concurrent=1, observe=True)

    await state.acquire_async(0, math.inf)
    await state.acquire_async(0, math.inf)

    assert 2 == state.active


def test_events_reach_registered_hooks():
    """With the default context, events go to the hook registry."""
    state = Bulkhead(max_concurrent=1, max_queue=0).bind(PolicyContext(target="api"))
    state.acquire(0, math.inf)

    with capture_events() as events, pytest.raises(BulkheadFullError):
        state.acquire(0, math.inf)

    assert [CallRejected(target="api", kind="function", reason="bulkhead_full")] == events
