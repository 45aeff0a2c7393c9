"""What the LLM pipelines read from a provider's failure: whether to retry, and when."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

import pytest

from buttress.integrations._llm import llm_is_transient, llm_server_delay, parse_duration

NOW = 1_700_000_000.0


def failure(status: int | None, headers: dict[str, str] | None = None, **extra: Any) -> Any:
    """An SDK-like error carrying *status* and *headers* on its ``response``."""
    response = SimpleNamespace(status_code=status, headers=headers or {})
    return SimpleNamespace(status_code=status, response=response, **extra)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("250ms", 0.25),
        ("1h2m3.5s", 3723.5),
        ("7.66s", 7.66),
        ("2", 2.0),
    ],
)
def test_go_durations_are_parsed(text, seconds):
    """OpenAI and Groq write their reset times as Go durations."""
    assert seconds == pytest.approx(parse_duration(text))


@pytest.mark.parametrize("text", ["", "soon", "1x", "s1", "-1"])
def test_bad_durations_are_none(text):
    """An unreadable duration is no delay at all, never an error."""
    assert None is parse_duration(text)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (408, True),
        (409, True),
        (429, True),
        (500, True),
        (529, True),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (422, False),
    ],
)
def test_statuses_retried(status, expected):
    """408, 409, 429 and 5xx are retried; other 4xx never."""
    assert expected is llm_is_transient(failure(status))


def test_should_retry_header_wins():
    """``x-should-retry`` overrides the status, as the SDKs themselves obey it."""
    assert (False, True) == (
        llm_is_transient(failure(503, {"x-should-retry": "false"})),
        llm_is_transient(failure(400, {"x-should-retry": "true"})),
    )


def test_google_error_code_is_read():
    """google-genai errors carry their status as ``code``."""
    assert True is llm_is_transient(SimpleNamespace(code=503, response=None))


def test_retry_after_ms_beats_reset_headers():
    """``retry-after-ms`` is the most precise answer."""
    headers = {"retry-after-ms": "120", "retry-after": "9", "x-ratelimit-reset-requests": "5s"}
    assert 0.12 == pytest.approx(llm_server_delay(failure(429, headers), now=lambda: NOW))


def test_exhausted_dimension_decides():
    """Of the reset headers, the dimension that ran out (remaining 0) says when."""
    headers = {
        "x-ratelimit-remaining-requests": "12",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "6m0s",
    }
    assert 360.0 == llm_server_delay(failure(429, headers), now=lambda: NOW)


def test_anthropic_reset_is_an_instant():
    """Anthropic's reset is an RFC 3339 time: the delay is how far away it is."""
    when = dt.datetime.fromtimestamp(NOW + 2.5, dt.UTC).isoformat().replace("+00:00", "Z")
    headers = {
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": when,
    }
    assert 2.5 == pytest.approx(llm_server_delay(failure(429, headers), now=lambda: NOW))


def test_reset_headers_are_ignored_on_5xx():
    """Reset headers come with every response; a 503 says nothing with them."""
    headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "30s"}
    assert None is llm_server_delay(failure(503, headers), now=lambda: NOW)


def test_gemini_retry_info():
    """Gemini's ``RetryInfo.retryDelay`` in the error body is read when no header says."""
    details = {
        "error": {
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}]
        }
    }
    exc = SimpleNamespace(code=429, response=None, details=details)
    assert 17.0 == llm_server_delay(exc, now=lambda: NOW)
