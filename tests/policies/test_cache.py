# SPDX-License-Identifier: Apache-2.0
# Copyright 2026 buttress developers
# House style R15 writes assertions as `expected == actual`; ruff's SIM300 calls that Yoda style.
# ruff: noqa: SIM300

"""Tests for the cache (LRU + TTL) and request dedup (single-flight)."""

from __future__ import annotations

import asyncio
import random
import threading
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buttress._context import PolicyContext
from buttress._exceptions import ConfigurationError
from buttress.policies._cache import _MISSING, Cache, CacheState, _Store
from buttress.telemetry._events import CacheAccessed, Event
from buttress.testing import FakeClock, capture_events

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable

WAIT = 10.0  # a safety net against hangs only; nothing below waits for time to pass


@pytest.fixture
def anyio_backend():
    """The drivers use asyncio futures, so only the asyncio backend applies."""
    return "asyncio"


class Recorder:
    """An ``emit`` that records events and lets a test wait until some have arrived."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._cond = threading.Condition()
        self._watches: list[tuple[str, int, asyncio.Event]] = []

    def __call__(self, event: Event) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()
        for result, count, flag in self._watches:
            if self.results().count(result) >= count:
                flag.set()

    def results(self) -> list[str]:
        return [e.result for e in self.events if isinstance(e, CacheAccessed)]

    def wait_for(self, result: str, count: int) -> None:
        """Block the calling thread until *count* events with *result* were emitted."""
        with self._cond:
            arrived = self._cond.wait_for(lambda: self.results().count(result) >= count, WAIT)
        assert arrived, f"only {self.results()} after {WAIT}s"

    async def until(self, result: str, count: int) -> None:
        """Suspend the calling task until *count* events with *result* were emitted."""
        flag = asyncio.Event()
        self._watches.append((result, count, flag))
        if self.results().count(result) >= count:
            flag.set()
        await asyncio.wait_for(flag.wait(), WAIT)


def make(*, observe: bool = False, **config) -> tuple[CacheState, Recorder, FakeClock]:
    recorder = Recorder()
    clock = FakeClock()
    ctx = PolicyContext(target="users", kind="db", clock=clock, observe=observe, emit=recorder)
    return Cache(**config).bind(ctx), recorder, clock


def counting(value: object = "v") -> tuple[Callable[[], object], list[int]]:
    calls: list[int] = []

    def compute() -> object:
        calls.append(1)
        return value

    return compute, calls


# --- configuration ---------------------------------------------------------------------------


def test_max_entries_zero_names_the_parameter_and_the_range():
    """max_entries=0 is refused with a message naming the parameter, value and accepted range."""
    with pytest.raises(ConfigurationError) as exc_info:
        Cache(max_entries=0)

    assert "Cache: max_entries=0 is out of range; expected an integer >= 1" == str(exc_info.value)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"ttl": -1}, "ttl=-1"),
        ({"ttl": float("nan")}, "ttl=nan"),
        ({"ttl": "60"}, "ttl='60'"),
        ({"max_entries": 2.5}, "max_entries=2.5"),
        ({"max_entries": True}, "max_entries=True"),
        ({"key": "user_id"}, "key='user_id'"),
        ({"dedup": 1}, "dedup=1"),
    ],
)
def test_invalid_configuration_names_parameter_and_value(kwargs, fragment):
    """Every invalid value is refused at construction, naming the parameter and the value."""
    with pytest.raises(ConfigurationError) as exc_info:
        Cache(**kwargs)

    assert fragment in str(exc_info.value)


def test_ttl_is_normalised_to_float():
    """An integer ttl is stored as float seconds."""
    cache = Cache(ttl=5)

    assert (5.0, float) == (cache.ttl, type(cache.ttl))


def test_cache_repr_names_every_setting():
    """The config's repr shows every setting, and the key function by name."""

    def by_user(user_id: int) -> int:
        return user_id

    assert (
        "<Cache ttl=30 max_entries=8 key=test_cache_repr_names_every_setting.<locals>.by_user "
        "dedup=False>" == repr(Cache(ttl=30, max_entries=8, key=by_user, dedup=False))
    )


def test_state_repr_shows_occupancy():
    """The state's repr shows its target, fill level, ttl and calls in flight."""
    state, _, _ = make(max_entries=4, ttl=2.5)
    state.call("k", lambda: 1)

    assert "<CacheState target='users' entries=1/4 ttl=2.5 dedup=True in_flight=0>" == repr(state)


def test_bind_creates_independent_states():
    """Two pipelines bound from one Cache() never share entries."""
    cache = Cache()
    first = cache.bind(PolicyContext(target="a", emit=lambda e: None))
    second = cache.bind(PolicyContext(target="b", emit=lambda e: None))
    first.call("k", lambda: 1)

    assert (1, 0) == (len(first), len(second))


# --- hits, misses, expiry, eviction ----------------------------------------------------------


def test_second_call_is_a_hit():
    """The first call computes and stores; the second is served from the cache."""
    state, recorder, _ = make()
    compute, calls = counting()

    results = [state.call("k", compute), state.call("k", compute)]

    assert (["v", "v"], 1, ["miss", "hit"]) == (results, len(calls), recorder.results())


def test_a_result_the_caller_calls_failed_is_returned_but_not_stored():
    """``failed`` marks a result as a failure (a retry's given-up result): returned, never
    stored, so the next call computes again; a predicate that raises ends the flight."""
    state, recorder, _ = make()
    compute, calls = counting("503")

    def broken(value: object) -> bool:
        raise RuntimeError("predicate failed")

    results = [state.call("k", compute, lambda v: v == "503") for _ in range(2)]
    with pytest.raises(RuntimeError):
        state.call("k", compute, broken)

    assert (["503", "503"], 3, ["miss"] * 3) == (results, len(calls), recorder.results())
    assert (0, {}) == (len(state), state._threads)
    assert "503" == state.call("k", compute)  # no predicate: stored as before
    assert 1 == len(state)


@pytest.mark.anyio
async def test_a_failed_result_is_not_stored_by_acall_either():
    """The async twin of the test above."""
    state, recorder, _ = make()

    async def compute() -> str:
        return "503"

    results = [await state.acall("k", compute, lambda v: v == "503") for _ in range(2)]

    assert (["503", "503"], ["miss", "miss"], 0) == (results, recorder.results(), len(state))


def test_events_carry_target_and_kind_through_the_hook_registry():
    """With the default emit, events reach the registered hooks with target and kind."""
    state = Cache().bind(PolicyContext(target="users", kind="db"))

    with capture_events() as events:
        state.call("k", lambda: 1)
        state.call("k", lambda: 1)

    assert [
        CacheAccessed(target="users", kind="db", result="miss"),
        CacheAccessed(target="users", kind="db", result="hit"),
    ] == events


def test_none_is_a_cacheable_value():
    """A compute that returns None is cached like any other value."""
    state, _, _ = make()
    compute, calls = counting(None)

    state.call("k", compute)
    result = state.call("k", compute)

    assert (None, 1) == (result, len(calls))


def test_entry_expires_after_ttl():
    """An entry is fresh for ttl seconds and recomputed once they have passed."""
    state, recorder, clock = make(ttl=10)
    compute, calls = counting()
    state.call("k", compute)

    clock.advance(9)
    state.call("k", compute)
    clock.advance(1)
    state.call("k", compute)

    assert (2, ["miss", "hit", "miss"]) == (len(calls), recorder.results())


def test_len_drops_expired_entries():
    """len() counts fresh entries only, dropping expired ones lazily."""
    state, _, clock = make(ttl=10)
    state.call("a", lambda: 1)
    clock.advance(5)
    state.call("b", lambda: 2)

    clock.advance(5)

    assert 1 == len(state)


def test_least_recently_used_entry_is_evicted():
    """Beyond max_entries the least recently *used* entry goes, not the oldest inserted."""
    state, recorder, _ = make(max_entries=2)
    state.call("a", lambda: 1)
    state.call("b", lambda: 2)
    state.call("a", lambda: 1)  # a is now the most recently used
    state.call("c", lambda: 3)  # evicts b

    state.call("a", lambda: 1)
    state.call("b", lambda: 2)

    assert (2, ["hit", "miss"]) == (len(state), recorder.results()[-2:])


def test_eviction_prefers_expired_entries():
    """Storing into a full cache drops expired entries before any fresh one."""
    state, recorder, clock = make(max_entries=2, ttl=10)
    state.call("old", lambda: 1)
    clock.advance(6)
    state.call("young", lambda: 2)
    state.call("old", lambda: 1)  # most recently used, but expires first
    clock.advance(5)  # "old" has expired, "young" has not

    state.call("new", lambda: 3)
    state.call("young", lambda: 2)

    assert (2, "hit") == (len(state), recorder.results()[-1])


def test_ttl_zero_stores_nothing():
    """With ttl=0 every call computes and nothing is stored."""
    state, recorder, _ = make(ttl=0)
    compute, calls = counting()

    state.call("k", compute)
    state.call("k", compute)

    assert (2, 0, ["miss", "miss"]) == (len(calls), len(state), recorder.results())


def test_exceptions_are_not_cached():
    """A failed call stores nothing, so the next call computes again."""
    state, recorder, _ = make()

    def fail() -> str:
        raise LookupError

    with pytest.raises(LookupError):
        state.call("k", fail)
    result = state.call("k", lambda: "v")

    assert ("v", ["miss", "miss"]) == (result, recorder.results())


@pytest.mark.anyio
async def test_async_hit_miss_and_expiry():
    """acall hits, misses and expires exactly like call."""
    state, recorder, clock = make(ttl=10)
    calls: list[int] = []

    async def compute() -> str:
        calls.append(1)
        return "v"

    await state.acall("k", compute)
    await state.acall("k", compute)
    clock.advance(10)
    result = await state.acall("k", compute)

    assert ("v", 2, ["miss", "hit", "miss"]) == (result, len(calls), recorder.results())


# --- keys, invalidation, observe mode --------------------------------------------------------


def key_fn(*args: object, **kwargs: object) -> Hashable:
    return ("fn", args, tuple(sorted(kwargs.items())))


@pytest.mark.parametrize(
    ("key", "explicit", "expected"),
    [
        (key_fn, "explicit", "explicit"),
        (key_fn, None, ("fn", (1,), (("x", 2),))),
        (lambda *a, **k: None, None, None),
        (None, "explicit", "explicit"),
        (None, None, None),
    ],
    ids=["explicit-wins", "key-function", "key-function-bypasses", "explicit-only", "no-key"],
)
def test_resolve_key_precedence(key, explicit, expected):
    """An explicit per-call key wins, else the key function, else None (bypass)."""
    state, _, _ = make(key=key)

    assert expected == state.resolve_key((1,), {"x": 2}, explicit)


def test_resolve_key_rejects_unhashable_keys():
    """A key function returning an unhashable key fails with a message naming the cache."""
    state, _, _ = make(key=lambda *a, **k: [1])

    with pytest.raises(TypeError) as exc_info:
        state.resolve_key((), {}, None)

    assert "Cache('users'): key [1] is not hashable" in str(exc_info.value)


def test_none_key_bypasses_the_cache():
    """A call without a key always computes and emits nothing."""
    state, recorder, _ = make()
    compute, calls = counting()

    state.call(None, compute)
    state.call(None, compute)

    assert (2, [], 0) == (len(calls), recorder.events, len(state))


def test_invalidate_forgets_one_key():
    """invalidate() drops one entry; the others stay."""
    state, recorder, _ = make()
    state.call("a", lambda: 1)
    state.call("b", lambda: 2)

    state.invalidate("a")
    state.invalidate("missing")  # no error for an absent key
    state.call("a", lambda: 1)
    state.call("b", lambda: 2)

    assert ["miss", "hit"] == recorder.results()[-2:]


def test_clear_forgets_everything():
    """clear() drops every entry."""
    state, _, _ = make()
    state.call("a", lambda: 1)
    state.call("b", lambda: 2)

    state.clear()

    assert 0 == len(state)


def test_invalidate_during_a_call_keeps_its_result_out_of_the_cache():
    """A call in flight when its key is invalidated is neither joined nor stored."""
    state, recorder, _ = make()
    release = threading.Event()
    out: list[str] = []

    def old() -> str:
        release.wait(WAIT)
        return "old"

    leader = threading.Thread(target=lambda: out.append(state.call("k", old)))
    leader.start()
    recorder.wait_for("miss", 1)
    state.invalidate("k")
    fresh = state.call("k", lambda: "new")  # does not join the stale call
    release.set()
    leader.join(WAIT)

    assert (["old"], "new", "new") == (out, fresh, state.call("k", lambda: "unused"))


@pytest.mark.anyio
async def test_observe_mode_is_a_pass_through():
    """In observe mode every call computes, nothing is stored and no event is emitted."""
    state, recorder, _ = make(observe=True)
    compute, calls = counting()

    async def acompute() -> object:
        return compute()

    state.call("k", compute)
    state.call("k", compute)
    await state.acall("k", acompute)

    assert (3, 0, []) == (len(calls), len(state), recorder.events)


# --- dedup with threads ----------------------------------------------------------------------


def test_threads_with_the_same_key_share_one_call():
    """Ten threads asking for one cold key cause one call; nine of them coalesce."""
    state, recorder, _ = make()
    release = threading.Event()
    calls: list[int] = []
    results: list[str] = []

    def compute() -> str:
        calls.append(1)
        release.wait(WAIT)
        return "v"

    threads = [
        threading.Thread(target=lambda: results.append(state.call("k", compute))) for _ in range(10)
    ]
    for thread in threads:
        thread.start()
    recorder.wait_for("coalesced", 9)
    release.set()
    for thread in threads:
        thread.join(WAIT)

    assert (1, ["v"] * 10, 1, 9) == (
        len(calls),
        results,
        recorder.results().count("miss"),
        recorder.results().count("coalesced"),
    )


def test_leader_exception_reaches_every_thread_follower():
    """The leader's exception, the very same object, is raised in every follower."""
    state, recorder, _ = make()
    release = threading.Event()
    boom = LookupError("down")
    errors: list[BaseException] = []

    def fail() -> str:
        release.wait(WAIT)
        raise boom

    def worker() -> None:
        try:
            state.call("k", fail)
        except LookupError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(5)]
    for thread in threads:
        thread.start()
    recorder.wait_for("coalesced", 4)
    release.set()
    for thread in threads:
        thread.join(WAIT)

    assert (5, True) == (len(errors), all(e is boom for e in errors))


class Interrupted(BaseException):
    """Stands in for KeyboardInterrupt or SystemExit in the leader thread."""


def test_interrupted_thread_leader_hands_over_to_a_follower():
    """A leader stopped by a non-Exception BaseException does not strand its followers."""
    state, recorder, _ = make()
    release = threading.Event()
    calls: list[int] = []
    leader_saw: list[BaseException] = []
    results: list[str] = []

    def compute() -> str:
        calls.append(1)
        if len(calls) == 1:
            release.wait(WAIT)
            raise Interrupted
        return "v"

    def lead() -> None:
        try:
            state.call("k", compute)
        except Interrupted as exc:
            leader_saw.append(exc)

    leader = threading.Thread(target=lead)
    leader.start()
    recorder.wait_for("miss", 1)
    followers = [
        threading.Thread(target=lambda: results.append(state.call("k", compute))) for _ in range(3)
    ]
    for thread in followers:
        thread.start()
    recorder.wait_for("coalesced", 3)
    release.set()
    for thread in [leader, *followers]:
        thread.join(WAIT)

    assert (2, ["v"] * 3, 1) == (len(calls), results, len(leader_saw))


def test_threads_with_different_keys_run_independently():
    """A call in flight for one key does not hold up a call for another."""
    state, recorder, _ = make()
    b_done = threading.Event()
    out: list[str] = []

    def slow_a() -> str:
        # Returns only once b has been computed: a cache serialising keys would time out here.
        return "a" if b_done.wait(WAIT) else "timed out"

    thread = threading.Thread(target=lambda: out.append(state.call("a", slow_a)))
    thread.start()
    recorder.wait_for("miss", 1)
    b = state.call("b", lambda: "b")
    b_done.set()
    thread.join(WAIT)

    assert (["a"], "b", ["miss", "miss"]) == (out, b, recorder.results())


def test_reentrant_call_with_the_same_key_does_not_deadlock():
    """compute() calling the cache again with its own key runs the inner call itself."""
    state, _, _ = make()

    def outer() -> str:
        return "outer+" + state.call("k", lambda: "inner")

    assert "outer+inner" == state.call("k", outer)


def test_dedup_false_runs_every_concurrent_call():
    """With dedup=False concurrent identical calls all compute."""
    state, recorder, _ = make(dedup=False)
    release = threading.Event()
    results: list[str] = []

    def compute() -> str:
        release.wait(WAIT)
        return "v"

    threads = [
        threading.Thread(target=lambda: results.append(state.call("k", compute))) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    recorder.wait_for("miss", 3)
    release.set()
    for thread in threads:
        thread.join(WAIT)

    assert (["v"] * 3, ["miss"] * 3) == (results, recorder.results())


def test_sixteen_threads_with_random_keys_stay_consistent():
    """Under contention every caller gets its own key's value and the size bound holds."""
    state, _, clock = make(max_entries=8, ttl=5)
    errors: list[BaseException] = []
    sizes: list[int] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(300):
                key = rng.randrange(32)
                value = state.call(key, lambda key=key: key * 2)
                assert key * 2 == value
                roll = rng.random()
                if roll < 0.05:
                    clock.advance(1)
                elif roll < 0.07:
                    state.invalidate(rng.randrange(32))
                elif roll < 0.08:
                    state.clear()
                sizes.append(len(state))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 3)

    assert ([], True) == (errors, max(sizes) <= 8)


# --- dedup with asyncio tasks ----------------------------------------------------------------


@pytest.mark.anyio
async def test_tasks_with_the_same_key_share_one_call():
    """Ten tasks asking for one cold key cause one call; nine of them coalesce."""
    state, recorder, _ = make()
    release = asyncio.Event()
    calls: list[int] = []

    async def compute() -> str:
        calls.append(1)
        await release.wait()
        return "v"

    tasks = [asyncio.create_task(state.acall("k", compute)) for _ in range(10)]
    await recorder.until("coalesced", 9)
    release.set()
    results = await asyncio.gather(*tasks)

    assert (1, ["v"] * 10, 1, 9) == (
        len(calls),
        results,
        recorder.results().count("miss"),
        recorder.results().count("coalesced"),
    )


@pytest.mark.anyio
async def test_leader_exception_reaches_every_task_follower():
    """The leader's exception, the very same object, is raised in every follower task."""
    state, recorder, _ = make()
    release = asyncio.Event()
    boom = LookupError("down")

    async def fail() -> str:
        await release.wait()
        raise boom

    tasks = [asyncio.create_task(state.acall("k", fail)) for _ in range(5)]
    await recorder.until("coalesced", 4)
    release.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)

    assert [boom] * 5 == outcomes
    assert all(o is boom for o in outcomes)


@pytest.mark.anyio
async def test_cancelled_leader_hands_over_to_a_follower():
    """Cancelling the leader leaves its followers to elect a new leader, not to hang or fail."""
    state, recorder, _ = make()
    calls: list[int] = []

    async def compute() -> str:
        calls.append(1)
        if len(calls) == 1:
            await asyncio.Event().wait()  # never set: only cancellation ends it
        return "v"

    leader = asyncio.create_task(state.acall("k", compute))
    await recorder.until("miss", 1)
    followers = [asyncio.create_task(state.acall("k", compute)) for _ in range(3)]
    await recorder.until("coalesced", 3)
    leader.cancel()
    results = await asyncio.wait_for(asyncio.gather(*followers), WAIT)

    with pytest.raises(asyncio.CancelledError):
        await leader
    assert (2, ["v"] * 3) == (len(calls), results)


@pytest.mark.anyio
async def test_cancelled_follower_does_not_cancel_the_leader():
    """A follower's cancellation stays with that follower; the leader and the others finish."""
    state, recorder, _ = make()
    release = asyncio.Event()
    calls: list[int] = []

    async def compute() -> str:
        calls.append(1)
        await release.wait()
        return "v"

    leader = asyncio.create_task(state.acall("k", compute))
    await recorder.until("miss", 1)
    quitter = asyncio.create_task(state.acall("k", compute))
    stayer = asyncio.create_task(state.acall("k", compute))
    await recorder.until("coalesced", 2)
    quitter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await quitter
    release.set()

    assert ("v", "v", 1) == (await leader, await stayer, len(calls))


@pytest.mark.anyio
async def test_tasks_with_different_keys_run_independently():
    """A task in flight for one key does not hold up a task for another."""
    state, recorder, _ = make()
    b_done = asyncio.Event()

    async def slow_a() -> str:
        await b_done.wait()
        return "a"

    async def fast_b() -> str:
        b_done.set()
        return "b"

    results = await asyncio.wait_for(
        asyncio.gather(state.acall("a", slow_a), state.acall("b", fast_b)), WAIT
    )

    assert (["a", "b"], ["miss", "miss"]) == (results, recorder.results())


@pytest.mark.anyio
async def test_reentrant_task_with_the_same_key_does_not_deadlock():
    """A coroutine awaiting the cache again with its own key runs the inner call itself."""
    state, _, _ = make()

    async def inner() -> str:
        return "inner"

    async def outer() -> str:
        return "outer+" + await state.acall("k", inner)

    assert "outer+inner" == await asyncio.wait_for(state.acall("k", outer), WAIT)


def test_task_on_another_event_loop_runs_on_its_own():
    """A task cannot await another loop's future, so it computes instead of coalescing."""
    state, recorder, _ = make()
    release = threading.Event()
    out: list[str] = []

    async def slow() -> str:
        release.wait(WAIT)  # blocks loop A on purpose; loop B runs in this thread
        return "a"

    async def fast() -> str:
        return "b"

    other = threading.Thread(target=lambda: out.append(asyncio.run(state.acall("k", slow))))
    other.start()
    recorder.wait_for("miss", 1)
    result = asyncio.run(state.acall("k", fast))
    release.set()
    other.join(WAIT)

    assert ("b", ["a"], ["miss", "miss"]) == (result, out, recorder.results())


# --- the pure store --------------------------------------------------------------------------


operations = st.lists(
    st.one_of(
        st.tuples(st.just("get"), st.integers(0, 5)),
        st.tuples(st.just("put"), st.integers(0, 5)),
        st.tuples(st.just("advance"), st.sampled_from([0.0, 0.5, 1.0, 3.0])),
        st.tuples(st.just("discard"), st.integers(0, 5)),
    ),
    max_size=60,
)


@given(operations, st.integers(1, 4), st.sampled_from([0.0, 1.0, 2.5, float("inf")]))
def test_store_matches_a_reference_lru(ops, max_entries, ttl):
    """The store behaves like a naive list-based LRU with expiry, whatever the operations."""
    store = _Store(ttl, max_entries)
    model: list[tuple[int, int, float]] = []  # (key, value, expires), least recently used first
    now = 0.0
    for step, (op, arg) in enumerate(ops):
        if op == "advance":
            now += arg
            continue
        if op == "discard":
            store.discard(arg)
            model = [e for e in model if e[0] != arg]
            continue
        if op == "get":
            fresh = [e for e in model if e[0] == arg and e[2] > now]
            if fresh:
                model.remove(fresh[0])
                model.append(fresh[0])
            elif any(e[0] == arg for e in model):
                model = [e for e in model if e[2] > now]
            expected = fresh[0][1] if fresh else None
            got = store.get(arg, now)
            assert expected == (None if got is _MISSING else got)
        elif ttl > 0:  # put
            model = [e for e in model if e[2] > now and e[0] != arg]
            model.append((arg, step, now + ttl))
            del model[: max(0, len(model) - max_entries)]
            store.put(arg, step, now)

        assert len(model) == len(store)
