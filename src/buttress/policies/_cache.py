# SPDX-License-Identifier: Apache-2.0
# Copyright 2026 buttress developers

"""The cache: an LRU of recent results with a time-to-live, and request dedup (single-flight).

Two problems, one key. A cache answers a repeated call from memory for ``ttl`` seconds; dedup
makes concurrent identical calls share one in-flight call, so a burst of N requests for the same
cold key costs the dependency one call, not N (the "thundering herd" after an entry expires).
``ttl=0`` keeps dedup alone.

Layout (house style R4): :class:`_Store` is a pure LRU with expiry timestamps that takes ``now``
as an argument; :class:`CacheState` owns it, one lock and two in-flight maps (threads and asyncio
tasks wait on different primitives, see ``_dedup``), and two thin drivers,
:meth:`CacheState.call` and :meth:`CacheState.acall`, that differ only in ``compute()`` vs
``await compute()`` and in how a follower waits.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

from buttress import _fork, _validate
from buttress.policies._dedup import F, Join, Lead, TaskFlight, ThreadFlight
from buttress.telemetry._events import CacheAccessed

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Hashable

    from buttress._context import PolicyContext

R = TypeVar("R")

_MISSING: Final = object()
"""What :meth:`_Store.get` returns for an absent or expired key (``None`` is a valid value)."""


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class Cache:
    """Remember results for *ttl* seconds and let concurrent identical calls share one call.

    A call is cached (and deduplicated) only when it has a key: the per-call key given to the
    pipeline, else ``key(*args, **kwargs)``. Without either, the call bypasses the cache and dedup
    entirely; there is deliberately no default key, because guessing one from arguments caches
    calls that were never meant to be shared.

    Exceptions are never cached. Results are shared by reference: a follower or a later hit gets
    the very object the leader returned, so cache immutable values (or copy them yourself).

    Args:
        ttl: Seconds an entry stays fresh, ``>= 0``. ``0`` stores nothing: only dedup remains.
        max_entries: Entries kept, ``>= 1``; the least recently used go first beyond it.
        key: ``key(*args, **kwargs) -> Hashable``; may return ``None`` to bypass the cache
            for that call.
        dedup: Whether concurrent calls with the same key share one in-flight call.

    .. versionadded:: 0.1.0
    """

    ttl: float = 60.0
    max_entries: int = 1024
    key: Callable[..., Hashable] | None = None
    dedup: bool = True

    def __post_init__(self) -> None:
        owner = "Cache"
        # Normalised to float so the store does float arithmetic only (ttl=5 -> 5.0).
        object.__setattr__(self, "ttl", _validate.number(owner, "ttl", self.ttl, low=0))
        _validate.integer(owner, "max_entries", self.max_entries, low=1)
        _validate.function(
            owner,
            "key",
            self.key,
            "a callable taking the call's arguments and returning a hashable key (or None)",
        )
        _validate.boolean(owner, "dedup", self.dedup)

    def bind(self, ctx: PolicyContext) -> CacheState:
        """Create the runtime state for one pipeline.

        Two pipelines bound from the same ``Cache()`` never share entries or in-flight calls.
        """
        return CacheState(self, ctx)

    def __repr__(self) -> str:
        key = "None" if self.key is None else getattr(self.key, "__qualname__", repr(self.key))
        return (
            f"<Cache ttl={self.ttl:g} max_entries={self.max_entries} key={key} dedup={self.dedup}>"
        )


class _Store:
    """A pure LRU with expiry timestamps: no lock, no clock; the caller passes ``now``.

    Two ordered dicts share the keys: ``_values`` in use order (LRU first) and ``_expiry`` in
    insertion order. Because the ttl is fixed and ``now`` never goes backwards, insertion order
    *is* expiry order, so dropping every expired entry pops from the front of ``_expiry`` and
    costs O(expired), never a scan of the whole cache.
    """

    __slots__ = ("_expiry", "_values", "max_entries", "ttl")

    def __init__(self, ttl: float, max_entries: int) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._values: OrderedDict[Hashable, object] = OrderedDict()
        self._expiry: OrderedDict[Hashable, float] = OrderedDict()

    def get(self, key: Hashable, now: float) -> object:
        """The fresh value for *key* (now most recently used), else :data:`_MISSING`."""
        expires = self._expiry.get(key)
        if expires is None:
            return _MISSING
        if expires <= now:
            self.purge(now)
            return _MISSING
        self._values.move_to_end(key)
        return self._values[key]

    def put(self, key: Hashable, value: object, now: float) -> None:
        """Store *value*, dropping expired entries first and then the least recently used."""
        if self.ttl <= 0:
            return
        self.purge(now)
        self._values[key] = value
        self._values.move_to_end(key)
        self._expiry.pop(key, None)
        self._expiry[key] = now + self.ttl
        while len(self._values) > self.max_entries:
            old, _ = self._values.popitem(last=False)
            del self._expiry[old]

    def purge(self, now: float) -> None:
        """Drop every expired entry."""
        expiry = self._expiry
        while expiry:
            key, expires = next(iter(expiry.items()))
            if expires > now:
                return
            del expiry[key]
            del self._values[key]

    def discard(self, key: Hashable) -> None:
        """Forget *key* if present."""
        if self._expiry.pop(key, None) is not None:
            del self._values[key]

    def clear(self) -> None:
        """Forget everything."""
        self._values.clear()
        self._expiry.clear()

    def __len__(self) -> int:
        return len(self._values)


class _Hit:
    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value


class CacheState:
    """One pipeline's cache entries and in-flight calls; thread-safe and asyncio-safe.

    The first caller of a cold key leads: it runs ``compute`` while later callers with the same
    key (followers) wait and then share its result or its exception. Followers join only a leader
    they can wait for: threads join threads, and tasks join tasks on the same event loop; a task
    on another loop runs on its own.

    Choices worth knowing:

    * **A leader that stops without an outcome hands over.** When the leader is cancelled (or
      interrupted by any ``BaseException`` that is not an ``Exception``), its followers do not
      inherit the cancellation: they start over and one of them leads. That follower emits a
      second event, ``miss``, after its ``coalesced``. An ordinary exception, by contrast, is
      shared with every follower, so a failing dependency is still called once per burst.
    * **A cancelled follower never cancels the leader**; it waits through ``asyncio.shield``.
    * **Invalidation wins over calls already in flight.** After :meth:`invalidate` or
      :meth:`clear`, new callers do not join calls that started earlier, and no call that
      started earlier stores its result (conservatively, whatever its key): a result that may
      predate the write that caused the invalidation is never cached.
    * **Observe mode is a pass-through.** With ``ctx.observe`` every call runs ``compute``, nothing
      is stored or shared and no event is emitted: a cache decides nothing that could be
      "reported but not enforced", and inventing hit/miss counts for a cache that holds nothing
      would only mislead.
    * A key of ``None`` bypasses the cache for that call (see :meth:`resolve_key`).

    Events: one :class:`~buttress.telemetry.CacheAccessed` per call, ``hit``, ``miss`` or
    ``coalesced``; they are built once at bind time, since they carry no per-call data.

    .. versionadded:: 0.1.0
    """

    __slots__ = (
        "__weakref__",
        "_clock",
        "_coalesced",
        "_config",
        "_dedup",
        "_emit",
        "_epoch",
        "_hit",
        "_lock",
        "_miss",
        "_observe",
        "_store",
        "_target",
        "_tasks",
        "_threads",
    )

    def __init__(self, config: Cache, ctx: PolicyContext) -> None:
        self._config = config
        self._target = ctx.target
        self._clock = ctx.clock
        self._emit = ctx.emit
        self._observe = ctx.observe
        self._dedup = config.dedup
        self._store = _Store(config.ttl, config.max_entries)
        self._lock = threading.Lock()
        self._threads: dict[Hashable, ThreadFlight] = {}
        self._tasks: dict[Hashable, TaskFlight] = {}
        self._epoch = 0
        self._hit = CacheAccessed(target=ctx.target, kind=ctx.kind, result="hit")
        self._miss = CacheAccessed(target=ctx.target, kind=ctx.kind, result="miss")
        self._coalesced = CacheAccessed(target=ctx.target, kind=ctx.kind, result="coalesced")
        _fork.track(self)

    def _after_fork_in_child(self) -> None:
        # A forked child keeps the stored entries, but not the calls in flight: their leaders
        # are the parent's threads and tasks, and a follower in the child would wait forever.
        _fork.reinit(self._lock)
        self._threads.clear()
        self._tasks.clear()

    def resolve_key(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], explicit: Hashable | None
    ) -> Hashable | None:
        """The key for one call: the explicit per-call key, else ``config.key(*args, **kwargs)``.

        Returns ``None`` (bypass the cache) when neither exists or the key function says so.

        Raises:
            TypeError: if the key is not hashable; raised here, naming the cache, rather than
                as a bare ``unhashable type`` from deep inside a dict lookup.
        """
        if explicit is not None:
            key = explicit
        elif self._config.key is not None:
            key = self._config.key(*args, **kwargs)
        else:
            return None
        try:
            hash(key)
        except TypeError as exc:
            raise TypeError(
                f"Cache({self._target!r}): key {key!r} is not hashable; return a tuple, str or "
                "other hashable value from the key function"
            ) from exc
        return key

    def call(
        self, key: Hashable, compute: Callable[[], R], failed: Callable[[R], bool] | None = None
    ) -> R:
        """Return *key*'s fresh entry, else share another thread's call, else run ``compute()``.

        The leader's result is stored when ``ttl > 0``; followers get it without calling. A
        result *failed* says is a failure (the retry's ``on_result``: one it gave up on) is
        shared with the followers but never stored, as an exception.

        Raises:
            Exception: whatever ``compute()`` raised, in the leader and in every follower.
        """
        if self._observe or key is None:
            return compute()
        while True:
            decision = self._enter(key, self._threads, ThreadFlight)
            if isinstance(decision, _Hit):
                self._emit(self._hit)
                return cast("R", decision.value)
            flight = decision.flight
            if isinstance(decision, Join):
                self._emit(self._coalesced)
                flight.done.wait()
                if flight.abandoned:
                    continue
                return cast("R", flight.outcome())
            self._emit(self._miss)
            try:
                value = compute()
                keep = failed is None or not failed(value)
            except Exception as exc:
                self._finish(key, self._threads, flight, error=exc)
                raise
            except BaseException:
                self._finish(key, self._threads, flight, abandoned=True)
                raise
            self._finish(key, self._threads, flight, value=value, store=keep)
            return value

    async def acall(
        self,
        key: Hashable,
        compute: Callable[[], Awaitable[R]],
        failed: Callable[[R], bool] | None = None,
    ) -> R:
        """Like :meth:`call`, for coroutines: followers are tasks on the leader's event loop.

        Needs a running asyncio loop, since followers wait on an :class:`asyncio.Future`; threads
        and tasks never coalesce with each other, but they share the stored entries.

        Raises:
            Exception: whatever ``compute()`` raised, in the leader and in every follower.
            asyncio.CancelledError: only in the task that was cancelled.
        """
        if self._observe or key is None:
            return await compute()
        while True:
            decision = self._enter(key, self._tasks, TaskFlight)
            if isinstance(decision, _Hit):
                self._emit(self._hit)
                return cast("R", decision.value)
            flight = decision.flight
            if isinstance(decision, Join):
                self._emit(self._coalesced)
                # shield: cancelling this follower must not cancel the future the others share.
                await asyncio.shield(flight.future)
                if flight.abandoned:
                    continue
                return cast("R", flight.outcome())
            self._emit(self._miss)
            try:
                value = await compute()
                keep = failed is None or not failed(value)
            except Exception as exc:
                self._finish(key, self._tasks, flight, error=exc)
                raise
            except BaseException:
                self._finish(key, self._tasks, flight, abandoned=True)
                raise
            self._finish(key, self._tasks, flight, value=value, store=keep)
            return value

    def _enter(
        self, key: Hashable, flights: dict[Hashable, F], new: Callable[[int], F]
    ) -> _Hit | Join[F] | Lead[F]:
        # The whole decision under one lock, so exactly one caller of a cold key leads.
        with self._lock:
            value = self._store.get(key, self._clock.monotonic())
            if value is not _MISSING:
                return _Hit(value)
            current = flights.get(key) if self._dedup else None
            if current is not None and current.joinable():
                return Join(current)
            flight = new(self._epoch)
            # An unjoinable flight (re-entrant leader, other loop) keeps its slot: this call
            # runs on its own instead of displacing the flight others already wait for.
            if self._dedup and current is None:
                flights[key] = flight
            return Lead(flight)

    def _finish(
        self,
        key: Hashable,
        flights: dict[Hashable, F],
        flight: F,
        *,
        value: object = None,
        error: Exception | None = None,
        abandoned: bool = False,
        store: bool = True,
    ) -> None:
        with self._lock:
            # Store and unregister atomically: a new caller sees the flight or the entry, never
            # neither, so a burst cannot slip a second leader in between.
            if store and error is None and not abandoned and flight.epoch == self._epoch:
                self._store.put(key, value, self._clock.monotonic())
            if flights.get(key) is flight:
                del flights[key]
        flight.value, flight.error, flight.abandoned = value, error, abandoned
        flight.signal()

    def invalidate(self, key: Hashable) -> None:
        """Forget *key*'s entry, so the next call computes afresh.

        Calls for *key* already in flight are neither joined by later callers nor stored.
        """
        with self._lock:
            self._epoch += 1
            self._store.discard(key)
            self._threads.pop(key, None)
            self._tasks.pop(key, None)

    def clear(self) -> None:
        """Forget every entry; calls already in flight are neither joined nor stored."""
        with self._lock:
            self._epoch += 1
            self._store.clear()
            self._threads.clear()
            self._tasks.clear()

    def __len__(self) -> int:
        """The number of fresh entries (expired ones are dropped first)."""
        with self._lock:
            self._store.purge(self._clock.monotonic())
            return len(self._store)

    def __repr__(self) -> str:
        with self._lock:
            entries = len(self._store)
            in_flight = len(self._threads) + len(self._tasks)
        return (
            f"<CacheState target={self._target!r} entries={entries}/{self._config.max_entries} "
            f"ttl={self._config.ttl:g} dedup={self._dedup} in_flight={in_flight}>"
        )
