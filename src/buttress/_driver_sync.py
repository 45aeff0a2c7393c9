"""
The synchronous driver: executes a pipeline's decisions around one call.

All decisions live in the policies' pure cores; this module only orders them, measures time,
sleeps, loops and counts the outcome. It is compiled once per pipeline as a closure over the
bound policies, so the hot path reads closure cells instead of attributes and pays for an absent
policy with one ``is None`` branch. Its twin, ``_driver_async``, differs only in ``await`` and in
how an attempt is cancelled; keep the two in step (tests run every scenario through both).

Performance shapes the layout, measured on the project's 2-vCPU machine:

- the whole default pipeline (bulkhead, timeouts, retry, breaker) runs in one frame, because a
  Python call costs about as much as a whole policy's happy path;
- the bulkhead's and the breaker's "nothing to do" checks are inlined from the policies (see
  ``BulkheadState.acquire``/``release`` and ``CircuitBreakerState.acquire``/``on_result``);
- no ``try``/``except`` wraps the call just to count its outcome: catching and re-raising costs
  ~0.3 us, so each place that ends a call records its outcome itself before raising.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from ._config import CONFIG
from ._driver_lane import build_lane, build_plain_lane
from ._exceptions import RejectedError
from ._exceptions import TimeoutError as PolicyTimeoutError
from ._shape import MIN_LEFT, CallShape
from ._stats import FAILURE, FALLBACK, REJECTED, RING_SIZE, SUCCESS, TIMEOUT
from .policies._timeout import deadline_var, ended_by_buttress
from .telemetry._events import TimedOut

if TYPE_CHECKING:
    from ._pipeline import Pipeline
    from .policies._bulkhead import BulkheadState
    from .policies._rate_limit import RateLimitState

SyncRun = Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any], int, Hashable], Any]
Resumed = tuple[Exception, float, Any]
"""A first attempt made elsewhere (``_driver_lane``): its error, its start, the caller's timeout."""

_INF = math.inf


def _no_retry(*_: object) -> float | None:
    return None


_MASK = RING_SIZE - 1
_PLAIN = CallShape()


def outcome_of(exc: BaseException) -> int:
    """The outcome code of a call that ended with *exc*."""
    if isinstance(exc, RejectedError):
        return REJECTED
    if isinstance(exc, PolicyTimeoutError):
        return TIMEOUT
    return FAILURE


def cut_short(
    exc: BaseException,
    target: str,
    times: tuple[float, float, float],
    limits: tuple[float | None, float | None],
) -> None:
    """
    Note on *exc* that buttress's timeout ended the attempt that raised it.

    The last attempt failed when the time buttress gave it ran out (*times*: its start, its
    bound and the call's deadline; *limits*: the attempt and total timeouts that applied): the
    client's own error, typically its timeout, reaches the caller unchanged, with a PEP 678 note
    saying which limit cut it short.
    """
    t0, bound, deadline = times
    attempt, total = limits
    scope, limit = (
        ("attempt", attempt)
        if attempt is not None and t0 + attempt <= deadline
        else ("total", total)
    )
    if limit is not None:  # always: a finite bound comes from one of the two
        what = f"left this attempt {bound - t0:.3g}s"
        exc.add_note(ended_by_buttress(target, scope, limit, what))


def build_sync(p: Pipeline, shape: CallShape | None = None) -> SyncRun:
    """Compile *p* into ``run(fn, args, kwargs, priority, cache_key)``, for calls of *shape*."""
    ctx = p.context
    clock = ctx.clock
    now = clock.monotonic
    sleep = clock.sleep
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
    # A client with a timeout of its own keeps it (CallShape.app_timeout): no attempt timeout,
    # and the first attempt runs unbounded by us; the total deadline bounds the retries only.
    defer = shape.app_timeout and timeout is not None and timeout.respect_app_timeout
    attempt_timeout = timeout.attempt if timeout is not None and not defer else None
    total_timeout = timeout.total if timeout is not None else None
    timed = attempt_timeout is not None or total_timeout is not None
    # Observe mode must not shorten calls: no deadline reaches the clients' own timeouts.
    publishes = timed and not observe
    # The deadline is published inline (see policies._timeout.publish_deadline): two calls saved
    # on every attempt.
    publish, restore = deadline_var.set, deadline_var.reset
    deadline_argument = shape.deadline_argument if publishes else None
    tighten, status_of, failing, failure = shape.tighten, shape.status, shape.failing, shape.failure
    discard, resend, inside, marks = shape.discard, shape.resend, shape.inside, shape.marks

    fallback, cache = p.fallback, p.cache
    # With a fallback or a cache the outcome is known only outside the retry loop.
    counts_inside = fallback is None and cache is None

    def ended(outcome: int, start: float, t: float | None = None) -> None:
        # Count how a call ended, when this frame is where calls end (see counts_inside).
        if counts_inside:
            if t is None:
                t = now()
            stats.record(outcome, t, t - start)

    def total_expired(limit: float) -> PolicyTimeoutError:
        emit(
            TimedOut(
                target=target,
                kind=kind,
                scope="total",
                timeout=limit,
                cancelled=False,
                observed=observe,
            )
        )
        return PolicyTimeoutError(
            ended_by_buttress(target, "total", limit, "expired before the next attempt"),
            target=target,
            timeout=limit,
            scope="total",
        )

    def overran(limit: float) -> None:
        emit(
            TimedOut(
                target=target,
                kind=kind,
                scope="attempt",
                timeout=limit,
                cancelled=False,
                observed=observe,
            )
        )

    def admit(
        rate_limit: RateLimitState | None,
        bulkhead: BulkheadState | None,
        priority: int,
        deadline: float,
        start: float,
    ) -> None:
        # The slow half of admission, outside the retry loop (deadline: none) or inside it:
        # waiting for a token or a queued slot.
        try:
            if rate_limit is not None:
                wait = rate_limit.acquire(now(), deadline)
                if wait > 0.0:
                    sleep(wait)
            if bulkhead is not None:
                bulkhead.acquire(priority, deadline)
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
    ) -> Callable[..., Any]:
        def attempts(
            fn: Callable[..., Any],
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
            priority: int,
            _cache_key: Hashable = None,
            _resumed: Resumed | None = None,
        ) -> Any:
            if _resumed is None:
                if not CONFIG.active:
                    return fn(*args, **kwargs)
                t0 = start = now()
                callers = kwargs.get(deadline_argument) if deadline_argument is not None else None
                # One token and one permit per call: admit() takes both when there is a rate
                # limit, else the bulkhead's fast path (a free permit) or its slow one.
                if rl_out is not None:
                    admit(rl_out, bh_out, priority, _INF, start)
                elif bh_out is not None:
                    if bh_core.slow:  # type: ignore[union-attr]
                        admit(None, bh_out, priority, _INF, start)
                    else:
                        try:
                            bh_free.pop()  # type: ignore[union-attr]
                        except IndexError:
                            admit(None, bh_out, priority, _INF, start)
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
                        admit(rl_in, bh_in, priority, deadline, start)
                    try:
                        if attempt > 1 or waits_inside:
                            t0 = now()
                            if t0 >= deadline:
                                if last is not None and discard is not None:
                                    discard(last)
                                ended(TIMEOUT, start, t0)
                                raise total_expired(total_timeout)  # type: ignore[arg-type]
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
                            if discard is not None:
                                discard(last)
                            last = None
                        # Deferring to the client's own timeout, its first attempt is not ours
                        # to bound.
                        publishing = (
                            publishes and CONFIG.propagate_deadlines and (attempt > 1 or not defer)
                        )
                        if publishing:
                            bound = t0 + attempt_timeout if attempt_timeout is not None else _INF
                            bound = min(bound, deadline)
                            if deadline_argument is not None:
                                # Before publishing: a tighten() that raises publishes nothing.
                                left = max(bound - t0, MIN_LEFT)
                                kwargs[deadline_argument] = (
                                    left if callers is None else tighten(callers, left)
                                )
                            token = publish((bound, clock))
                        try:
                            if _resumed is not None:  # as if this attempt had just raised it
                                _resumed = None
                                raise first  # noqa: TRY301
                            if not shaped:
                                result = fn(*args, **kwargs)
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
                                    result = fn(*args, **kwargs)
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
                            if attempt_timeout is not None and t1 - t0 > attempt_timeout:
                                overran(attempt_timeout)
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
                                if publishing and t1 >= bound:
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
                            if attempt_timeout is not None and t1 - t0 > attempt_timeout:
                                overran(attempt_timeout)
                            if on_result is None or not on_result(result):
                                if counts_inside:
                                    # CallStats.record, inlined for the happy path.
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
                            if publishing:
                                restore(token)
                    finally:
                        if bh_in is not None:
                            bh_in.release()
                    if delay > 0.0:
                        sleep(delay)
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
        # The breaker outside retry (a custom order) sees one outcome per call. It gets its own
        # frame so that the default layout pays nothing for it.
        retry_loop = make_attempts(None, None)

        def attempts(
            fn: Callable[..., Any],
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
            priority: int,
            _cache_key: Hashable = None,
        ) -> Any:
            if not CONFIG.active:
                return fn(*args, **kwargs)
            start = now()
            admit(rl_out, bh_out, priority, _INF, start)
            try:
                t0 = now()
                rejection = br_out._admit(t0)
                if rejection is not None:
                    ended(REJECTED, start)
                    raise rejection
                try:
                    result = retry_loop(fn, args, kwargs, priority)
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
        lane = (
            build_lane(p, shape, attempts, overran)
            if shaped
            else build_plain_lane(p, attempts, overran)
        )
        return attempts if lane is None else lane

    def run(
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        priority: int,
        cache_key: Hashable,
    ) -> Any:
        if not CONFIG.active:
            return fn(*args, **kwargs)
        start = now()
        try:
            if cache is not None:
                key = cache.resolve_key(args, kwargs, cache_key)
                if key is not None:
                    result = cache.call(
                        key, lambda: attempts(fn, args, kwargs, priority), on_result
                    )
                else:
                    result = attempts(fn, args, kwargs, priority)
            else:
                result = attempts(fn, args, kwargs, priority)
        except Exception as exc:
            if fallback is None or not fallback.applies(exc):
                t = now()
                stats.record(outcome_of(exc), t, t - start)
                raise
            try:
                result = fallback.handle(exc)
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
