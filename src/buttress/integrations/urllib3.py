"""
urllib3: every ``PoolManager.request`` or ``HTTPConnectionPool.request`` goes through a pipeline.

The pipeline is that of the request's ``host:port``.

Patched at ``RequestMethods.request``, the high-level entry both share, above ``urlopen`` where
OpenTelemetry's urllib3 instrumentation creates its client span. requests calls ``urlopen``
directly, so a requests call is never counted twice. urllib3 retries on its own by default
(``Retry(3)``): while buttress retries a call, urllib3's own connect, read and status retries are
set to zero (redirects still follow), so attempts are not multiplied; a caller's explicit
``retries=`` is left alone.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import functools
import operator
from typing import Any
from urllib.parse import urlsplit

from ..policies._timeout import remaining
from ._base import Integration, passthrough
from ._http import Client, call, register_transient, route, target_of
from .requests import one_shot

__all__ = ["INTEGRATION", "Urllib3Integration"]


class Urllib3Integration(Integration):
    """Patches ``urllib3._request_methods.RequestMethods.request``."""

    name = "urllib3"
    module = "urllib3"

    def patches(self) -> list[tuple[str, str, Any]]:
        """The patch list."""
        import urllib3  # noqa: PLC0415

        register_transient(
            urllib3.exceptions.NewConnectionError,
            urllib3.exceptions.ProtocolError,
            urllib3.exceptions.TimeoutError,
            urllib3.exceptions.ConnectTimeoutError,
        )
        return [("urllib3._request_methods", "RequestMethods.request", _wrap_request)]


def _target(instance: Any, url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme and parts.hostname:  # PoolManager: absolute URL
        return target_of(parts.scheme, parts.hostname, parts.port)
    # A connection pool: the URL is a path; the pool knows where it goes.
    return target_of(
        getattr(instance, "scheme", "http"),
        getattr(instance, "host", None),
        getattr(instance, "port", None),
    )


def _release(response: Any) -> None:
    response.drain_conn()
    response.release_conn()


def _wrap_request(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if passthrough("http"):
        return wrapped(*args, **kwargs)
    import urllib3  # noqa: PLC0415

    method = str(args[0] if args else kwargs["method"])
    url = str(args[1] if len(args) > 1 else kwargs["url"])
    try:
        via = route(_target(instance, url))
    except ValueError:  # a malformed URL: urllib3 reports it, in its own words
        return wrapped(*args, **kwargs)
    body = args[2] if len(args) > 2 else kwargs.get("body")
    headers = args[4] if len(args) > 4 else kwargs.get("headers")
    retryable = via.retryable(method, headers, one_shot(body))
    call_kwargs = dict(kwargs)
    if "retries" not in call_kwargs:
        call_kwargs["retries"] = urllib3.Retry(
            total=None, connect=0, read=0, other=0, status=0, redirect=3
        )
    user_timeout = call_kwargs.get("timeout")

    def send() -> Any:
        left = remaining()
        this = call_kwargs
        if left is not None and not isinstance(user_timeout, urllib3.Timeout):
            left = max(left, 0.001)
            this = {
                **call_kwargs,
                "timeout": left if user_timeout is None else min(user_timeout, left),
            }
        return wrapped(*args, **this)

    return call(via, retryable, _client(), send)


@functools.cache
def _client() -> Client:
    # One per process: each pipeline compiles its driver once per Client (see _http.compiled).
    import urllib3  # noqa: PLC0415

    return Client(
        status=operator.attrgetter("status"),
        close=_release,
        rejected=urllib3.exceptions.HTTPError,
        timed_out=urllib3.exceptions.TimeoutError,
    )


INTEGRATION = Urllib3Integration()
