"""A database operation that needed retries, or failed, is one CLIENT span with its attempts."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from buttress.integrations import _db


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Spans of the 'buttress' tracer, in memory (no global provider is set)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(_db.trace, "get_tracer", lambda name, *a, **k: provider.get_tracer(name))
    yield exporter
    provider.shutdown()


def test_a_plain_successful_operation_adds_no_span(spans: InMemorySpanExporter) -> None:
    """Nothing happened, so nothing is traced (DB instrumentations cover the happy path)."""
    result = _db.run("postgresql:127.0.0.1:5432/test", lambda: 42, retryable=True)

    assert (42, ()) == (result, tuple(spans.get_finished_spans()))


def test_a_retried_operation_is_one_client_span_with_its_failed_attempts(
    spans: InMemorySpanExporter, activated: None
) -> None:
    """Two connection failures then success: one span, two attempt events, no error status."""
    failures = iter([ConnectionError("reset"), ConnectionError("reset")])

    def operation() -> str:
        error = next(failures, None)
        if error is not None:
            raise error
        return "rows"

    result = _db.run("postgresql:127.0.0.1:5432/test", operation, retryable=True)

    # The telemetry listener adds a buttress.retry span per back-off; the operation is the client span.
    [span] = [s for s in spans.get_finished_spans() if s.kind == trace.SpanKind.CLIENT]
    assert "rows" == result
    assert trace.SpanKind.CLIENT == span.kind
    assert "test" == span.name
    attributes = dict(span.attributes or {})
    assert {
        "db.system.name": "postgresql",
        "db.namespace": "test",
        "server.address": "127.0.0.1",
        "server.port": 5432,
        "buttress.attempts": 3,
    }.items() <= attributes.items()
    assert [1, 2] == [e.attributes["buttress.attempt"] for e in span.events]  # type: ignore[index]
    assert trace.StatusCode.UNSET == span.status.status_code


def test_a_failed_operation_is_an_error_span(spans: InMemorySpanExporter, activated: None) -> None:
    """A statement that fails for good is one span with error.type and an error status."""

    def operation() -> None:
        raise sqlite3.OperationalError("no such table: t")

    with pytest.raises(sqlite3.OperationalError):
        _db.run("sqlite:app.db", operation, retryable=False)

    [span] = [s for s in spans.get_finished_spans() if s.kind == trace.SpanKind.CLIENT]
    assert "sqlite3.OperationalError" == dict(span.attributes or {})["error.type"]
    assert trace.StatusCode.ERROR == span.status.status_code
