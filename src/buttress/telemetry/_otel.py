"""
The OpenTelemetry listener: turns buttress's events and counters into OTel metrics and spans.

It is a hook (see ``_hooks``) plus a set of observable instruments, designed around what things
cost here: a synchronous ``Counter.add`` is ~7 us and ``Histogram.record`` ~7 us with the SDK,
more than a whole buttress pipeline (< 0.5 us). So:

- **counts are never added per call**. Outcome counts live in each pipeline's ``CallStats``
  (plain integers) and event counts in this listener's dictionary; observable counters read
  them when a reader collects.
- **histograms are rate-limited**: a call's duration is recorded for at most
  ``samples_per_second`` calls per second per target and outcome (default 50), which keeps the
  histogram's quantiles representative while bounding its cost per second, not per call. Rates
  come from ``buttress_calls_total``, which counts every call.
- **spans only where something happened**: a retry's back-off is a child span covering the
  delay; a queue wait is a child span covering the wait; rejections, timeouts, fallbacks and
  breaker transitions are span events on the current span. A plain successful call adds
  nothing to the trace, and a call that succeeded after retries is never marked as an error.

It never sets global providers (it uses the ones it is given, or the global ones), never raises
into the host application, and adds no span while instrumentation is suppressed (the SDK's own
exporters suppress it while they export).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation

from .. import _stats
from .._registry import REGISTRY
from . import _hooks
from . import _semconv as sc
from ._events import (
    BulkheadDequeued,
    CacheAccessed,
    CallRejected,
    CircuitStateChanged,
    Event,
    FallbackUsed,
    RateLimitWaited,
    RetriesExhausted,
    RetryScheduled,
    TimedOut,
)
from ._otel_spans import trace_event

if TYPE_CHECKING:
    from .._pipeline import Pipeline

logger = logging.getLogger("buttress")

MAX_ERROR_TYPES = 64
"""Distinct ``error.type`` values kept per metric before folding into ``other``."""


class _RateGate:
    """At most *limit* passes per second of the caller's clock: a bound on cost per second."""

    __slots__ = ("_count", "_limit", "_second")

    def __init__(self, limit: float) -> None:
        self._limit = limit
        self._second = -1
        self._count = 0

    def allow(self, now: float) -> bool:
        second = int(now)
        if second != self._second:
            self._second = second
            self._count = 1
            return self._limit >= 1
        if self._count >= self._limit:
            return False
        self._count += 1
        return True


def _duration_sampler(histogram: Any, target: str, kind: str, limit: float) -> Any:
    """
    A :class:`buttress._stats.Sampler` recording some call durations into the OTel histogram.

    At most *limit* durations per second per outcome. Declining runs for every call of a busy
    target, so it is a closure (cheaper to call than an object's ``__call__``) costing an
    ``int()`` and two list reads.
    """
    seconds = [-1] * len(sc.OUTCOMES)
    counts = [0] * len(sc.OUTCOMES)
    attrs = [
        {sc.ATTR_TARGET: target, sc.ATTR_KIND: kind, sc.ATTR_OUTCOME: outcome}
        for outcome in sc.OUTCOMES
    ]
    record = histogram.record
    failed: list[bool] = []

    def sample(outcome: int, duration: float, now: float, /) -> float:
        # Returns when to call again: the next second once this one's quota is used up.
        second = int(now)
        if second == seconds[outcome]:
            if counts[outcome] >= limit:
                return second + 1.0
            counts[outcome] += 1
        else:
            seconds[outcome] = second
            counts[outcome] = 1
            if limit < 1:
                return second + 1.0
        try:
            record(duration, attrs[outcome])
        except Exception:
            if not failed:
                failed.append(True)
                logger.exception("buttress: recording a call duration failed; continuing")
        return 0.0

    return sample


class OTelTelemetry:
    """
    Publishes buttress's telemetry through OpenTelemetry.

    Create it through :func:`buttress.telemetry.instrument`.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        *,
        meter_provider: metrics.MeterProvider | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        samples_per_second: float = 50.0,
    ) -> None:
        from .. import __version__ as _version  # noqa: PLC0415 - avoid a cycle at import time
        from .._validate import number  # noqa: PLC0415 - the same cycle

        samples = number("telemetry.instrument", "samples_per_second", samples_per_second, low=0)
        assert samples is not None  # noqa: S101 - None is not accepted: for mypy

        version = str(_version)
        self._meter = metrics.get_meter(sc.METER_NAME, version, meter_provider=meter_provider)
        self._tracer = trace.get_tracer(sc.TRACER_NAME, version, tracer_provider=tracer_provider)
        self._limit = samples
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, tuple[str, ...]], int] = {}
        self._error_types: dict[str, set[str]] = {}
        self._gates: dict[tuple[str, str, str], _RateGate] = {}
        self._failures: set[str] = set()
        meter = self._meter
        self._duration = meter.create_histogram(
            sc.CALL_DURATION.name,
            unit=sc.CALL_DURATION.unit,
            description=sc.CALL_DURATION.description,
            explicit_bucket_boundaries_advisory=list(sc.CALL_DURATION.buckets),
        )
        self._histograms = {
            m.name: meter.create_histogram(
                m.name,
                unit=m.unit,
                description=m.description,
                explicit_bucket_boundaries_advisory=list(m.buckets),
            )
            for m in (sc.RETRY_DELAY, sc.BULKHEAD_QUEUE_WAIT, sc.RATE_LIMIT_WAIT)
        }
        meter.create_observable_counter(
            sc.CALLS.name,
            [self._observe_calls],
            unit=sc.CALLS.unit,
            description=sc.CALLS.description,
        )
        for metric in (
            sc.RETRIES,
            sc.RETRIES_EXHAUSTED,
            sc.REJECTIONS,
            sc.OBSERVED_REJECTIONS,
            sc.OBSERVED_RETRIES,
            sc.CIRCUIT_TRANSITIONS,
            sc.TIMEOUTS,
            sc.CACHE_REQUESTS,
            sc.FALLBACKS,
        ):
            meter.create_observable_counter(
                metric.name,
                [self._counter_callback(metric.name)],
                unit=metric.unit,
                description=metric.description,
            )
        meter.create_observable_gauge(
            sc.CIRCUIT_STATE.name,
            [self._observe_circuit_state],
            unit=sc.CIRCUIT_STATE.unit,
            description=sc.CIRCUIT_STATE.description,
        )
        for metric, reading in (
            (sc.BULKHEAD_ACTIVE, "active"),
            (sc.BULKHEAD_QUEUED, "queued"),
            (sc.BULKHEAD_LIMIT, "limit"),
        ):
            meter.create_observable_gauge(
                metric.name,
                [self._bulkhead_callback(reading)],
                unit=metric.unit,
                description=metric.description,
            )

    def __repr__(self) -> str:
        return f"<OTelTelemetry samples_per_second={self._limit:g}>"

    # -- the hook ------------------------------------------------------------------------------

    def sampler(self, target: str, kind: str) -> _stats.Sampler:
        """The duration sampler for a new pipeline (installed through ``_stats``)."""
        sampler: _stats.Sampler = _duration_sampler(self._duration, target, kind, self._limit)
        return sampler

    def __call__(self, event: Event) -> None:
        """Count *event* and put it in the current trace."""
        # Each stage on its own: a broken exporter must not cost us the other signals, and a
        # failure is logged once per stage, not once per event.
        for stage in (self._count, self._trace):
            try:
                stage(event)
            except Exception:
                self._failed_once(stage.__name__)

    def _failed_once(self, what: str) -> None:
        if what in self._failures:
            return
        self._failures.add(what)
        logger.error("buttress: telemetry (%s) failed; continuing without it", what, exc_info=True)  # noqa: LOG014 - called from the except blocks above

    def _add(self, metric: sc.Metric, *values: str) -> None:
        key = (metric.name, values)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1

    def _error_type(self, metric: sc.Metric, target: str, value: str) -> str:
        # error.type is a class name: bounded in practice, capped here all the same.
        seen = self._error_types.setdefault(f"{metric.name}\0{target}", set())
        if value in seen:
            return value
        if len(seen) >= MAX_ERROR_TYPES:
            return "other"
        seen.add(value)
        return value

    def _record_wait(self, metric: sc.Metric, event: Event, seconds: float, *extra: str) -> None:
        key = (metric.name, event.target, extra[0] if extra else "")
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates.setdefault(key, _RateGate(self._limit))
        if not gate.allow(time.monotonic()):
            return
        attrs = {sc.ATTR_TARGET: event.target, sc.ATTR_KIND: event.kind}
        if extra:
            attrs[metric.attributes[2]] = extra[0]
        try:
            self._histograms[metric.name].record(seconds, attrs)
        except Exception:
            self._failed_once(metric.name)

    def _count(self, event: Event) -> None:
        t, k = event.target, event.kind
        if isinstance(event, RetryScheduled):
            if event.observed:
                self._add(
                    sc.OBSERVED_RETRIES,
                    t,
                    k,
                    self._error_type(sc.OBSERVED_RETRIES, t, event.error_type),
                )
                return
            self._add(sc.RETRIES, t, k, self._error_type(sc.RETRIES, t, event.error_type))
            source = "server" if event.server_delay is not None else "backoff"
            self._record_wait(sc.RETRY_DELAY, event, event.delay, source)
        elif isinstance(event, RetriesExhausted):
            self._add(sc.RETRIES_EXHAUSTED, t, k, event.reason)
        elif isinstance(event, CallRejected):
            metric = sc.OBSERVED_REJECTIONS if event.observed else sc.REJECTIONS
            self._add(metric, t, k, event.reason)
        elif isinstance(event, CircuitStateChanged):
            self._add(sc.CIRCUIT_TRANSITIONS, t, k, event.from_state, event.to_state)
        elif isinstance(event, BulkheadDequeued):
            self._record_wait(sc.BULKHEAD_QUEUE_WAIT, event, event.wait)
        elif isinstance(event, RateLimitWaited):
            self._record_wait(sc.RATE_LIMIT_WAIT, event, event.wait)
        elif isinstance(event, TimedOut):
            self._add(sc.TIMEOUTS, t, k, event.scope)
        elif isinstance(event, CacheAccessed):
            self._add(sc.CACHE_REQUESTS, t, k, event.result)
        elif isinstance(event, FallbackUsed) and not event.observed:
            self._add(sc.FALLBACKS, t, k, self._error_type(sc.FALLBACKS, t, event.error_type))

    def _trace(self, event: Event) -> None:
        trace_event(self._tracer, event)

    # -- observable callbacks --------------------------------------------------------------------

    def _observe_calls(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(
                count, {sc.ATTR_TARGET: target, sc.ATTR_KIND: kind, sc.ATTR_OUTCOME: outcome}
            )
            for (target, kind), counts in _stats.totals().items()
            for outcome, count in zip(sc.OUTCOMES, counts, strict=True)
        ]

    def _counter_callback(self, name: str) -> Any:
        metric = next(m for m in sc.METRICS if m.name == name)

        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            with self._lock:
                items = [
                    (values, n)
                    for (metric_name, values), n in self._counts.items()
                    if metric_name == name
                ]
            return [
                Observation(n, dict(zip(metric.attributes, values, strict=True)))
                for values, n in items
            ]

        return callback

    @staticmethod
    def _observe_circuit_state(_options: CallbackOptions) -> Iterable[Observation]:
        # Per target and state, how many of its breakers are in that state: 1 or 0 for a named
        # target; for "other", a count over the targets past the registry's bound.
        counts: dict[tuple[str, str], dict[str, int]] = {}
        for pipeline in _reporting():
            if pipeline.breaker is not None:
                key = (pipeline.target, pipeline.kind)
                states = counts.setdefault(key, dict.fromkeys(sc.CIRCUIT_STATES, 0))
                current = pipeline.breaker.state.value
                if current in states:
                    states[current] += 1
        return [
            Observation(n, {sc.ATTR_TARGET: target, sc.ATTR_KIND: kind, sc.ATTR_STATE: state})
            for (target, kind), states in counts.items()
            for state, n in states.items()
        ]

    @staticmethod
    def _bulkhead_callback(reading: str) -> Any:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            # Per target; "other" sums the targets past the registry's bound.
            sums: dict[tuple[str, str], int] = {}
            for p in _reporting():
                if p.bulkhead is not None:
                    key = (p.target, p.kind)
                    sums[key] = sums.get(key, 0) + getattr(p.bulkhead, reading)
            return [
                Observation(total, {sc.ATTR_TARGET: target, sc.ATTR_KIND: kind})
                for (target, kind), total in sums.items()
            ]

        return callback


def _reporting() -> list[Pipeline]:
    # Every pipeline the gauges report: the registered ones (by name), then the integrations'
    # pipelines past the registry's bound (each labelled "other").
    return REGISTRY.pipelines() + REGISTRY.overflow_pipelines()


_installed: tuple[OTelTelemetry, Any] | None = None
_install_lock = threading.Lock()


def instrument(
    *,
    meter_provider: metrics.MeterProvider | None = None,
    tracer_provider: trace.TracerProvider | None = None,
    samples_per_second: float = 50.0,
) -> OTelTelemetry:
    """
    Publish buttress's decisions as OpenTelemetry metrics and spans.

    Uses the given providers, else the global ones (set up by the application or by
    opentelemetry-distro); never sets a global provider itself. Calling it again replaces the
    previous installation.

    Args:
        meter_provider: Where metrics go.
        tracer_provider: Where spans go.
        samples_per_second: The most durations and waits recorded per second per target (and
            outcome) into histograms; counters are exact regardless.

    .. versionadded:: 0.1.0
    """
    global _installed  # noqa: PLW0603
    with _install_lock:
        if _installed is not None:
            _uninstall_locked()
        telemetry = OTelTelemetry(
            meter_provider=meter_provider,
            tracer_provider=tracer_provider,
            samples_per_second=samples_per_second,
        )
        remove = _hooks.add_hook(telemetry)
        _stats.set_sampler_factory(telemetry.sampler)
        _installed = (telemetry, remove)
        return telemetry


def _uninstall_locked() -> None:
    global _installed  # noqa: PLW0603
    if _installed is None:
        return
    _telemetry, remove = _installed
    remove()
    _stats.set_sampler_factory(None)
    _installed = None


def uninstrument() -> None:
    """
    Stop publishing telemetry (instruments already created stay registered with their meter).

    .. versionadded:: 0.1.0
    """
    with _install_lock:
        _uninstall_locked()
