"""
Cheap attempt timeouts for asyncio: one timer per event loop instead of one per attempt.

``asyncio.timeout`` schedules and cancels a timer handle for every attempt, which costs about
4 us here, eight times a whole synchronous pipeline. Attempt timeouts are almost always the same
duration, so deadlines arrive in increasing order and one timer, armed for the earliest live
deadline, serves every attempt in flight: watching an attempt is a heap push, unwatching it is a
flag. When the timer fires it cancels the tasks whose deadline passed and re-arms itself for the
next live one.

Cancellation follows ``asyncio.timeout``'s contract: the watchdog cancels the task; the attempt
catches the ``CancelledError``, and only if the watchdog expired it *and* nobody else asked for
cancellation (``Task.uncancel()`` brings the count back to what it was) is it converted into a
timeout. A cancellation from elsewhere passes through untouched.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import weakref

_seq = itertools.count()


class Watch:
    """One attempt under watch: its task, deadline (loop time) and whether it expired."""

    __slots__ = ("cancelling", "deadline", "done", "expired", "task")

    def __init__(self, task: asyncio.Task[object], deadline: float) -> None:
        self.task: asyncio.Task[object] | None = task
        self.deadline = deadline
        self.cancelling = task.cancelling()
        self.done = False
        self.expired = False

    def timed_out(self) -> bool:
        """Call on ``CancelledError``: whether the cancellation was this watch's expiry."""
        return self.expired and self.task is not None and self.task.uncancel() <= self.cancelling


class Watchdog:
    """
    The deadlines of one event loop's attempts, and the single timer that enforces them.

    It never holds its loop: every method runs on that loop (an attempt's task, or the timer's
    callback), so ``asyncio.get_running_loop()`` is the loop. A reference to the loop would keep
    every closed loop alive through :data:`_watchdogs` (a weak dictionary's value must not refer
    to its key), with the tasks its finished watches still held: one leaked loop per
    ``asyncio.run()`` that made a timed call. For the same reason the armed timer's handle,
    which refers to its loop, is held weakly.
    """

    __slots__ = ("_armed_for", "_handle", "_heap", "_live")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Watch]] = []
        # Weak: a timer handle refers to its loop. While armed, the loop itself keeps it.
        self._handle: weakref.ReferenceType[asyncio.TimerHandle] | None = None
        self._armed_for = float("inf")
        self._live = 0

    def watch(self, task: asyncio.Task[object], delay: float) -> Watch:
        """Cancel *task* if it is still watched after *delay* seconds."""
        deadline = asyncio.get_running_loop().time() + delay
        watch = Watch(task, deadline)
        heap = self._heap
        if len(heap) > 1024 and len(heap) > 4 * self._live:
            # Finished watches wait in the heap until the timer reaches them; with long
            # timeouts and busy traffic, drop them in one pass before they pile up.
            heap[:] = [entry for entry in heap if not entry[2].done]
            heapq.heapify(heap)
        heapq.heappush(heap, (deadline, next(_seq), watch))
        self._live += 1
        if deadline < self._armed_for:
            self._arm(deadline)
        return watch

    def unwatch(self, watch: Watch) -> None:
        """The attempt ended: its deadline no longer matters, nor its task."""
        watch.task = None  # the heap keeps finished watches until the timer reaches them
        if not watch.done:
            watch.done = True
            self._live -= 1

    def _arm(self, deadline: float) -> None:
        armed = self._handle() if self._handle is not None else None
        if armed is not None:
            armed.cancel()
        self._armed_for = deadline
        self._handle = weakref.ref(asyncio.get_running_loop().call_at(deadline, self._fire))

    def _fire(self) -> None:
        self._handle = None
        self._armed_for = float("inf")
        now = asyncio.get_running_loop().time()
        heap = self._heap
        while heap:
            deadline, _, watch = heap[0]
            if watch.done:
                heapq.heappop(heap)
                continue
            if deadline > now:
                self._arm(deadline)
                return
            heapq.heappop(heap)
            watch.expired = True
            watch.done = True
            self._live -= 1
            if watch.task is not None:
                watch.task.cancel()


_watchdogs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Watchdog] = (
    weakref.WeakKeyDictionary()
)


_recent: tuple[weakref.ReferenceType[asyncio.AbstractEventLoop], Watchdog] | None = None
"""The last loop looked up (weakly) and its watchdog: a weak dictionary's get() is a Python call
on every timed attempt, and a process almost always runs one loop."""


def watchdog_for(loop: asyncio.AbstractEventLoop) -> Watchdog:
    """The watchdog of *loop*, created on first use."""
    global _recent  # noqa: PLW0603 - one tuple, replaced whole
    recent = _recent
    if recent is not None and recent[0]() is loop:
        return recent[1]
    dog = _watchdogs.get(loop)
    if dog is None:
        dog = _watchdogs[loop] = Watchdog()
    _recent = (weakref.ref(loop), dog)
    return dog
