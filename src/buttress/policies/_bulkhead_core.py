# Copyright 2026 buttress developers
# SPDX-License-Identifier: Apache-2.0
"""The bulkhead's pure decision core: permits, a priority queue and the rules that connect them.

Nothing here blocks, sleeps, reads a clock or knows about threads or event loops; the drivers in
:mod:`._bulkhead` call these methods while holding their lock and then do the waking. That keeps
every admission rule testable as a plain state machine (see
``tests/policies/test_bulkhead_state_machine.py``).

Slots are *permits* kept in a :class:`collections.deque` (:attr:`BulkheadCore.free`). The deque is
also what makes the drivers' fast path cheap: ``deque.pop()`` and ``deque.append()`` are atomic,
so an uncontended call takes and returns a permit without touching the lock (see the protocol in
:mod:`._bulkhead`). Everything that needs more than one step (queueing, handing a permit to a
waiter, paying off a lowered limit) happens here, under the driver's lock.

Permits are created lazily: at most :data:`EAGER_PERMITS` are in the deque up front, the rest
are counted in :attr:`BulkheadCore.unissued` and handed out under the lock when the deque runs
dry. A released permit goes back to the deque, so the deque only ever grows to the number of
calls that really ran at once: ``Bulkhead(max_concurrent=10**9)`` costs no more memory than a
small bulkhead until that many calls are in flight.
"""

from __future__ import annotations

import heapq
from collections import deque
from itertools import repeat

PENDING = 0
"""The waiter is in the queue."""
GRANTED = 1
"""A permit was handed to the waiter; it owns a slot until it releases it."""
TAKEN = 2
"""The waiter saw its grant (so a driver knows the slot is in use, not orphaned)."""
REJECTED = 3
"""The waiter was pushed out of the queue (queue cleared, or displaced by a higher priority)."""
CANCELLED = 4
"""The waiter left the queue by itself (its wait expired or its task was cancelled)."""
EAGER_PERMITS = 1024
"""Permits put in the deque up front (8 kB); beyond them, permits are created as calls need them."""


class Waiter:
    """One call waiting in the queue; the drivers subclass it with a way to wake the caller.

    Attributes:
        priority: Higher goes first.
        seq: Arrival order, for FIFO within one priority.
        state: One of the module's state constants.
        cause: Why the waiter was rejected: ``cleared`` or ``displaced`` (else empty).
        enqueued_at: The clock reading when it joined, for the wait it reports.
    """

    __slots__ = ("cause", "enqueued_at", "priority", "seq", "state")

    def __init__(self, priority: int, enqueued_at: float = 0.0) -> None:
        self.priority = priority
        self.seq = 0
        self.state = PENDING
        self.cause = ""
        self.enqueued_at = enqueued_at

    def wake(self) -> bool:
        """Tell the waiting caller its fate; drivers override this (the pure core never waits).

        Returns:
            False when the caller can no longer be reached (its event loop is closed).
        """
        return True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} priority={self.priority} seq={self.seq} state={self.state}>"


class BulkheadCore:
    """Counts and queue of one bulkhead; every method must run under the owner's lock.

    ``active`` is derived rather than stored so that the lock-free fast path only has to touch
    the permit deque: ``active = limit + debt + extra - len(free) - unissued``.

    Attributes:
        limit: How many calls may run at once.
        max_queue: How many calls may wait.
        free: Permits nobody holds (one ``None`` per free slot).
        unissued: Free slots whose permits were never created (see :data:`EAGER_PERMITS`).
        debt: Permits still to be destroyed after the limit was lowered under load.
        extra: Calls admitted over the limit in observe mode that have not released yet.
        queued: Waiters still pending (the heap may also hold dead entries).
        slow: True while a release must take the lock (waiters, debt or extras exist).
    """

    __slots__ = (
        "_dead",
        "_heap",
        "_seq",
        "debt",
        "extra",
        "free",
        "limit",
        "max_queue",
        "queued",
        "slow",
        "unissued",
    )

    def __init__(self, limit: int, max_queue: int) -> None:
        self.limit = limit
        self.max_queue = max_queue
        eager = min(limit, EAGER_PERMITS)
        self.free: deque[None] = deque(repeat(None, eager))
        self.unissued = limit - eager
        self.debt = 0
        self.extra = 0
        self.queued = 0
        self.slow = False
        self._heap: list[tuple[int, int, Waiter]] = []
        self._seq = 0
        self._dead = 0

    @property
    def active(self) -> int:
        """Calls holding a slot right now."""
        return self.limit + self.debt + self.extra - len(self.free) - self.unissued

    def try_enter(self) -> bool:
        """Take a free permit if nobody is queued (queued callers go first: no barging)."""
        if self.queued:
            return False
        if self.free:
            self.free.pop()
            return True
        if self.unissued:
            self.unissued -= 1
            return True
        return False

    def admit_extra(self) -> None:
        """Admit one call over the limit (observe mode); its release destroys a permit."""
        self.slow = True
        self.extra += 1

    def enqueue(self, waiter: Waiter) -> tuple[bool, Waiter | None]:
        """Put *waiter* in the queue, displacing a lower-priority waiter if the queue is full.

        When the queue is full, the newest waiter of the lowest priority is pushed out if its
        priority is strictly lower than *waiter*'s; otherwise *waiter* is refused. Call
        :meth:`rebalance` afterwards: a permit may have come back meanwhile.

        Returns:
            ``(accepted, displaced)``: whether *waiter* joined, and who was pushed out for it.
        """
        displaced: Waiter | None = None
        if self.queued >= self.max_queue:
            victim = self._lowest()
            if victim is None or victim.priority >= waiter.priority:
                return False, None
            victim.state = REJECTED
            victim.cause = "displaced"
            self._forget()
            displaced = victim
        self.slow = True  # before any permit is looked at: see the protocol in _bulkhead
        self._seq += 1
        waiter.seq = self._seq
        waiter.state = PENDING
        heapq.heappush(self._heap, (-waiter.priority, waiter.seq, waiter))
        self.queued += 1
        return True, displaced

    def leave(self) -> list[Waiter]:
        """Return one permit and rebalance; returns the waiters that got a slot."""
        self.free.append(None)
        return self.rebalance()

    def rebalance(self) -> list[Waiter]:
        """Put free permits where they belong: pay debts first, then serve the queue in order.

        Returns:
            The waiters granted a slot, highest priority first; the caller must wake them.
        """
        free = self.free
        while free and (self.debt or self.extra):
            free.pop()
            if self.debt:
                self.debt -= 1
            else:
                self.extra -= 1
        if self.unissued and (self.debt or self.extra):
            paid = min(self.unissued, self.debt)
            self.debt -= paid
            self.unissued -= paid
            paid = min(self.unissued, self.extra)
            self.extra -= paid
            self.unissued -= paid
        granted: list[Waiter] = []
        while (free or self.unissued) and self.queued:
            _, _, waiter = heapq.heappop(self._heap)
            if waiter.state != PENDING:
                self._dead -= 1
                continue
            if free:
                free.pop()
            else:
                self.unissued -= 1
            waiter.state = GRANTED
            self.queued -= 1
            granted.append(waiter)
        if not self.queued and self._dead:
            self._heap.clear()
            self._dead = 0
        self.slow = bool(self.queued or self.debt or self.extra)
        return granted

    def cancel(self, waiter: Waiter) -> bool:
        """Take a pending *waiter* out of the queue.

        Returns:
            False when the waiter was already decided (granted or rejected) and so was not
            removed: a granted waiter owns a slot and must release it.
        """
        if waiter.state != PENDING:
            return False
        waiter.state = CANCELLED
        self._forget()
        self.slow = bool(self.queued or self.debt or self.extra)
        return True

    def set_limit(self, limit: int) -> list[Waiter]:
        """Change the limit; raising it may grant waiters (returned), lowering it never preempts."""
        self.slow = True
        delta = limit - self.limit
        self.limit = limit
        if delta > 0:
            paid = min(self.debt, delta)
            self.debt -= paid
            self._add(delta - paid)
        else:
            self.debt -= delta  # a negative delta: every permit the limit lost is owed
        return self.rebalance()

    def clear(self) -> list[Waiter]:
        """Reject every pending waiter; returns them, in queue order, for the caller to wake."""
        rejected = [w for _, _, w in sorted(self._heap) if w.state == PENDING]
        for waiter in rejected:
            waiter.state = REJECTED
            waiter.cause = "cleared"
        self._heap.clear()
        self._dead = 0
        self.queued = 0
        self.rebalance()
        return rejected

    def reset(self) -> None:
        """Forget every call in flight and every waiter: all permits free (in a forked child).

        The permit deque is topped up in place (the compiled drivers hold it), usually by
        nothing: an idle bulkhead has all its permits already.
        """
        missing = self.limit - len(self.free)
        self.unissued = 0
        if missing > 0:
            self._add(missing)
        for _ in range(-missing):  # permits owed to a lowered limit, not yet destroyed
            self.free.pop()
        self.debt = self.extra = self.queued = self._dead = 0
        self._heap.clear()
        self.slow = False

    def _add(self, count: int) -> None:
        """Make *count* more slots free: in the deque up to :data:`EAGER_PERMITS`, else unissued."""
        eager = max(0, min(count, EAGER_PERMITS - len(self.free)))
        self.free.extend(repeat(None, eager))
        self.unissued += count - eager

    def pending(self) -> list[Waiter]:
        """The pending waiters in the order they will be served (for tests and debugging)."""
        return [w for _, _, w in sorted(self._heap) if w.state == PENDING]

    def _forget(self) -> None:
        """Count one pending entry as dead (it stays in the heap until popped or compacted)."""
        self.queued -= 1
        self._dead += 1
        if self._dead > 32 and self._dead > self.queued:
            # Timeouts leave dead entries behind; rebuild so the heap stays proportional.
            self._heap = [e for e in self._heap if e[2].state == PENDING]
            heapq.heapify(self._heap)
            self._dead = 0

    def _lowest(self) -> Waiter | None:
        """The pending waiter that would be served last (a linear scan: only on a full queue)."""
        last = max((e for e in self._heap if e[2].state == PENDING), default=None)
        return None if last is None else last[2]
