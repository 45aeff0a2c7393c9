"""Telemetry fixtures: in-memory OpenTelemetry providers (never the global ones) and both drivers."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import buttress
from buttress import _stats, telemetry
from buttress.telemetry import semconv

Key = tuple[str, frozenset[tuple[str, Any]]]


class Otel:
    """What the ``otel`` fixture yields: the collected metrics and finished spans."""

    def __init__(
        self,
        reader: InMemoryMetricReader,
        exporter: InMemorySpanExporter,
        tracer_provider: TracerProvider,
        instance: telemetry.OTelTelemetry,
    ) -> None:
        self.reader = reader
        self.exporter = exporter
        self.tracer_provider = tracer_provider
        self.tracer = tracer_provider.get_tracer("tests")
        self.instance = instance

    def metrics(self) -> dict[Key, Any]:
        """Collect now: (metric name, attribute items) -> value, or (count, sum) for histograms."""
        collected: dict[Key, Any] = {}
        data = self.reader.get_metrics_data()
        if data is None:
            return collected
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                if scope_metrics.scope.name != semconv.METER_NAME:
                    continue
                for metric in scope_metrics.metrics:
                    for point in metric.data.data_points:
                        key = (metric.name, frozenset(dict(point.attributes or {}).items()))
                        if isinstance(point, HistogramDataPoint):
                            collected[key] = (point.count, point.sum)
                        else:
                            collected[key] = point.value
        return collected

    @staticmethod
    def series(
        collected: Mapping[Key, Any], metric: semconv.Metric, where: Mapping[str, Any] | None = None
    ) -> dict[frozenset[tuple[str, Any]], Any]:
        """The points of *metric* in *collected* whose attributes include all of *where*."""
        wanted = dict(where or {})
        return {
            attrs: value
            for (name, attrs), value in collected.items()
            if name == metric.name and all((k, v) in attrs for k, v in wanted.items())
        }

    def values(
        self, metric: semconv.Metric, by: str, target: str, where: Mapping[str, Any] | None = None
    ) -> dict[Any, Any]:
        """Collect now; for *target*'s points of *metric*: attribute *by*'s value -> point value."""
        result: dict[Any, Any] = {}
        wanted = {semconv.ATTR_TARGET: target, **(where or {})}
        for attrs, value in self.series(self.metrics(), metric, wanted).items():
            result[dict(attrs)[by]] = value
        return result

    def spans(self) -> list[ReadableSpan]:
        """Every finished span, in the order they ended."""
        return list(self.exporter.get_finished_spans())


def make_otel(samples_per_second: float = 50.0) -> Iterator[Otel]:
    """Instrument buttress with fresh in-memory providers; uninstrument afterwards."""
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    instance = telemetry.instrument(
        meter_provider=meter_provider,
        tracer_provider=tracer_provider,
        samples_per_second=samples_per_second,
    )
    try:
        yield Otel(reader, exporter, tracer_provider, instance)
    finally:
        telemetry.uninstrument()
        meter_provider.shutdown()
        tracer_provider.shutdown()


@pytest.fixture(autouse=True)
def _forget_earlier_pipelines() -> None:
    """
    Start buttress.calls from zero: hide earlier tests' pipelines and their retired counts.

    buttress.calls reads every CallStats alive plus the counts of collected ones. A failed
    test's traceback can keep an earlier pipeline alive, and collecting garbage here retires
    earlier pipelines' counts; targets repeat across tests, so either would leak in.
    """
    gc.collect()
    for stats in list(_stats.LIVE):
        _stats.LIVE.discard(stats)
    retired = getattr(_stats, "RETIRED", None)
    if retired is not None:
        retired.clear()


@pytest.fixture
def otel() -> Iterator[Otel]:
    """buttress instrumented into in-memory metric and span readers (50 samples/s)."""
    yield from make_otel()


@pytest.fixture
def otel_factory() -> Iterator[Callable[[float], Otel]]:
    """Instrument with a chosen ``samples_per_second``; torn down after the test."""
    generators: list[Iterator[Otel]] = []

    def build(samples_per_second: float) -> Otel:
        generator = make_otel(samples_per_second)
        generators.append(generator)
        return next(generator)

    yield build
    for generator in reversed(generators):
        next(generator, None)


class Runner:
    """Runs a plain callable through a pipeline, either directly or wrapped in a coroutine."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._wrapped: dict[int, Callable[[], Any]] = {}

    def call(self, guard: buttress.Pipeline | buttress.CallOptions, fn: Callable[[], Any]) -> Any:
        """``guard.call(fn)``, or ``asyncio.run(guard.acall(async fn))``."""
        if self.mode == "sync":
            return guard.call(fn)
        afn = self._wrapped.get(id(fn))
        if afn is None:

            async def afn() -> Any:
                return fn()

            self._wrapped[id(fn)] = afn
        return asyncio.run(guard.acall(afn))

    def outcome(
        self, guard: buttress.Pipeline | buttress.CallOptions, fn: Callable[[], Any]
    ) -> Any:
        """Like :meth:`call`, but returns the exception raised instead of raising it."""
        try:
            return self.call(guard, fn)
        except Exception as exc:
            return exc


@pytest.fixture(params=["sync", "async"])
def run(request: pytest.FixtureRequest) -> Runner:
    """Both drivers."""
    return Runner(request.param)


class Flaky:
    """Fails with a fresh *error_type* the first *failures* times, then returns *value*."""

    def __init__(
        self, failures: int, error_type: type[Exception] = ConnectionError, value: object = "ok"
    ) -> None:
        self.failures = failures
        self.error_type = error_type
        self.value = value
        self.calls = 0

    def __call__(self) -> object:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error_type("flaky")
        return self.value


@pytest.fixture
def flaky() -> type[Flaky]:
    """The Flaky callable class (test modules cannot import from conftest)."""
    return Flaky
