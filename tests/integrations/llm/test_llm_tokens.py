"""Tokens per minute for LLM targets: the budget, usage of each SDK's response, configuration."""

# ruff: noqa: SIM300 - house style asserts `expected == actual` (R15)

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import anthropic
import groq.types.chat
import openai
import pytest
from google.genai import types as genai_types

from buttress import _activation
from buttress._config_file import parse_config
from buttress._context import PolicyContext
from buttress._exceptions import ConfigurationError, RateLimitedError
from buttress._pipeline import Pipeline
from buttress._settings import llm_tokens_for, load_settings
from buttress.integrations import _llm, _llm_tokens
from buttress.integrations._llm_tokens import (
    TokenBudget,
    after_response,
    before_call,
    budget_for,
    usage_tokens,
)
from buttress.policies._timeout import publish_deadline, restore
from buttress.telemetry._events import CallRejected, Event, RateLimitWaited
from buttress.testing import FakeClock, capture_events

TARGET = "openai/gpt-4o-mini"
DOCS = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"


@pytest.fixture(autouse=True)
def _fresh_budgets() -> Iterator[None]:
    _llm_tokens.clear_budgets()
    yield
    _llm_tokens.clear_budgets()


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """``configure(toml)``: make *toml* the active settings file (no activation, no patching)."""

    def apply(text: str) -> None:
        import tomllib  # noqa: PLC0415

        file = parse_config(tomllib.loads(text), "buttress.toml")
        settings = dataclasses.replace(load_settings({}), file=file)
        monkeypatch.setattr(_activation, "_settings", settings)
        _activation._llm_tokens.clear()

    yield apply
    _activation._llm_tokens.clear()


def budget(clock: FakeClock, events: list[Event], tpm: float = 600.0, **kw: Any) -> TokenBudget:
    ctx = PolicyContext(target=TARGET, kind="llm", clock=clock, emit=events.append)
    return TokenBudget(tpm, ctx, **kw)


def pipeline(clock: FakeClock, **kw: Any) -> Pipeline:
    return Pipeline(TARGET, kind="llm", clock=clock, **kw)


# --- the budget -------------------------------------------------------------------------------


def test_budget_is_a_minute_of_tokens_refilled_per_second():
    """tpm=600: a bucket of 600 tokens, 10 tokens back per second."""
    clock = FakeClock()
    b = budget(clock, [])

    assert (600.0, 0.0) == (b.tokens_per_minute, b.max_wait)
    assert 600.0 == b.available
    b.debit(300)
    clock.advance(10)
    assert 400.0 == pytest.approx(b.available)
    clock.advance(3600)
    assert 600.0 == pytest.approx(b.available)  # never more than a minute's worth
    assert "<TokenBudget target='openai/gpt-4o-mini' tokens=600/600 per minute" in repr(b)


def test_debt_then_wait_then_refill():
    """Usage beyond the balance puts the bucket in debt; the next call waits until it is paid."""
    events: list[Event] = []
    clock = FakeClock()
    b = budget(clock, events, max_wait=60.0)

    assert 0.0 == b.admit(clock.monotonic())  # 599 left
    b.debit(1000)  # -401
    assert -401.0 == pytest.approx(b.available)
    wait = b.admit(clock.monotonic())  # needs -401 - 1 >= 0 back: 402 tokens at 10/s

    assert 40.2 == pytest.approx(wait)
    assert [RateLimitWaited(target=TARGET, kind="llm", wait=wait)] == events
    clock.advance(wait)
    assert 0.0 == pytest.approx(b.available)
    clock.advance(30)
    assert 0.0 == b.admit(clock.monotonic())


def test_rejection_past_max_wait():
    """A wait longer than max_wait raises RateLimitedError, emits CallRejected, takes nothing."""
    events: list[Event] = []
    clock = FakeClock()
    b = budget(clock, events, max_wait=5.0)
    b.debit(700)  # -100: admission in (100 + 1) / 10 = 10.1s

    with pytest.raises(RateLimitedError) as info:
        b.admit(clock.monotonic())

    assert ("rate_limited", TARGET) == (info.value.reason, info.value.target)
    assert 10.1 == pytest.approx(info.value.retry_after)
    assert (
        "buttress: token budget for target 'openai/gpt-4o-mini' exhausted: admission in 10.1s"
        in str(info.value)
    )
    assert "tokens_max_wait=5s" in str(info.value)
    assert "tokens_per_minute=600" in str(info.value)
    assert [CallRejected(target=TARGET, kind="llm", reason="rate_limited")] == events
    assert -100.0 == pytest.approx(b.available)
    clock.advance(5.1)  # now 5s away: allowed
    assert 5.0 == pytest.approx(b.admit(clock.monotonic()))


def test_deadline_bounds_the_wait():
    """The call's deadline bounds the wait as max_wait does."""
    clock = FakeClock()
    b = budget(clock, [], max_wait=math.inf)
    b.debit(700)
    now = clock.monotonic()

    with pytest.raises(RateLimitedError):
        b.admit(now, now + 10.0)
    assert 10.1 == pytest.approx(b.admit(now, now + 10.2))


def test_observe_mode_never_waits_but_keeps_books():
    events: list[Event] = []
    clock = FakeClock()
    ctx = PolicyContext(target=TARGET, kind="llm", clock=clock, emit=events.append, observe=True)
    b = TokenBudget(600, ctx)
    b.debit(700)

    assert 0.0 == b.admit(clock.monotonic())
    assert [CallRejected(target=TARGET, kind="llm", reason="rate_limited", observed=True)] == events


@pytest.mark.parametrize("tpm", [0, -1, math.inf, math.nan, True, "600", None])
def test_budget_rejects_bad_tokens_per_minute(tpm):
    with pytest.raises(ConfigurationError, match="TokenBudget: tokens_per_minute="):
        budget(FakeClock(), [], tpm)


def test_small_budgets_hold_one_token():
    clock = FakeClock()
    b = budget(clock, [], 0.5)

    assert 1.0 == b.available
    assert 0.0 == b.admit(clock.monotonic())


# --- before_call / after_response -------------------------------------------------------------


def test_without_a_budget_nothing_waits_and_usage_is_still_reported(configure):
    configure("")
    p = pipeline(FakeClock())

    assert 0.0 == before_call(TARGET, p)
    assert budget_for(TARGET) is None
    assert 5 == after_response(TARGET, SimpleNamespace(usage=SimpleNamespace(total_tokens=5)))


def test_before_call_waits_after_a_large_response(configure):
    """The configured budget, bound to the pipeline's context: its clock, target and kind."""
    configure('[targets."openai/*".llm]\ntokens_per_minute = 600\ntokens_max_wait = 60\n')
    clock = FakeClock()
    p = pipeline(clock)

    with capture_events() as events:
        assert 0.0 == before_call(TARGET, p)
        assert 1000 == after_response(TARGET, {"usage": {"total_tokens": 1000}})
        delay = before_call(TARGET, p)

    assert 40.2 == pytest.approx(delay)
    assert [RateLimitWaited(target=TARGET, kind="llm", wait=delay)] == [
        e for e in events if isinstance(e, RateLimitWaited)
    ]
    b = budget_for(TARGET)
    assert b is not None
    assert b.context is p.context
    # The integrator sleeps the delay on the pipeline's clock.
    p.context.clock.sleep(delay)
    assert [pytest.approx(40.2)] == clock.sleeps


def test_before_call_async_sleep_on_the_pipeline_clock(configure):
    configure('[targets."openai/gpt-4o-mini".llm]\ntokens_per_minute = 600\ntokens_max_wait = 60')
    clock = FakeClock()
    p = pipeline(clock)
    after_response(TARGET, None)  # no budget yet: nothing to debit, no error

    async def call() -> float:
        before_call(TARGET, p)
        after_response(TARGET, {"usage": {"total_tokens": 699}})  # -100
        delay = before_call(TARGET, p)
        if delay > 0.0:
            await p.context.clock.asleep(delay)
        return delay

    assert 10.1 == pytest.approx(asyncio.run(call()))
    assert [pytest.approx(10.1)] == clock.sleeps


def test_before_call_rejects_and_counts_a_rejected_call(configure):
    configure("[defaults.llm]\nllm.tokens_per_minute = 600\n")  # tokens_max_wait defaults to 0
    clock = FakeClock()
    p = pipeline(clock)
    before_call(TARGET, p)
    after_response(TARGET, {"usage": {"total_tokens": 600}})

    with capture_events() as events, pytest.raises(RateLimitedError) as info:
        before_call(TARGET, p)

    assert 0.2 == pytest.approx(info.value.retry_after)
    assert [CallRejected(target=TARGET, kind="llm", reason="rate_limited")] == [
        e for e in events if isinstance(e, CallRejected)
    ]
    assert 1 == p.stats.by_outcome()["rejected"]


def test_before_call_respects_the_published_deadline(configure):
    configure("[defaults.llm]\nllm.tokens_per_minute = 600\nllm.tokens_max_wait = 60\n")
    clock = FakeClock()
    p = pipeline(clock)
    before_call(TARGET, p)
    after_response(TARGET, {"usage": {"total_tokens": 699}})  # admission in 10.1s

    token = publish_deadline(clock.monotonic() + 5.0, clock)
    try:
        with pytest.raises(RateLimitedError):
            before_call(TARGET, p)
    finally:
        restore(token)
    assert 10.1 == pytest.approx(before_call(TARGET, p))


def test_a_new_pipeline_or_configuration_starts_a_new_budget(configure):
    configure("[defaults.llm]\nllm.tokens_per_minute = 600\n")
    clock = FakeClock()
    first = pipeline(clock)
    before_call(TARGET, first)
    b = budget_for(TARGET)

    before_call(TARGET, first)
    assert b is budget_for(TARGET)
    before_call(TARGET, pipeline(clock))
    assert b is not budget_for(TARGET)
    configure("")
    before_call(TARGET, first)
    assert budget_for(TARGET) is None


def test_after_response_never_raises():
    class Hostile:
        @property
        def usage(self) -> Any:
            raise RuntimeError("boom")

    assert after_response(TARGET, Hostile()) is None
    assert after_response(TARGET, mock.MagicMock()) is None


# --- usage of each SDK's response -------------------------------------------------------------

OPENAI_CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": "Hello"},
            "logprobs": None,
        }
    ],
    "usage": {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42},
}


def test_usage_of_openai_chat_completion():
    response = openai.types.chat.ChatCompletion.model_validate(OPENAI_CHAT)

    assert 42 == usage_tokens(response)


def test_usage_of_groq_chat_completion():
    response = groq.types.chat.ChatCompletion.model_validate(
        {**OPENAI_CHAT, "model": "llama-3.3-70b-versatile"}
    )

    assert 42 == usage_tokens(response)


def test_usage_of_openai_responses_api():
    # model_construct: the Responses schema changes often, its usage field names do not.
    usage = openai.types.responses.ResponseUsage.model_construct(
        input_tokens=30, output_tokens=12, total_tokens=42
    )
    response = openai.types.responses.Response.model_construct(id="resp_1", usage=usage)

    assert 42 == usage_tokens(response)


def anthropic_message(usage: dict[str, Any]) -> anthropic.types.Message:
    return anthropic.types.Message.model_validate(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-3-5-haiku-latest",
            "content": [{"type": "text", "text": "Hello"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": usage,
        }
    )


def test_usage_of_anthropic_message():
    assert 42 == usage_tokens(anthropic_message({"input_tokens": 30, "output_tokens": 12}))


def test_usage_of_anthropic_message_counts_cache_writes_not_reads():
    usage = {
        "input_tokens": 30,
        "output_tokens": 12,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 1000,
    }

    assert 142 == usage_tokens(anthropic_message(usage))


def test_usage_of_google_genai_response():
    response = genai_types.GenerateContentResponse(
        usage_metadata=genai_types.GenerateContentResponseUsageMetadata(
            prompt_token_count=30, candidates_token_count=12, total_token_count=42
        )
    )

    assert 42 == usage_tokens(response)


def test_usage_of_google_genai_response_without_a_total():
    response = genai_types.GenerateContentResponse.model_validate(
        {
            "usage_metadata": {
                "prompt_token_count": 30,
                "candidates_token_count": 10,
                "thoughts_token_count": 2,
            }
        }
    )

    assert 42 == usage_tokens(response)


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (SimpleNamespace(usage=SimpleNamespace(total_tokens=7)), 7),
        (SimpleNamespace(usage=SimpleNamespace(prompt_tokens=3, completion_tokens=4)), 7),
        (SimpleNamespace(usage=SimpleNamespace(input_tokens=3, output_tokens=4)), 7),
        (SimpleNamespace(usage_metadata=SimpleNamespace(total_token_count=7)), 7),
        ({"usage": {"total_tokens": 7}}, 7),
        ({"usage": {"total_tokens": 7.0}}, 7),
        (SimpleNamespace(usage=SimpleNamespace(total_tokens=0)), 0),
    ],
)
def test_usage_is_duck_typed(response, expected):
    assert expected == usage_tokens(response)


@pytest.mark.parametrize(
    "response",
    [
        None,
        object(),
        "text",
        SimpleNamespace(usage=None),  # openai without usage
        SimpleNamespace(usage=SimpleNamespace(total_tokens=True)),
        SimpleNamespace(usage=SimpleNamespace(total_tokens=-3)),
        SimpleNamespace(usage=SimpleNamespace(total_tokens="42")),
        SimpleNamespace(usage_metadata=SimpleNamespace(total_token_count=None)),
        genai_types.GenerateContentResponse(),  # no usage_metadata
        openai.types.chat.ChatCompletion.model_validate({**OPENAI_CHAT, "usage": None}),
        mock.MagicMock(),
        iter([]),  # a stream: usage only in its last chunk, if at all
    ],
)
def test_usage_absent_is_none(response):
    assert usage_tokens(response) is None


def test_openai_stream_objects_report_no_usage():
    """A Stainless Stream is not a response: nothing to debit."""
    stream = openai.Stream.__new__(openai.Stream)

    assert usage_tokens(stream) is None


# --- configuration ----------------------------------------------------------------------------


def load(text: str) -> Any:
    import tomllib  # noqa: PLC0415

    file = parse_config(tomllib.loads(text), "buttress.toml")
    return dataclasses.replace(load_settings({}), file=file)


def test_tokens_layer_defaults_then_the_best_target_table():
    settings = load(
        """
[defaults.llm]
llm.tokens_per_minute = 100000
llm.tokens_max_wait = 5.0

[targets."openai/*".llm]
tokens_per_minute = 30000

[targets."groq/llama".llm]
tokens_max_wait = 1
fallbacks = ["openai/gpt-4o-mini"]
"""
    )

    assert (30000.0, 5.0) == llm_tokens_for(settings, "openai/gpt-4o")
    assert (100000.0, 1.0) == llm_tokens_for(settings, "groq/llama")
    assert (100000.0, 5.0) == llm_tokens_for(settings, "google/gemini-2.0-flash")
    section = settings.file.section_for("groq/llama")
    assert ("openai/gpt-4o-mini",) == section.fallbacks


def test_no_tokens_per_minute_means_no_budget():
    assert llm_tokens_for(load_settings({}), TARGET) is None
    assert llm_tokens_for(load("[defaults.llm]\nllm.tokens_max_wait = 5\n"), TARGET) is None
    assert (10.0, 0.0) == llm_tokens_for(
        load("[defaults.llm]\nllm.tokens_per_minute = 10\n"), TARGET
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "tokens_per_minute = 0",
            (
                'buttress.toml: targets."openai/*".llm.tokens_per_minute = 0 is out of range; '
                "expected a finite number of tokens > 0, for example 100000"
            ),
        ),
        (
            "tokens_per_minute = -5.5",
            "llm.tokens_per_minute = -5.5 is out of range; expected a finite number of tokens > 0",
        ),
        (
            "tokens_per_minute = inf",
            "llm.tokens_per_minute = inf is out of range; expected a finite number of tokens > 0",
        ),
        (
            "tokens_per_minute = nan",
            "llm.tokens_per_minute = nan is not accepted; expected a finite number of tokens > 0",
        ),
        (
            'tokens_per_minute = "100k"',
            "llm.tokens_per_minute = '100k' is not accepted; expected a finite number of tokens",
        ),
        (
            "tokens_per_minute = true",
            "llm.tokens_per_minute = True is not accepted",
        ),
        (
            "tokens_max_wait = -1",
            (
                'buttress.toml: targets."openai/*".llm.tokens_max_wait = -1 is out of range; '
                "expected a number of seconds >= 0, for example 5.0"
            ),
        ),
        (
            'tokens_max_wait = "5s"',
            "llm.tokens_max_wait = '5s' is not accepted; expected a number of seconds >= 0",
        ),
        (
            "tokens_per_mnute = 5",
            (
                'unknown key targets."openai/*".llm.tokens_per_mnute; accepted keys in '
                'targets."openai/*".llm: fallbacks, tokens_per_minute, tokens_max_wait'
            ),
        ),
    ],
)
def test_bad_values_name_file_key_value_and_range(line, message):
    with pytest.raises(ConfigurationError) as info:
        load(f'[targets."openai/*".llm]\n{line}\n')

    assert message in str(info.value)


def test_defaults_llm_accepts_the_token_keys_but_not_fallbacks():
    with pytest.raises(ConfigurationError) as info:
        load('[defaults.llm]\nllm.fallbacks = ["openai/gpt-4o"]\n')

    assert (
        "buttress.toml: unknown key defaults.llm.llm.fallbacks; accepted keys in defaults.llm.llm: "
        "tokens_per_minute, tokens_max_wait"
    ) in str(info.value)
    with pytest.raises(ConfigurationError, match=r"defaults\.llm\.llm\.tokens_per_minute = 0 is"):
        load("[defaults.llm]\nllm.tokens_per_minute = 0\n")


@pytest.mark.parametrize("kind", ["http", "db", "function"])
def test_other_defaults_tables_have_no_llm_key(kind):
    with pytest.raises(ConfigurationError, match=rf"unknown key defaults\.{kind}\.llm"):
        load(f"[defaults.{kind}]\nllm.tokens_per_minute = 10\n")


def test_activation_reads_and_caches_the_budget(activate):
    activate("llm.tokens_per_minute = 600\nllm.tokens_max_wait = 30")

    assert (600.0, 30.0) == _activation.llm_tokens(TARGET)
    assert TARGET in _activation._llm_tokens
    delay = before_call(TARGET, _llm.pipeline_for(TARGET))
    assert 0.0 == delay
    b = budget_for(TARGET)
    assert b is not None
    assert ("openai/gpt-4o-mini", "llm") == (b.context.target, b.context.kind)
    _activation.deactivate()
    assert {} == _activation._llm_tokens


def test_docs_name_the_new_keys():
    docs = DOCS.read_text(encoding="utf-8")
    row = next(line for line in docs.splitlines() if line.startswith("| `llm` |"))

    assert "`tokens_per_minute`" in row
    assert "`tokens_max_wait`" in row
    assert "`[defaults.llm]`" in row
