"""
The asyncio driver: the twin of ``_driver_sync``, with ``await`` and real cancellation.

Read ``_driver_sync`` first: the layout, the inlined fast paths and the outcome counting are the
same. The differences, and only these:

- waits are ``await clock.asleep(...)`` and ``await bulkhead.acquire_async(...)``;
- an attempt runs under ``asyncio.timeout`` bounded by the attempt timeout *and* the total
  deadline, so it is cancelled when either expires and the caller gets
  :class:`buttress.TimeoutError` (scope ``attempt`` or ``total``); in observe mode nothing is
  cancelled and an overrun is only reported. Back-off sleeps never reach past the total
  deadline (the retry decision refuses them), so bounding each attempt bounds the call.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING, Any

from ._config import CONFIG
from ._driver_lane import build_alane
from ._driver_sync import _PLAIN, Resumed, cut_short, outcome_of
from ._exceptions import RejectedError
from ._exceptions import TimeoutError as PolicyTimeoutError
from ._shape import MIN_LEFT, CallShape
from ._stats import FAILURE, FALLBACK, REJECTED, RING_SIZE, SUCCESS, TIMEOUT
from ._watchdog import task_of, watchdog_for
from ._watchdog import timed_out as cancelled_by
from .policies._timeout import deadline_var, ended_by_buttress
from .telemetry._events import TimedOut

if TYPE_CHECKING:
    from ._pipeline import Pipeline
    from .policies._bulkhead import BulkheadState
    from .policies._rate_limit import RateLimitState

AsyncFn = Callable[..., Awaitable[Any]]
AsyncRun = Callable[[AsyncFn, tuple[Any, ...], dict[str, Any], int, Hashable], Awaitable[Any]]

_INF = math.inf


def _no_retry(*_: object) -> float | None:
    return None


_MASK = RING_SIZE - 1


def build_async(p: Pipeline, shape: CallShape | None = None) -> AsyncRun:
    """Compile *p* into ``await run(fn, args, kwargs, priority, cache_key)`` for *shape*."""
    ctx = p.context
    clock = ctx.clock
    now = clock.monotonic
    asleep = clock.asleep
    emit = ctx.emit
    target, kind, observe = ctx.target, ctx.kind, ctx.observe
    layout = p.layout
    stats = p.stats
    counts, ring, quiet = stats.counts, stats.ring, stats.quiet_until

    retry = p.retry
    is_retryable = retry.is_retryable if retry is not None else None
    on_result = retry.on_result if retry is not None else None
    retry_window = retry.config.deadline if retry is not None else None
    decide: Callable[..., float | None] = retry.decide if retry is not None else _no_retry

    breaker, bulkhead, rate_limit = p.breaker, p.bulkhead, p.rate_limiter
    bh_core = bulkhead._core if bulkhead is not None else None
    bh_free = bulkhead._free if bulkhead is not None else None
    br_slow = breaker._slow_duration if breaker is not None else 0.0
    br_in = breaker if "breaker" in layout.inner else None
    br_out = breaker if "breaker" in layout.outer else None
    bh_in = bulkhead if "bulkhead" in layout.inner else None
    bh_out = bulkhead if "bulkhead" in layout.outer else None
    rl_in = rate_limit if "rate_limit" in layout.inner else None
    rl_out = rate_limit if "rate_limit" in layout.outer else None
    waits_inside = rl_in is not None or bh_in is not None
    # Without waits inside the loop, the first attempt's breaker check can come early.
    first_check = br_in is not None and not waits_inside

    # What the call's shape asks of each attempt (see _shape.CallShape); all None without one.
    shape = shape or _PLAIN
    shaped = shape != _PLAIN

    timeout = p.timeout_config
    # See _driver_sync: a client with a timeout of its own keeps it, and its first attempt is
    # neither bounded nor cancelled by us.
    defer = shape.app_timeout and timeout is not None and timeout.respect_app_timeout
    attempt_timeout = timeout.attempt if timeout is not None and not defer else None
    total_timeout = timeout.total if timeout is not None else None
    timed = attempt_timeout is not None or total_timeout is not None
    cancels = timed and not observe
    # In observe mode nothing is cancelled; an overrun is only reported.
    observing = observe and attempt_timeout is not None
    deadline_argument = shape.deadline_argument if cancels else None
    tighten, status_of, failing, failure = shape.tighten, shape.status, shape.failing, shape.failure
    discard, resend, inside, marks = shape.discard, shape.resend, shape.inside, shape.marks

    fallback, cache = p.fallback, p.cache
    counts_inside = fallback is None and cache is None

    def ended(outcome: int, start: float, t: float | None = None) -> None:
        # Count how a call ended, when this frame is where calls end (see counts_inside).
        if counts_inside:
            if t is None:
                t = now()
            stats.record(outcome, t, t - start)

    def timed_out(scope: str, limit: float, cancelled: bool) -> PolicyTimeoutError:
        emit(
            TimedOut(
                target=target,
                kind=kind,
                scope=scope,
                timeout=limit,
                cancelled=cancelled,
                observed=observe,
            )
        )
        verb = "cancelled the attempt" if cancelled else "expired before the next attempt"
        return PolicyTimeoutError(
            ended_by_buttress(target, scope, limit, verb),
            target=target,
            timeout=limit,
            scope=scope,
        )

    def expired() -> PolicyTimeoutError:
        # A first attempt cancelled at its deadline (the lane's): the scope whose limit it was.
        if attempt_timeout is not None and (
            total_timeout is None or attempt_timeout <= total_timeout
        ):
            return timed_out("attempt", attempt_timeout, cancelled=True)
        return timed_out("total", total_timeout, cancelled=True)  # type: ignore[arg-type]

    async def release(last: Exception | None) -> None:
        # What a retried attempt holds (a response and its connection), given back.
        if last is not None and discard is not None:
            releasing = discard(last)
            if inspect.isawaitable(releasing):
                await releasing

    async def bounded(
        fn: AsyncFn,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        t0: float,
        deadline: float,
        callers: Any,
    ) -> Any:
        # Run one attempt under the tighter of its own timeout and the total deadline.
        attempt_deadline = t0 + attempt_timeout if attempt_timeout is not None else _INF
        bound = min(attempt_deadline, deadline)
        publishing = not observe and CONFIG.propagate_deadlines
        if publishing:
            if deadline_argument is not None:
                # Before publishing: a tighten() that raises publishes nothing.
                left = max(bound - t0, MIN_LEFT)
                kwargs[deadline_argument] = left if callers is None else tighten(callers, left)
            token = deadline_var.set((bound, clock))
        try:
            if not cancels:
                return await fn(*args, **kwargs)
            loop = asyncio.get_running_loop()
            task = task_of(loop)
            if task is None:  # not inside a task (a bare coroutine driven by hand): no timer
                return await fn(*args, **kwargs)
            dog = watchdog_for(loop)
            watch = dog.watch(task, bound - t0, loop)
            try:
                return await fn(*args, **kwargs)
            except asyncio.CancelledError:
                if cancelled_by(watch, task):
                    scope, limit = (
                        ("attempt", attempt_timeout)
                        if attempt_deadline <= deadline
                        else ("total", total_timeout)
                    )
                    raise timed_out(scope, limit, cancelled=True) from None  # type: ignore[arg-type]
                raise
            finally:
                dog.unwatch(watch)
        finally:
            if publishing:
                deadline_var.reset(token)

    async def admit(
        rate_limit: RateLimitState | None,
        bulkhead: BulkheadState | None,
        priority: int,
        deadline: float,
        start: float,
    ) -> None:
        # The slow half of admission, outside the retry loop (deadline: none) or inside it.
        try:
            if rate_limit is not None:
                wait = rate_limit.acquire(now(), deadline)
                if wait > 0.0:
                    await asleep(wait)
            if bulkhead is not None:
                await bulkhead.acquire_async(priority, deadline)
        except RejectedError:
            ended(REJECTED, start)
            raise

    def stop_at(start: float, deadline: float) -> float:
        # No attempt starts after this: the total deadline or the retry's own window.
        if retry_window is not None and start + retry_window < deadline:
            return start + retry_window
        return deadline

    def make_attempts(
        rl_out: RateLimitState | None, bh_out: BulkheadState | None
    ) -> Callable[..., Awaitable[Any]]:
        async def attempts(
            fn: AsyncFn,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
            priority: int,
            _cache_key: Hashable = None,
            _resumed: Resumed | None = None,
        ) -> Any:
            if _resumed is None:
                if not CONFIG.active:
                    return await fn(*args, **kwargs)
                t0 = start = now()
                callers = kwargs.get(deadline_argument) if deadline_argument is not None else None
                # One token and one permit per call: admit() takes both when there is a rate
                # limit, else the bulkhead's fast path (a free permit) or its slow one.
                if rl_out is not None:
                    await admit(rl_out, bh_out, priority, _INF, start)
                elif bh_out is not None:
                    if bh_core.slow:  # type: ignore[union-attr]
                        await admit(None, bh_out, priority, _INF, start)
                    else:
                        try:
                            bh_free.pop()  # type: ignore[union-attr]
                        except IndexError:
                            await admit(None, bh_out, priority, _INF, start)
                if first_check and not br_in._free:  # type: ignore[union-attr]
                    # The first attempt's breaker check sits outside every try block: during an
                    # outage this rejection is the hot path, and unwinding through finally blocks
                    # costs more than the check itself.
                    rejection = br_in._admit(t0)  # type: ignore[union-attr]
                    if rejection is not None:
                        if bh_out is not None:
                            bh_out.release()
                        if counts_inside:
                            # CallStats.record, inlined: during an outage this is the hot path.
                            counts[REJECTED] += 1
                            i = stats.index
                            ring[i & _MASK] = (t0, 0.0, REJECTED)
                            stats.index = i + 1
                            if stats.sampler is not None and t0 >= quiet[REJECTED]:
                                quiet[REJECTED] = stats.sampler(REJECTED, 0.0, t0)
                        raise rejection
            else:
                # The lane made the first attempt and holds the bulkhead permit: the loop goes on
                # from that attempt's failure (see _driver_lane).
                first, start, callers = _resumed
                t0 = start
            try:
                deadline = start + total_timeout if total_timeout is not None else _INF
                attempt = 1
                previous = 0.0
                # The outcome of the attempt being retried, released only once the next one is
                # sure to go: a retry the breaker refuses ends the call with it.
                last: Exception | None = None
                while True:
                    if waits_inside:
                        await admit(rl_in, bh_in, priority, deadline, start)
                    try:
                        if attempt > 1 or waits_inside:
                            t0 = now()
                            if t0 >= deadline:
                                await release(last)
                                ended(TIMEOUT, start, t0)
                                raise timed_out("total", total_timeout, cancelled=False)  # type: ignore[arg-type]
                        if br_in is not None and not br_in._free and (attempt > 1 or waits_inside):
                            rejection = br_in._admit(t0)
                            if rejection is not None:
                                if last is not None:  # the dependency did answer: that answer
                                    ended(outcome_of(last), start, t0)
                                    raise last
                                if counts_inside:
                                    stats.record(REJECTED, t0, t0 - start)
                                raise rejection
                        if last is not None:
                            await release(last)
                            last = None
                        try:
                            if _resumed is not None:  # as if this attempt had just raised it
                                _resumed = None
                                raise first  # noqa: TRY301
                            if not shaped:
                                if timed and (attempt > 1 or not defer):
                                    result = await bounded(fn, args, kwargs, t0, deadline, callers)
                                else:
                                    result = await fn(*args, **kwargs)
                            else:
                                # The shape's duties; the marks only while the client runs, not
                                # while hooks hear of the outcome.
                                marked = (
                                    resend.set(attempt - 1)
                                    if attempt > 1 and resend is not None
                                    else None
                                )
                                mark = inside.set(marks) if inside is not None else None
                                try:
                                    if timed and (attempt > 1 or not defer):
                                        result = await bounded(
                                            fn, args, kwargs, t0, deadline, callers
                                        )
                                    else:
                                        result = await fn(*args, **kwargs)
                                finally:
                                    if mark is not None:
                                        inside.reset(mark)  # type: ignore[union-attr]
                                    if marked is not None:
                                        resend.reset(marked)  # type: ignore[union-attr]
                                if status_of is not None:
                                    status = status_of(result)
                                    if status in failing:  # a failing result: the failure path
                                        raise failure(result, status)  # type: ignore[misc]  # noqa: TRY301
                        except Exception as exc:
                            t1 = now()
                            if br_in is not None:
                                br_in.on_exception(t1, t1 - t0, exc)
                            if observing and t1 - t0 > attempt_timeout:  # type: ignore[operator]
                                timed_out("attempt", attempt_timeout, cancelled=False)  # type: ignore[arg-type]
                            delay = None
                            if is_retryable is not None and is_retryable(exc):
                                try:
                                    delay = decide(
                                        exc, True, attempt, previous, t1, stop_at(start, deadline)
                                    )
                                except RejectedError:  # the budget refused, in "raise" mode
                                    ended(REJECTED, start)
                                    raise
                            if delay is None:
                                ended(outcome_of(exc), start, t1)
                                if (
                                    cancels
                                    and (attempt > 1 or not defer)
                                    and not isinstance(exc, PolicyTimeoutError)
                                ):
                                    # The client's own timeout fired at the bound we gave it.
                                    limit = t0 + attempt_timeout if attempt_timeout else _INF
                                    bound = min(limit, deadline)
                                    if t1 >= bound:
                                        cut_short(
                                            exc,
                                            target,
                                            (t0, bound, deadline),
                                            (attempt_timeout, total_timeout),
                                        )
                                raise
                            last = exc
                        except BaseException:
                            if br_in is not None:
                                br_in.release()
                            raise
                        else:
                            t1 = now()
                            if br_in is not None and not (br_in._quiet and t1 - t0 < br_slow):
                                br_in.on_result(t1, t1 - t0, result)
                            if observing and t1 - t0 > attempt_timeout:  # type: ignore[operator]
                                timed_out("attempt", attempt_timeout, cancelled=False)  # type: ignore[arg-type]
                            if on_result is None or not on_result(result):
                                if counts_inside:
                                    counts[SUCCESS] += 1
                                    i = stats.index
                                    ring[i & _MASK] = (t1, t1 - start, SUCCESS)
                                    stats.index = i + 1
                                    if t1 >= quiet[SUCCESS] and stats.sampler is not None:
                                        quiet[SUCCESS] = stats.sampler(SUCCESS, t1 - start, t1)
                                return result
                            try:
                                delay = decide(
                                    result, False, attempt, previous, t1, stop_at(start, deadline)
                                )
                            except RejectedError:  # the budget refused, in "raise" mode
                                ended(REJECTED, start)
                                raise
                            if delay is None:
                                ended(FAILURE, start, t1)
                                return result
                    finally:
                        if bh_in is not None:
                            bh_in.release()
                    if delay > 0.0:
                        await asleep(delay)
                    attempt += 1
                    previous = delay
            finally:
                if bh_out is not None:
                    bh_free.append(None)  # type: ignore[union-attr]
                    if bh_core.slow:  # type: ignore[union-attr]
                        bh_out._rebalance()

        return attempts

    if br_out is None:
        attempts = make_attempts(rl_out, bh_out)
    else:
        # See _driver_sync: the breaker outside retry gets its own frame.
        retry_loop = make_attempts(None, None)

        async def attempts(
            fn: AsyncFn,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
            priority: int,
            _cache_key: Hashable = None,
        ) -> Any:
            if not CONFIG.active:
                return await fn(*args, **kwargs)
            start = now()
            await admit(rl_out, bh_out, priority, _INF, start)
            try:
                t0 = now()
                rejection = br_out._admit(t0)
                if rejection is not None:
                    ended(REJECTED, start)
                    raise rejection
                try:
                    result = await retry_loop(fn, args, kwargs, priority)
                except Exception as exc:
                    t1 = now()
                    br_out.on_exception(t1, t1 - t0, exc)
                    raise
                except BaseException:
                    br_out.release()
                    raise
                t1 = now()
                br_out.on_result(t1, t1 - t0, result)
                return result
            finally:
                if bh_out is not None:
                    bh_out.release()

    if counts_inside:
        # A first attempt with nothing to decide gets a lane of its own (see _driver_lane).
        lane = build_alane(p, shape, attempts, expired) if cancels else None
        return attempts if lane is None else lane

    async def run(
        fn: AsyncFn,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        priority: int,
        cache_key: Hashable,
    ) -> Any:
        if not CONFIG.active:
            return await fn(*args, **kwargs)
        start = now()
        try:
            if cache is not None:
                key = cache.resolve_key(args, kwargs, cache_key)
                if key is not None:
                    result = await cache.acall(
                        key, lambda: attempts(fn, args, kwargs, priority), on_result
                    )
                else:
                    result = await attempts(fn, args, kwargs, priority)
            else:
                result = await attempts(fn, args, kwargs, priority)
        except Exception as exc:
            if fallback is None or not fallback.applies(exc):
                t = now()
                stats.record(outcome_of(exc), t, t - start)
                raise
            try:
                result = await fallback.ahandle(exc)
            except Exception as failed:  # the fallback itself failed: that is how the call ended
                t = now()
                stats.record(outcome_of(failed), t, t - start)
                raise
            t = now()
            stats.record(FALLBACK, t, t - start)
            return result
        t = now()
        # A result the retry gave up on ends the call as a failure, as the loop counts it when
        # it is where calls end; a cached one too (the cache keeps what the loop returned).
        outcome = FAILURE if on_result is not None and on_result(result) else SUCCESS
        stats.record(outcome, t, t - start)
        return result

    return run
