"""
Cheap attempt timeouts for asyncio: one timer per event loop instead of one per attempt.

``asyncio.timeout`` schedules and cancels a timer handle for every attempt, which costs about
4 us here, eight times a whole synchronous pipeline. Attempt timeouts are almost always the same
duration, so deadlines arrive in increasing order and one timer, armed for the earliest live
deadline, serves every attempt in flight: watching an attempt is a heap push, unwatching it is a
store. When the timer fires it cancels the tasks whose deadline passed and re-arms itself for the
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
import sys
import weakref
from collections.abc import Callable
from typing import Any

from . import _fork

_seq = itertools.count()

if sys.version_info < (3, 12):  # pragma: no branch - one interpreter per run
    # asyncio.current_task() is Python code before 3.12 (C since), and looks the loop up a
    # second time: the dictionary it reads, whose get() is C, saves about 200 ns per attempt.
    _current_tasks: object = getattr(asyncio.tasks, "_current_tasks", None)
    task_of: Callable[[asyncio.AbstractEventLoop], asyncio.Task[Any] | None] = (
        _current_tasks.get if isinstance(_current_tasks, dict) else asyncio.current_task
    )
else:  # pragma: no cover - not this interpreter
    task_of = asyncio.current_task
"""``task_of(loop)``: the task running on *loop* (the running loop), or ``None``."""

Watch = list[Any]
"""
One attempt under watch: ``[deadline, seq, task, cancelling, expired]``.

A list rather than an object: watching costs one list display, not a Python ``__init__``
(about 60 ns against 390), on every timed async attempt. It goes into the heap as it is and
orders by deadline (loop time), then by a unique sequence number, so the rest is never compared.
*task* becomes ``None`` once the watch is over (unwatched or expired); *cancelling* is the
task's cancellation count when it was watched; *expired* tells whether the timer cancelled it.
"""

_DEADLINE, _SEQ, _TASK, _CANCELLING, _EXPIRED = range(5)


def timed_out(watch: Watch, task: asyncio.Task[Any]) -> bool:
    """Call on ``CancelledError``: whether the cancellation of *task* was *watch*'s expiry."""
    return bool(watch[_EXPIRED]) and task.uncancel() <= watch[_CANCELLING]


class Watchdog:
    """
    The deadlines of one event loop's attempts, and the single timer that enforces them.

    It never holds its loop: every method runs on that loop (an attempt's task, or the timer's
    callback), so the loop is at hand when needed. A reference to the loop would keep every
    closed loop alive through :data:`_watchdogs` (a weak dictionary's value must not refer to
    its key), with the tasks its finished watches still held: one leaked loop per
    ``asyncio.run()`` that made a timed call. For the same reason the armed timer's handle,
    which refers to its loop, is held weakly.
    """

    __slots__ = ("_armed_for", "_handle", "_heap", "_live")

    def __init__(self) -> None:
        self._heap: list[Watch] = []
        # Weak: a timer handle refers to its loop. While armed, the loop itself keeps it.
        self._handle: weakref.ReferenceType[asyncio.TimerHandle] | None = None
        self._armed_for = float("inf")
        self._live = 0

    def watch(
        self, task: asyncio.Task[Any], delay: float, loop: asyncio.AbstractEventLoop
    ) -> Watch:
        """Cancel *task* (running on *loop*) if it is still watched after *delay* seconds."""
        deadline = loop.time() + delay
        watch = [deadline, next(_seq), task, task.cancelling(), False]
        heap = self._heap
        if len(heap) > 1024 and len(heap) > 4 * self._live:
            # Finished watches wait in the heap until the timer reaches them; with long
            # timeouts and busy traffic, drop them in one pass before they pile up.
            heap[:] = [entry for entry in heap if entry[_TASK] is not None]
            heapq.heapify(heap)
        heapq.heappush(heap, watch)
        self._live += 1
        if deadline < self._armed_for:
            self._arm(deadline, loop)
        return watch

    def unwatch(self, watch: Watch) -> None:
        """The attempt ended: its deadline no longer matters, nor its task."""
        if watch[_TASK] is not None:  # the heap keeps it until the timer reaches it
            watch[_TASK] = None
            self._live -= 1

    def _arm(self, deadline: float, loop: asyncio.AbstractEventLoop) -> None:
        armed = self._handle() if self._handle is not None else None
        if armed is not None:
            armed.cancel()
        self._armed_for = deadline
        self._handle = weakref.ref(loop.call_at(deadline, self._fire))

    def _fire(self) -> None:
        self._handle = None
        self._armed_for = float("inf")
        loop = asyncio.get_running_loop()
        now = loop.time()
        heap = self._heap
        while heap:
            watch = heap[0]
            task = watch[_TASK]
            if task is None:
                heapq.heappop(heap)
                continue
            if watch[_DEADLINE] > now:
                self._arm(watch[_DEADLINE], loop)
                return
            heapq.heappop(heap)
            watch[_TASK] = None
            watch[_EXPIRED] = True
            self._live -= 1
            task.cancel()


_watchdogs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Watchdog] = (
    weakref.WeakKeyDictionary()
)


_recent: tuple[weakref.ReferenceType[asyncio.AbstractEventLoop], Watchdog] | None = None
"""The last loop looked up (weakly) and its watchdog: a weak dictionary's get() is a Python call
on every timed attempt, and a process almost always runs one loop."""


@_fork.on_fork
def _after_fork_in_child() -> None:
    # Event loops do not survive fork(): a loop another thread ran is never run again in the
    # child, and its watches hold tasks that never end. Only a loop the forking thread itself
    # is running goes on (before Python 3.12, asyncio lets the child carry on with it), and its
    # watchdog with it.
    global _recent  # noqa: PLW0603 - one tuple, replaced whole
    running = asyncio._get_running_loop()
    kept = _watchdogs.get(running) if running is not None else None
    _watchdogs.clear()
    if running is not None and kept is not None:
        _watchdogs[running] = kept
    _recent = None


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
