# Copyright 2026 buttress developers
# SPDX-License-Identifier: Apache-2.0
"""Bulkhead: cap how many calls run at once, queue a bounded number by priority, reject the rest.

A bulkhead keeps one slow dependency from taking every worker thread or every task with it.
:class:`Bulkhead` is the frozen configuration; :meth:`Bulkhead.bind` creates the
:class:`BulkheadState` a pipeline owns. The admission rules live in the pure
:mod:`._bulkhead_core`; this module only blocks, wakes and reports.

The state is shared by threads and event loops at once, so it never holds its lock while waiting:
a sync waiter blocks on its own :class:`threading.Lock`, an async waiter awaits its own
:class:`asyncio.Future`, and whoever frees a slot hands it straight to the best waiter.

Fast path protocol (why an uncontended acquire+release costs two deque operations). Free slots
are permits in ``core.free``; ``deque.pop``/``append`` are atomic. A fast acquire pops a permit
when ``core.slow`` is false; a release appends its permit and then, if ``core.slow`` is true,
takes the lock to hand it on. Every locked operation that creates work for releases (a waiter, a
debt from lowering the limit, an observe-mode extra) sets ``core.slow`` *before* it looks at the
permits, and releases append *before* they read ``core.slow``: so either the release sees the
flag and rebalances, or the locked operation sees the permit. No permit is ever stranded while
someone waits. A fast acquire can still win a permit in the instant between a release's append
and its rebalance (a rare barge past the queue); the queue's order is otherwise strict.
"""

from __future__ import annotations

import asyncio
import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from buttress import _fork, _validate
from buttress._exceptions import BulkheadFullError
from buttress.policies._bulkhead_core import GRANTED, PENDING, TAKEN, BulkheadCore, Waiter
from buttress.telemetry._events import BulkheadDequeued, BulkheadQueued, CallRejected

if TYPE_CHECKING:
    from buttress._context import PolicyContext

__all__ = ["Bulkhead", "BulkheadState"]

DEFAULT_MAX_CONCURRENT = 25
"""resilience4j's semaphore bulkhead default: enough for a pool, small enough to protect it."""
DEFAULT_MAX_QUEUE = 100
DEFAULT_MAX_WAIT = 1.0


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class Bulkhead:
    """Limit concurrent calls to a target, with a bounded priority queue in front.

    Calls beyond *max_concurrent* wait in a queue (higher ``priority`` first, first come first
    served within one priority) for at most *max_wait* seconds or until the call's deadline.
    When the queue is full, a newcomer displaces the newest waiter of the lowest priority if it
    outranks it (so under overload, low-priority work is shed first); otherwise it is rejected.

    Args:
        max_concurrent: Calls allowed to run at once (>= 1).
        max_queue: Calls allowed to wait (>= 0; 0 rejects at once when full).
        max_wait: Seconds a call may wait in the queue (>= 0; 0 rejects at once when full).
        observe: Never queue or reject: admit every call and report, with ``observed=True``
            events, where the bulkhead would have queued or rejected one.

    Raises:
        ConfigurationError: A parameter is out of range.

    .. versionadded:: 0.1.0
    """

    max_concurrent: int = DEFAULT_MAX_CONCURRENT
    max_queue: int = DEFAULT_MAX_QUEUE
    max_wait: float = DEFAULT_MAX_WAIT
    observe: bool = False

    def __post_init__(self) -> None:
        _validate.integer("Bulkhead", "max_concurrent", self.max_concurrent, low=1)
        _validate.integer("Bulkhead", "max_queue", self.max_queue, low=0)
        max_wait = _validate.number("Bulkhead", "max_wait", self.max_wait, low=0)
        object.__setattr__(self, "max_wait", max_wait)
        _validate.boolean("Bulkhead", "observe", self.observe)

    def bind(self, ctx: PolicyContext) -> BulkheadState:
        """Create the runtime state for one pipeline: each pipeline gets its own slots and queue.

        .. versionadded:: 0.1.0
        """
        return BulkheadState(self, ctx)

    def __repr__(self) -> str:
        observe = " observe" if self.observe else ""
        return (
            f"<Bulkhead max_concurrent={self.max_concurrent} max_queue={self.max_queue}"
            f" max_wait={self.max_wait:g}s{observe}>"
        )


class _SyncWaiter(Waiter):
    """A thread waiting on its own lock, created held; waking releases it."""

    __slots__ = ("lock",)

    def __init__(self, priority: int, enqueued_at: float) -> None:
        super().__init__(priority, enqueued_at)
        self.lock = threading.Lock()
        self.lock.acquire()

    def wake(self) -> bool:
        self.lock.release()
        return True


def _resolve(future: asyncio.Future[None]) -> None:
    # The waiting task may have been cancelled or timed out meanwhile: then there is nothing to do.
    if not future.done():
        future.set_result(None)


class _AsyncWaiter(Waiter):
    """A task awaiting a future on its own loop; waking schedules the result on that loop."""

    __slots__ = ("future", "loop")

    def __init__(self, priority: int, enqueued_at: float, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(priority, enqueued_at)
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()

    def wake(self) -> bool:
        # The releaser may run on another thread or loop: only the owning loop may touch the future.
        try:
            self.loop.call_soon_threadsafe(_resolve, self.future)
        except RuntimeError:  # the loop is closed: its task will never run again
            return False
        return True


class BulkheadState:
    """The slots and the queue of one pipeline's bulkhead; safe across threads and event loops.

    Every :meth:`acquire` or :meth:`acquire_async` that returns must be paired with exactly one
    :meth:`release`.

    .. versionadded:: 0.1.0
    """

    __slots__ = (
        "__weakref__",
        "_clock",
        "_core",
        "_emit",
        "_free",
        "_kind",
        "_lock",
        "_max_wait",
        "_observe",
        "_target",
        "config",
    )

    def __init__(self, config: Bulkhead, ctx: PolicyContext) -> None:
        self.config = config
        self._core = BulkheadCore(config.max_concurrent, config.max_queue)
        self._free = self._core.free
        self._lock = threading.Lock()
        self._clock = ctx.clock
        self._emit = ctx.emit
        self._target = ctx.target
        self._kind = ctx.kind
        self._max_wait = config.max_wait
        self._observe = config.observe or ctx.observe
        _fork.track(self)

    def _after_fork_in_child(self) -> None:
        # The permits held and the queue belong to the parent's threads: nobody in a forked
        # child will release or wait for them, so the child starts with every slot free.
        _fork.reinit(self._lock)
        self._core.reset()

    # -- readings ----------------------------------------------------------------------------

    @property
    def active(self) -> int:
        """Calls holding a slot (above :attr:`limit` after lowering it, or in observe mode)."""
        return self._core.active

    @property
    def queued(self) -> int:
        """Calls waiting for a slot."""
        return self._core.queued

    @property
    def limit(self) -> int:
        """Calls allowed to run at once."""
        return self._core.limit

    def __repr__(self) -> str:
        return (
            f"<BulkheadState target={self._target!r} active={self.active}/{self.limit}"
            f" queued={self.queued}>"
        )

    # -- acquire / release -------------------------------------------------------------------

    def acquire(self, priority: int = 0, deadline: float = math.inf) -> None:
        """Take a slot, waiting in the queue (blocking this thread) if none is free.

        Args:
            priority: Higher is served first; equal priorities are served in arrival order.
            deadline: Absolute time on the context clock after which the call must not wait;
                ``math.inf`` for none.

        Raises:
            BulkheadFullError: ``reason="bulkhead_full"`` when the queue is full or was cleared,
                ``reason="queue_timeout"`` when no slot came within the allowed wait.
        """
        if not self._core.slow:
            try:
                self._free.pop()
            except IndexError:
                pass
            else:
                return
        self._acquire_slow(priority, deadline)

    def _acquire_slow(self, priority: int, deadline: float) -> None:
        waiter = _SyncWaiter(priority, self._clock.monotonic())
        allowed = self._join(waiter, deadline)
        if allowed is None:
            return
        # Lock.acquire takes -1 for "forever" and refuses timeouts above TIMEOUT_MAX.
        timeout = allowed if allowed < threading.TIMEOUT_MAX else -1
        try:
            waiter.lock.acquire(timeout=timeout)
        except BaseException:  # KeyboardInterrupt in the main thread, say
            self._abandon(waiter)
            raise
        self._settle(waiter)

    async def acquire_async(self, priority: int = 0, deadline: float = math.inf) -> None:
        """Take a slot, awaiting it in the queue if none is free; see :meth:`acquire`.

        Cancelling the waiting task takes it out of the queue (or gives back the slot if it had
        just been granted) and re-raises :class:`asyncio.CancelledError`.

        Raises:
            BulkheadFullError: As :meth:`acquire`.
        """
        if not self._core.slow:
            try:
                self._free.pop()
            except IndexError:
                pass
            else:
                return
        await self._acquire_slow_async(priority, deadline)

    async def _acquire_slow_async(self, priority: int, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        waiter = _AsyncWaiter(priority, self._clock.monotonic(), loop)
        allowed = self._join(waiter, deadline)
        if allowed is None:
            return
        try:
            async with asyncio.timeout(allowed if math.isfinite(allowed) else None):
                await waiter.future
        except TimeoutError:
            pass  # _settle tells a real timeout from a grant that raced it
        except BaseException:  # CancelledError above all
            self._abandon(waiter)
            raise
        self._settle(waiter)

    def release(self) -> None:
        """Give the slot back; the best waiter, if any, gets it directly."""
        # The pipeline drivers inline this fast path (append, then test core.slow) and call
        # _rebalance themselves: keep the three in step.
        self._free.append(None)
        if self._core.slow:
            self._rebalance()

    def _rebalance(self) -> None:
        """The slow half of :meth:`release`: hand freed permits to waiters."""
        with self._lock:
            granted = self._core.rebalance()
        self._wake(granted)

    # -- operations --------------------------------------------------------------------------

    def clear_queue(self) -> int:
        """Reject every waiting call at once, for emergencies (each raises BulkheadFullError).

        Returns:
            How many waiters were rejected.
        """
        with self._lock:
            rejected = self._core.clear()
        self._wake(rejected)
        return len(rejected)

    def set_limit(self, limit: int) -> None:
        """Change how many calls may run at once.

        Raising the limit admits queued calls at once. Lowering it preempts nothing: calls in
        flight finish, and :attr:`active` stays above the limit until enough of them release.

        Raises:
            ConfigurationError: *limit* is not an integer >= 1.
        """
        _validate.integer("BulkheadState.set_limit", "limit", limit, low=1)
        with self._lock:
            granted = self._core.set_limit(limit)
        self._wake(granted)

    # -- the slow path -----------------------------------------------------------------------

    def _join(self, waiter: Waiter, deadline: float) -> float | None:
        """Admit, enqueue or reject a call that missed the fast path.

        Returns:
            None when the call was admitted, else the seconds it may wait in the queue.
        """
        allowed = min(self._max_wait, deadline - self._clock.monotonic())
        core = self._core
        displaced = None
        outcome = "admitted"
        with self._lock:
            granted = core.rebalance()  # a release may have appended a permit meanwhile
            if not core.try_enter():
                if self._observe:
                    core.admit_extra()
                    outcome = "observed"
                elif allowed <= 0:
                    outcome = "no_time"
                else:
                    accepted, displaced = core.enqueue(waiter)
                    if accepted:
                        outcome = "queued"
                        granted += core.rebalance()
                    else:
                        outcome = "full"
            running, queued = core.active, core.queued
        self._wake(granted)
        if displaced is not None:
            self._wake([displaced])
        if outcome == "admitted":
            return None
        if outcome == "observed":
            self._emit(
                CallRejected(
                    target=self._target, kind=self._kind, reason="bulkhead_full", observed=True
                )
            )
            return None
        if outcome == "queued":
            self._emit(
                BulkheadQueued(
                    target=self._target, kind=self._kind, priority=waiter.priority, queued=queued
                )
            )
            return allowed
        if outcome == "full":
            raise self._reject(
                "bulkhead_full",
                f"buttress: bulkhead for target {self._target!r} is full ({running} running of"
                f" max_concurrent={core.limit}, {queued} queued of max_queue={core.max_queue})",
            )
        raise self._reject(
            "queue_timeout",
            f"buttress: bulkhead for target {self._target!r} is full and the call has no time"
            f" left to wait (max_wait={self._max_wait:g}s, deadline reached or max_wait is 0)",
        )

    def _settle(self, waiter: Waiter) -> None:
        """After a wake-up or a timeout: take the slot, or leave the queue and raise."""
        with self._lock:
            state = waiter.state
            if state == GRANTED:
                waiter.state = TAKEN  # a grant racing the timeout wins: the slot is ours
            elif state == PENDING:
                self._core.cancel(waiter)
        if state == GRANTED:
            wait = max(0.0, self._clock.monotonic() - waiter.enqueued_at)
            self._emit(
                BulkheadDequeued(
                    target=self._target, kind=self._kind, priority=waiter.priority, wait=wait
                )
            )
            return
        if state == PENDING:
            raise self._reject(
                "queue_timeout",
                f"buttress: bulkhead for target {self._target!r} is full and no slot came within"
                f" the allowed wait (max_wait={self._max_wait:g}s or the call's deadline)",
            )
        why = (
            "the queue was cleared"
            if waiter.cause == "cleared"
            else "a higher-priority call took its place in the full queue"
        )
        raise self._reject(
            "bulkhead_full",
            f"buttress: bulkhead for target {self._target!r} is full and {why}",
        )

    def _abandon(self, waiter: Waiter) -> None:
        """The waiting thread or task was interrupted: leave the queue or give the slot back."""
        with self._lock:
            granted = waiter.state == GRANTED
            if granted:
                waiter.state = TAKEN
            else:
                self._core.cancel(waiter)
        if granted:
            self.release()

    def _wake(self, waiters: list[Waiter]) -> None:
        """Wake decided waiters, outside the lock; reclaim a grant whose loop has closed."""
        todo = list(waiters)
        while todo:
            waiter = todo.pop()
            if waiter.wake():
                continue
            with self._lock:
                if waiter.state == GRANTED:  # nobody will ever use this slot: pass it on
                    waiter.state = TAKEN
                    todo += self._core.leave()

    def _reject(self, reason: str, message: str) -> BulkheadFullError:
        self._emit(CallRejected(target=self._target, kind=self._kind, reason=reason))
        return BulkheadFullError(message, target=self._target, reason=reason)
