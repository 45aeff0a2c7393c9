"""
What the HTTP integrations share: targets, which requests may be retried, and pipelines.

- **Target** = ``host:port`` of the request, never its path or query (paths carry ids; a label
  per id would explode metric cardinality, and queries carry secrets).
- **Retry only what is safe**: connection errors, timeouts, and 408/429/500/502/503/504
  responses; only idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) unless the request
  carries an ``Idempotency-Key`` header or the configuration says otherwise; never a request
  whose body is a one-shot stream. A request that must not be retried still runs through its
  pipeline (breaker, bulkhead, timeouts, metrics) inside :func:`buttress.no_retry`.
- **Responses are not exceptions** in the client libraries, so a retryable response becomes a
  :class:`RetryableResponse` inside the pipeline (the retry and the breaker see a failure, and
  ``Retry-After`` is read from it) and the integration hands the real last response back to the
  caller when retrying stops. A response that is being retried is closed first, so no
  connection leaks.
- **Rejections stay catchable the way the app already catches**: an open breaker raises an
  error that is both a :class:`buttress.CircuitOpenError` and the library's connection error
  (``requests.ConnectionError``, ``httpx.TransportError``...), so existing ``except`` clauses keep
  working.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeGuard
from urllib.parse import urlsplit

from .. import _activation
from .._exceptions import RejectedError
from .._exceptions import TimeoutError as PolicyTimeoutError
from .._http_signals import server_delay
from .._pipeline import Pipeline
from .._registry import REGISTRY
from ..policies._retry import no_retry
from ._base import _inside, compatible, target_pipeline
from ._resend import resend

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})

_transient: tuple[type[BaseException], ...] = ()
_transient_lock = threading.Lock()


def register_transient(*errors: type[BaseException]) -> None:
    """Add a library's transport errors to what HTTP pipelines retry and count as failures."""
    global _transient  # noqa: PLW0603 - a copy-on-write tuple read on every failure
    with _transient_lock:
        _transient = tuple(dict.fromkeys((*_transient, *errors)))


class RetryableResponse(Exception):  # noqa: N818 - it is a response, carried as an exception
    """
    A response whose status asks for a retry, carried through the pipeline as a failure.

    Never reaches the caller: the integration returns ``.response`` instead.
    """

    def __init__(self, response: Any, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.response = response
        self.status_code = status
        # OTel's HTTP conventions: the status code is the error.type of a failed response.
        self.error_type = str(status)


def is_transient(exc: BaseException) -> bool:
    """What HTTP pipelines retry and their breakers count: retryable responses, transport errors."""
    if isinstance(exc, RetryableResponse):
        return True
    if isinstance(exc, _transient):
        return True
    # urllib3 with its own retries disabled wraps the cause in MaxRetryError.
    reason = getattr(exc, "reason", None)
    return type(exc).__name__ == "MaxRetryError" and isinstance(reason, _transient)


def target_of(scheme: str, host: str | None, port: int | None) -> str:
    """``host:port``, with the scheme's default port when none is given."""
    if port is None:
        port = 443 if scheme in ("https", "wss") else 80
    host = (host or "unknown").lower()
    if ":" in host and not host.startswith("["):  # IPv6 literal
        host = f"[{host}]"
    return f"{host}:{port}"


@functools.lru_cache(maxsize=1024)
def _authority_target(scheme: str, netloc: str) -> str:
    parts = urlsplit(f"{scheme}://{netloc}")
    return target_of(parts.scheme, parts.hostname, parts.port)


def target_of_url(url: str) -> str:
    """The target of an absolute URL; parsed once per scheme and authority (cached)."""
    scheme, _, rest = url.partition("://")
    netloc = rest.partition("/")[0].partition("?")[0].partition("#")[0]
    return _authority_target(scheme.lower(), netloc.rpartition("@")[2])  # never credentials


class Route:
    """
    Everything a request to one target needs that does not depend on the request.

    Resolved once per target and cached (:func:`route`): the target's pipeline and its HTTP retry
    rules. A request then costs one dictionary lookup here instead of a settings lookup, a
    registry lookup and two option lookups.
    """

    __slots__ = ("any_method", "idempotency_header", "methods", "pipeline", "statuses", "target")

    def __init__(self, target: str, pipeline: Pipeline) -> None:
        options = _activation.http_options(target)
        self.target = target
        self.pipeline = pipeline
        self.methods = options.retry_methods
        self.any_method = options.retry_non_idempotent
        self.idempotency_header = options.idempotency_header.lower()
        self.statuses = options.retry_statuses

    def retryable(self, method: str, headers: Mapping[str, Any] | None, one_shot: bool) -> bool:
        """Whether a request may be sent more than once."""
        if one_shot:
            return False
        if self.any_method or method in self.methods or method.upper() in self.methods:
            return True
        if headers:
            wanted = self.idempotency_header
            return any(str(k).lower() == wanted for k in headers)
        return False


_routes: dict[str, Route] = {}
_MAX_ROUTES = 1024  # more than the registry's default target cap; past it the cache restarts


def _current(found: Route | None) -> TypeGuard[Route]:
    # Still the registered pipeline? (Tests and reconfiguration replace pipelines; a target
    # past the registry's cap reports as "other" and is resolved again each time.)
    return found is not None and REGISTRY._pipelines.get(found.target) is found.pipeline


def route(target: str) -> Route:
    """The :class:`Route` of *target*, resolved from the active settings on first use."""
    found = _routes.get(target)
    if _current(found):
        return found
    found = Route(target, pipeline_for(target))
    if len(_routes) >= _MAX_ROUTES:
        _routes.clear()
    _routes[target] = found
    return found


_url_routes: dict[str, Route] = {}


def route_of_url(url: str) -> Route:
    """
    The :class:`Route` of an absolute URL, cached by the URL's scheme and authority.

    One call and one dictionary lookup per request on the hot path; the authority is parsed
    only on a miss.
    """
    end = url.find("/", url.find("//") + 2)
    key = url if end < 0 else url[:end]
    if "?" in key or "#" in key:  # no path, but a query or fragment: never part of the key
        key = key.partition("?")[0].partition("#")[0]
    found = _url_routes.get(key)
    if _current(found):
        return found
    found = route(target_of_url(url))
    if len(_url_routes) >= _MAX_ROUTES:
        _url_routes.clear()
    _url_routes[key] = found
    return found


def forget_routes() -> None:
    """Drop every cached route (activation and deactivation change the settings they hold)."""
    _routes.clear()
    _url_routes.clear()


def pipeline_for(target: str) -> Pipeline:
    """The pipeline of an HTTP target, built from the active settings on first use."""
    pipeline: Pipeline = target_pipeline(target, "http", is_transient, retry_after=server_delay)
    return pipeline


@dataclasses.dataclass(frozen=True, slots=True)
class Client:
    """
    What the shared call loop needs to know about one client library.

    Attributes:
        status: The status code of one of its responses (an ``operator.attrgetter`` is
            cheapest: it runs on every attempt).
        close: Releases a response that is being retried (may return an awaitable).
        rejected: Its connection error class, mixed into our rejections.
        timed_out: Its timeout error class, mixed into our timeouts.
    """

    status: Callable[[Any], int]
    close: Callable[[Any], Any]
    rejected: type[BaseException]
    timed_out: type[BaseException]


class _Exchange:
    """
    One logical HTTP call: sends attempts, and keeps the response being retried.

    An object with an ``attempt`` method rather than a closure per call: one allocation instead
    of a function and its cells, on every request.
    """

    __slots__ = ("client", "last", "send", "sent", "statuses")

    def __init__(self, client: Client, statuses: frozenset[int], send: Callable[[], Any]) -> None:
        self.client = client
        self.statuses = statuses
        self.send = send
        self.sent = 0
        self.last: Any = None

    def _release(self) -> Any:
        # Release the response being retried, so its connection goes back to the pool.
        previous, self.last = self.last, None
        return self.client.close(previous)

    def _check(self, response: Any) -> Any:
        status = self.client.status(response)
        if status in self.statuses:
            self.last = response
            raise RetryableResponse(response, status)
        return response

    def attempt(self) -> Any:
        """Send one attempt; a retryable status is raised as :class:`RetryableResponse`."""
        if self.last is not None:
            self._release()
        sent = self.sent
        self.sent = sent + 1
        # _base.inside and the resend number, set inline: this runs for every request. The
        # resend number is only set on resends (0 is its default).
        marker = _inside.set("http")
        token = resend.set(sent) if sent else None
        try:
            response = self.send()
        finally:
            if token is not None:
                resend.reset(token)
            _inside.reset(marker)
        status = self.client.status(response)  # _check(), inlined
        if status in self.statuses:
            self.last = response
            raise RetryableResponse(response, status)
        return response

    async def aattempt(self) -> Any:
        """Like :meth:`attempt`, for coroutine clients; ``client.close`` may be async."""
        if self.last is not None:
            closing = self._release()
            if inspect.isawaitable(closing):
                await closing
        sent = self.sent
        self.sent = sent + 1
        marker = _inside.set("http")
        token = resend.set(sent) if sent else None
        try:
            return self._check(await self.send())
        finally:
            if token is not None:
                resend.reset(token)
            _inside.reset(marker)


_NO_KWARGS: dict[str, Any] = {}


def call(route: Route, retryable: bool, client: Client, send: Callable[[], Any]) -> Any:
    """
    Run one logical HTTP call (``send`` sends one attempt) through *route*'s pipeline.

    Returns the real last response when retrying stops on a retryable status; re-raises the
    library's own errors unchanged, and our rejections and timeouts as library-compatible
    errors.
    """
    exchange = _Exchange(client, route.statuses, send)
    try:
        if retryable:
            # The compiled driver itself (Pipeline.call without its frame).
            return route.pipeline._run(exchange.attempt, (), _NO_KWARGS, 0, None)
        with no_retry():
            return route.pipeline._run(exchange.attempt, (), _NO_KWARGS, 0, None)
    except RetryableResponse as exc:
        return exc.response  # the real last response, status and body intact
    except PolicyTimeoutError as exc:
        raise compatible(exc, client.timed_out) from exc.__cause__
    except RejectedError as exc:
        raise compatible(exc, client.rejected) from exc.__cause__


async def acall(
    route: Route, retryable: bool, client: Client, send: Callable[[], Awaitable[Any]]
) -> Any:
    """Like :func:`call`, for coroutine clients; ``client.close`` may be async."""
    exchange = _Exchange(client, route.statuses, send)
    try:
        if retryable:
            return await route.pipeline._arun(exchange.aattempt, (), _NO_KWARGS, 0, None)
        with no_retry():
            return await route.pipeline._arun(exchange.aattempt, (), _NO_KWARGS, 0, None)
    except RetryableResponse as exc:
        return exc.response
    except PolicyTimeoutError as exc:
        raise compatible(exc, client.timed_out) from exc.__cause__
    except RejectedError as exc:
        raise compatible(exc, client.rejected) from exc.__cause__
