"""
What an LLM SDK's failure says: whether to retry it, and how long the provider asked to wait.

The rules are described in :mod:`._llm` ("What is retried", "When"); this module applies them.
It reads only the exception (status, headers, error body) and keeps only the transport errors
the integrations register, with no pipeline or call state, so both the pipeline
(:func:`._llm.pipeline_for`) and the fallback chains (:mod:`._llm_fallback`, which falls back
only on failures worth retrying) build on it from below, without an import cycle.
"""

from __future__ import annotations

import datetime as dt
import importlib
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from .._http_signals import LLM_TRANSIENT_STATUSES, is_transport_failure, server_delay, status_of

__all__ = [
    "llm_is_transient",
    "llm_server_delay",
    "parse_duration",
    "register_transport_errors",
    "register_transport_modules",
]

_transport: tuple[type[BaseException], ...] = ()
_lock = threading.Lock()


def register_transport_errors(*errors: type[BaseException]) -> None:
    """Add an SDK's connection and timeout errors to what LLM pipelines retry."""
    global _transport  # noqa: PLW0603 - a copy-on-write tuple read on every failure
    with _lock:
        _transport = tuple(dict.fromkeys((*_transport, *errors)))


def register_transport_modules(*names: str) -> None:
    """Register the transport errors of the HTTP libraries an SDK sends with, when installed."""
    errors: list[type[BaseException]] = []
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if name in ("httpx", "httpx2"):
            errors += [module.TimeoutException, module.NetworkError, module.RemoteProtocolError]
        elif name == "aiohttp":
            errors += [module.ClientConnectionError, module.ClientPayloadError]
            http_exceptions = importlib.import_module("aiohttp.http_exceptions")
            errors += [http_exceptions.TransferEncodingError, http_exceptions.ContentLengthError]
    register_transport_errors(*errors)


# --- what is retried, and when ---------------------------------------------------------------


def _headers(exc: object) -> Any:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    return headers if headers is not None and hasattr(headers, "get") else None


def _status(exc: object) -> int | None:
    status = status_of(exc)
    if status is not None:
        return status
    code = getattr(exc, "code", None)  # google.genai.errors.APIError
    if isinstance(code, int) and not isinstance(code, bool) and 100 <= code <= 599:
        return code
    return None


def _is_transport(exc: BaseException) -> bool:
    return is_transport_failure(exc, _transport)


def llm_is_transient(exc: object) -> bool:
    """408, 409, 429 and 5xx, connection errors and timeouts; ``x-should-retry`` decides first."""
    headers = _headers(exc)
    if headers is not None:
        try:
            verdict = headers.get("x-should-retry")
        except Exception:
            verdict = None
        if verdict == "true":
            return True
        if verdict == "false":
            return False
    status = _status(exc)
    if status is not None:
        return status in LLM_TRANSIENT_STATUSES
    return isinstance(exc, BaseException) and _is_transport(exc)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(value: str) -> float | None:
    """
    Seconds from a Go-style duration (``1s``, ``6m0s``, ``250ms``, ``1h2m3.5s``), or ``None``.

    The seconds are finite and >= 0: an overflowing or negative duration is ``None``.
    """
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)  # a bare number: seconds
    except ValueError:
        pass
    else:
        return seconds if 0 <= seconds < math.inf else None
    position, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != position:
            return None
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    return total if position == len(text) and total < math.inf else None


def _parse_instant(value: str, now: float) -> float | None:
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        when = dt.datetime.fromisoformat(text)
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        # An instant near year 1 or 9999 with an offset leaves the datetime range here.
        seconds = max(0.0, when.timestamp() - now)
    except (ValueError, OverflowError, OSError):
        return None
    return seconds if seconds < math.inf else None


# (reset header, remaining header, parser) of each rate-limit dimension a provider reports.
_RESETS: tuple[tuple[str, str, str], ...] = (
    ("x-ratelimit-reset-requests", "x-ratelimit-remaining-requests", "duration"),
    ("x-ratelimit-reset-tokens", "x-ratelimit-remaining-tokens", "duration"),
    ("anthropic-ratelimit-requests-reset", "anthropic-ratelimit-requests-remaining", "instant"),
    ("anthropic-ratelimit-tokens-reset", "anthropic-ratelimit-tokens-remaining", "instant"),
    (
        "anthropic-ratelimit-input-tokens-reset",
        "anthropic-ratelimit-input-tokens-remaining",
        "instant",
    ),
    (
        "anthropic-ratelimit-output-tokens-reset",
        "anthropic-ratelimit-output-tokens-remaining",
        "instant",
    ),
)


def _reset_delay(headers: Any, now: float) -> float | None:
    exhausted: list[float] = []
    others: list[float] = []
    for reset_name, remaining_name, kind in _RESETS:
        raw = headers.get(reset_name)
        if raw is None:
            continue
        seconds = parse_duration(str(raw)) if kind == "duration" else _parse_instant(str(raw), now)
        if seconds is None:
            continue
        left = headers.get(remaining_name)
        (exhausted if left is not None and str(left).strip() == "0" else others).append(seconds)
    # The dimension that ran out decides; when none says so, the soonest reset is worth a try.
    if exhausted:
        return max(exhausted)
    return min(others) if others else None


def _retry_info(exc: object) -> float | None:
    # Gemini says when in its error body: google.rpc.RetryInfo {"retryDelay": "30s"}.
    details = getattr(exc, "details", None)
    error = details.get("error") if isinstance(details, Mapping) else None
    items = error.get("details") if isinstance(error, Mapping) else None
    for item in items if isinstance(items, list) else ():
        if isinstance(item, Mapping) and str(item.get("@type", "")).endswith("RetryInfo"):
            delay = item.get("retryDelay")
            if isinstance(delay, str):
                return parse_duration(delay)
    return None


def llm_server_delay(exc: object, *, now: Callable[[], float] = time.time) -> float | None:
    """
    The wait the provider asked for, in seconds, or ``None`` when it did not say.

    ``retry-after-ms``, then ``Retry-After`` (seconds or an HTTP date), then, for a 429 only,
    the rate-limit reset headers: of the dimensions whose ``remaining`` is 0 the latest reset
    (the call cannot pass before it), otherwise the soonest one. Reset headers come with every
    response; on a 5xx they say nothing about when the server recovers, so they are ignored.
    Last, Gemini's ``RetryInfo.retryDelay`` from a google-genai error body.
    """
    delay = server_delay(exc)
    if delay is not None:
        return delay
    if _status(exc) != 429:
        return None
    try:
        headers = _headers(exc)
        delay = _reset_delay(headers, now()) if headers is not None else None
        return delay if delay is not None else _retry_info(exc)
    except Exception:
        return None  # a provider's malformed header must not break the call
