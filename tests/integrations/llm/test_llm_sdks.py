"""The LLM SDKs under buttress, each against a fake provider on 127.0.0.1, sync and async.

Every test makes real SDK calls (openai, groq, anthropic, google-genai) whose requests reach
:class:`~tests.support.fake_llm.FakeLLM`; counts and receive times are taken at the server.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from tests.support.fake_llm import (
    FakeLLM,
    Step,
    anthropic_reset_headers,
    error,
    openai_reset_headers,
    rate_limited,
    reply,
    stream,
)

import buttress
from buttress import ResilienceError

from .conftest import DRIVERS, Driver

pytestmark = pytest.mark.filterwarnings(
    # google-genai's async client subclasses aiohttp.ClientSession, which aiohttp warns about.
    "ignore:Inheritance class AiohttpClientSession:DeprecationWarning"
)

STAINLESS = ["openai", "openai-async", "groq", "groq-async", "anthropic", "anthropic-async"]


def raised(fn: Callable[[], object]) -> BaseException:
    """The exception *fn* raises (the test fails if it returns)."""
    with pytest.raises(BaseException) as info:
        fn()
    return info.value


def gap(server: FakeLLM, path: str) -> float:
    """Seconds between the first two requests the server received for *path*."""
    first, second = [r.received_at for r in server.requests if r.path == path][:2]
    return second - first


# (the 429 step, the least and the most seconds the retry may wait): each provider's own headers.
RATE_LIMITS: dict[str, tuple[Callable[[], Step], float, float]] = {
    # retry-after-ms wins over the 20 s reset header.
    "openai": (
        lambda: rate_limited(retry_after_ms=300, headers=openai_reset_headers("20s")),
        0.3,
        2,
    ),
    # Only the reset headers: requests are exhausted (400ms); tokens (6m0s) are not.
    "groq": (lambda: rate_limited(headers=openai_reset_headers("400ms", "6m0s")), 0.4, 2),
    # An RFC 3339 reset 0.8 s after the step is made (a little less by the time it is read).
    "anthropic": (lambda: rate_limited(headers=anthropic_reset_headers(0.8)), 0.5, 2),
    # google.rpc.RetryInfo in the error body.
    "google": (lambda: rate_limited(retry_delay="0.4s"), 0.4, 2),
}


def test_rate_limited_call_is_sent_twice_after_the_delay_asked(activated, sdk: Driver, fake_llm):
    """A 429 then a success: two requests, the second after the delay the 429's headers asked."""
    step, least, most = RATE_LIMITS[sdk.provider]
    fake_llm.script(sdk.path(), step(), then=reply())

    text = sdk.complete(fake_llm)

    assert "Hello there" == text
    assert 2 == fake_llm.count(sdk.path())
    assert least - 0.02 <= gap(fake_llm, sdk.path()) < most


def test_bad_request_is_sent_once(activated, sdk: Driver, fake_llm):
    """A 400 fails the same way every time: one request, and the SDK's own error."""
    fake_llm.script(sdk.path(), error(400), then=reply())

    exc = raised(lambda: sdk.complete(fake_llm))

    assert isinstance(exc, sdk.bad_request)
    assert 1 == fake_llm.count(sdk.path())


@pytest.mark.parametrize("status", [401, 403, 404])
def test_client_errors_are_never_retried(activated, sdk: Driver, fake_llm, status):
    """401, 403 and 404 reach the server once."""
    fake_llm.script(sdk.path(), error(status), then=reply())

    raised(lambda: sdk.complete(fake_llm))

    assert 1 == fake_llm.count(sdk.path())


def test_5xx_burst_then_success_is_three_requests(activated, sdk: Driver, fake_llm):
    """503, 502, then 200: three requests and the caller gets the generation."""
    fake_llm.script(sdk.path(), error(503), error(502), then=reply())

    assert "Hello there" == sdk.complete(fake_llm)
    assert 3 == fake_llm.count(sdk.path())


def test_sdk_retries_are_off_by_default(activated, sdk: Driver, fake_llm):
    """Always 503: buttress's three attempts are all the requests there are (not 3 x 3)."""
    fake_llm.script(sdk.path(), error(503, {"retry-after-ms": "1"}))

    raised(lambda: sdk.complete(fake_llm))

    assert 3 == fake_llm.count(sdk.path())


def test_408_and_409_are_retried(activated, sdk: Driver, fake_llm):
    """408 and 409 are transient for LLM providers, as the SDKs themselves treat them."""
    fake_llm.script(sdk.path(), error(408), error(409), then=reply())

    assert "Hello there" == sdk.complete(fake_llm)
    assert 3 == fake_llm.count(sdk.path())


# --- streams ---------------------------------------------------------------------------------


def test_stream_cut_after_first_chunk_is_not_retried(activated, sdk: Driver, fake_llm):
    """The caller has the first chunk: the disconnect reaches it as the SDK's error, one request."""
    path = sdk.path(stream=True)
    fake_llm.script(path, stream(["Hel", "lo", "!"], fail_after=1), then=reply())
    seen: list[str] = []

    exc = raised(lambda: sdk.stream(fake_llm, seen))

    assert not isinstance(exc, ResilienceError)
    assert 1 == len(seen)
    assert 1 == fake_llm.count(path)


def test_stream_503_before_first_chunk_is_retried(activated, sdk: Driver, fake_llm):
    """A 503 before any chunk is an ordinary failed attempt: retried, and the stream is whole."""
    path = sdk.path(stream=True)
    fake_llm.script(path, error(503), then=stream(["Hel", "lo"]))
    seen: list[str] = []

    sdk.stream(fake_llm, seen)

    assert 2 == fake_llm.count(path)
    if sdk.provider == "anthropic":
        assert 2 == seen.count("content_block_delta")
    else:
        assert ["Hel", "lo"] == seen


def test_stream_cut_before_first_chunk_is_retried(activated, sdk: Driver, fake_llm):
    """Headers sent, then the connection closed before any event: the caller saw nothing; retried."""
    path = sdk.path(stream=True)
    fake_llm.script(path, stream(["Hel", "lo"], fail_after=0), then=stream(["Hel", "lo"]))
    seen: list[str] = []

    sdk.stream(fake_llm, seen)

    assert 2 == fake_llm.count(path)
    assert [] != seen


@pytest.mark.parametrize("name", [*STAINLESS, "gemini-async"])
def test_slow_first_token_times_out_the_attempt(activate, fake_llm, name):
    """A first token later than timeout.attempt fails the attempt, and the next one is served."""
    activate("timeout.attempt = 0.3\n")
    sdk = DRIVERS[name]()
    path = sdk.path(stream=True)
    fake_llm.script(path, stream(["late"], first_delay=1.5), then=stream(["Hel", "lo"]))
    seen: list[str] = []

    sdk.stream(fake_llm, seen)

    assert 2 == fake_llm.count(path)
    assert [] != seen


@pytest.mark.parametrize("name", [*STAINLESS, "gemini-async"])
def test_a_built_in_attempt_timeout_never_cuts_a_generation_the_sdk_allows(
    activate, fake_llm, name
):
    """The templates' timeouts respect the SDK's own (minutes by default): a first token later
    than the attempt timeout arrives, on the first request, as without buttress."""
    activate("timeout.attempt = 0.3\ntimeout.respect_app_timeout = true\n")
    sdk = DRIVERS[name]()
    path = sdk.path(stream=True)
    fake_llm.script(path, stream(["late"], first_delay=1.0), then=stream(["Hel", "lo"]))
    seen: list[str] = []

    sdk.stream(fake_llm, seen)

    assert 1 == fake_llm.count(path)
    assert [] != seen


# The SDK's own retries (who retries, observe mode): test_llm_sdk_retries.py.


# --- one pipeline per logical call -----------------------------------------------------------


def test_inner_http_request_has_no_pipeline_of_its_own(activated, sdk: Driver, fake_llm):
    """The HTTP integrations let the SDK's request through: the only target is provider/model."""
    fake_llm.script(sdk.path(), error(503), then=reply())

    sdk.complete(fake_llm)

    assert [sdk.target] == buttress.targets()
    assert 2 == fake_llm.count(sdk.path())
