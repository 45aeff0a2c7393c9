"""
requests: every ``Session.request`` runs through the pipeline of its ``host:port``.

Replaced at ``Session.request`` rather than ``Session.send``: OpenTelemetry's requests
instrumentation replaces ``Session.send``, and ``request`` always calls ``send``, so the retry
loop sits above the client span whatever order the two are installed in, and each attempt gets
its own span. requests' own adapter does not retry by default, so attempts are not multiplied.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import functools
import inspect
import operator
from collections.abc import Callable
from typing import Any

from .._config import CONFIG
from .._faults import own_fault
from .._shape import MIN_LEFT, shorter
from .._suppression import OTEL_CONTEXT, SUPPRESS
from ._base import Direct, Integration, _inside, passthrough
from ._http import (
    ENDINGS,
    Client,
    _pipelines,
    _url_routes,
    call,
    compiled,
    fold_positional,
    reason_of,
    register_transient,
    route_of_url,
    settle,
)

__all__ = ["INTEGRATION", "RequestsIntegration"]


def one_shot(value: Any) -> bool:
    """A body that can be read only once: a file, an iterator, a generator, sync or async."""
    if value is None or isinstance(value, bytes | str | dict | list | tuple):
        return False
    return (
        hasattr(value, "read")
        or hasattr(value, "__next__")
        or hasattr(value, "__aiter__")
        or hasattr(value, "__anext__")
        or inspect.isgenerator(value)
        or inspect.isasyncgen(value)
    )


def tighter(timeout: Any, left: float | None) -> Any:
    """
    The caller's timeout, shortened to what is left of the deadline.

    A value that is not a number (nor a tuple of them) is left as the caller gave it, so that
    requests rejects it in its own words.
    """
    if left is None:
        return timeout
    left = max(left, MIN_LEFT)
    if timeout is None:
        return left
    if isinstance(timeout, tuple):
        return tuple(left if t is None else shorter(t, left) for t in timeout)
    return shorter(timeout, left)


class RequestsIntegration(Integration):
    """Replaces ``requests.Session.request``."""

    name = "requests"
    module = "requests"

    def patches(self) -> list[tuple[str, str, Any]]:
        """The patch list."""
        import requests  # noqa: PLC0415

        register_transient(
            requests.exceptions.ConnectionError,
            requests.exceptions.Timeout,
            requests.exceptions.ChunkedEncodingError,
        )
        return [("requests.sessions", "Session.request", Direct(_patched_request))]


@functools.cache
def _client() -> Client:
    import requests  # noqa: PLC0415

    return Client(
        status=operator.attrgetter("status_code"),
        close=operator.methodcaller("close"),
        rejected=requests.exceptions.ConnectionError,
        timed_out=requests.exceptions.Timeout,
        timeout_argument="timeout",
        tighten=tighter,
        synthetic=_synthetic,
    )


def _synthetic(status: int, headers: dict[str, str], body: bytes, args: tuple[Any, ...]) -> Any:
    """A ``requests.Response`` made by buttress (see ``_http.open_response``); never sent."""
    import requests  # noqa: PLC0415
    from requests.structures import CaseInsensitiveDict  # noqa: PLC0415

    _session, method, url = args
    response = requests.Response()
    response.status_code = status
    response.reason = reason_of(status)
    response.headers = CaseInsensitiveDict(headers)
    response._content = body
    response._content_consumed = True  # there is no raw stream to read or close
    response.encoding = "utf-8"
    response.url = _text(url)
    response.request = requests.Request(str(method).upper(), response.url).prepare()
    return response


def _patched_request(original: Callable[..., Any], integration: Integration) -> Callable[..., Any]:
    """
    ``Session.request``, through the pipeline of the request's ``host:port``.

    A plain function with the original's leading parameters: Python binds ``method`` and
    ``url`` whether they come by position (``Session.get``) or by keyword (``requests.get``),
    and every call gets its own ``kwargs`` dict, which the driver writes each attempt's
    ``timeout`` into (``Client.timeout_argument``).
    """
    client = _client()

    @functools.wraps(original)
    def request(self: Any, method: Any, url: Any, *args: Any, **kwargs: Any) -> Any:
        # passthrough("http"), inlined for the default OTel runtime context: every request pays.
        if (
            not integration.armed
            or not CONFIG.active
            or _inside.get() == "http"
            or (OTEL_CONTEXT.get().get(SUPPRESS) if OTEL_CONTEXT else passthrough("http"))
        ):
            return original(self, method, url, *args, **kwargs)
        # Parameters past url by position (rare): as keywords, or the client's own error.
        if args and not fold_positional(original, args, kwargs):
            return original(self, method, url, *args, **kwargs)
        try:
            if type(url) is str:
                # route_of_url()'s cache hit, inlined: one frame fewer on every request.
                end = url.find("/", url.find("//") + 2)
                via = _url_routes.get(url if end < 0 else url[:end])
                if via is None or _pipelines.get(via.target) is not via.pipeline:
                    via = route_of_url(url)
            else:
                via = route_of_url(_text(url))
        except ValueError:  # a malformed URL (bad port, bad IPv6): requests says so, its way
            return original(self, method, url, **kwargs)
        except Exception:  # buttress's own fault: the request goes out unprotected
            own_fault("routing a requests request")
            return original(self, method, url, **kwargs)
        data = kwargs.get("data")
        body_once = (data is not None and one_shot(data)) or (
            "files" in kwargs and _files_one_shot(kwargs)
        )
        if method in via.methods and not body_once:
            # The common case (GET): _http.call() inlined, one frame fewer on every request.
            run = via.runs.get(client) or compiled(via, client)
            try:
                return run(original, (self, method, url), kwargs, 0, None)
            except ENDINGS as exc:
                return settle(exc, client, via, (self, method, url))
        retryable = via.retryable(str(method), kwargs.get("headers"), body_once)
        return call(via, retryable, client, original, (self, method, url), kwargs)

    return request


def _text(url: Any) -> str:
    return url.decode() if isinstance(url, bytes) else str(url)


def _files_one_shot(call: dict[str, Any]) -> bool:
    files = call.get("files")
    if not files:
        return False
    values = files.values() if isinstance(files, dict) else (v for _k, v in files)
    for value in values:
        item = value[1] if isinstance(value, tuple) and len(value) > 1 else value
        if one_shot(item):
            return True
    return False


INTEGRATION = RequestsIntegration()
