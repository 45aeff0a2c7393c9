"""Property tests for the bulkhead: a state machine over the pure core, and a thread stress test."""

# ruff: noqa: SIM300 - house style asserts `expected == actual` (R15)

from __future__ import annotations

import math
import random
import sys
import threading

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from buttress._context import PolicyContext
from buttress._exceptions import BulkheadFullError
from buttress.policies._bulkhead import Bulkhead
from buttress.policies._bulkhead_core import GRANTED, PENDING, REJECTED, BulkheadCore, Waiter


class BulkheadCoreMachine(RuleBasedStateMachine):
    """Drive BulkheadCore with enter/leave/cancel/set_limit/clear and check it against a model."""

    core: BulkheadCore

    def __init__(self) -> None:
        super().__init__()
        self.running = 0  # calls holding a slot, per the model
        self.pending: list[Waiter] = []  # waiters in the queue, per the model
        self.overshoot = False  # set_limit lowered the limit below the calls in flight

    @initialize(limit=st.integers(1, 4), max_queue=st.integers(0, 4))
    def start(self, limit: int, max_queue: int) -> None:
        """Create a core."""
        self.core = BulkheadCore(limit, max_queue)

    def _best(self) -> Waiter:
        return min(self.pending, key=lambda w: (-w.priority, w.seq))

    def _granted(self, waiters: list[Waiter]) -> None:
        """Check each grant goes to the best pending waiter and keeps active within the limit."""
        for waiter in waiters:
            assert waiter is self._best()
            assert GRANTED == waiter.state
            self.pending.remove(waiter)
            self.running += 1
            assert self.running <= self.core.limit

    @rule(priority=st.integers(0, 3))
    def enter(self, priority: int) -> None:
        """A call arrives: it takes a free slot, queues, displaces a waiter, or is refused."""
        if self.core.try_enter():
            assert not self.pending  # no barging past queued callers
            self.running += 1
            assert self.running <= self.core.limit
            return
        waiter = Waiter(priority)
        lowest = max(self.pending, key=lambda w: (-w.priority, w.seq), default=None)
        full = len(self.pending) >= self.core.max_queue
        accepted, displaced = self.core.enqueue(waiter)
        if not full:
            assert (True, None) == (accepted, displaced)
        elif lowest is not None and lowest.priority < priority:
            assert (True, lowest) == (accepted, displaced)
            assert (REJECTED, "displaced") == (lowest.state, lowest.cause)
            self.pending.remove(lowest)
        else:
            assert (False, None) == (accepted, displaced)
        if accepted:
            self.pending.append(waiter)
        self._granted(self.core.rebalance())

    @precondition(lambda self: self.running > 0)
    @rule()
    def leave(self) -> None:
        """A running call finishes; its slot goes to the best waiter unless the limit shrank."""
        self.running -= 1
        self._granted(self.core.leave())
        if self.running <= self.core.limit:
            self.overshoot = False

    @precondition(lambda self: bool(self.pending))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        """A waiter gives up (timeout or cancellation) and leaves the queue."""
        waiter = data.draw(st.sampled_from(self.pending))

        assert self.core.cancel(waiter)
        assert not self.core.cancel(waiter)  # a second cancel is a no-op
        self.pending.remove(waiter)

    @rule(limit=st.integers(1, 5))
    def set_limit(self, limit: int) -> None:
        """The limit changes at run time."""
        if limit < self.running:
            self.overshoot = True
        self._granted(self.core.set_limit(limit))
        if self.running <= self.core.limit:
            self.overshoot = False

    @rule()
    def clear(self) -> None:
        """The queue is cleared: every pending waiter is rejected, in queue order."""
        expected = sorted(self.pending, key=lambda w: (-w.priority, w.seq))

        rejected = self.core.clear()

        assert expected == rejected
        assert all(w.state == REJECTED and w.cause == "cleared" for w in rejected)
        self.pending = []

    @invariant()
    def counts_match_the_model(self) -> None:
        """active and queued are what the model says."""
        assert self.running == self.core.active
        assert len(self.pending) == self.core.queued
        assert all(w.state == PENDING for w in self.pending)

    @invariant()
    def queue_is_bounded(self) -> None:
        """queued never exceeds max_queue."""
        assert self.core.queued <= self.core.max_queue

    @invariant()
    def active_within_limit_unless_lowered(self) -> None:
        """active exceeds limit only after the limit was lowered with calls in flight."""
        assert self.core.active <= self.core.limit or self.overshoot

    @invariant()
    def no_idle_slot_while_waiting(self) -> None:
        """Nobody waits while a slot is free."""
        assert not self.core.queued or self.core.active >= self.core.limit

    @invariant()
    def pending_order_is_priority_then_fifo(self) -> None:
        """The core serves its queue by priority, then arrival order."""
        expected = sorted(self.pending, key=lambda w: (-w.priority, w.seq))
        assert expected == self.core.pending()


TestBulkheadCoreMachine = BulkheadCoreMachine.TestCase
TestBulkheadCoreMachine.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)


@pytest.fixture
def fast_switching():
    """Switch threads as often as possible, to shake out races in the lock-free fast path."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def test_sixteen_threads_never_exceed_four_slots(fast_switching):
    """16 threads hammering a 4-slot bulkhead never have more than 4 calls inside at once."""
    state = Bulkhead(max_concurrent=4, max_queue=16, max_wait=10.0).bind(
        PolicyContext(target="stress", emit=lambda _: None)
    )
    guard = threading.Lock()
    inside = 0
    peak = 0
    calls = 0
    rejected = 0

    def worker(seed: int) -> None:
        nonlocal inside, peak, calls, rejected
        rng = random.Random(seed)
        for _ in range(300):
            try:
                state.acquire(rng.randrange(3), math.inf)
            except BulkheadFullError:
                with guard:
                    rejected += 1
                continue
            with guard:
                inside += 1
                peak = max(peak, inside)
                calls += 1
            if rng.random() < 0.3:
                threading.Event().wait(0.0001)  # hold the slot a little, so others must queue
            with guard:
                inside -= 1
            state.release()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert peak <= 4
    assert 16 * 300 == calls + rejected
    assert (0, 0) == (state.active, state.queued)
