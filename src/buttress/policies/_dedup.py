# SPDX-License-Identifier: Apache-2.0
# Copyright 2026 buttress developers

"""Single-flight: the in-flight calls that concurrent callers of the same key may join.

A :class:`Flight` is one leader's call. Followers wait on it (a :class:`threading.Event` for
threads, an :class:`asyncio.Future` for tasks) and then read the outcome the leader wrote. The
cache decides who leads and who follows under its lock; this module only holds the primitives, so
the sync and async drivers share everything but the way they wait.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Generic, TypeVar


class Flight:
    """One leader's call that followers may join; its outcome is written once, then signalled.

    ``abandoned`` means the leader stopped without an outcome to share (it was cancelled, or
    interrupted by another ``BaseException``): its followers go back and one of them leads.
    """

    __slots__ = ("abandoned", "epoch", "error", "value")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.value: object = None
        self.error: Exception | None = None
        self.abandoned = False

    def joinable(self) -> bool:
        """Whether the current thread or task may wait for this flight without deadlocking."""
        raise NotImplementedError

    def signal(self) -> None:
        """Wake the followers (called once, after the outcome is written)."""
        raise NotImplementedError

    def outcome(self) -> object:
        """The leader's value, or raise the leader's exception (the same object, unchanged)."""
        if self.error is not None:
            raise self.error
        return self.value


class ThreadFlight(Flight):
    __slots__ = ("done", "owner")

    def __init__(self, epoch: int) -> None:
        super().__init__(epoch)
        self.owner = threading.get_ident()
        self.done = threading.Event()

    def joinable(self) -> bool:
        # The leader calling itself again (compute() re-entering with the same key) must not
        # wait for its own result.
        return self.owner != threading.get_ident()

    def signal(self) -> None:
        self.done.set()


class TaskFlight(Flight):
    __slots__ = ("future", "loop", "owner")

    def __init__(self, epoch: int) -> None:
        super().__init__(epoch)
        self.loop = asyncio.get_running_loop()
        self.owner = asyncio.current_task()
        self.future: asyncio.Future[None] = self.loop.create_future()

    def joinable(self) -> bool:
        # A future belongs to one loop: a task on another loop cannot await it.
        return asyncio.get_running_loop() is self.loop and asyncio.current_task() is not self.owner

    def signal(self) -> None:
        # The future carries no payload: followers read the outcome from the flight, so an
        # exception nobody awaited is never reported as "Future exception was never retrieved".
        if not self.future.done():
            self.future.set_result(None)


F = TypeVar("F", bound=Flight)


class Join(Generic[F]):
    """The cache's decision: wait for *flight*, another caller's call with the same key."""

    __slots__ = ("flight",)

    def __init__(self, flight: F) -> None:
        self.flight = flight


class Lead(Generic[F]):
    """The cache's decision: run the call yourself and settle *flight* when it ends."""

    __slots__ = ("flight",)

    def __init__(self, flight: F) -> None:
        self.flight = flight
