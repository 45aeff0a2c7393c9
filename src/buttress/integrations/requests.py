"""
requests: every ``Session.request`` runs through the pipeline of its ``host:port``.

Patched at ``Session.request`` rather than ``Session.send``: OpenTelemetry's requests
instrumentation replaces ``Session.send``, and ``request`` always calls ``send``, so the retry
loop sits above the client span whatever order the two are installed in, and each attempt gets
its own span. requests' own adapter does not retry by default, so attempts are not multiplied.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import functools
import inspect
import operator
from typing import Any

from .._config import CONFIG
from .._shape import MIN_LEFT
from ._base import _OTEL_CONTEXT, _SUPPRESS, Integration, _inside, passthrough
from ._http import Client, _pipelines, _url_routes, call, register_transient, route_of_url

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
    """The caller's timeout, shortened to what is left of the deadline."""
    if left is None:
        return timeout
    left = max(left, MIN_LEFT)
    if timeout is None:
        return left
    if isinstance(timeout, tuple):
        return tuple(left if t is None else min(t, left) for t in timeout)
    return min(timeout, left)


_SIGNATURE: inspect.Signature | None = None


def _normalise(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    # Arguments passed positionally past (method, url), as keywords.
    global _SIGNATURE  # noqa: PLW0603
    if _SIGNATURE is None:
        import requests  # noqa: PLC0415

        _SIGNATURE = inspect.signature(requests.Session.request)
    bound = _SIGNATURE.bind(None, *args, **kwargs)
    arguments = dict(bound.arguments)
    arguments.pop("self", None)
    return arguments


class RequestsIntegration(Integration):
    """Patches ``requests.Session.request``."""

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
        return [("requests.sessions", "Session.request", _wrap_request)]


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
    )


def _wrap_request(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    # passthrough("http"), inlined for the default OTel runtime context: every request pays it.
    if (
        not CONFIG.active
        or _inside.get() == "http"
        or (_OTEL_CONTEXT.get().get(_SUPPRESS) if _OTEL_CONTEXT else passthrough("http"))
    ):
        return wrapped(*args, **kwargs)
    # The common shape, Session.get/post/...: (method, url) positional, the rest keywords. Every
    # call gets its own kwargs dict, so the timeout can be set in it directly.
    if len(args) == 2 and "method" not in kwargs:
        method, url = args
    elif not args and "method" in kwargs and "url" in kwargs:
        # requests.get/post/... (requests.api.request) pass both by keyword.
        method, url = kwargs.pop("method"), kwargs.pop("url")
        args = (method, url)
    else:
        kwargs = _normalise(args, kwargs)
        method, url = kwargs.pop("method"), kwargs.pop("url")
        args = (method, url)
    try:
        if type(url) is str:
            # route_of_url()'s cache hit, inlined: one frame fewer on every request.
            end = url.find("/", url.find("//") + 2)
            via = _url_routes.get(url if end < 0 else url[:end])
            if via is None or _pipelines.get(via.target) is not via.pipeline:
                via = route_of_url(url)
        else:
            via = route_of_url(_text(url))
    except ValueError:  # a malformed URL (bad port, bad IPv6): requests reports it, in its words
        return wrapped(*args, **kwargs)
    data = kwargs.get("data")
    body_once = (data is not None and one_shot(data)) or (
        "files" in kwargs and _files_one_shot(kwargs)
    )
    if method in via.methods and not body_once:
        retryable = True  # the common case (GET), decided without a call
    else:
        retryable = via.retryable(str(method), kwargs.get("headers"), body_once)
    # The driver hands each attempt what is left of its deadline as the ``timeout`` argument
    # (Client.timeout_argument), shortening the caller's own timeout if there is one.
    return call(via, retryable, _client(), wrapped, args, kwargs)


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
