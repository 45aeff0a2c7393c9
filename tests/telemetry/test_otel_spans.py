"""OpenTelemetry spans and span events: only where something happened, never an error for a retry."""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import StatusCode

import buttress
from buttress.telemetry import semconv as sc


def retry(attempts: int = 3, **kw: Any) -> buttress.Retry:
    """A retry on ConnectionError with a constant 0.5 s back-off and no budget."""
    kw.setdefault("backoff", buttress.constant(0.5))
    return buttress.Retry(on=ConnectionError, attempts=attempts, budget=None, **kw)


def conn_fail() -> None:
    raise ConnectionError("refused")


def test_a_plain_successful_call_adds_nothing_to_the_trace(run, otel, clock) -> None:
    """Inside an app span, a successful first attempt adds no child span and no event."""
    guard = buttress.protect(
        "plain",
        retry=retry(),
        breaker=buttress.CircuitBreaker(),
        timeout=buttress.Timeout(),
        bulkhead=buttress.Bulkhead(),
        rate_limit=buttress.RateLimit(rate=100.0),
        clock=clock,
    )
    with otel.tracer.start_as_current_span("app"):
        assert 42 == run.call(guard, lambda: 42)

    spans = otel.spans()
    assert [("app", ())] == [(s.name, tuple(s.events)) for s in spans]


def test_a_retry_is_a_child_span_covering_the_delay(run, otel, clock, flaky) -> None:
    """One retry: a child span of the app span with attempt, delay and error.type."""
    guard = buttress.protect("rs", kind="http", retry=retry(), clock=clock)

    with otel.tracer.start_as_current_span("app") as app:
        assert "ok" == run.call(guard, flaky(1))

    spans = {s.name: s for s in otel.spans()}
    child = spans[sc.SPAN_EVENT_RETRY]
    assert [sc.SPAN_EVENT_RETRY, "app"] == [s.name for s in otel.spans()]
    assert app.get_span_context().span_id == child.parent.span_id  # type: ignore[union-attr]
    assert app.get_span_context().trace_id == child.context.trace_id  # type: ignore[union-attr]
    assert {
        sc.SPAN_ATTR_TARGET: "rs",
        sc.SPAN_ATTR_KIND: "http",
        sc.SPAN_ATTR_ATTEMPT: 1,
        sc.SPAN_ATTR_DELAY: 0.5,
        sc.ATTR_ERROR_TYPE: "ConnectionError",
    } == dict(child.attributes or {})
    assert int(0.5e9) == child.end_time - child.start_time  # type: ignore[operator]


def test_a_server_asked_delay_is_on_the_retry_span(run, otel, clock, flaky) -> None:
    """A Retry-After delay replaces the back-off and is recorded as server_delay."""
    guard = buttress.protect("srv", retry=retry(retry_after=lambda outcome: 2.0), clock=clock)

    with otel.tracer.start_as_current_span("app"):
        run.call(guard, flaky(1))

    child = next(s for s in otel.spans() if s.name == sc.SPAN_EVENT_RETRY)
    attributes = dict(child.attributes or {})
    assert (2.0, 2.0) == (attributes[sc.SPAN_ATTR_DELAY], attributes[sc.SPAN_ATTR_SERVER_DELAY])
    assert int(2e9) == child.end_time - child.start_time  # type: ignore[operator]


def test_a_call_that_succeeded_after_retries_leaves_the_app_span_status_alone(
    run, otel, clock, flaky
) -> None:
    """Two retries then a success: the app span's status is UNSET, its retry spans too."""
    guard = buttress.protect("st", retry=retry(), clock=clock)

    with otel.tracer.start_as_current_span("app"):
        run.call(guard, flaky(2))

    assert [
        (sc.SPAN_EVENT_RETRY, StatusCode.UNSET),
        (sc.SPAN_EVENT_RETRY, StatusCode.UNSET),
        ("app", StatusCode.UNSET),
    ] == [(s.name, s.status.status_code) for s in otel.spans()]


def test_a_rejection_is_an_event_on_the_app_span(run, otel, clock) -> None:
    """A rate-limit rejection adds one buttress.rejected event with its reason, and no span."""
    guard = buttress.protect(
        "rej", rate_limit=buttress.RateLimit(rate=1.0, burst=1, max_wait=0), clock=clock
    )
    run.call(guard, lambda: 1)

    with otel.tracer.start_as_current_span("app"):
        assert isinstance(run.outcome(guard, lambda: 1), buttress.RateLimitedError)

    spans = otel.spans()
    assert ["app"] == [s.name for s in spans]
    assert [
        (
            sc.SPAN_EVENT_REJECTED,
            {
                sc.SPAN_ATTR_TARGET: "rej",
                sc.SPAN_ATTR_KIND: "function",
                sc.SPAN_ATTR_REASON: "rate_limited",
                sc.SPAN_ATTR_OBSERVED: False,
            },
        )
    ] == [(e.name, dict(e.attributes or {})) for e in spans[0].events]
    assert StatusCode.UNSET == spans[0].status.status_code


def test_exhaustion_and_fallback_are_events_on_the_app_span(run, otel, clock) -> None:
    """Retries running out then a fallback: two span events, in order, on the app span."""
    guard = buttress.protect(
        "exf", retry=retry(attempts=2), fallback=buttress.Fallback(value="cached"), clock=clock
    )

    with otel.tracer.start_as_current_span("app"):
        assert "cached" == run.call(guard, conn_fail)

    app = otel.spans()[-1]
    assert [sc.SPAN_EVENT_RETRIES_EXHAUSTED, sc.SPAN_EVENT_FALLBACK] == [e.name for e in app.events]
    assert "attempts" == app.events[0].attributes[sc.SPAN_ATTR_REASON]  # type: ignore[index]
    assert "ConnectionError" == app.events[1].attributes[sc.ATTR_ERROR_TYPE]  # type: ignore[index]


def test_a_rate_limit_wait_is_a_child_span_covering_the_wait(run, otel, clock) -> None:
    """At 2 tokens/s the second call waits 0.5 s: a child span of that length."""
    guard = buttress.protect(
        "rlw", rate_limit=buttress.RateLimit(rate=2.0, burst=1, max_wait=5.0), clock=clock
    )
    run.call(guard, lambda: 1)

    with otel.tracer.start_as_current_span("app") as app:
        run.call(guard, lambda: 1)

    child = otel.spans()[0]
    assert sc.SPAN_EVENT_RATE_LIMITED == child.name
    assert app.get_span_context().span_id == child.parent.span_id  # type: ignore[union-attr]
    assert 0.5 == dict(child.attributes or {})[sc.SPAN_ATTR_WAIT]
    assert int(0.5e9) == child.end_time - child.start_time  # type: ignore[operator]


def test_breaker_opening_is_a_span_event_and_a_warning(run, otel, clock, caplog) -> None:
    """closed -> open: a span event with both states and a WARNING on the buttress logger."""
    guard = buttress.protect(
        "brk", breaker=buttress.CircuitBreaker(window_size=2, minimum_calls=2), clock=clock
    )

    with caplog.at_level(logging.INFO, logger="buttress"), otel.tracer.start_as_current_span("app"):
        for _ in range(2):
            assert isinstance(run.outcome(guard, conn_fail), ConnectionError)

    events = [e for e in otel.spans()[-1].events if e.name == sc.SPAN_EVENT_CIRCUIT]
    assert [("closed", "open")] == [
        (e.attributes[sc.SPAN_ATTR_FROM_STATE], e.attributes[sc.SPAN_ATTR_TO_STATE])  # type: ignore[index]
        for e in events
    ]
    warnings = [r for r in caplog.records if r.name == "buttress" and r.levelno == logging.WARNING]
    assert 1 == len(warnings)
    assert "'brk'" in warnings[0].getMessage()
    assert "closed -> open" in warnings[0].getMessage()


def test_breaker_closing_again_logs_info_not_warning(run, otel, clock, caplog) -> None:
    """open -> half_open -> closed are INFO records; only the opening was a WARNING."""
    guard = buttress.protect(
        "brc",
        breaker=buttress.CircuitBreaker(
            window_size=2, minimum_calls=2, open_duration=5.0, half_open_calls=1
        ),
        clock=clock,
    )
    with caplog.at_level(logging.INFO, logger="buttress"):
        for _ in range(2):
            run.outcome(guard, conn_fail)
        clock.advance(5.0)
        run.call(guard, lambda: 1)

    assert [
        (logging.WARNING, "closed -> open"),
        (logging.INFO, "open -> half_open"),
        (logging.INFO, "half_open -> closed"),
    ] == [
        (r.levelno, r.getMessage().rsplit(": ", 1)[1])
        for r in caplog.records
        if r.name == "buttress"
    ]


def test_nothing_is_traced_while_instrumentation_is_suppressed(run, otel, clock, flaky) -> None:
    """Under the suppression key no retry span and no rejection or fallback event is added."""
    guard = buttress.protect(
        "sup",
        retry=retry(),
        rate_limit=buttress.RateLimit(rate=1.0, burst=1, max_wait=0),
        clock=clock,
    )
    failing = buttress.protect(
        "sup2", retry=retry(attempts=2), fallback=buttress.Fallback(value="x"), clock=clock
    )

    with otel.tracer.start_as_current_span("app"):
        token = otel_context.attach(
            otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True)
        )
        try:
            assert "ok" == run.call(guard, flaky(1))
            assert isinstance(run.outcome(guard, lambda: 1), buttress.RateLimitedError)
            assert "x" == run.call(failing, conn_fail)
        finally:
            otel_context.detach(token)

    assert [("app", ())] == [(s.name, tuple(s.events)) for s in otel.spans()]


def test_suppression_still_counts_metrics(otel, clock, flaky) -> None:
    """Suppression is about traces: the retry is still counted."""
    guard = buttress.protect("supm", retry=retry(), clock=clock)
    token = otel_context.attach(
        otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True)
    )
    try:
        guard.call(flaky(1))
    finally:
        otel_context.detach(token)

    assert {"ConnectionError": 1} == otel.values(sc.RETRIES, sc.ATTR_ERROR_TYPE, "supm")


def test_without_a_current_span_events_are_dropped_quietly(run, otel, clock, caplog) -> None:
    """No app span: a rejection adds nothing anywhere and logs no error."""
    guard = buttress.protect(
        "nos", rate_limit=buttress.RateLimit(rate=1.0, burst=1, max_wait=0), clock=clock
    )
    with caplog.at_level(logging.ERROR, logger="buttress"):
        run.call(guard, lambda: 1)
        run.outcome(guard, lambda: 1)

    assert ([], []) == (otel.spans(), [r for r in caplog.records if r.levelno >= logging.ERROR])


def test_an_observed_retry_is_an_event_not_a_span(run, otel, clock) -> None:
    """In observe mode a would-be retry is a span event marked observed, with no child span."""
    guard = buttress.protect("obs", retry=retry(), observe=True, clock=clock)

    with otel.tracer.start_as_current_span("app"):
        run.outcome(guard, conn_fail)

    spans = otel.spans()
    assert ["app"] == [s.name for s in spans]
    retry_events = [e for e in spans[0].events if e.name == sc.SPAN_EVENT_RETRY]
    assert [True] == [e.attributes[sc.SPAN_ATTR_OBSERVED] for e in retry_events]  # type: ignore[index]
