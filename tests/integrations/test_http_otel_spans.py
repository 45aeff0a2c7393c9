"""buttress under OpenTelemetry's own HTTP instrumentations: one CLIENT span per attempt.

The retry loop must sit above the instrumentation's client span in either installation order,
and :class:`ResendCountProcessor` marks the resent attempts with ``http.request.resend_count``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from tests.support.fault_server import FaultServer, ok, status

from buttress.integrations._resend import RESEND_COUNT, ResendCountProcessor

INSTRUMENTORS = (
    RequestsInstrumentor,
    HTTPXClientInstrumentor,
    URLLib3Instrumentor,
    AioHttpClientInstrumentor,
)


class Traces:
    """An SDK tracer provider with the resend-count processor and an in-memory exporter."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(ResendCountProcessor())
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def client_spans(self) -> list[ReadableSpan]:
        """The finished CLIENT spans, in the order they started."""
        spans = [s for s in self.exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]
        return sorted(spans, key=lambda span: span.start_time or 0)


@pytest.fixture
def traces() -> Iterator[Traces]:
    """A fresh in-memory tracer provider, shut down after the test."""
    traces = Traces()
    yield traces
    traces.provider.shutdown()


@pytest.fixture
def instrument_otel(traces: Traces) -> Iterator[Callable[[], None]]:
    """Call to install OpenTelemetry's four HTTP instrumentations; all removed after the test."""
    installed: list[object] = []

    def install() -> None:
        for instrumentor_class in INSTRUMENTORS:
            instrumentor = instrumentor_class()
            instrumentor.instrument(tracer_provider=traces.provider)
            installed.append(instrumentor)

    yield install
    for instrumentor in reversed(installed):
        instrumentor.uninstrument()


@pytest.mark.parametrize("order", ["otel-first", "buttress-first"])
def test_each_attempt_is_one_client_span_with_its_resend_count(
    activate_buttress, instrument_otel, traces: Traces, client, fault_server: FaultServer, order
):
    """Three attempts make three CLIENT spans: resend_count absent, then 1, then 2."""
    if order == "otel-first":
        instrument_otel()
        activate_buttress()
    else:
        activate_buttress()
        instrument_otel()
    fault_server.script("/flaky", status(503), status(503), ok(b"done"))

    reply = client.do("GET", f"{fault_server.url}/flaky")

    assert (200, b"done") == (reply.status, reply.body)
    assert 3 == fault_server.count("/flaky")
    spans = traces.client_spans()
    assert [None, 1, 2] == [span.attributes.get(RESEND_COUNT) for span in spans]
    # The instrumentations use the old semantic conventions unless told otherwise.
    statuses = [
        span.attributes.get("http.response.status_code", span.attributes.get("http.status_code"))
        for span in spans
    ]
    assert [503, 503, 200] == statuses


def test_an_unretried_call_has_no_resend_count(
    activated, instrument_otel, traces: Traces, client, fault_server: FaultServer
):
    """A call that succeeds at once makes one CLIENT span without http.request.resend_count."""
    instrument_otel()

    client.do("GET", f"{fault_server.url}/ok")

    assert [None] == [span.attributes.get(RESEND_COUNT) for span in traces.client_spans()]
