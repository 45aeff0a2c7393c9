"""
The lane: a client call's first attempt, when no policy of its pipeline has anything to decide.

Nearly every HTTP request finds its target's bulkhead with a free permit and its breaker closed,
and succeeds at the first attempt. All it needs then is little: take a permit, hand the client
what is left of the deadline as its timeout, publish that deadline, mark the attempt, call, read
the status, count the success, give the permit back. The general driver (``_driver_sync``) does
that too, but through a branch for every layout and policy a pipeline may have and in a frame
built to retry. Inside a real ``requests`` GET, buttress's code runs with cold CPU caches (the
client's own work has evicted it), and there each branch, closure cell and frame touched costs
five to ten times what it costs in a micro-benchmark; so the common case gets a path of its own.

The lane is compiled only for the default client layout (bulkhead outside the retry, breaker
inside it, an attempt timeout; no rate limit, cache, fallback or result predicate; enforce
mode). At run time it steps aside before calling anything whenever a policy has something to
decide: the bulkhead queueing or full, the breaker not closed, deadlines not propagated. When the
first attempt fails (an error, or a status the target retries), the general driver goes on from
that outcome, with the permit the lane took (``attempts(..., _resumed=...)``): nothing is sent
twice, and the retry, the breaker and the metrics see what they would have seen without the lane.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from ._config import CONFIG
from ._shape import MIN_LEFT, CallShape
from ._stats import RING_SIZE, SUCCESS
from .policies._timeout import deadline_var

if TYPE_CHECKING:
    from ._driver_sync import SyncRun
    from ._pipeline import Pipeline

_MASK = RING_SIZE - 1


def build_lane(
    p: Pipeline,
    shape: CallShape,
    attempts: Callable[..., Any],
    overran: Callable[[float], None],
) -> SyncRun | None:
    """
    A lane in front of *attempts* (the general driver of *p* for *shape*), or ``None``.

    ``None`` when *p*'s layout or *shape* is not one the lane covers: the caller then uses
    *attempts* alone. *overran* reports an attempt that took longer than its timeout.
    """
    breaker, bulkhead, timeout, retry = p.breaker, p.bulkhead, p.timeout_config, p.retry
    argument, status_of, failure = shape.deadline_argument, shape.status, shape.failure
    inside, marks = shape.inside, shape.marks
    if (
        argument is None
        or status_of is None
        or failure is None
        or inside is None
        or breaker is None
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

    clock = p.context.clock
    now = clock.monotonic
    core, free, rebalance = bulkhead._core, bulkhead._free, bulkhead._rebalance
    stats = p.stats
    counts, ring, quiet = stats.counts, stats.ring, stats.quiet_until
    slow = breaker._slow_duration
    attempt_timeout = timeout.attempt
    # The first attempt's deadline is this far from its start (the total deadline starts then
    # too), and the client gets at least MIN_LEFT of it, as in the general driver.
    span = attempt_timeout if timeout.total is None else min(attempt_timeout, timeout.total)
    left = max(span, MIN_LEFT)
    tighten, failing = shape.tighten, shape.failing
    publish, restore = deadline_var.set, deadline_var.reset

    def lane(
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        priority: int,
        _cache_key: Hashable = None,
    ) -> Any:
        # (Through a variable: mypy would take core.slow for False for the rest of the lane.)
        decide = core.slow or not breaker._free or not CONFIG.propagate_deadlines
        if decide or not CONFIG.active:
            return attempts(fn, args, kwargs, priority)
        try:
            free.pop()
        except IndexError:
            return attempts(fn, args, kwargs, priority)
        t0 = now()
        callers = kwargs.get(argument)
        try:
            kwargs[argument] = left if callers is None else tighten(callers, left)
            token = publish((t0 + span, clock))
        except BaseException:
            # As in the general driver: a timeout the client cannot take is the caller's error,
            # raised before anything is sent or counted.
            free.append(None)
            if core.slow:
                rebalance()
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
            free.append(None)
            if core.slow:
                rebalance()
            breaker.release()
            raise
        else:
            try:
                t1 = now()
                if not (breaker._quiet and t1 - t0 < slow):
                    breaker.on_result(t1, t1 - t0, result)
                if t1 - t0 > attempt_timeout:
                    overran(attempt_timeout)
                # CallStats.record, inlined.
                counts[SUCCESS] += 1
                i = stats.index
                ring[i & _MASK] = (t1, t1 - t0, SUCCESS)
                stats.index = i + 1
                if t1 >= quiet[SUCCESS] and stats.sampler is not None:
                    quiet[SUCCESS] = stats.sampler(SUCCESS, t1 - t0, t1)
            finally:
                free.append(None)
                if core.slow:
                    rebalance()
            return result
        finally:
            restore(token)
        return attempts(fn, args, kwargs, priority, None, (first, t0, callers))

    return lane
