"""
The lanes: a call's first attempt, when no policy of its pipeline has anything to decide.

Nearly every HTTP request finds its target's bulkhead with a free permit and its breaker closed,
and succeeds at the first attempt. All it needs then is little: take a permit, hand the client
what is left of the deadline as its timeout, publish that deadline, mark the attempt, call, read
the status, count the success, give the permit back. The general driver (``_driver_sync``) does
that too, but through a branch for every layout and policy a pipeline may have and in a frame
built to retry. Inside a real ``requests`` GET, buttress's code runs with cold CPU caches (the
client's own work has evicted it), and there each branch, closure cell and frame touched costs
five to ten times what it costs in a micro-benchmark; so the common case gets a path of its own.

Plain calls (``protect()``, ``guard.call``, decorated functions) get the same shortcut without
the client's duties (``build_plain_lane``; ``build_alane`` serves both in async code): there it
took the sync default pipeline from about 645 to 570 ns a call.

The lane is compiled only for the default client layout (bulkhead outside the retry, breaker
inside it, an attempt timeout; no rate limit, cache, fallback or result predicate; enforce
mode), sync (``build_lane``) and async (``build_alane``, where the attempt runs under the loop's
watchdog as in the general driver). A client without a timeout argument (httpx) reads the
published deadline itself. A client that keeps its own timeout (``CallShape.app_timeout``, every
zero-code call under the templates) gets neither a timeout nor a deadline nor a watchdog: its
first attempt runs as it would without buttress. At run time the lane steps aside before
calling anything whenever a policy has something to decide: the bulkhead queueing or full, the
breaker not closed, deadlines not propagated. When the first attempt fails (an error, or a
status the target retries), the general driver goes on from that outcome, with the permit the
lane took (``attempts(..., _resumed=...)``): nothing is sent twice, and the retry, the breaker
and the metrics see what they would have seen without the lane.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING, Any, NamedTuple

from ._config import CONFIG
from ._exceptions import TimeoutError as PolicyTimeoutError
from ._shape import MIN_LEFT, CallShape
from ._stats import RING_SIZE, SUCCESS
from ._watchdog import task_of, watchdog_for
from ._watchdog import timed_out as cancelled_by
from .policies._timeout import deadline_var

if TYPE_CHECKING:
    from ._driver_async import AsyncRun
    from ._driver_sync import SyncRun
    from ._pipeline import Pipeline
    from .policies._breaker_state import CircuitBreakerState
    from .policies._bulkhead_core import BulkheadCore

_MASK = RING_SIZE - 1


class _Common(NamedTuple):
    """What every lane needs of a pipeline, resolved once when the driver is compiled."""

    breaker: CircuitBreakerState
    core: BulkheadCore
    free: deque[None]
    give_back: Callable[[], None]
    finish: Callable[[float, Any], Any]
    span: float
    left: float


def _common(p: Pipeline, overran: Callable[[float], None] | None) -> _Common | None:
    """
    The parts of a lane for *p*, or ``None`` when its layout is not one a lane covers.

    *overran* reports an attempt that took longer than its timeout (``None``: the attempt is
    cancelled instead, as in the async driver).
    """
    breaker, bulkhead, timeout, retry = p.breaker, p.bulkhead, p.timeout_config, p.retry
    if (
        breaker is None
        or "breaker" not in p.layout.inner
        or bulkhead is None
        or "bulkhead" not in p.layout.outer
        or p.rate_limiter is not None
        or p.cache is not None
        or p.fallback is not None
        or timeout is None
        or timeout.attempt is None
        or (retry is not None and retry.on_result is not None)
        or p.context.observe
    ):
        return None

    now = p.context.clock.monotonic
    core, free, rebalance = bulkhead._core, bulkhead._free, bulkhead._rebalance
    stats = p.stats
    counts, ring, quiet = stats.counts, stats.ring, stats.quiet_until
    slow = breaker._slow_duration
    attempt_timeout = timeout.attempt

    def give_back() -> None:
        # BulkheadState.release, inlined as in the drivers.
        free.append(None)
        if core.slow:
            rebalance()

    def finish(t0: float, result: Any) -> Any:
        # A first attempt that succeeded: what the general driver does with it.
        try:
            t1 = now()
            if not (breaker._quiet and t1 - t0 < slow):
                breaker.on_result(t1, t1 - t0, result)
            if overran is not None and t1 - t0 > attempt_timeout:
                overran(attempt_timeout)
            # CallStats.record, inlined.
            counts[SUCCESS] += 1
            i = stats.index
            ring[i & _MASK] = (t1, t1 - t0, SUCCESS)
            stats.index = i + 1
            if t1 >= quiet[SUCCESS] and stats.sampler is not None:
                quiet[SUCCESS] = stats.sampler(SUCCESS, t1 - t0, t1)
        finally:
            # give_back(), inlined: this runs on every successful call.
            free.append(None)
            if core.slow:
                rebalance()
        return result

    # The first attempt's deadline is this far from its start (the total deadline starts then
    # too), and the client gets at least MIN_LEFT of it, as in the general drivers.
    span = attempt_timeout if timeout.total is None else min(attempt_timeout, timeout.total)
    left = max(span, MIN_LEFT)
    return _Common(breaker, core, free, give_back, finish, span, left)


def _defers(p: Pipeline, shape: CallShape) -> bool:
    """Whether *shape*'s client keeps its own timeout on *p* (see ``CallShape.app_timeout``)."""
    timeout = p.timeout_config
    return shape.app_timeout and timeout is not None and timeout.respect_app_timeout


def build_lane(
    p: Pipeline,
    shape: CallShape,
    attempts: Callable[..., Any],
    overran: Callable[[float], None],
) -> SyncRun | None:
    """
    A lane in front of *attempts* (the general sync driver of *p* for *shape*), or ``None``.

    ``None`` when *p*'s layout or *shape* is not one the lane covers: the caller then uses
    *attempts* alone. *overran* reports an attempt that took longer than its timeout.
    """
    argument, status_of, failure, inside = (
        shape.deadline_argument,
        shape.status,
        shape.failure,
        shape.inside,
    )
    defer = _defers(p, shape)
    common = _common(p, None if defer else overran)
    if common is None or status_of is None or failure is None or inside is None:
        return None
    breaker, core, free, give_back, finish, span, left = common
    clock = p.context.clock
    now = clock.monotonic
    tighten, failing, marks = shape.tighten, shape.failing, shape.marks
    publish, restore = deadline_var.set, deadline_var.reset

    def lane(
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        priority: int,
        _cache_key: Hashable = None,
    ) -> Any:
        if core.slow or not breaker._free or not CONFIG.propagate_deadlines or not CONFIG.active:
            return attempts(fn, args, kwargs, priority)
        try:
            free.pop()
        except IndexError:
            return attempts(fn, args, kwargs, priority)
        t0 = now()
        callers = kwargs.get(argument)  # type: ignore[arg-type]  # None: no such key
        if defer:  # the client's own timeout governs the first attempt: nothing to hand over
            token = None
        else:
            try:
                if argument is not None:  # else the client reads the deadline (remaining())
                    kwargs[argument] = left if callers is None else tighten(callers, left)
                token = publish((t0 + span, clock))
            except BaseException:
                # As in the general driver: a timeout the client cannot take is the caller's
                # error, raised before anything is sent or counted.
                give_back()
                raise
        try:
            mark = inside.set(marks)
            try:
                result = fn(*args, **kwargs)
            finally:
                inside.reset(mark)
            status = status_of(result)
            if status in failing:
                raise failure(result, status)  # noqa: TRY301 - handed over as a failure below
        except Exception as exc:
            # Handed over below, outside this block, so that a later attempt's error does not
            # get this one as its __context__.
            first = exc
        except BaseException:
            give_back()
            breaker.release()
            raise
        else:
            return finish(t0, result)
        finally:
            if token is not None:
                restore(token)
        return attempts(fn, args, kwargs, priority, None, (first, t0, callers))

    return lane


def build_plain_lane(
    p: Pipeline, attempts: Callable[..., Any], overran: Callable[[float], None]
) -> SyncRun | None:
    """
    The lane for plain calls (``protect()``, ``guard.call``, decorated functions), or ``None``.

    The same shortcut without a client's duties: no timeout argument, no status, no mark. The
    deadline is published when deadlines are propagated, as the general driver does.

    Kept apart from :func:`build_lane` on purpose: one builder serving both, with the client's
    duties behind ``is not None`` tests (as :func:`build_alane` does, where they cost nothing
    measurable), measured 619-632 ns per plain call against 556-569 ns for this one.
    """
    common = _common(p, overran)
    if common is None:
        return None
    breaker, core, free, give_back, finish, span, _left = common
    clock = p.context.clock
    now = clock.monotonic
    publish, restore = deadline_var.set, deadline_var.reset

    def plain(
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        priority: int,
        _cache_key: Hashable = None,
    ) -> Any:
        if core.slow or not breaker._free or not CONFIG.active:
            return attempts(fn, args, kwargs, priority)
        try:
            free.pop()
        except IndexError:
            return attempts(fn, args, kwargs, priority)
        t0 = now()
        token = publish((t0 + span, clock)) if CONFIG.propagate_deadlines else None
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            first = exc  # handed over below, as in the client lane
        except BaseException:
            give_back()
            breaker.release()
            raise
        else:
            return finish(t0, result)
        finally:
            if token is not None:
                restore(token)
        return attempts(fn, args, kwargs, priority, None, (first, t0, None))

    return plain


def build_alane(
    p: Pipeline,
    shape: CallShape,
    attempts: Callable[..., Awaitable[Any]],
    expired: Callable[[], PolicyTimeoutError],
) -> AsyncRun | None:
    """
    The async lane in front of *attempts* (the general async driver), or ``None``.

    One builder for client calls (*shape* with a status, a failure and a mark) and plain calls
    (the empty shape): in an async call a few branches cost nothing measurable. The attempt runs
    under the loop's watchdog, as in the general driver: past its deadline it is cancelled and
    becomes *expired()* (the ``TimeoutError`` of the attempt's scope), which the general driver
    then takes as that attempt's failure.
    """
    argument, status_of, failure, inside = (
        shape.deadline_argument,
        shape.status,
        shape.failure,
        shape.inside,
    )
    client = status_of is not None
    common = _common(p, None)
    if common is None or (client and (failure is None or inside is None)):
        return None
    if not client and (argument is not None or inside is not None):
        return None  # a shape the lane does not know: the general driver serves it
    breaker, core, free, give_back, finish, span, left = common
    defer = _defers(p, shape)
    clock = p.context.clock
    now = clock.monotonic
    tighten, failing, marks = shape.tighten, shape.failing, shape.marks
    publish, restore = deadline_var.set, deadline_var.reset
    get_running_loop = asyncio.get_running_loop

    async def alane(
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        priority: int,
        _cache_key: Hashable = None,
    ) -> Any:
        publishing = CONFIG.propagate_deadlines
        if core.slow or not breaker._free or not CONFIG.active or (client and not publishing):
            return await attempts(fn, args, kwargs, priority)
        loop = get_running_loop()
        task = task_of(loop)
        if task is None:  # a coroutine driven by hand: no watchdog, the general driver copes
            return await attempts(fn, args, kwargs, priority)
        try:
            free.pop()
        except IndexError:
            return await attempts(fn, args, kwargs, priority)
        t0 = now()
        callers = kwargs.get(argument)  # type: ignore[arg-type]  # None: no such key
        if defer:  # the client's own timeout governs the first attempt: nothing to hand over
            token = None
        else:
            try:
                if argument is not None:  # else the client reads the deadline (remaining())
                    kwargs[argument] = left if callers is None else tighten(callers, left)
                token = publish((t0 + span, clock)) if publishing else None
            except BaseException:
                give_back()
                raise
        try:
            mark = inside.set(marks) if inside is not None else None
            if defer:
                try:
                    result = await fn(*args, **kwargs)
                finally:
                    if inside is not None and mark is not None:
                        inside.reset(mark)
            else:
                dog = watchdog_for(loop)
                watch = dog.watch(task, span, loop)
                try:
                    result = await fn(*args, **kwargs)
                except asyncio.CancelledError:
                    if cancelled_by(watch, task):
                        raise expired() from None
                    raise
                finally:
                    dog.unwatch(watch)
                    if inside is not None and mark is not None:
                        inside.reset(mark)
            if status_of is not None:
                status = status_of(result)
                if status in failing:  # a failure, handed over below
                    raise failure(result, status)  # type: ignore[misc]  # noqa: TRY301
        except Exception as exc:
            first = exc
        except BaseException:
            give_back()
            breaker.release()
            raise
        else:
            return finish(t0, result)
        finally:
            if token is not None:
                restore(token)
        return await attempts(fn, args, kwargs, priority, None, (first, t0, callers))

    return alane
