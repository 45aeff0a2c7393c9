"""
httpx and httpx2: every ``Client.send`` and ``AsyncClient.send`` goes through a pipeline.

The pipeline is that of the request's ``host:port``.

``send`` is above the transports, where OpenTelemetry's httpx instrumentation creates its client
span, so each attempt is its own span. httpx transports do not retry by default. The deadline
reaches the transport through the request's ``timeout`` extension, shortened per attempt.

httpx2 (pydantic's successor, which the openai 3 and anthropic 2 SDKs send through) has the same
API, so one implementation patches both; each is its own integration (``httpx``, ``httpx2``).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import functools
import importlib
import operator
from collections.abc import Callable
from types import ModuleType
from typing import Any

from .._faults import own_fault
from .._shape import MIN_LEFT
from ..policies._timeout import remaining
from ._base import Direct, Integration, passthrough
from ._http import Client, Route, acall, call, register_transient, route, target_of

__all__ = ["HTTPX2_INTEGRATION", "INTEGRATION", "HttpxIntegration"]


class HttpxIntegration(Integration):
    """Replaces ``Client.send`` and ``AsyncClient.send`` of httpx or an API-compatible fork."""

    def __init__(self, module: str) -> None:
        super().__init__()
        self.name = module
        self.module = module

    def patches(self) -> list[tuple[str, str, Any]]:
        """The patch list."""
        lib = importlib.import_module(self.module)
        register_transient(lib.TimeoutException, lib.NetworkError, lib.RemoteProtocolError)
        return [
            (self.module, "Client.send", _sync_send(lib)),
            (self.module, "AsyncClient.send", _async_send(lib)),
        ]


def _prepare(lib: ModuleType, request: Any) -> tuple[Route, bool]:
    url = request.url
    via = route(target_of(url.scheme, url.host, url.port))
    try:
        request.content  # noqa: B018 - raises for a streaming (one-shot) body
        one_shot = False
    except lib.RequestNotRead:
        one_shot = True
    method = request.method
    if method in via.methods and not one_shot:
        return via, True  # the common case (GET), decided without a call
    return via, via.retryable(method, request.headers, one_shot)


def _shorten(request: Any) -> None:
    # Each of httpx's four timeouts, shortened to what is left of the attempt's deadline, in a
    # new extensions dict: the caller may share the one it passed between requests.
    left = remaining()
    if left is None:
        return
    left = max(left, MIN_LEFT)
    given: dict[str, Any] = request.extensions.get("timeout") or {}
    budgets: tuple[Any, ...] = (
        given.get("connect"),
        given.get("read"),
        given.get("write"),
        given.get("pool"),
    )
    if None not in budgets and max(budgets) <= left:
        return  # the common case (httpx's default is 5 s each): nothing to shorten
    shortened = {
        key: left if value is None else min(value, left)
        for key, value in zip(_BUDGETS, budgets, strict=True)
    }
    request.extensions = {**request.extensions, "timeout": {**given, **shortened}}


_BUDGETS = ("connect", "read", "write", "pool")


def _client(lib: ModuleType, *, is_async: bool) -> Client:
    def synthetic(status: int, headers: dict[str, str], body: bytes, args: tuple[Any, ...]) -> Any:
        # A response made by buttress (see _http.open_response): never sent, body in memory.
        _client, request = args
        return lib.Response(status, headers=headers, content=body, request=request)

    return Client(
        status=operator.attrgetter("status_code"),
        close=operator.methodcaller("aclose" if is_async else "close"),
        rejected=lib.TransportError,
        timed_out=lib.TimeoutException,
        synthetic=synthetic,
    )


def _sync_send(lib: ModuleType) -> Direct:
    client = _client(lib, is_async=False)

    def make(original: Callable[..., Any], integration: Integration) -> Callable[..., Any]:
        @functools.wraps(original)
        def send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            # Anything after the request is keyword-only in httpx: by position, httpx's error.
            if not integration.armed or args or passthrough("http"):
                return original(self, request, *args, **kwargs)
            try:
                via, retryable = _prepare(lib, request)
            except Exception:
                own_fault("routing an httpx request")
                return original(self, request, **kwargs)

            def attempt(self: Any, request: Any) -> Any:
                _shorten(request)
                return original(self, request, **kwargs)

            return call(via, retryable, client, attempt, (self, request))

        return send

    return Direct(make)


def _async_send(lib: ModuleType) -> Direct:
    client = _client(lib, is_async=True)

    def make(original: Callable[..., Any], integration: Integration) -> Callable[..., Any]:
        @functools.wraps(original)
        async def send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            if not integration.armed or args or passthrough("http"):
                return await original(self, request, *args, **kwargs)
            try:
                via, retryable = _prepare(lib, request)
            except Exception:
                own_fault("routing an httpx request")
                return await original(self, request, **kwargs)

            async def attempt(self: Any, request: Any) -> Any:
                _shorten(request)
                return await original(self, request, **kwargs)

            return await acall(via, retryable, client, attempt, (self, request))

        return send

    return Direct(make)


INTEGRATION = HttpxIntegration("httpx")
HTTPX2_INTEGRATION = HttpxIntegration("httpx2")
