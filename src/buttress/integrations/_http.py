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
import http
import inspect
import json
import logging
import math
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from .. import _activation
from .._caches import remember
from .._driver_async import AsyncRun
from .._driver_sync import SyncRun
from .._exceptions import CircuitOpenError, RejectedError
from .._exceptions import TimeoutError as PolicyTimeoutError
from .._http_signals import server_delay
from .._pipeline import Pipeline
from .._registry import REGISTRY
from .._shape import CallShape, shorter
from ..policies._retry import no_retry
from ._base import _inside, alive_but_busy, compatible, target_pipeline
from ._resend import resend

logger = logging.getLogger("buttress")

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

    __slots__ = (
        "answers_open",
        "any_method",
        "aruns",
        "idempotency_header",
        "methods",
        "pipeline",
        "runs",
        "statuses",
        "target",
    )

    def __init__(self, target: str, pipeline: Pipeline) -> None:
        # Never raises: a failed lookup is reported there and gives the defaults.
        options = _activation.http_options(target)
        self.target = target
        self.pipeline = pipeline
        # Both spellings: requests.get() sends "get", Session.get() "GET"; one set lookup each.
        self.methods = frozenset(
            spelling for m in options.retry_methods for spelling in (m.upper(), m.lower())
        )
        self.any_method = options.retry_non_idempotent
        self.idempotency_header = options.idempotency_header.lower()
        self.statuses = options.retry_statuses
        self.answers_open = options.open_breaker == "response"
        # The pipeline's drivers compiled per client library (see compiled()).
        self.runs: dict[Client, SyncRun] = {}
        self.aruns: dict[Client, AsyncRun] = {}

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


_pipelines = REGISTRY._pipelines  # read on every request: is a cached route still current?


def _current(found: Route) -> bool:
    # Is *found*'s pipeline still the one the registry gives its target? (Tests and
    # reconfiguration replace pipelines; a target past the registry's bound has an unlisted one.)
    pipeline = _pipelines.get(found.target)
    if pipeline is None:
        return REGISTRY.overflow(found.target) is found.pipeline
    return pipeline is found.pipeline


def route(target: str) -> Route:
    """The :class:`Route` of *target*, resolved from the active settings on first use."""
    found = _routes.get(target)
    if found is not None and _current(found):
        return found
    return remember(_routes, target, Route(target, pipeline_for(target)), _MAX_ROUTES)


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
    if found is not None and _current(found):
        return found
    return remember(_url_routes, key, route(target_of_url(url)), _MAX_ROUTES)


def forget_routes() -> None:
    """Drop every cached route (activation and deactivation change the settings they hold)."""
    _routes.clear()
    _url_routes.clear()


def breaker_failure(exc: BaseException) -> bool:
    """
    What HTTP breakers count: what is retried, but a 429.

    A 429 is a live server pacing its clients (``Retry-After`` does that); an outlier, in
    Envoy's words, is one that fails: its ``consecutive_5xx`` ignores 429 too. Counting 429s
    would open a breaker on a healthy, busy dependency and lock the app out for longer than the
    server asked.
    """
    return is_transient(exc) and not alive_but_busy(exc)


def pipeline_for(target: str) -> Pipeline:
    """The pipeline of an HTTP target, built from the active settings on first use."""
    pipeline: Pipeline = target_pipeline(
        target, "http", is_transient, retry_after=server_delay, breaker_failure=breaker_failure
    )
    return pipeline


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Client:
    """
    What the shared call path needs to know about one client library.

    Make one per library and reuse it: each pipeline compiles and keeps a driver per ``Client``
    (:func:`compiled`), so a ``Client`` built per request would compile a driver per request.
    Compared and hashed by identity (``eq=False``): a dataclass's field-by-field hash is a
    Python call, and the driver lookup pays it on every request.

    Attributes:
        status: The status code of one of its responses (an ``operator.attrgetter`` is
            cheapest: it runs on every attempt).
        close: Releases a response that is being retried (may return an awaitable).
        rejected: Its connection error class, mixed into our rejections.
        timed_out: Its timeout error class, mixed into our timeouts.
        timeout_argument: The keyword argument of the patched function that takes a timeout in
            seconds, when it has one (``requests``): the driver then hands each attempt what is
            left of its deadline through it, written into the ``kwargs`` given to :func:`call`
            (so pass the call's own dict, never the shared default). ``None`` when the
            integration's own ``send`` reads the deadline (:func:`buttress.remaining`).
        tighten: ``tighten(callers_timeout, left)`` for *timeout_argument*.
        synthetic: ``synthetic(status, headers, body, args)``: a response of the library made
            by buttress, for an open breaker (see :func:`settle`); *args* are the patched
            call's leading arguments. ``None`` when the library cannot make one.
    """

    status: Callable[[Any], int]
    close: Callable[[Any], Any]
    rejected: type[BaseException]
    timed_out: type[BaseException]
    timeout_argument: str | None = None
    tighten: Callable[[Any, float], Any] = shorter
    synthetic: Callable[[int, dict[str, str], bytes, tuple[Any, ...]], Any] | None = None


@functools.lru_cache(maxsize=64)
def shape_of(client: Client, statuses: frozenset[int]) -> CallShape:
    """
    How the drivers call *client* for a target that retries *statuses*.

    A retryable status becomes a :class:`RetryableResponse` inside the pipeline, a response
    that is retried is closed first, and each resend is published for the span processor.
    Cached, so that each pipeline compiles one driver per client library.
    """

    def discard(exc: BaseException) -> Any:
        if isinstance(exc, RetryableResponse):
            return client.close(exc.response)
        return None

    return CallShape(
        deadline_argument=client.timeout_argument,
        tighten=client.tighten,
        status=client.status,
        failing=statuses,
        failure=RetryableResponse,
        discard=discard,
        resend=resend,
        inside=_inside,
        marks="http",
        app_timeout=True,
    )


def compiled(route: Route, client: Client) -> SyncRun:
    """*route*'s pipeline compiled for *client*, cached on the route."""
    run = route.runs.get(client)
    if run is None:
        run = route.runs[client] = route.pipeline.shaped(shape_of(client, route.statuses))
    return run


def acompiled(route: Route, client: Client) -> AsyncRun:
    """*route*'s pipeline compiled for async *client*, cached on the route."""
    run = route.aruns.get(client)
    if run is None:
        run = route.aruns[client] = route.pipeline.ashaped(shape_of(client, route.statuses))
    return run


@functools.cache
def _after_url(fn: Callable[..., Any]) -> tuple[str, ...]:
    # The parameters of a (self, method, url, ...) method that may come by position, after url.
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    names = [p.name for p in inspect.signature(fn).parameters.values() if p.kind in positional]
    return tuple(names[3:])


def fold_positional(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """
    Move *args*, given to ``fn(self, method, url, *args)``, into *kwargs* by name.

    For a patched ``request(self, method, url, *args, **kwargs)`` whose driver writes keyword
    arguments (the attempt's ``timeout``). False when the call is malformed (too many
    arguments, one given twice): the caller then calls *fn* as it was called, so that the client
    raises its own error.
    """
    names = _after_url(fn)
    if len(args) > len(names) or any(name in kwargs for name in names[: len(args)]):
        return False
    kwargs.update(zip(names, args, strict=False))
    return True


ENDINGS = (RetryableResponse, PolicyTimeoutError, RejectedError)
"""What a pipeline may raise that :func:`settle` turns into what the client's caller expects."""


def settle(
    exc: BaseException, client: Client, route: Route | None = None, args: tuple[Any, ...] = ()
) -> Any:
    """
    The end of a call that raised *exc* (one of :data:`ENDINGS`), as the client's caller sees it.

    The real last response when retrying stopped on a retryable status. An open breaker whose
    last counted failure was a status answers with a response of that status (see
    :func:`open_response`), where *route* asks for it and *client* can make one. Our other
    rejections and our timeouts are re-raised as errors that are also *client*'s own (see
    :func:`compatible`).
    """
    if isinstance(exc, RetryableResponse):
        return exc.response  # the real last response, status and body intact
    if isinstance(exc, PolicyTimeoutError):
        raise compatible(exc, client.timed_out) from exc.__cause__
    if (
        isinstance(exc, CircuitOpenError)
        and exc.last_status is not None
        and route is not None
        and route.answers_open
        and client.synthetic is not None
    ):
        response = open_response(exc, exc.last_status, client.synthetic, args)
        if response is not None:
            return response
    raise compatible(exc, client.rejected) from exc.__cause__


def reason_of(status: int) -> str:
    """The standard reason phrase of *status* (``Service Unavailable``), or an empty one."""
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


REJECTED_HEADER = "x-buttress-rejected"
"""The header that marks a response buttress made instead of sending the request."""


def open_response(
    exc: CircuitOpenError,
    status: int,
    make: Callable[[int, dict[str, str], bytes, tuple[Any, ...]], Any],
    args: tuple[Any, ...],
) -> Any:
    """
    A response for a request an open breaker refused, in the shape the app already handles.

    The dependency answered *status* to the attempts that opened the breaker: the app gets that
    status again, as it would have without buttress, marked with :data:`REJECTED_HEADER` and a
    ``Retry-After`` of the breaker's remaining open time, with a JSON body that says so. Envoy
    answers an overflowing circuit the same way (a 503 marked ``x-envoy-overloaded``). ``None``
    when the library could not make one: the caller then raises the connection error.
    """
    headers = {"content-type": "application/json", REJECTED_HEADER: exc.reason}
    if exc.retry_after is not None:
        headers["retry-after"] = str(max(1, math.ceil(exc.retry_after)))
    body = json.dumps(
        {
            "error": exc.reason,
            "target": exc.target,
            "detail": "buttress: the circuit breaker of this target is open after repeated "
            "failures, so the request was not sent; this response repeats the last status "
            "the dependency answered (http.open_breaker in BUTTRESS_CONFIG chooses)",
        }
    ).encode()
    headers["content-length"] = str(len(body))
    try:
        return make(status, headers, body, args)
    except Exception:  # never let our response builder be the failure
        logger.debug("buttress: could not build a response for an open breaker", exc_info=True)
        return None


_NO_KWARGS: dict[str, Any] = {}


def call(
    route: Route,
    retryable: bool,
    client: Client,
    fn: Callable[..., Any],
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] = _NO_KWARGS,
) -> Any:
    """
    Run one logical HTTP call, ``fn(*args, **kwargs)`` per attempt, through *route*'s pipeline.

    Returns the real last response when retrying stops on a retryable status; re-raises the
    library's own errors unchanged, and our rejections and timeouts as library-compatible
    errors. The driver marks each attempt as an HTTP call (``CallShape.inside``), so that
    nested HTTP clients pass through (see :func:`passthrough`).
    """
    run = route.runs.get(client) or compiled(route, client)
    try:
        if retryable:
            return run(fn, args, kwargs, 0, None)
        with no_retry():
            return run(fn, args, kwargs, 0, None)
    except ENDINGS as exc:
        return settle(exc, client, route, args)


async def acall(
    route: Route,
    retryable: bool,
    client: Client,
    fn: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] = _NO_KWARGS,
) -> Any:
    """Like :func:`call`, for coroutine clients; ``client.close`` may be async."""
    run = route.aruns.get(client) or acompiled(route, client)
    try:
        if retryable:
            return await run(fn, args, kwargs, 0, None)
        with no_retry():
            return await run(fn, args, kwargs, 0, None)
    except ENDINGS as exc:
        return settle(exc, client, route, args)
