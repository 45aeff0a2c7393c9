"""No password anywhere (targets, events, metrics, spans, logs, errors); deactivate() restores all."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import psycopg
import psycopg2
import pytest
import sqlalchemy
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests.integrations.db.pg import CANARY, DSN, PATCH_POINTS, TARGET, Counter, patched_now

import buttress
from buttress import _activation, telemetry
from buttress.testing import capture_events


@pytest.fixture
def otel(
    activate_db: Callable[..., None],
) -> Iterator[tuple[InMemoryMetricReader, InMemorySpanExporter, Any]]:
    """buttress active (a breaker that trips after 10 calls), its metrics and spans in memory."""
    activate_db({"breaker.minimum_calls": 10, "breaker.window_size": 10})
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    exporter = InMemorySpanExporter()
    tracers = TracerProvider()
    tracers.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.instrument(meter_provider=meters, tracer_provider=tracers)
    yield reader, exporter, tracers.get_tracer("test")
    telemetry.uninstrument()
    meters.shutdown()
    tracers.shutdown()


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)
    else:
        yield str(value)


def test_password_appears_nowhere(
    otel: tuple[InMemoryMetricReader, InMemorySpanExporter, Any],
    counter: Counter,
    spare_port: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Connects, retries, failures and an open breaker with a canary password leak it nowhere."""
    reader, exporter, tracer = otel
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    refused = f"postgresql://root:{CANARY}@127.0.0.1:{spare_port}/test"
    with capture_events() as events, tracer.start_as_current_span("request"):
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute("SELECT 1")
            with pytest.raises(psycopg.errors.SyntaxError):
                conn.execute("SELEKT 1")
        conn2 = psycopg2.connect(DSN)
        conn2.cursor().execute("SELECT 1")
        conn2.close()
        engine = sqlalchemy.create_engine(DSN.replace("postgresql:", "postgresql+psycopg:"))
        with engine.connect() as sa:
            sa.execute(sqlalchemy.text(counter.killed_until(2)))
        engine.dispose()

        async def pool_read() -> None:
            pool = await asyncpg.create_pool(DSN, min_size=1, max_size=1)
            try:
                await pool.fetchval(counter.killed_until(4))
            finally:
                await pool.close()

        asyncio.run(pool_read())
        for _ in range(30):  # refused until the breaker opens (retries included)
            try:
                psycopg.connect(refused)
            except Exception as exc:
                errors.append(exc)
                if isinstance(exc, buttress.CircuitOpenError):
                    break

    assert isinstance(errors[-1], buttress.CircuitOpenError)
    assert {TARGET, f"postgresql:127.0.0.1:{spare_port}/test"} == set(buttress.targets())
    assert any(isinstance(e, telemetry.RetryScheduled) for e in events)
    places: dict[str, list[str]] = {
        "targets": buttress.targets(),
        "events": [repr(e) for e in events],
        "errors": [str(e) for e in errors if isinstance(e, buttress.ResilienceError)],
        "logs": [r.getMessage() for r in caplog.records] + [repr(r.args) for r in caplog.records],
    }
    data = reader.get_metrics_data()
    assert data is not None
    places["metrics"] = [
        s
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        for p in m.data.data_points
        for s in _strings(dict(p.attributes or {}))
    ]
    assert TARGET in places["metrics"]
    spans = exporter.get_finished_spans()
    places["spans"] = [
        s
        for span in spans
        for s in (
            span.name,
            *_strings(dict(span.attributes or {})),
            *(x for ev in span.events for x in (ev.name, *_strings(dict(ev.attributes or {})))),
        )
    ]
    assert len(spans) > 1  # the request and at least one retry back-off
    leaks = {where: [s for s in found if CANARY in s] for where, found in places.items()}
    assert {} == {where: found for where, found in leaks.items() if found}


def test_deactivate_restores_every_patched_function(activate_db: Callable[..., None]) -> None:
    """Activation patches every PostgreSQL patch point; deactivate() puts each original back."""
    activate_db()
    assert len(PATCH_POINTS) == len(patched_now())
    _activation.deactivate()
    assert [] == patched_now()
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute("SELECT 1")
    assert [] == buttress.targets()
