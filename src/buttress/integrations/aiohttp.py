"""
aiohttp: every ``ClientSession._request`` runs through the pipeline of its ``host:port``.

That covers ``get``, ``post``, ``request`` and the rest, which all go through ``_request``.

OpenTelemetry's aiohttp instrumentation works through the session's trace configs, which fire
inside ``_request``: wrapping ``_request`` puts the retry loop above them, so each attempt is its
own client span. The deadline reaches aiohttp as the request's ``ClientTimeout``: the caller's,
else the session's, with its total shortened to what is left of the deadline.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import asyncio
import functools
import operator
from collections.abc import Callable
from typing import Any

from .._faults import own_fault
from .._shape import shorter
from ._base import Direct, Integration, passthrough
from ._http import (
    ENDINGS,
    Client,
    Route,
    acall,
    acompiled,
    fold_positional,
    reason_of,
    register_transient,
    route,
    route_of_url,
    settle,
    target_of,
)
from .requests import one_shot

__all__ = ["INTEGRATION", "AiohttpIntegration"]


class AiohttpIntegration(Integration):
    """Replaces ``aiohttp.ClientSession._request``."""

    name = "aiohttp"
    module = "aiohttp"

    def patches(self) -> list[tuple[str, str, Any]]:
        """The patch list."""
        import aiohttp  # noqa: PLC0415

        register_transient(
            aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError
        )
        return [("aiohttp.client", "ClientSession._request", Direct(_patched_request))]


_last_tightened: tuple[Any, float, Any] = (None, 0.0, None)
"""The last timeout _tighter() built, with what it was built from."""


def _tighter(current: Any, left: float) -> Any:
    """
    The request's timeout (the caller's, else the session's), total shortened to what is left.

    Its other budgets (connect, sock_read, ...) stay. A first attempt always has the same time
    left (its attempt timeout), and most requests carry their session's timeout: so the last
    result is kept and handed out again for the same timeout object and time left.
    ``ClientTimeout`` is frozen, so sharing it is safe; building one costs about 1.5 us, a fifth
    of buttress's whole cost per aiohttp request.
    """
    global _last_tightened  # noqa: PLW0603 - one tuple, replaced whole
    was, was_left, tightened = _last_tightened
    if current is was and left == was_left:
        return tightened
    import aiohttp  # noqa: PLC0415

    if isinstance(current, aiohttp.ClientTimeout):
        total = left if current.total is None else min(current.total, left)
        # Built field by field: attrs.evolve() costs four times as much.
        tightened = aiohttp.ClientTimeout(
            total=total,
            connect=current.connect,
            sock_read=current.sock_read,
            sock_connect=current.sock_connect,
            ceil_threshold=current.ceil_threshold,
        )
        _last_tightened = (current, left, tightened)
        return tightened
    return shorter(current, left)  # a number; anything else, aiohttp judges in its own words


def _route(session: Any, str_or_url: Any) -> Route:
    # A URL object, or a path under the session's base URL: parsed.
    from yarl import URL  # noqa: PLC0415

    url = str_or_url if isinstance(str_or_url, URL) else URL(str(str_or_url))
    if not url.is_absolute() and session._base_url is not None:
        url = session._base_url.join(url)
    return route(target_of(url.scheme, url.host, url.explicit_port or url.port))


def _patched_request(original: Callable[..., Any], integration: Integration) -> Callable[..., Any]:
    """``ClientSession._request``, through the pipeline of the request's ``host:port``."""
    client = _client()

    @functools.wraps(original)
    async def _request(self: Any, method: Any, str_or_url: Any, *args: Any, **kwargs: Any) -> Any:
        if not integration.armed or passthrough("http"):
            return await original(self, method, str_or_url, *args, **kwargs)
        # Parameters past the URL by position: as keywords, or the client's own error.
        if args and not fold_positional(original, args, kwargs):
            return await original(self, method, str_or_url, *args, **kwargs)
        try:
            if type(str_or_url) is str and self._base_url is None:
                via = route_of_url(str_or_url)  # cached by scheme and authority
            else:
                via = _route(self, str_or_url)
        except ValueError:  # a malformed URL: aiohttp reports it, in its own words
            return await original(self, method, str_or_url, **kwargs)
        except Exception:  # buttress's own fault: the request goes out unprotected
            own_fault("routing an aiohttp request")
            return await original(self, method, str_or_url, **kwargs)
        if kwargs.get("timeout") is None:
            # The session's timeout, so that the driver shortens its total and keeps the rest.
            kwargs["timeout"] = self.timeout
        data = kwargs.get("data")
        if method in via.methods and data is None:
            # The common case (GET): _http.acall() inlined, one coroutine fewer per request.
            run = via.aruns.get(client) or acompiled(via, client)
            try:
                return await run(original, (self, method, str_or_url), kwargs, 0, None)
            except ENDINGS as exc:
                return settle(exc, client, via, (self, method, str_or_url))
        retryable = via.retryable(
            str(method), kwargs.get("headers"), data is not None and one_shot(data)
        )
        return await acall(via, retryable, client, original, (self, method, str_or_url), kwargs)

    return _request


@functools.cache
def _client() -> Client:
    # One per process: each pipeline compiles its driver once per Client (see _http.compiled).
    import aiohttp  # noqa: PLC0415

    return Client(
        status=operator.attrgetter("status"),
        close=operator.methodcaller("release"),
        rejected=aiohttp.ClientConnectionError,
        timed_out=aiohttp.ServerTimeoutError,
        timeout_argument="timeout",
        tighten=_tighter,
        synthetic=_synthetic,
    )


def _synthetic(status: int, headers: dict[str, str], body: bytes, args: tuple[Any, ...]) -> Any:
    """
    An ``aiohttp.ClientResponse`` made by buttress (see ``_http.open_response``); never sent.

    aiohttp has no public way to make a response without a connection: this one is built the
    way aiohttp builds a finished response, with its body read and its content stream fed.
    If a future aiohttp changes those internals, building fails and the caller gets the
    connection error instead (``open_response`` catches it); a test pins the current shape.
    """
    import asyncio  # noqa: PLC0415
    from types import SimpleNamespace  # noqa: PLC0415

    import aiohttp  # noqa: PLC0415
    from aiohttp.client_reqrep import ClientResponse, RequestInfo  # noqa: PLC0415
    from aiohttp.helpers import TimerNoop  # noqa: PLC0415
    from multidict import CIMultiDict, CIMultiDictProxy  # noqa: PLC0415
    from yarl import URL  # noqa: PLC0415

    session, method, str_or_url = args
    url = str_or_url if isinstance(str_or_url, URL) else URL(str(str_or_url))
    if not url.is_absolute() and session._base_url is not None:
        url = session._base_url.join(url)
    loop = asyncio.get_running_loop()
    method = str(method).upper()
    info = RequestInfo(url, method, CIMultiDictProxy(CIMultiDict()), url)
    response = ClientResponse(
        method,
        url,
        writer=None,
        continue100=None,
        timer=TimerNoop(),
        request_info=info,
        traces=[],
        loop=loop,
        session=session,
        stream_writer=SimpleNamespace(output_size=0),  # type: ignore[arg-type]
    )
    response.status = status
    response.reason = reason_of(status)
    response._headers = CIMultiDictProxy(CIMultiDict(headers))
    response._raw_headers = tuple((k.encode(), v.encode()) for k, v in headers.items())
    response._body = body
    idle = SimpleNamespace(
        _reading_paused=False, pause_reading=lambda: None, resume_reading=lambda **_: None
    )
    content = aiohttp.StreamReader(idle, 2**16, loop=loop)  # type: ignore[arg-type]
    content.feed_data(body)
    content.feed_eof()
    response.content = content
    return response


INTEGRATION = AiohttpIntegration()
