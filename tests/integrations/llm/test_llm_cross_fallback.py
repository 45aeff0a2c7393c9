"""Fallback across SDKs: groq -> Gemini and openai -> Anthropic, translated both ways."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import groq
import openai
import pytest
from google import genai
from tests.support.fake_llm import (
    ANTHROPIC_MESSAGES,
    GROQ_CHAT,
    OPENAI_CHAT,
    FakeLLM,
    error,
    gemini_path,
)

from buttress import _stats, telemetry
from buttress.integrations import _llm_translate as translate
from buttress.integrations._llm import register_client

from .conftest import CANARY_KEY
from .test_llm_fallback_and_secrets import Telemetry

pytestmark = pytest.mark.filterwarnings(
    # google-genai's async client subclasses aiohttp.ClientSession, which aiohttp warns about.
    "ignore:Inheritance class AiohttpClientSession:DeprecationWarning"
)

GROQ = "groq/llama-3.3-70b-versatile"
GEMINI = "google/gemini-2.0-flash"
OPENAI = "openai/gpt-4o-mini"
CLAUDE = "anthropic/claude-3-5-haiku-latest"
GEMINI_PATH = gemini_path("gemini-2.0-flash")
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Say hello"},
]


@pytest.fixture
def chain(activate: Callable[[str], None]) -> Iterator[Callable[[str, str], Telemetry]]:
    """A factory: ``chain(primary, fallback)`` activates with that chain in the file; the sink."""
    sinks: list[Telemetry] = []

    def on(primary: str, fallback: str) -> Telemetry:
        activate(f'[targets."{primary}"]\nllm.fallbacks = ["{fallback}"]')
        gc.collect()  # earlier tests' pipelines must not count here
        for stats in list(_stats.LIVE):
            _stats.LIVE.discard(stats)
        _stats.RETIRED.clear()
        sinks.append(Telemetry())
        telemetry.instrument(meter_provider=sinks[-1].meters, tracer_provider=sinks[-1].tracers)
        return sinks[-1]

    yield on
    if sinks:
        telemetry.uninstrument()
        for sink in sinks:
            sink.meters.shutdown()
            sink.tracers.shutdown()


def gemini_client(server: FakeLLM) -> genai.Client:
    """The application's own google-genai client, pointed at the fake server."""
    return genai.Client(api_key=CANARY_KEY, http_options={"base_url": server.url})


def sent(server: FakeLLM, path: str) -> list[dict[str, Any]]:
    """The JSON bodies the fake server received on *path*."""
    return [json.loads(r.body) for r in server.requests if r.path == path]


def fallback_events(sink: Telemetry) -> dict[str, dict[str, Any]]:
    """The span events of the test's ``handler`` span, by name."""
    [handler] = [s for s in sink.spans.get_finished_spans() if s.name == "handler"]
    return {e.name: dict(e.attributes or {}) for e in handler.events}


# --- groq -> Gemini --------------------------------------------------------------------------


def assert_translated_completion(result: Any, model: str) -> None:
    """The fallback's reply, in the caller's ChatCompletion shape: model, text, reason, usage."""
    assert (model, "Hello there", "stop") == (
        result.model,
        result.choices[0].message.content,
        result.choices[0].finish_reason,
    )
    assert (3, 2, 5) == (
        result.usage.prompt_tokens,
        result.usage.completion_tokens,
        result.usage.total_tokens,
    )


def test_groq_falls_back_to_gemini(chain, fake_llm):
    """groq keeps answering 503: the app's genai.Client serves, as a groq ChatCompletion."""
    sink = chain(GROQ, GEMINI)
    fake_llm.script(GROQ_CHAT, error(503))
    with (
        gemini_client(fake_llm),
        groq.Groq(api_key=CANARY_KEY, base_url=fake_llm.url) as client,
        sink.tracers.get_tracer("app").start_as_current_span("handler"),
    ):
        result = client.chat.completions.create(
            model="llama-3.3-70b-versatile", messages=MESSAGES, temperature=0.2, max_tokens=50
        )

    assert groq.types.chat.ChatCompletion is type(result)
    assert_translated_completion(result, "gemini-2.0-flash")
    assert (3, 1) == (fake_llm.count(GROQ_CHAT), fake_llm.count(GEMINI_PATH))
    assert {"fallback": 1} == sink.calls(GROQ)
    assert {"success": 1} == sink.calls(GEMINI)
    events = fallback_events(sink)
    assert GROQ == events["buttress.fallback"]["buttress.target"]
    assert GEMINI == events["buttress.llm.fallback"]["buttress.fallback.served_by"]
    [body] = sent(fake_llm, GEMINI_PATH)
    assert {"parts": [{"text": "Be brief."}], "role": "user"} == body["systemInstruction"]
    assert [{"role": "user", "parts": [{"text": "Say hello"}]}] == body["contents"]
    assert {"temperature": 0.2, "maxOutputTokens": 50} == body["generationConfig"]


def test_async_groq_falls_back_to_gemini(chain, fake_llm):
    """The same with AsyncGroq: the app's genai.Client serves through client.aio."""
    sink = chain(GROQ, GEMINI)
    fake_llm.script(GROQ_CHAT, error(503))

    async def go() -> Any:
        gemini = gemini_client(fake_llm)
        try:
            async with groq.AsyncGroq(api_key=CANARY_KEY, base_url=fake_llm.url) as client:
                return await client.chat.completions.create(
                    model="llama-3.3-70b-versatile", messages=MESSAGES
                )
        finally:
            await gemini.aio.aclose()

    result = asyncio.run(go())

    assert groq.types.chat.ChatCompletion is type(result)
    assert ("gemini-2.0-flash", "Hello there") == (
        result.model,
        result.choices[0].message.content,
    )
    assert (3, 1) == (fake_llm.count(GROQ_CHAT), fake_llm.count(GEMINI_PATH))
    assert {"fallback": 1} == sink.calls(GROQ)
    assert {"success": 1} == sink.calls(GEMINI)


def test_groq_stream_falls_back_to_a_gemini_stream(chain, fake_llm):
    """A groq stream is served by Gemini's stream, as groq chunks in groq's own Stream."""
    sink = chain(GROQ, GEMINI)
    fake_llm.script(GROQ_CHAT, error(503))
    with (
        gemini_client(fake_llm),
        groq.Groq(api_key=CANARY_KEY, base_url=fake_llm.url) as client,
    ):
        with client.chat.completions.create(
            model="llama-3.3-70b-versatile",
            messages=MESSAGES,
            stream=True,
        ) as chunks:
            assert isinstance(chunks, groq.Stream)
            seen = list(chunks)

    assert [("Hello", None), (" there", "stop")] == [
        (c.choices[0].delta.content, c.choices[0].finish_reason) for c in seen
    ]
    assert {"gemini-2.0-flash"} == {c.model for c in seen}
    assert groq.types.chat.ChatCompletionChunk is type(seen[0])
    stream_path = gemini_path("gemini-2.0-flash", stream=True)
    assert (3, 1) == (fake_llm.count(GROQ_CHAT), fake_llm.count(stream_path))
    assert {"fallback": 1} == sink.calls(GROQ)
    assert {"success": 1} == sink.calls(GEMINI)


def test_async_groq_stream_falls_back_to_a_gemini_stream(chain, fake_llm):
    """An AsyncGroq stream is served by Gemini's async stream, in groq's AsyncStream."""
    sink = chain(GROQ, GEMINI)
    fake_llm.script(GROQ_CHAT, error(503))

    async def go() -> list[str]:
        gemini = gemini_client(fake_llm)
        try:
            async with groq.AsyncGroq(api_key=CANARY_KEY, base_url=fake_llm.url) as client:
                chunks = await client.chat.completions.create(
                    model="llama-3.3-70b-versatile", messages=MESSAGES, stream=True
                )
                assert isinstance(chunks, groq.AsyncStream)
                return [c.choices[0].delta.content or "" async for c in chunks]
        finally:
            await gemini.aio.aclose()

    assert ["Hello", " there"] == asyncio.run(go())
    assert {"fallback": 1} == sink.calls(GROQ)
    assert {"success": 1} == sink.calls(GEMINI)


def test_tools_do_not_fall_back_across_sdks(chain, fake_llm):
    """A request with tools cannot be translated: the caller gets groq's error, Gemini is not asked."""
    sink = chain(GROQ, GEMINI)
    fake_llm.script(GROQ_CHAT, error(503))
    tools = [
        {
            "type": "function",
            "function": {"name": "now", "parameters": {"type": "object", "properties": {}}},
        }
    ]
    with (
        gemini_client(fake_llm),
        groq.Groq(api_key=CANARY_KEY, base_url=fake_llm.url) as client,
        pytest.raises(groq.InternalServerError),
    ):
        client.chat.completions.create(
            model="llama-3.3-70b-versatile", messages=MESSAGES, tools=tools
        )

    assert (3, 0) == (fake_llm.count(GROQ_CHAT), fake_llm.count(GEMINI_PATH))
    assert {"failure": 1} == sink.calls(GROQ)


def test_a_failing_gemini_fallback_raises_the_groq_error(chain, fake_llm):
    """When Gemini fails too, the caller gets groq's own error and each target its failure."""
    sink = chain(GROQ, GEMINI)
    fake_llm.script(GROQ_CHAT, error(503))
    fake_llm.script(GEMINI_PATH, error(500))
    with (
        gemini_client(fake_llm),
        groq.Groq(api_key=CANARY_KEY, base_url=fake_llm.url) as client,
        pytest.raises(groq.InternalServerError),
    ):
        client.chat.completions.create(model="llama-3.3-70b-versatile", messages=MESSAGES)

    assert (3, 3) == (fake_llm.count(GROQ_CHAT), fake_llm.count(GEMINI_PATH))
    assert {"failure": 1} == sink.calls(GROQ)
    assert {"failure": 1} == sink.calls(GEMINI)


# --- openai -> Anthropic ---------------------------------------------------------------------


def test_openai_falls_back_to_anthropic(chain, fake_llm):
    """openai keeps answering 503: the app's Anthropic client serves, as an openai ChatCompletion."""
    sink = chain(OPENAI, CLAUDE)
    fake_llm.script(OPENAI_CHAT, error(503))
    with (
        anthropic.Anthropic(api_key=CANARY_KEY, base_url=fake_llm.url),
        openai.OpenAI(api_key=CANARY_KEY, base_url=fake_llm.openai_url) as client,
        sink.tracers.get_tracer("app").start_as_current_span("handler"),
    ):
        result = client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stop=["\n\n"]
        )

    assert openai.types.chat.ChatCompletion is type(result)
    assert_translated_completion(result, "claude-3-5-haiku-latest")
    assert (3, 1) == (fake_llm.count(OPENAI_CHAT), fake_llm.count(ANTHROPIC_MESSAGES))
    assert {"fallback": 1} == sink.calls(OPENAI)
    assert {"success": 1} == sink.calls(CLAUDE)
    assert CLAUDE == fallback_events(sink)["buttress.llm.fallback"]["buttress.fallback.served_by"]
    [body] = sent(fake_llm, ANTHROPIC_MESSAGES)
    assert {
        "model": "claude-3-5-haiku-latest",
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Say hello"}],
        "max_tokens": 1024,
        "stop_sequences": ["\n\n"],
    } == body


def test_async_openai_stream_falls_back_to_an_anthropic_stream(chain, fake_llm):
    """An AsyncOpenAI stream is served by AsyncAnthropic's event stream, as openai chunks."""
    sink = chain(OPENAI, CLAUDE)
    fake_llm.script(OPENAI_CHAT, error(503))

    async def go() -> list[Any]:
        async with (
            anthropic.AsyncAnthropic(api_key=CANARY_KEY, base_url=fake_llm.url) as fallback,
            openai.AsyncOpenAI(api_key=CANARY_KEY, base_url=fake_llm.openai_url) as client,
        ):
            register_client("anthropic", fallback)
            chunks = await client.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
            assert isinstance(chunks, openai.AsyncStream)
            return [c async for c in chunks]

    seen = asyncio.run(go())

    assert [("", None), ("Hello", None), (" there", None), (None, "stop")] == [
        (c.choices[0].delta.content, c.choices[0].finish_reason) for c in seen[:-1]
    ]
    assert ([], 5) == (seen[-1].choices, seen[-1].usage.total_tokens)
    assert (3, 1) == (fake_llm.count(OPENAI_CHAT), fake_llm.count(ANTHROPIC_MESSAGES))
    assert {"fallback": 1} == sink.calls(OPENAI)
    assert {"success": 1} == sink.calls(CLAUDE)


# --- the translation itself ------------------------------------------------------------------


def test_gemini_request_keeps_system_turns_and_parameters():
    """System text, alternating roles, text parts and the sampling parameters reach Gemini."""
    body = {
        "model": "gemini-2.0-flash",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "No emojis."}]},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!", "refusal": None},
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
        ],
        "temperature": 0.5,
        "top_p": 0.9,
        "max_completion_tokens": 64,
        "stop": "END",
        "seed": 7,
        "stream": True,
        "n": 1,
    }

    assert {
        "model": "gemini-2.0-flash",
        "contents": [
            {"role": "user", "parts": [{"text": "Hi"}]},
            {"role": "model", "parts": [{"text": "Hello!"}]},
            {"role": "user", "parts": [{"text": "a"}, {"text": "b"}]},
        ],
        "config": {
            "system_instruction": "Be brief.\n\nNo emojis.",
            "temperature": 0.5,
            "top_p": 0.9,
            "seed": 7,
            "max_output_tokens": 64,
            "stop_sequences": ["END"],
        },
    } == translate.to_gemini(body)


def test_anthropic_request_needs_max_tokens_and_keeps_the_rest():
    """Anthropic gets a default max_tokens, the system prompt, stop sequences and the user id."""
    body = {
        "model": "claude-3-5-haiku-latest",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Again"},
        ],
        "temperature": 0.7,
        "stop": ["x", "y"],
        "user": "u-1",
    }

    assert {
        "model": "claude-3-5-haiku-latest",
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Again"},
        ],
        "max_tokens": 1024,
        "system": "Be brief.",
        "temperature": 0.7,
        "stop_sequences": ["x", "y"],
        "metadata": {"user_id": "u-1"},
    } == translate.to_anthropic(body)
    assert 99 == translate.to_anthropic({**body, "max_tokens": 99})["max_tokens"]


@pytest.mark.parametrize(
    ("change", "provider"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "google"),
        ({"tool_choice": "auto"}, "anthropic"),
        ({"response_format": {"type": "json_object"}}, "google"),
        ({"logprobs": True}, "google"),
        ({"n": 2}, "google"),
        ({"seed": 1}, "anthropic"),
        ({"temperature": 1.5}, "anthropic"),
        ({"stream_options": {"include_obfuscation": True}}, "google"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:,"}}],
                    }
                ]
            },
            "google",
        ),
        ({"messages": [{"role": "tool", "content": "42", "tool_call_id": "c"}]}, "anthropic"),
        ({"messages": [{"role": "user", "content": "Hi", "name": "ann"}]}, "google"),
        (
            {"messages": [{"role": "user", "content": "Hi"}, {"role": "system", "content": "x"}]},
            "google",
        ),
        ({"messages": []}, "anthropic"),
    ],
)
def test_what_cannot_be_translated_faithfully_is_refused(change, provider):
    """Tools, formats, logprobs, n > 1, images, tool turns, names and late system text are refused."""
    body = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], **change}

    with pytest.raises(translate.UntranslatableError):
        translate.check(body, provider)


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter")],
)
def test_gemini_answer_becomes_a_chat_completion(reason, expected):
    """Gemini's text, finish reason and usage (thinking counted as completion) come back."""
    response = {
        "response_id": "r1",
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [{"text": "hm", "thought": True}, {"text": "Hel"}, {"text": "lo"}],
                },
                "finish_reason": reason,
            }
        ],
        "usage_metadata": {
            "prompt_token_count": 4,
            "candidates_token_count": 2,
            "thoughts_token_count": 3,
            "total_token_count": 9,
        },
    }

    assert {
        "id": "r1",
        "object": "chat.completion",
        "created": 1700,
        "model": "gemini-2.0-flash",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello"},
                "finish_reason": expected,
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": 4,
            "completion_tokens": 5,
            "total_tokens": 9,
            "completion_tokens_details": {"reasoning_tokens": 3},
        },
    } == translate.from_gemini(response, model="gemini-2.0-flash", created=1700, chat_id="x")


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length")],
)
def test_anthropic_answer_becomes_a_chat_completion(reason, expected):
    """Anthropic's text blocks, stop reason and usage (cache reads as cached prompt) come back."""
    message = {
        "id": "msg_1",
        "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}],
        "stop_reason": reason,
        "usage": {"input_tokens": 3, "cache_read_input_tokens": 4, "output_tokens": 2},
    }

    completion = translate.from_anthropic(message, model="claude", created=1700)

    assert ("msg_1", "claude", "Hello", expected) == (
        completion["id"],
        completion["model"],
        completion["choices"][0]["message"]["content"],
        completion["choices"][0]["finish_reason"],
    )
    assert {
        "prompt_tokens": 7,
        "completion_tokens": 2,
        "total_tokens": 9,
        "prompt_tokens_details": {"cached_tokens": 4},
    } == completion["usage"]


def test_an_answer_that_is_not_text_is_refused():
    """A function call from Gemini or a tool_use block from Anthropic does not translate back."""
    call = {"candidates": [{"content": {"parts": [{"function_call": {"name": "f"}}]}}]}

    with pytest.raises(translate.UntranslatableError):
        translate.from_gemini(call, model="m", created=0, chat_id="x")
    with pytest.raises(translate.UntranslatableError):
        translate.from_anthropic(
            {"content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
            model="m",
            created=0,
        )


def test_gemini_stream_chunks_carry_role_text_finish_and_usage():
    """The first chunk names the assistant, the last one the finish, then the usage chunk."""
    maker = translate.GeminiStream(chat_id="c", created=1, model="g", include_usage=True)
    first = {"candidates": [{"content": {"parts": [{"text": "Hel"}]}}]}
    last = {
        "candidates": [{"content": {"parts": [{"text": "lo"}]}, "finish_reason": "STOP"}],
        "usage_metadata": {"prompt_token_count": 1, "candidates_token_count": 2},
    }

    chunks = [*maker.feed(first), *maker.feed(last), *maker.end()]

    assert [
        ({"role": "assistant", "content": "Hel"}, None),
        ({"content": "lo"}, "stop"),
    ] == [(c["choices"][0]["delta"], c["choices"][0]["finish_reason"]) for c in chunks[:2]]
    assert ([], {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}) == (
        chunks[2]["choices"],
        chunks[2]["usage"],
    )
