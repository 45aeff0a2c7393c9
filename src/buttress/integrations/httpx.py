"""
httpx: every ``Client.send`` and ``AsyncClient.send`` runs through its ``host:port`` pipeline.

``send`` is above the transports, where OpenTelemetry's httpx instrumentation creates its client
span, so each attempt is its own span. httpx transports do not retry by default. The deadline
reaches the transport through the request's ``timeout`` extension, shortened per attempt.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from typing import Any

from ..policies._timeout import remaining
from ._base import Integration, passthrough
from ._http import Client, acall, call, register_transient, retry_allowed, target_of

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


def _prepare(request: Any) -> tuple[str, bool]:
    import httpx  # noqa: PLC0415

    url = request.url
    target = target_of(url.scheme, url.host, url.port)
    try:
        request.content  # noqa: B018 - raises for a streaming (one-shot) body
        one_shot = False
    except httpx.RequestNotRead:
        one_shot = True
    return target, retry_allowed(request.method, request.headers, one_shot, target)


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


def _client(*, is_async: bool) -> Client:
    import httpx  # noqa: PLC0415

    return Client(
        status=lambda response: response.status_code,
        close=(lambda r: r.aclose()) if is_async else (lambda r: r.close()),
        rejected=httpx.TransportError,
        timed_out=httpx.TimeoutException,
    )


def _wrap_send(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if passthrough("http"):
        return wrapped(*args, **kwargs)
    request = args[0] if args else kwargs["request"]
    target, retryable = _prepare(request)

    def send() -> Any:
        _shorten(request)
        return wrapped(*args, **kwargs)

    return call(target, retryable, _client(is_async=False), send)


async def _wrap_async_send(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if passthrough("http"):
        return await wrapped(*args, **kwargs)
    request = args[0] if args else kwargs["request"]
    target, retryable = _prepare(request)

    async def send() -> Any:
        _shorten(request)
        return await wrapped(*args, **kwargs)

    return await acall(target, retryable, _client(is_async=True), send)


INTEGRATION = HttpxIntegration()
