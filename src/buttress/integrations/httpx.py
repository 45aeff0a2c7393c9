"""
httpx: every ``Client.send`` and ``AsyncClient.send`` runs through its ``host:port`` pipeline.

``send`` is above the transports, where OpenTelemetry's httpx instrumentation creates its client
span, so each attempt is its own span. httpx transports do not retry by default. The deadline
reaches the transport through the request's ``timeout`` extension, shortened per attempt.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from typing import Any

from .._exceptions import RejectedError
from .._exceptions import TimeoutError as PolicyTimeoutError
from ..policies._retry import no_retry
from ..policies._timeout import remaining
from ._base import Integration, inside, passthrough
from ._http import (
    RetryableResponse,
    compatible,
    pipeline_for,
    register_transient,
    retry_allowed,
    retry_statuses,
    target_of,
)
from ._resend import resend

__all__ = ["INTEGRATION", "HttpxIntegration"]


class HttpxIntegration(Integration):
    """Patches ``httpx.Client.send`` and ``httpx.AsyncClient.send``."""

    name = "httpx"
    module = "httpx"

    def patches(self) -> list[tuple[str, str, Any]]:
        """The patch list."""
        import httpx  # noqa: PLC0415

        register_transient(httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
        return [
            ("httpx", "Client.send", _wrap_send),
            ("httpx", "AsyncClient.send", _wrap_async_send),
        ]


def _prepare(request: Any) -> tuple[str, Any, bool, frozenset[int]]:
    import httpx  # noqa: PLC0415

    url = request.url
    target = target_of(url.scheme, url.host, url.port)
    try:
        request.content  # noqa: B018 - raises for a streaming (one-shot) body
        one_shot = False
    except httpx.RequestNotRead:
        one_shot = True
    allowed = retry_allowed(request.method, request.headers, one_shot, target)
    return target, pipeline_for(target), allowed, retry_statuses(target)


def _shorten(request: Any) -> None:
    left = remaining()
    if left is None:
        return
    left = max(left, 0.001)
    timeouts = dict(request.extensions.get("timeout") or {})
    for key in ("connect", "read", "write", "pool"):
        value = timeouts.get(key)
        timeouts[key] = left if value is None else min(value, left)
    request.extensions = {**request.extensions, "timeout": timeouts}


def _error(exc: Exception) -> BaseException:
    import httpx  # noqa: PLC0415

    base = httpx.TimeoutException if isinstance(exc, PolicyTimeoutError) else httpx.TransportError
    return compatible(exc, base)


def _wrap_send(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if passthrough("http"):
        return wrapped(*args, **kwargs)
    request = args[0] if args else kwargs["request"]
    _target, pipeline, allowed, statuses = _prepare(request)
    state: dict[str, Any] = {"attempt": 0, "last": None}

    def attempt() -> Any:
        previous = state["last"]
        if previous is not None:
            state["last"] = None
            previous.close()
        _shorten(request)
        token = resend.set(state["attempt"])
        state["attempt"] += 1
        try:
            with inside("http"):
                response = wrapped(*args, **kwargs)
        finally:
            resend.reset(token)
        if response.status_code in statuses:
            state["last"] = response
            raise RetryableResponse(response, response.status_code)
        return response

    try:
        if allowed:
            return pipeline.call(attempt)
        with no_retry():
            return pipeline.call(attempt)
    except RetryableResponse as exc:
        return exc.response
    except (RejectedError, PolicyTimeoutError) as exc:
        raise _error(exc) from exc.__cause__


async def _wrap_async_send(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if passthrough("http"):
        return await wrapped(*args, **kwargs)
    request = args[0] if args else kwargs["request"]
    _target, pipeline, allowed, statuses = _prepare(request)
    state: dict[str, Any] = {"attempt": 0, "last": None}

    async def attempt() -> Any:
        previous = state["last"]
        if previous is not None:
            state["last"] = None
            await previous.aclose()
        _shorten(request)
        token = resend.set(state["attempt"])
        state["attempt"] += 1
        try:
            with inside("http"):
                response = await wrapped(*args, **kwargs)
        finally:
            resend.reset(token)
        if response.status_code in statuses:
            state["last"] = response
            raise RetryableResponse(response, response.status_code)
        return response

    try:
        if allowed:
            return await pipeline.acall(attempt)
        with no_retry():
            return await pipeline.acall(attempt)
    except RetryableResponse as exc:
        return exc.response
    except (RejectedError, PolicyTimeoutError) as exc:
        raise _error(exc) from exc.__cause__


INTEGRATION = HttpxIntegration()
