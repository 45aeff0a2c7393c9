"""The asyncio attempt watchdog (``_watchdog``): one per event loop, and never a leak.

An application that calls ``asyncio.run()`` per job (a CLI, a task queue worker, sync code with
one async client) makes a new event loop each time. The watchdog registry is weak, so a loop,
and the tasks its finished attempts ran in, must go once the loop is done.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref

import pytest

import buttress
from buttress import _watchdog


def _timed(name: str, attempt: float = 30.0) -> buttress.Pipeline:
    return buttress.protect(name, timeout=buttress.Timeout(attempt=attempt, total=None))


async def _answer() -> int:
    return 42


def test_a_finished_event_loop_is_not_kept_alive() -> None:
    """Twenty asyncio.run() calls, each with a timed call: no loop survives them."""
    guard = _timed("per-run")
    loops: list[weakref.ReferenceType[asyncio.AbstractEventLoop]] = []

    async def job() -> int:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        return await guard.acall(_answer)

    results = [asyncio.run(job()) for _ in range(20)]
    gc.collect()

    assert [42] * 20 == results
    assert [] == [ref for ref in loops if ref() is not None]
    assert 0 == len(_watchdog._watchdogs)


def test_a_finished_attempt_lets_go_of_its_task() -> None:
    """The watch stays in the heap until the timer reaches it, without its task."""
    guard = _timed("released")

    async def job() -> list[_watchdog.Watch]:
        await guard.acall(_answer)
        dog = _watchdog.watchdog_for(asyncio.get_running_loop())
        return list(dog._heap)

    watches = asyncio.run(job())

    assert 1 == len(watches)
    assert (None, False) == (watches[0][2], watches[0][4])  # over, and not expired


def test_loops_in_two_threads_each_enforce_their_own_deadlines() -> None:
    """Two threads, two loops, interleaved lookups: each attempt is cancelled on its own loop."""
    guard = _timed("threads", attempt=0.05)
    outcomes: dict[str, list[str]] = {"a": [], "b": []}

    async def hang() -> None:
        await asyncio.sleep(10)

    async def job(name: str) -> None:
        for _ in range(5):
            with pytest.raises(buttress.TimeoutError):
                await guard.acall(hang)
            outcomes[name].append("timed out")
            assert 42 == await guard.acall(_answer)
            outcomes[name].append("answered")

    threads = [threading.Thread(target=asyncio.run, args=(job(n),)) for n in outcomes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert {"a": ["timed out", "answered"] * 5, "b": ["timed out", "answered"] * 5} == outcomes
