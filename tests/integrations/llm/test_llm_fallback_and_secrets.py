"""Fallback chains between OpenAI-shaped providers, their metrics and spans, and the API key's absence."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Iterator
from typing import Any

import groq
import openai
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests.support.fake_llm import GROQ_CHAT, OPENAI_CHAT, FakeLLM, error, rate_limited, reply

import buttress
from buttress import _stats, telemetry
from buttress.integrations._llm import register_client, set_fallbacks
from buttress.telemetry import semconv
from buttress.testing import capture_events

from .conftest import CANARY_KEY, DRIVERS

pytestmark = pytest.mark.filterwarnings(
    # google-genai's async client subclasses aiohttp.ClientSession, which aiohttp warns about.
    "ignore:Inheritance class AiohttpClientSession:DeprecationWarning"
)

PRIMARY = "groq/llama-3.3-70b-versatile"
FALLBACK = "openai/gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Say hello"}]


class Telemetry:
    """buttress's metrics and spans, in memory."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.meters = MeterProvider(metric_readers=[self.reader])
        self.spans = InMemorySpanExporter()
        self.tracers = TracerProvider()
        self.tracers.add_span_processor(SimpleSpanProcessor(self.spans))

    def calls(self, target: str) -> dict[str, int]:
        """``buttress.calls`` of *target* by outcome (non-zero ones only)."""
        found: dict[str, int] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != "buttress.calls":
                        continue
                    for point in metric.data.data_points:
                        attributes = dict(point.attributes or {})
                        if attributes.get(semconv.ATTR_TARGET) == target and point.value:
                            found[str(attributes[semconv.ATTR_OUTCOME])] = int(point.value)
        return found

    def everything(self) -> str:
        """Every metric point's attributes and every span's name, attributes and events, as text."""
        parts: list[str] = []
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    parts += [repr(dict(p.attributes or {})) for p in metric.data.data_points]
        for span in self.spans.get_finished_spans():
            parts.append(f"{span.name} {dict(span.attributes or {})!r}")
            parts += [f"{e.name} {dict(e.attributes or {})!r}" for e in span.events]
        return "\n".join(parts)


@pytest.fixture
def otel(activated) -> Iterator[Telemetry]:
    """buttress publishing into in-memory metrics and spans (after activation)."""
    # Earlier tests' pipelines, not yet collected, must not count here.
    gc.collect()
    for stats in list(_stats.LIVE):
        _stats.LIVE.discard(stats)
    _stats.RETIRED.clear()
    sink = Telemetry()
    telemetry.instrument(meter_provider=sink.meters, tracer_provider=sink.tracers)
    yield sink
    telemetry.uninstrument()
    sink.meters.shutdown()
    sink.tracers.shutdown()


@pytest.fixture
def fallback_client() -> Iterator[Any]:
    """A factory of sync OpenAI clients for fallbacks, closed after the test."""
    made: list[openai.OpenAI] = []

    def make(server: FakeLLM) -> openai.OpenAI:
        made.append(openai.OpenAI(api_key=CANARY_KEY, base_url=server.openai_url))
        return made[-1]

    yield make
    for client in made:
        client.close()


def groq_call(server: FakeLLM, **kwargs: Any) -> Any:
    """One groq chat completion, as an unmodified application makes it."""
    with groq.Groq(api_key=CANARY_KEY, base_url=server.url) as client:
        return client.chat.completions.create(
            model="llama-3.3-70b-versatile", messages=MESSAGES, **kwargs
        )


def test_fallback_serves_when_the_primary_keeps_failing(otel: Telemetry, fake_llm, fallback_client):
    """groq answers 503 every time: openai serves, and the metrics and spans say so."""
    register_client("openai", fallback_client(fake_llm))
    set_fallbacks({PRIMARY: [FALLBACK]})
    fake_llm.script(GROQ_CHAT, error(503))

    with otel.tracers.get_tracer("app").start_as_current_span("handler"):
        result = groq_call(fake_llm)

    assert ("gpt-4o-mini", "Hello there") == (result.model, result.choices[0].message.content)
    assert (3, 1) == (fake_llm.count(GROQ_CHAT), fake_llm.count(OPENAI_CHAT))
    assert {"fallback": 1} == otel.calls(PRIMARY)
    assert {"success": 1} == otel.calls(FALLBACK)
    [handler] = [s for s in otel.spans.get_finished_spans() if s.name == "handler"]
    events = {e.name: dict(e.attributes or {}) for e in handler.events}
    assert PRIMARY == events["buttress.fallback"]["buttress.target"]
    assert FALLBACK == events["buttress.llm.fallback"]["buttress.fallback.served_by"]


def test_async_fallback_streams_from_the_fallback(otel: Telemetry, fake_llm):
    """An async groq stream whose every attempt gets 503 is served as a stream by openai."""
    set_fallbacks({PRIMARY: [FALLBACK]})
    fake_llm.script(GROQ_CHAT, error(503))

    async def go() -> list[str]:
        async with (
            openai.AsyncOpenAI(api_key=CANARY_KEY, base_url=fake_llm.openai_url) as fallback,
            groq.AsyncGroq(api_key=CANARY_KEY, base_url=fake_llm.url) as client,
        ):
            register_client("openai", fallback)
            chunks = await client.chat.completions.create(
                model="llama-3.3-70b-versatile", messages=MESSAGES, stream=True
            )
            return [c.choices[0].delta.content or "" async for c in chunks]

    assert ["Hello", " there"] == asyncio.run(go())
    assert {"fallback": 1} == otel.calls(PRIMARY)
    assert {"success": 1} == otel.calls(FALLBACK)


def test_bad_request_does_not_fall_back(otel: Telemetry, fake_llm, fallback_client):
    """A 400 would fail on the fallback too: the caller gets it, and openai is never asked."""
    register_client("openai", fallback_client(fake_llm))
    set_fallbacks({PRIMARY: [FALLBACK]})
    fake_llm.script(GROQ_CHAT, error(400))

    with pytest.raises(groq.BadRequestError):
        groq_call(fake_llm)

    assert (1, 0) == (fake_llm.count(GROQ_CHAT), fake_llm.count(OPENAI_CHAT))
    assert {"failure": 1} == otel.calls(PRIMARY)


def test_failed_chain_raises_the_primary_error(otel: Telemetry, fake_llm, fallback_client):
    """When the fallback fails too, the caller gets groq's own error and groq counts a failure."""
    register_client("openai", fallback_client(fake_llm))
    set_fallbacks({PRIMARY: [FALLBACK]})
    fake_llm.script(GROQ_CHAT, error(503))
    fake_llm.script(OPENAI_CHAT, error(500))

    with pytest.raises(groq.InternalServerError):
        groq_call(fake_llm)

    assert (3, 3) == (fake_llm.count(GROQ_CHAT), fake_llm.count(OPENAI_CHAT))
    assert {"failure": 1} == otel.calls(PRIMARY)
    assert {"failure": 1} == otel.calls(FALLBACK)


def test_canary_key_appears_nowhere(otel: Telemetry, fake_llm, fallback_client, caplog):
    """The API key is in no target, event, metric label, span attribute or buttress log record."""
    caplog.set_level(logging.DEBUG, logger="buttress")
    register_client("openai", fallback_client(fake_llm))
    set_fallbacks({PRIMARY: [FALLBACK]})
    with capture_events() as events, otel.tracers.get_tracer("app").start_as_current_span("h"):
        for driver in DRIVERS.values():
            sdk = driver()
            fake_llm.script(sdk.path(), rate_limited(retry_after_ms=1), reply(), error(400))
            sdk.complete(fake_llm)
            with pytest.raises(sdk.bad_request):
                sdk.complete(fake_llm)
        fake_llm.script(GROQ_CHAT, error(503))
        fake_llm.script(OPENAI_CHAT, reply())
        groq_call(fake_llm)

    seen = "\n".join(
        [
            *buttress.targets(),
            *(repr(e) for e in events),
            otel.everything(),
            *(f"{r.getMessage()} {r.args!r}" for r in caplog.records),
        ]
    )
    assert [] != events
    assert "sk-canary" not in seen
    assert "canary" not in " ".join(buttress.targets())


def test_fallback_chain_from_the_configuration_file_needs_no_code(
    activate, fake_llm, fallback_client
):
    """llm.fallbacks in a target table, and the app's own openai client serves the fallback."""
    activate(f'[targets."{PRIMARY}"]\nllm.fallbacks = ["{FALLBACK}"]')
    gc.collect()  # earlier tests' pipelines must not count here (as the otel fixture does)
    for stats in list(_stats.LIVE):
        _stats.LIVE.discard(stats)
    _stats.RETIRED.clear()
    telemetry_sink = Telemetry()
    telemetry.instrument(
        meter_provider=telemetry_sink.meters, tracer_provider=telemetry_sink.tracers
    )
    fallback_client(fake_llm)  # the app builds its openai client; nothing registers it
    fake_llm.script(GROQ_CHAT, error(503))
    try:
        result = groq_call(fake_llm)
    finally:
        telemetry.uninstrument()

    assert ("gpt-4o-mini", "Hello there") == (result.model, result.choices[0].message.content)
    assert (3, 1) == (fake_llm.count(GROQ_CHAT), fake_llm.count(OPENAI_CHAT))
    assert {"fallback": 1} == telemetry_sink.calls(PRIMARY)


def test_a_malformed_fallback_chain_is_refused_naming_the_key(activate):
    """llm.fallbacks must list provider/model targets; the message names the key and the value."""
    with pytest.raises(buttress.ConfigurationError, match=r"llm\.fallbacks.*provider/model"):
        activate(f'[targets."{PRIMARY}"]\nllm.fallbacks = ["gpt-4o-mini"]')


def test_tokens_per_minute_budget_refuses_the_next_call_through_the_real_sdk(activate, fake_llm):
    """A 5-token answer exhausts a 6-token-per-minute budget: the next call never reaches openai."""
    activate('[targets."openai/gpt-4o-mini".llm]\ntokens_per_minute = 6\n')
    with openai.OpenAI(api_key=CANARY_KEY, base_url=fake_llm.openai_url) as client:
        first = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        with pytest.raises(openai.APIConnectionError) as info:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert (5, 1) == (first.usage.total_tokens, fake_llm.count(OPENAI_CHAT))  # type: ignore[union-attr]
    assert isinstance(info.value, buttress.RateLimitedError)
