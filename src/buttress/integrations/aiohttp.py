"""
aiohttp: every ``ClientSession._request`` runs through the pipeline of its ``host:port``.

That covers ``get``, ``post``, ``request`` and the rest, which all go through ``_request``.

OpenTelemetry's aiohttp instrumentation works through the session's trace configs, which fire
inside ``_request``: wrapping ``_request`` puts the retry loop above them, so each attempt is its
own client span. The deadline reaches aiohttp as the request's ``ClientTimeout``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import asyncio
import functools
import operator
from typing import Any

from ..policies._timeout import remaining
from ._base import Integration, passthrough
from ._http import Client, acall, register_transient, route, target_of
from .requests import one_shot

__all__ = ["INTEGRATION", "AiohttpIntegration"]


class AiohttpIntegration(Integration):
    """Patches ``aiohttp.ClientSession._request``."""

    name = "aiohttp"
    module = "aiohttp"

    def patches(self) -> list[tuple[str, str, Any]]:
        """The patch list."""
        import aiohttp  # noqa: PLC0415

        register_transient(
            aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError
        )
        return [("aiohttp.client", "ClientSession._request", _wrap_request)]


def _timeout(current: Any, left: float | None) -> Any:
    import aiohttp  # noqa: PLC0415

    if left is None:
        return current
    left = max(left, 0.001)
    if isinstance(current, aiohttp.ClientTimeout):
        total = left if current.total is None else min(current.total, left)
        return aiohttp.ClientTimeout(
            total=total,
            connect=current.connect,
            sock_read=current.sock_read,
            sock_connect=current.sock_connect,
        )
    return aiohttp.ClientTimeout(total=left)


async def _wrap_request(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if passthrough("http"):
        return await wrapped(*args, **kwargs)
    from yarl import URL  # noqa: PLC0415

    method = str(args[0] if args else kwargs["method"])
    raw_url = args[1] if len(args) > 1 else kwargs["str_or_url"]
    try:
        url = raw_url if isinstance(raw_url, URL) else URL(str(raw_url))
        if not url.is_absolute() and instance._base_url is not None:
            url = instance._base_url.join(url)
        via = route(target_of(url.scheme, url.host, url.explicit_port or url.port))
    except ValueError:  # a malformed URL: aiohttp reports it, in its own words
        return await wrapped(*args, **kwargs)
    retryable = via.retryable(method, kwargs.get("headers"), one_shot(kwargs.get("data")))
    user_timeout = kwargs.get("timeout")

    async def send() -> Any:
        call_kwargs = kwargs
        left = remaining()
        if left is not None:
            current = instance.timeout if user_timeout is None else user_timeout
            call_kwargs = {**kwargs, "timeout": _timeout(current, left)}
        return await wrapped(*args, **call_kwargs)

    return await acall(via, retryable, _client(), send)


@functools.cache
def _client() -> Client:
    # One per process: each pipeline compiles its driver once per Client (see _http.compiled).
    import aiohttp  # noqa: PLC0415

    return Client(
        status=operator.attrgetter("status"),
        close=operator.methodcaller("release"),
        rejected=aiohttp.ClientConnectionError,
        timed_out=aiohttp.ServerTimeoutError,
    )


INTEGRATION = AiohttpIntegration()
