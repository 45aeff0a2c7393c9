"""
urllib3: every ``PoolManager.request`` or ``HTTPConnectionPool.request`` goes through a pipeline.

The pipeline is that of the request's ``host:port``.

Replaced at ``RequestMethods.request``, the high-level entry both share, above ``urlopen`` where
OpenTelemetry's urllib3 instrumentation creates its client span. requests calls ``urlopen``
directly, so a requests call is never counted twice. urllib3 retries on its own by default
(``Retry(3)``): while buttress retries a call, urllib3's own connect, read and status retries are
set to zero (redirects still follow), so attempts are not multiplied; a caller's explicit
``retries=`` is left alone. In observe mode nothing is set: urllib3 retries as the pool (or the
call) says, and the pipeline sees its whole loop as one attempt.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from typing import Any

from .._faults import own_fault
from ._base import Direct, Integration, passthrough
from ._http import (
    Client,
    Route,
    call,
    fold_positional,
    reason_of,
    register_transient,
    route,
    route_of_url,
    target_of,
)
from .requests import one_shot

__all__ = ["INTEGRATION", "Urllib3Integration"]


class Urllib3Integration(Integration):
    """Replaces ``urllib3._request_methods.RequestMethods.request``."""

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
        return [("urllib3._request_methods", "RequestMethods.request", Direct(_patched_request))]


def _route(pool: Any, url: str) -> Route:
    if url[:8].lower().startswith(("http://", "https://")):
        return route_of_url(url)  # PoolManager: an absolute URL (cached by scheme and authority)
    # A connection pool: the URL is a path; the pool knows where it goes.
    return route(
        target_of(
            getattr(pool, "scheme", "http"),
            getattr(pool, "host", None),
            getattr(pool, "port", None),
        )
    )


def _release(response: Any) -> None:
    response.drain_conn()
    response.release_conn()


@functools.cache
def _client() -> Client:
    # One per process: each pipeline compiles its driver once per Client (see _http.compiled).
    import urllib3  # noqa: PLC0415

    return Client(
        status=operator.attrgetter("status"),
        close=_release,
        rejected=urllib3.exceptions.HTTPError,
        timed_out=urllib3.exceptions.TimeoutError,
        # Client.tighten's default shortens a number; a urllib3.Timeout (separate connect and
        # read budgets) is the caller's own decision and stays as it is.
        timeout_argument="timeout",
        synthetic=_synthetic,
    )


def _synthetic(status: int, headers: dict[str, str], body: bytes, args: tuple[Any, ...]) -> Any:
    """A ``urllib3.HTTPResponse`` made by buttress (see ``_http.open_response``); never sent."""
    import urllib3  # noqa: PLC0415

    _pool, method, url = args
    return urllib3.HTTPResponse(
        body=body,
        headers=headers,
        status=status,
        reason=reason_of(status),
        preload_content=True,
        request_method=str(method).upper(),
        request_url=str(url),
    )


@functools.cache
def _no_retries() -> Any:
    # urllib3's own retries while buttress retries: none, but redirects are still followed. One
    # object for every call: urllib3 never changes a Retry, increment() returns a new one.
    import urllib3  # noqa: PLC0415

    return urllib3.Retry(total=None, connect=0, read=0, other=0, status=0, redirect=3)


def _patched_request(original: Callable[..., Any], integration: Integration) -> Callable[..., Any]:
    """``RequestMethods.request``, through the pipeline of the request's ``host:port``."""
    client = _client()

    @functools.wraps(original)
    def request(self: Any, method: Any, url: Any, *args: Any, **kwargs: Any) -> Any:
        if not integration.armed or passthrough("http"):
            return original(self, method, url, *args, **kwargs)
        # Parameters past url by position (body, fields, headers, json): as keywords, or the
        # client's own error.
        if args and not fold_positional(original, args, kwargs):
            return original(self, method, url, *args, **kwargs)
        try:
            via = _route(self, str(url))
        except ValueError:  # a malformed URL: urllib3 reports it, in its own words
            return original(self, method, url, **kwargs)
        except Exception:  # buttress's own fault: the request goes out unprotected
            own_fault("routing a urllib3 request")
            return original(self, method, url, **kwargs)
        retryable = via.retryable(str(method), kwargs.get("headers"), one_shot(kwargs.get("body")))
        if "retries" not in kwargs and not via.pipeline.context.observe:
            kwargs["retries"] = _no_retries()
        # The driver hands each attempt what is left of its deadline as ``timeout``.
        return call(via, retryable, client, original, (self, method, url), kwargs)

    return request


INTEGRATION = Urllib3Integration()
