"""
The synchronous driver: executes a pipeline's decisions around one call.

All decisions live in the policies' pure cores; this module only orders them, measures time,
sleeps and loops. It is compiled once per pipeline as a closure over the bound policies, so the
hot path reads closure cells instead of attributes and pays for an absent policy with one
``is None`` branch. Its twin, ``_driver_async``, differs only in ``await`` and in how an attempt
is cancelled; keep the two in step (tests run every scenario through both).

Performance shapes the layout: the whole default pipeline (bulkhead, timeouts, retry, breaker)
runs in one frame, because a Python call costs about as much as a whole policy's happy path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from ._config import CONFIG
from ._exceptions import TimeoutError as PolicyTimeoutError
from .policies._timeout import publish_deadline, restore
from .telemetry._events import TimedOut

if TYPE_CHECKING:
    from ._pipeline import Pipeline
    from .policies._bulkhead import BulkheadState
    from .policies._rate_limit import RateLimitState

SyncRun = Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any], int, Hashable], Any]

_INF = math.inf


def build_sync(p: Pipeline) -> SyncRun:
    """Compile *p* into ``run(fn, args, kwargs, priority, cache_key)``."""
    ctx = p.context
    clock = ctx.clock
    now = clock.monotonic
    sleep = clock.sleep
    emit = ctx.emit
    target, kind, observe = ctx.target, ctx.kind, ctx.observe
    layout = p.layout

    retry = p.retry
    is_retryable = retry.is_retryable if retry is not None else None
    on_result = retry.on_result if retry is not None else None
    budget = retry.budget if retry is not None else None
    retry_window = retry.config.deadline if retry is not None else None

    breaker, bulkhead, rate_limit = p.breaker, p.bulkhead, p.rate_limiter
    # Fast paths inlined from the policies (see BulkheadState.acquire/release and
    # CircuitBreakerState.acquire/on_result, which do the same): a Python call costs as much as
    # a whole policy's happy path, so the driver tests the policies' "nothing to do" flags
    # itself and calls into them only when there is something to do.
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

    timeout = p.timeout_config
    attempt_timeout = timeout.attempt if timeout is not None else None
    total_timeout = timeout.total if timeout is not None else None
    timed = attempt_timeout is not None or total_timeout is not None

    def total_expired(limit: float) -> PolicyTimeoutError:
        emit(TimedOut(target=target, kind=kind, scope="total", timeout=limit, cancelled=False))
        return PolicyTimeoutError(
            f"target {target!r}: total timeout of {limit:g}s expired before the next attempt",
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

    def make_attempts(
        rl_out: RateLimitState | None, bh_out: BulkheadState | None
    ) -> Callable[..., Any]:
        def attempts(
            fn: Callable[..., Any],
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
            priority: int,
            _cache_key: Hashable = None,
        ) -> Any:
            if not CONFIG.active:
                return fn(*args, **kwargs)
            if rl_out is not None:
                wait = rl_out.acquire(now(), _INF)
                if wait > 0.0:
                    sleep(wait)
            if bh_out is not None:
                if bh_core.slow:  # type: ignore[union-attr]
                    bh_out.acquire(priority, _INF)
                else:
                    try:
                        bh_free.pop()  # type: ignore[union-attr]
                    except IndexError:
                        bh_out.acquire(priority, _INF)
            try:
                t0 = start = now()
                deadline = start + total_timeout if total_timeout is not None else _INF
                stop = deadline
                if retry_window is not None and start + retry_window < stop:
                    stop = start + retry_window
                if budget is not None:
                    budget.calls += 1
                attempt = 1
                previous = 0.0
                while True:
                    if rl_in is not None:
                        wait = rl_in.acquire(now(), deadline)
                        if wait > 0.0:
                            sleep(wait)
                    if bh_in is not None:
                        bh_in.acquire(priority, deadline)
                    try:
                        if attempt > 1 or waits_inside:
                            t0 = now()
                            if t0 >= deadline:
                                raise total_expired(total_timeout)  # type: ignore[arg-type]
                        if br_in is not None and not br_in._free:
                            br_in._acquire_slow(t0)
                        publishing = timed and CONFIG.propagate_deadlines
                        if publishing:
                            bound = t0 + attempt_timeout if attempt_timeout is not None else _INF
                            token = publish_deadline(min(bound, deadline), clock)
                        try:
                            result = fn(*args, **kwargs)
                        except Exception as exc:
                            t1 = now()
                            if br_in is not None:
                                br_in.on_exception(t1, t1 - t0, exc)
                            if attempt_timeout is not None and t1 - t0 > attempt_timeout:
                                overran(attempt_timeout)
                            if is_retryable is None or not is_retryable(exc):
                                raise
                            delay = retry.decide(exc, True, attempt, previous, t1, stop)  # type: ignore[union-attr]
                            if delay is None:
                                raise
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
                                return result
                            delay = retry.decide(result, False, attempt, previous, t1, stop)  # type: ignore[union-attr]
                            if delay is None:
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
        # frame so that the default layout pays nothing for it: catching and re-raising an
        # exception costs more than a whole happy-path call.
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
            if rl_out is not None:
                wait = rl_out.acquire(now(), _INF)
                if wait > 0.0:
                    sleep(wait)
            if bh_out is not None:
                bh_out.acquire(priority, _INF)
            try:
                t0 = now()
                br_out.acquire(t0)
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

    fallback, cache = p.fallback, p.cache
    if fallback is None and cache is None:
        return attempts

    def run(
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        priority: int,
        cache_key: Hashable,
    ) -> Any:
        if not CONFIG.active:
            return fn(*args, **kwargs)
        try:
            if cache is not None:
                key = cache.resolve_key(args, kwargs, cache_key)
                if key is not None:
                    return cache.call((fn, key), lambda: attempts(fn, args, kwargs, priority))
            return attempts(fn, args, kwargs, priority)
        except Exception as exc:
            if fallback is None or not fallback.applies(exc):
                raise
            return fallback.handle(exc)

    return run
