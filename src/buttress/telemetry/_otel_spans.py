"""
How buttress's decisions appear in traces: spans for waits, span events for everything else.

Apart from the metrics listener (``_otel``) because it is a separate concern with its own
rules: a back-off, a queue wait or a rate-limit wait becomes a child span covering the time it
took; a rejection, a timeout, a fallback or a breaker transition becomes an event on the current
span (and a transition also a log line); nothing is added under instrumentation suppression.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Tracer

from .._suppression import suppressed
from . import _semconv as sc
from ._events import (
    BulkheadDequeued,
    CallRejected,
    CircuitStateChanged,
    Event,
    FallbackUsed,
    RateLimitWaited,
    RetriesExhausted,
    RetryScheduled,
    TimedOut,
)

logger = logging.getLogger("buttress")


def trace_event(tracer: Tracer, event: Event) -> None:
    """Turn *event* into a span (a wait, a back-off) or a span event on the current span."""
    observed_retry = isinstance(event, RetryScheduled) and event.observed
    if isinstance(event, RetryScheduled | BulkheadDequeued | RateLimitWaited) and not (
        observed_retry
    ):
        if suppressed():  # these become spans of their own
            return
    elif not isinstance(event, CircuitStateChanged) and not (
        trace.get_current_span().is_recording()
    ):
        # A span event needs a recording span to land on; an outage's rejections are the
        # hot path, so bail out before building any attribute.
        return
    base = {sc.SPAN_ATTR_TARGET: event.target, sc.SPAN_ATTR_KIND: event.kind}
    now_ns = time.time_ns()
    if isinstance(event, RetryScheduled):
        if event.observed:
            _span_event(
                sc.SPAN_EVENT_RETRY,
                {
                    **base,
                    sc.SPAN_ATTR_OBSERVED: True,
                    sc.SPAN_ATTR_ATTEMPT: event.attempt,
                    "error.type": event.error_type,
                },
            )
            return
        attrs: dict[str, Any] = {
            **base,
            sc.SPAN_ATTR_ATTEMPT: event.attempt,
            sc.SPAN_ATTR_DELAY: event.delay,
            "error.type": event.error_type,
        }
        if event.server_delay is not None:
            attrs[sc.SPAN_ATTR_SERVER_DELAY] = event.server_delay
        # The back-off as a child span covering the delay: the trace shows the gap between
        # attempt spans for what it is.
        span = tracer.start_span(sc.SPAN_EVENT_RETRY, attributes=attrs, start_time=now_ns)
        span.end(end_time=now_ns + int(event.delay * 1e9))
    elif isinstance(event, BulkheadDequeued):
        span = tracer.start_span(
            sc.SPAN_EVENT_DEQUEUED,
            attributes={
                **base,
                sc.SPAN_ATTR_WAIT: event.wait,
                sc.SPAN_ATTR_PRIORITY: event.priority,
            },
            start_time=now_ns - int(event.wait * 1e9),
        )
        span.end(end_time=now_ns)
    elif isinstance(event, RateLimitWaited):
        span = tracer.start_span(
            sc.SPAN_EVENT_RATE_LIMITED,
            attributes={
                **base,
                sc.SPAN_ATTR_WAIT: event.wait,
                sc.SPAN_ATTR_OBSERVED: event.observed,
            },
            start_time=now_ns,
        )
        span.end(end_time=now_ns + (0 if event.observed else int(event.wait * 1e9)))
    elif isinstance(event, CallRejected):
        _span_event(
            sc.SPAN_EVENT_REJECTED,
            {**base, sc.SPAN_ATTR_REASON: event.reason, sc.SPAN_ATTR_OBSERVED: event.observed},
        )
    elif isinstance(event, RetriesExhausted):
        _span_event(
            sc.SPAN_EVENT_RETRIES_EXHAUSTED,
            {
                **base,
                sc.SPAN_ATTR_ATTEMPT: event.attempts,
                sc.SPAN_ATTR_REASON: event.reason,
                "error.type": event.error_type,
            },
        )
    elif isinstance(event, TimedOut):
        _span_event(
            sc.SPAN_EVENT_TIMEOUT,
            {
                **base,
                sc.SPAN_ATTR_SCOPE: event.scope,
                sc.SPAN_ATTR_TIMEOUT: event.timeout,
                sc.SPAN_ATTR_OBSERVED: event.observed,
            },
        )
    elif isinstance(event, FallbackUsed):
        _span_event(
            sc.SPAN_EVENT_FALLBACK,
            {**base, "error.type": event.error_type, sc.SPAN_ATTR_OBSERVED: event.observed},
        )
    elif isinstance(event, CircuitStateChanged):
        _span_event(
            sc.SPAN_EVENT_CIRCUIT,
            {
                **base,
                sc.SPAN_ATTR_FROM_STATE: event.from_state,
                sc.SPAN_ATTR_TO_STATE: event.to_state,
            },
        )
        # A log record too: with an OTel logging handler installed it becomes a log-based
        # event; without one it is still the line an operator looks for.
        level = logging.WARNING if event.to_state in ("open", "forced_open") else logging.INFO
        logger.log(
            level,
            "buttress: circuit %s for target %r: %s -> %s",
            event.to_state,
            event.target,
            event.from_state,
            event.to_state,
        )


def _span_event(name: str, attributes: dict[str, Any]) -> None:
    span = trace.get_current_span()
    if span.is_recording() and not suppressed():
        span.add_event(name, attributes)
