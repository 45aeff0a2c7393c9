"""
Reading what an HTTP dependency says about retrying, from any client's objects (duck-typed).

Works on exceptions and responses from requests, httpx, aiohttp, urllib3 and the LLM SDKs
without importing any of them: a status code is found as ``status_code``, ``status`` or on a
``response`` attribute; headers as ``headers`` (any mapping with case-insensitive ``get``, or a
plain dict) likewise.

- :func:`status_of`: the HTTP status of an outcome, if it carries one.
- :func:`is_transient`: 408, 429 and 5xx responses, connection errors and timeouts: what
  Microsoft's standard handler and the OpenAI/Anthropic SDKs retry.
- :func:`server_delay`: ``retry-after-ms``, then ``Retry-After`` (seconds or an HTTP date).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import math
import time
from collections.abc import Callable
from typing import Any

TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
LLM_TRANSIENT_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600))


def _carrier(outcome: object) -> object:
    response = getattr(outcome, "response", None)
    return response if response is not None else outcome


def status_of(outcome: object) -> int | None:
    """The HTTP status code carried by an exception or a response, if any."""
    for holder in (outcome, getattr(outcome, "response", None)):
        if holder is None:
            continue
        for attr in ("status_code", "status"):
            value = getattr(holder, attr, None)
            if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
                return value
    return None


def _headers(outcome: object) -> Any:
    for holder in (outcome, _carrier(outcome)):
        headers = getattr(holder, "headers", None)
        if headers is not None and hasattr(headers, "get"):
            return headers
    return None


def _header(headers: Any, name: str) -> str | None:
    value = headers.get(name)
    if value is None and isinstance(headers, dict):
        lowered = {str(k).lower(): v for k, v in headers.items()}
        value = lowered.get(name.lower())
    return None if value is None else str(value)


def parse_retry_after(value: str, *, now: Callable[[], float] = time.time) -> float | None:
    """
    Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP date.

    Returns ``None`` for anything unparseable (a dependency's bad header must not break us),
    else a finite number of seconds >= 0.
    """
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
            if when.tzinfo is None:  # asctime dates carry no zone; HTTP dates are always GMT
                when = when.replace(tzinfo=dt.UTC)
            # A date near year 1 or 9999 with an offset leaves the datetime range here.
            seconds = max(0.0, when.timestamp() - now())
        except (TypeError, ValueError, IndexError, OverflowError, OSError):
            return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def server_delay(outcome: object) -> float | None:
    """
    The delay a dependency asked for: ``retry-after-ms``, then ``Retry-After``.

    ``None`` when the outcome carries no such header.
    """
    headers = _headers(outcome)
    if headers is None:
        return None
    try:
        millis = _header(headers, "retry-after-ms")
        if millis is not None:
            try:
                value = float(millis) / 1000.0
            except ValueError:
                value = -1.0
            if 0 <= value < math.inf:  # nan and inf fall through to Retry-After
                return value
        retry_after = _header(headers, "retry-after")
        if retry_after is not None:
            return parse_retry_after(retry_after)
    except Exception:
        return None
    return None


def is_transport_failure(outcome: object, extra: tuple[type[BaseException], ...] = ()) -> bool:
    """
    Whether *outcome* is a connection error or a timeout, of any client library.

    Client libraries name their transport errors consistently, so classes are matched by name
    and the core needs none of them installed (httpx.ConnectError, requests.ConnectionError,
    aiohttp.ClientConnectionError, openai.APIConnectionError, urllib3 ProtocolError...); *extra*
    adds classes whose names do not say it.
    """
    if isinstance(outcome, (ConnectionError, TimeoutError, *extra)):
        return True
    for cls in type(outcome).__mro__:
        name = cls.__name__
        if (
            "Connect" in name
            or "Timeout" in name
            or name in ("ProtocolError", "RemoteProtocolError")
        ):
            return True
    return False


def is_transient(outcome: object) -> bool:
    """Connection errors, timeouts, and 408/429/500/502/503/504 responses."""
    status = status_of(outcome)
    if status is not None:
        return status in TRANSIENT_STATUSES
    return isinstance(outcome, BaseException) and is_transport_failure(outcome)


def is_transient_llm(outcome: object) -> bool:
    """What the OpenAI and Anthropic SDKs retry: 408, 409, 429, 5xx, connection errors, timeouts."""
    status = status_of(outcome)
    if status is not None:
        return status in LLM_TRANSIENT_STATUSES
    return isinstance(outcome, BaseException) and is_transport_failure(outcome)
