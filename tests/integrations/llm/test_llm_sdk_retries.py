"""Who retries an LLM call: the SDK, buttress, never both; and observe mode changes nothing.

Every test makes real SDK calls (openai, groq, anthropic, google-genai, sync and async) against
:class:`~tests.support.fake_llm.FakeLLM`, and counts the requests at the server. The script is
the issue's: 429, 429, then 200, each 429 asking for 10 ms (``retry-after-ms``).

- disabled and observe mode send the same requests and the caller sees the same outcome, with
  the SDK's default retries and with retries the application chose;
- in enforce mode, retries the application chose are the SDK's only ones: ``max_retries=k``
  (google-genai: ``retry_options`` with ``k + 1`` attempts) sends ``k + 1`` requests at most,
  never buttress's attempts times the SDK's;
- the telemetry of observe mode reports, request by request, what enforce mode would do.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anthropic
import groq
import openai
import pytest
from google.genai import errors as genai_errors
from tests.support.fake_llm import (
    ANTHROPIC_MESSAGES,
    GROQ_CHAT,
    OPENAI_CHAT,
    FakeLLM,
    error,
    rate_limited,
    reply,
)

import buttress
from buttress import ResilienceError, integrations
from buttress.integrations._llm import register_client, set_fallbacks
from buttress.telemetry import CallRejected, RetriesExhausted, RetryScheduled
from buttress.testing import capture_events

from .conftest import CANARY_KEY, DRIVERS, Driver

pytestmark = pytest.mark.filterwarnings(
    # google-genai's async client subclasses aiohttp.ClientSession, which aiohttp warns about.
    "ignore:Inheritance class AiohttpClientSession:DeprecationWarning"
)

RATE_LIMITED: dict[str, type[BaseException]] = {
    "openai": openai.RateLimitError,
    "groq": groq.RateLimitError,
    "anthropic": anthropic.RateLimitError,
    "google": genai_errors.ClientError,
}
"""The error each SDK raises for a 429 it does not retry (google-genai: a ClientError, code 429)."""


def script_429_429_200(server: FakeLLM, sdk: Driver) -> None:
    """The issue's script: two 429s asking for 10 ms, then a success for every later request."""
    server.reset_counts()
    server.script(
        sdk.path(),
        rate_limited(retry_after_ms=10),
        rate_limited(retry_after_ms=10),
        then=reply(),
    )


def outcome(call: Callable[[], str]) -> tuple[str, type[BaseException] | None]:
    """What the caller saw: the generated text, or the class of the exception it got."""
    try:
        return call(), None
    except Exception as exc:
        return "", type(exc)


def sdk_retries(sdk: Driver, retries: int) -> dict[str, Any]:
    """Client options that choose *retries* SDK retries (google-genai: ``retries + 1`` attempts)."""
    if sdk.provider == "google":
        # No jitter: tenacity would otherwise add up to a second per retry.
        options = {"attempts": retries + 1, "initial_delay": 0.001, "jitter": 0}
        return {"http_options": {"retry_options": options}}
    return {"max_retries": retries}


def assert_unpatched() -> None:
    """No LLM integration is armed (the 'disabled' run really runs without buttress)."""
    for name in ("openai", "anthropic", "groq", "google-genai"):
        integration = integrations.get(name)
        assert integration is None or not integration.armed, name


# --- observe mode: the same requests, the same outcome ---------------------------------------


@pytest.mark.parametrize("chosen", [None, 2], ids=["sdk-default", "app-chose-2"])
def test_observe_mode_sends_what_disabled_mode_sends(activate, sdk: Driver, fake_llm, chosen):
    """
    429, 429, 200 without buttress, then in observe mode: the same requests, the same answer.

    With the SDK's default retries (openai, groq, anthropic: 2, so the caller gets the
    generation after 3 requests; google-genai: none, so one request and its 429) and with
    retries the application chose.
    """
    options = {} if chosen is None else sdk_retries(sdk, chosen)
    assert_unpatched()
    script_429_429_200(fake_llm, sdk)
    disabled = outcome(lambda: sdk.complete(fake_llm, **options)), fake_llm.count(sdk.path())

    activate(mode="observe")
    script_429_429_200(fake_llm, sdk)
    observed = outcome(lambda: sdk.complete(fake_llm, **options)), fake_llm.count(sdk.path())

    assert disabled == observed
    if chosen is not None or sdk.provider != "google":
        assert (("Hello there", None), 3) == observed


def test_observe_mode_streams_what_disabled_mode_streams(activate, sdk: Driver, fake_llm):
    """The same for a stream, with retries the application chose: 3 requests, the same items."""
    options = sdk_retries(sdk, 2)
    path = sdk.path(stream=True)
    runs = []
    for mode in (None, "observe"):
        if mode is not None:
            activate(mode=mode)
        fake_llm.reset_counts()
        fake_llm.script(
            path, rate_limited(retry_after_ms=10), rate_limited(retry_after_ms=10), then=reply()
        )
        items: list[str] = []
        sdk.stream(fake_llm, items, **options)
        runs.append((items, fake_llm.count(path)))

    assert runs[0] == runs[1]
    assert 3 == runs[1][1]
    assert runs[1][0]


def test_observe_mode_leaves_a_client_built_before_activation_alone(activate, fake_llm):
    """A client built before buttress was switched on keeps the SDK's retries in observe mode."""
    sdk = DRIVERS["openai"]()
    client = sdk.client(fake_llm)  # built unpatched: max_retries=2, the SDK's default
    activate(mode="observe")
    script_429_429_200(fake_llm, sdk)

    with client:
        result = client.chat.completions.create(model=sdk.model, messages=sdk.messages)

    assert "Hello there" == result.choices[0].message.content
    assert 3 == fake_llm.count(OPENAI_CHAT)


def test_a_client_built_in_observe_mode_keeps_the_sdk_default(activate, fake_llm):
    """The mode is read when a client is built: one built in observe mode keeps its retries."""
    sdk = DRIVERS["anthropic"]()
    activate(mode="observe")
    client = sdk.client(fake_llm)

    assert 2 == client.max_retries
    assert "sdk" == client._buttress_max_retries
    client.close()


# --- enforce mode: the application's choice of SDK retries, never multiplied ------------------


def test_enforce_mode_with_max_retries_0_sends_one_request(activate, sdk: Driver, fake_llm):
    """An explicit 0 means no retries: one request, and the caller gets the SDK's own error."""
    activate()
    script_429_429_200(fake_llm, sdk)

    text, raised = outcome(lambda: sdk.complete(fake_llm, **sdk_retries(sdk, 0)))

    assert 1 == fake_llm.count(sdk.path())
    assert raised is not None
    assert issubclass(raised, RATE_LIMITED[sdk.provider])
    assert not issubclass(raised, ResilienceError)


def test_enforce_mode_with_max_retries_1_sends_two_requests(activate, sdk: Driver, fake_llm):
    """An explicit 1: the SDK's two requests, not buttress's 3 attempts x 2."""
    activate()
    script_429_429_200(fake_llm, sdk)

    text, raised = outcome(lambda: sdk.complete(fake_llm, **sdk_retries(sdk, 1)))

    assert 2 == fake_llm.count(sdk.path())
    assert raised is not None
    assert issubclass(raised, RATE_LIMITED[sdk.provider])


def test_enforce_mode_with_retries_chosen_always_failing(activate, sdk: Driver, fake_llm):
    """Always 503 with max_retries=2 (google-genai: attempts=3): 3 requests, not 3 x 3."""
    activate()
    fake_llm.script(sdk.path(), error(503, {"retry-after-ms": "1", "retry-after": "0"}))

    outcome(lambda: sdk.complete(fake_llm, **sdk_retries(sdk, 2)))

    assert 3 == fake_llm.count(sdk.path())


def test_enforce_mode_without_a_choice_is_retried_by_buttress(activate, sdk: Driver, fake_llm):
    """Nobody chose: the SDK's retries are off and buttress's 3 attempts serve the call."""
    activate()
    script_429_429_200(fake_llm, sdk)

    with capture_events() as events:
        text = sdk.complete(fake_llm)

    assert "Hello there" == text
    assert 3 == fake_llm.count(sdk.path())
    assert [1, 2] == [e.attempt for e in events if isinstance(e, RetryScheduled)]


STAINLESS_CLIENTS: dict[str, Callable[[FakeLLM], Any]] = {
    "openai": lambda server: openai.OpenAI(api_key=CANARY_KEY, base_url=server.openai_url),
    "groq": lambda server: groq.Groq(api_key=CANARY_KEY, base_url=server.url),
    "anthropic": lambda server: anthropic.Anthropic(api_key=CANARY_KEY, base_url=server.url),
}


def _create(client: Any, name: str) -> str:
    sdk = DRIVERS[name]()
    if name == "anthropic":
        message = client.messages.create(model=sdk.model, max_tokens=64, messages=sdk.messages)
        return str(message.content[0].text)
    completion = client.chat.completions.create(model=sdk.model, messages=sdk.messages)
    return str(completion.choices[0].message.content)


@pytest.mark.parametrize("name", list(STAINLESS_CLIENTS))
def test_with_options_keeps_who_chose(activate, fake_llm, name):
    """
    ``with_options()`` hands the copy a max_retries either way; only one passed to it is a choice.

    A copy of a client nobody chose retries for is still retried by buttress (3 requests, the
    answer); ``with_options(max_retries=1)`` is the application's choice (2 requests).
    """
    sdk = DRIVERS[name]()
    activate()
    with STAINLESS_CLIENTS[name](fake_llm) as client:
        script_429_429_200(fake_llm, sdk)
        assert "Hello there" == _create(client.with_options(timeout=30.0), name)
        assert 3 == fake_llm.count(sdk.path())

        script_429_429_200(fake_llm, sdk)
        text, raised = outcome(lambda: _create(client.with_options(max_retries=1), name))
        assert (2, RATE_LIMITED[sdk.provider]) == (fake_llm.count(sdk.path()), raised)


def test_retries_chosen_for_one_request_are_the_apps(activate, fake_llm):
    """A request's own max_retries (openai) or ``config.http_options.retry_options``
    (google-genai) is a choice too: 2 requests each, the SDK's error, nothing from buttress."""
    from openai.types.chat import ChatCompletion  # noqa: PLC0415

    activate()
    openai_sdk, gemini = DRIVERS["openai"](), DRIVERS["gemini"]()
    body = {"model": openai_sdk.model, "messages": openai_sdk.messages}

    script_429_429_200(fake_llm, openai_sdk)
    with openai_sdk.client(fake_llm) as client:
        _, raised = outcome(
            lambda: client.post(
                "/chat/completions", body=body, cast_to=ChatCompletion, options={"max_retries": 1}
            )
        )
    assert (2, openai.RateLimitError) == (fake_llm.count(OPENAI_CHAT), raised)

    script_429_429_200(fake_llm, gemini)
    retry = {"attempts": 2, "initial_delay": 0.001, "jitter": 0}
    with gemini.client(fake_llm) as client:
        _, raised = outcome(
            lambda: (
                client.models.generate_content(
                    model=gemini.model,
                    contents="Say hello",
                    config={"http_options": {"retry_options": retry}},
                ).text
            )
        )
    assert (2, genai_errors.ClientError) == (fake_llm.count(gemini.path()), raised)


def test_a_client_built_before_activation_is_retried_by_buttress(activate, fake_llm):
    """Enforce mode: a client buttress did not see built gets its requests sent once each."""
    sdk = DRIVERS["groq"]()
    client = sdk.client(fake_llm)  # built unpatched: max_retries=2, not known to be a choice
    activate()
    fake_llm.script(GROQ_CHAT, error(503, {"retry-after-ms": "1"}))

    with client:
        outcome(lambda: _create(client, "groq"))

    assert 3 == fake_llm.count(GROQ_CHAT)  # buttress's 3 attempts, not 3 x 3


def test_chosen_retries_do_not_forbid_the_fallbacks_own(activate, fake_llm):
    """
    The primary's client chose max_retries=0; its fallback's client did not: buttress retries
    the fallback's 503 (the primary's no-retry scope does not reach the fallback).
    """
    activate()
    fallback = openai.OpenAI(api_key=CANARY_KEY, base_url=fake_llm.openai_url)
    register_client("openai", fallback)
    set_fallbacks({"groq/llama-3.3-70b-versatile": ["openai/gpt-4o-mini"]})
    fake_llm.script(GROQ_CHAT, error(503))
    fake_llm.script(OPENAI_CHAT, error(503), then=reply())

    with fallback, groq.Groq(api_key=CANARY_KEY, base_url=fake_llm.url, max_retries=0) as client:
        result = client.chat.completions.create(
            model="llama-3.3-70b-versatile", messages=[{"role": "user", "content": "hi"}]
        )

    assert "Hello there" == result.choices[0].message.content
    assert (1, 2) == (fake_llm.count(GROQ_CHAT), fake_llm.count(OPENAI_CHAT))


# --- telemetry: what the pipeline is told about the SDK's loop --------------------------------


def breaker_counts(target: str) -> tuple[int, int]:
    """(calls, failures) in the breaker window of *target*."""
    snapshot = buttress.get_target(target).breaker.snapshot(time.monotonic())
    return snapshot.calls, snapshot.failures


@pytest.mark.parametrize("name", ["openai", "anthropic-async", "gemini", "gemini-async"])
def test_observe_mode_reports_each_request_the_sdk_retried(activate, fake_llm, name):
    """
    Observe mode, 429, 429, 200 absorbed by the SDK's retries: the breaker judged 3 requests
    (none a failure: a 429 is a live provider pacing) and buttress reports the 2 retries it would have made, as enforce mode does.
    """
    sdk = DRIVERS[name]()
    options = sdk_retries(sdk, 2)
    activate(mode="observe")
    script_429_429_200(fake_llm, sdk)

    with capture_events() as events:
        text = sdk.complete(fake_llm, **options)

    assert ("Hello there", 3) == (text, fake_llm.count(sdk.path()))
    retries = [e for e in events if isinstance(e, RetryScheduled)]
    assert [(1, True), (2, True)] == [(e.attempt, e.observed) for e in retries]
    assert {RATE_LIMITED[sdk.provider].__name__} == {e.error_type.rsplit(".")[-1] for e in retries}
    assert (3, 0) == breaker_counts(sdk.target)  # every request judged; a 429 is no failure


def test_observe_mode_stops_reporting_retries_buttress_would_not_make(activate, fake_llm):
    """
    The app's max_retries=4 outlasts buttress's 3 attempts: observe mode reports 2 retries and
    that retrying would stop at attempt 3; the requests buttress would not have sent decide
    nothing (the breaker still judges every request).
    """
    sdk = DRIVERS["openai"]()
    activate(mode="observe")
    fake_llm.script(OPENAI_CHAT, *[rate_limited(retry_after_ms=10)] * 4, then=reply())

    with capture_events() as events:
        text = sdk.complete(fake_llm, max_retries=4)

    assert ("Hello there", 5) == (text, fake_llm.count(OPENAI_CHAT))
    assert [(1, True), (2, True)] == [
        (e.attempt, e.observed) for e in events if isinstance(e, RetryScheduled)
    ]
    assert [(3, "attempts")] == [
        (e.attempts, e.reason) for e in events if isinstance(e, RetriesExhausted)
    ]
    assert (5, 0) == breaker_counts(sdk.target)  # every request judged; a 429 is no failure


@pytest.mark.parametrize("name", ["openai", "groq-async", "gemini"])
def test_observe_mode_reports_a_rejection_for_each_request(activate, fake_llm, name):
    """A forced-open breaker in observe mode: every request the SDK sends is reported as a
    rejection buttress would have made, and every one still goes out."""
    sdk = DRIVERS[name]()
    options = sdk_retries(sdk, 2)
    activate(mode="observe")
    fake_llm.script(sdk.path(), reply())
    sdk.complete(fake_llm)  # builds the target's pipeline
    buttress.get_target(sdk.target).breaker.force_open()
    script_429_429_200(fake_llm, sdk)

    with capture_events() as events:
        text = sdk.complete(fake_llm, **options)

    rejections = [e for e in events if isinstance(e, CallRejected)]
    assert ("Hello there", 3) == (text, fake_llm.count(sdk.path()))
    assert [("circuit_open", True)] * 3 == [(e.reason, e.observed) for e in rejections]


@pytest.mark.parametrize("name", ["openai-async", "anthropic", "gemini-async"])
def test_enforce_mode_breaker_judges_each_request_of_chosen_retries(activate, fake_llm, name):
    """
    Enforce mode with the app's retries: buttress schedules no retry of its own, and its breaker
    still judges each request the SDK sent (3; a 429 is not a failure).
    """
    sdk = DRIVERS[name]()
    activate()
    script_429_429_200(fake_llm, sdk)

    with capture_events() as events:
        text = sdk.complete(fake_llm, **sdk_retries(sdk, 2))

    assert ("Hello there", 3) == (text, fake_llm.count(sdk.path()))
    assert [] == [e for e in events if isinstance(e, RetryScheduled)]
    assert (3, 0) == breaker_counts(sdk.target)  # every request judged; a 429 is no failure


def test_a_failure_to_report_never_reaches_the_caller(activate, fake_llm, monkeypatch, caplog):
    """A fault in buttress's reporting of an SDK retry is logged; the call goes on unchanged."""
    from buttress.integrations import _llm_sdk_loop  # noqa: PLC0415

    def broken(*_: object) -> None:
        raise RuntimeError("reporting is broken")

    monkeypatch.setattr(_llm_sdk_loop, "_report", broken)
    monkeypatch.setattr(_llm_sdk_loop, "_complained", [])
    sdk = DRIVERS["anthropic"]()
    activate(mode="observe")
    script_429_429_200(fake_llm, sdk)

    text = sdk.complete(fake_llm)

    assert ("Hello there", 3) == (text, fake_llm.count(ANTHROPIC_MESSAGES))
    assert 1 == sum("reporting an SDK retry failed" in r.getMessage() for r in caplog.records)
