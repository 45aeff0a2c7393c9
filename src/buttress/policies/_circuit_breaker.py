# Copyright 2025 the buttress developers. SPDX-License-Identifier: Apache-2.0
"""The circuit breaker: stop calling a failing dependency, and probe it before trusting it again.

States (resilience4j's, values of :class:`CircuitState`)::

    closed --(failure or slow-call rate >= threshold, >= minimum_calls)--> open
    closed --(consecutive_failures failures in a row, at any traffic)----> open
    open --(open duration elapsed, on the next acquire; no timers)------> half_open
    half_open --(all probes done, rates under the thresholds)-----------> closed
    half_open --(probe rates reach a threshold)-------------------------> open (duration grows)
    any --force_open()--> forced_open    any --disable()--> disabled    any --reset()--> closed

A breaker never goes from closed to half_open.

This module holds the configuration. The runtime (:class:`CircuitBreakerState`, in
``_breaker_state``) is sans-IO: it never sleeps and never reads a clock on its own; every method
takes ``now`` from the driver. It is thread-safe. The happy path (closed, a healthy window) is
one attribute read in :meth:`~CircuitBreakerState.acquire` and two in
:meth:`~CircuitBreakerState.on_result`, with no lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from buttress import _validate
from buttress._exceptions import ConfigurationError
from buttress._predicates import (
    ExceptionPredicate,
    ExceptionSpec,
    compile_exception_spec,
    describe_spec,
)
from buttress.policies._breaker_state import CircuitBreakerState, CircuitSnapshot, CircuitState

if TYPE_CHECKING:
    from collections.abc import Callable

    from buttress._context import PolicyContext

__all__ = ["CircuitBreaker", "CircuitBreakerState", "CircuitSnapshot", "CircuitState"]

_OWNER = "CircuitBreaker"

MAX_COUNT_WINDOW = 100_000
"""The largest count window, in calls (one byte each: 100 kB)."""
MAX_TIME_WINDOW = 3_600
"""The largest time window, in seconds (one bucket of three counts per second: about 90 kB)."""


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class CircuitBreaker:
    """When to stop calling a dependency, and how to try it again.

    The defaults follow resilience4j's ``CircuitBreakerConfig`` (failure rate 50 %, slow-call rate
    100 % at 60 s, a count window of 100 calls) with two changes for Python services, which
    usually see less traffic per process than a JVM: ``minimum_calls=20`` (resilience4j: 100) so
    a breaker can trip before a hundred calls have failed, ``open_duration=30`` s (resilience4j:
    60 s, Polly: 5 s) as a middle ground, and ``half_open_calls=5`` (resilience4j: 10).

    Args:
        failure_rate_threshold: Trip when this share of the window failed, in (0, 1].
        slow_call_rate_threshold: Trip when this share of the window was slow, in (0, 1]. The
            default 1.0 trips only if every call was slow: slowness alone rarely justifies
            refusing calls, so it is opt-in.
        slow_call_duration: A call that took at least this many seconds is slow (> 0).
        window: ``"count"`` (the last ``window_size`` calls) or ``"time"`` (the calls of the
            last ``window_size`` seconds, in one-second buckets).
        window_size: Calls (an int >= 1) for a count window; seconds (>= 1, rounded up to whole
            seconds) for a time window.
        minimum_calls: No decision before the window holds this many calls (>= 1), so two
            failures out of three calls do not trip a breaker. For a count window it is capped
            at ``window_size``, as in resilience4j, so a small window can still trip.
        consecutive_failures: Also trip after this many failures in a row (an int >= 1),
            whatever ``minimum_calls`` says, as Envoy's outlier detection (``consecutive_5xx``)
            and Polly v7's classic breaker do: a dependency that fails every call is refused
            at any traffic level, not only once the window holds ``minimum_calls`` calls. Any
            success (or any exception outside ``failure_on``) starts the count again. Counted
            while closed only: half-open keeps its probe rules. ``None`` (the default) turns
            it off.
        open_duration: Seconds the breaker stays open before letting probes through (> 0).
        open_duration_multiplier: Each consecutive trip (half_open -> open) multiplies the open
            duration by this (>= 1), so a dependency that keeps failing is probed less often.
            The default 1.0 keeps it constant (resilience4j's default interval function).
        max_open_duration: The cap on the growing open duration (>= ``open_duration``).
        half_open_calls: Probe calls let through in half_open (>= 1). All of them must complete;
            the breaker closes if their failure and slow-call rates are under the thresholds.
            It re-opens as soon as the probes recorded so far reach a threshold even if every
            remaining probe succeeded (no need to wait for a verdict already decided).
        failure_on: Which exceptions are failures: a type, a tuple of types or a predicate.
            Other exceptions (neither failures nor ignored) count as successes: the dependency
            answered, the caller just did not like the answer (resilience4j's semantics).
        ignore: Exception types that count as neither success nor failure; checked before
            ``failure_on``.
        failure_on_result: Returns True for a returned value that is a failure (an HTTP 503).
        observe: Observe mode: run the same state machine and report every decision, but never
            reject a call.

    .. versionadded:: 0.1.0
    """

    failure_rate_threshold: float = 0.5
    slow_call_rate_threshold: float = 1.0
    slow_call_duration: float = 60.0
    window: str = "count"
    window_size: float = 100
    minimum_calls: int = 20
    consecutive_failures: int | None = None
    open_duration: float = 30.0
    open_duration_multiplier: float = 1.0
    max_open_duration: float = 300.0
    half_open_calls: int = 5
    failure_on: ExceptionSpec = Exception
    ignore: tuple[type[BaseException], ...] = ()
    failure_on_result: Callable[[Any], bool] | None = None
    observe: bool = False
    # Compiled once here so a bad spec fails at construction and the hot path makes one call.
    _is_failure: ExceptionPredicate = field(init=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        put("failure_rate_threshold", self._rate("failure_rate_threshold"))
        put("slow_call_rate_threshold", self._rate("slow_call_rate_threshold"))
        put(
            "slow_call_duration",
            _validate.number(
                _OWNER, "slow_call_duration", self.slow_call_duration, low=0, low_inclusive=False
            ),
        )
        window = _validate.choice(_OWNER, "window", self.window, ("count", "time"))
        # Bounded because a window holds one cell per call or per second, allocated up front.
        size: float | None
        if window == "count":
            size = _validate.integer(
                _OWNER, "window_size", self.window_size, low=1, high=MAX_COUNT_WINDOW
            )
        else:
            size = _validate.number(
                _OWNER, "window_size", self.window_size, low=1, high=MAX_TIME_WINDOW
            )
        put("window_size", size)
        _validate.integer(_OWNER, "minimum_calls", self.minimum_calls, low=1)
        _validate.integer(
            _OWNER, "consecutive_failures", self.consecutive_failures, low=1, allow_none=True
        )
        open_duration = _validate.number(
            _OWNER, "open_duration", self.open_duration, low=0, low_inclusive=False
        )
        put("open_duration", open_duration)
        put(
            "open_duration_multiplier",
            _validate.number(
                _OWNER, "open_duration_multiplier", self.open_duration_multiplier, low=1
            ),
        )
        try:
            cap = _validate.number(
                _OWNER, "max_open_duration", self.max_open_duration, low=open_duration
            )
        except ConfigurationError as error:  # the bound comes from open_duration: say so
            raise ConfigurationError(
                f"{error} (open_duration={_validate.shown(open_duration)})"
            ) from None
        put("max_open_duration", cap)
        _validate.integer(_OWNER, "half_open_calls", self.half_open_calls, low=1)
        put("_is_failure", compile_exception_spec(_OWNER, "failure_on", self.failure_on))
        ignore: object = self.ignore
        if not isinstance(ignore, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in ignore
        ):
            raise ConfigurationError(
                f"{_OWNER}: ignore={_validate.shown(ignore)} is not accepted; "
                "expected a tuple of exception types"
            )
        _validate.function(
            _OWNER,
            "failure_on_result",
            self.failure_on_result,
            "a callable taking the result and returning a bool",
        )
        _validate.boolean(_OWNER, "observe", self.observe)

    def _rate(self, name: str) -> float | None:
        value = getattr(self, name)
        return _validate.number(_OWNER, name, value, low=0, high=1, low_inclusive=False)

    def bind(self, ctx: PolicyContext) -> CircuitBreakerState:
        """Create the runtime state of this breaker for one pipeline.

        Args:
            ctx: The target, clock and event sink the state reports to.

        Returns:
            A fresh, closed breaker with an empty window.

        .. versionadded:: 0.1.0
        """
        return CircuitBreakerState(self, ctx)

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            if not f.init:
                continue
            value = getattr(self, f.name)
            if value == f.default:
                continue
            if f.name in {"failure_on", "ignore"}:
                shown = describe_spec(value)
            elif f.name == "failure_on_result":
                shown = getattr(value, "__qualname__", repr(value))
            else:
                shown = repr(value)
            parts.append(f" {f.name}={shown}")
        return f"<CircuitBreaker{''.join(parts)}>"
