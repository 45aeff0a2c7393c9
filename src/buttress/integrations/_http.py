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
from typing import Any
from urllib.parse import urlsplit

from .. import _activation
from .._exceptions import RejectedError
from .._exceptions import TimeoutError as PolicyTimeoutError
from .._http_signals import server_delay
from .._pipeline import Pipeline
from ..policies._retry import no_retry
from ._base import compatible, inside, target_pipeline
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


def retry_allowed(
    method: str, headers: Mapping[str, Any] | None, one_shot_body: bool, target: str
) -> bool:
    """Whether a request may be sent more than once."""
    if one_shot_body:
        return False
    options = _activation.http_options(target)
    if method.upper() in options.retry_methods or options.retry_non_idempotent:
        return True
    if headers:
        wanted = options.idempotency_header.lower()
        return any(str(k).lower() == wanted for k in headers)
    return False


def retry_statuses(target: str) -> frozenset[int]:
    """The response statuses that are retried for *target*."""
    return _activation.http_options(target).retry_statuses


def pipeline_for(target: str) -> Pipeline:
    """The pipeline of an HTTP target, built from the active settings on first use."""
    pipeline: Pipeline = target_pipeline(target, "http", is_transient, retry_after=server_delay)
    return pipeline


@dataclasses.dataclass(frozen=True, slots=True)
class Client:
    """
    What the shared call loop needs to know about one client library.

    Attributes:
        status: The status code of one of its responses.
        close: Releases a response that is being retried (may return an awaitable).
        rejected: Its connection error class, mixed into our rejections.
        timed_out: Its timeout error class, mixed into our timeouts.
    """

    status: Callable[[Any], int]
    close: Callable[[Any], Any]
    rejected: type[BaseException]
    timed_out: type[BaseException]


class _Attempts:
    """Per-call state: how many attempts were sent, and the response being retried."""

    __slots__ = ("last", "sent")

    def __init__(self) -> None:
        self.sent = 0
        self.last: Any = None

    def take_last(self) -> Any:
        last, self.last = self.last, None
        return last


def call(target: str, retryable: bool, client: Client, send: Callable[[], Any]) -> Any:
    """
    Run one logical HTTP call (``send`` sends one attempt) through *target*'s pipeline.

    Returns the real last response when retrying stops on a retryable status; re-raises the
    library's own errors unchanged, and our rejections and timeouts as library-compatible
    errors.
    """
    statuses = retry_statuses(target)
    attempts = _Attempts()

    def attempt() -> Any:
        previous = attempts.take_last()
        if previous is not None:
            client.close(previous)  # a retried response must not hold its connection
        token = resend.set(attempts.sent)
        attempts.sent += 1
        try:
            with inside("http"):
                response = send()
        finally:
            resend.reset(token)
        status = client.status(response)
        if status in statuses:
            attempts.last = response
            raise RetryableResponse(response, status)
        return response

    pipeline = pipeline_for(target)
    try:
        if retryable:
            return pipeline.call(attempt)
        with no_retry():
            return pipeline.call(attempt)
    except RetryableResponse as exc:
        return exc.response  # the real last response, status and body intact
    except PolicyTimeoutError as exc:
        raise compatible(exc, client.timed_out) from exc.__cause__
    except RejectedError as exc:
        raise compatible(exc, client.rejected) from exc.__cause__


async def acall(
    target: str, retryable: bool, client: Client, send: Callable[[], Awaitable[Any]]
) -> Any:
    """Like :func:`call`, for coroutine clients; ``client.close`` may be async."""
    statuses = retry_statuses(target)
    attempts = _Attempts()

    async def attempt() -> Any:
        previous = attempts.take_last()
        if previous is not None:
            closing = client.close(previous)
            if inspect.isawaitable(closing):
                await closing
        token = resend.set(attempts.sent)
        attempts.sent += 1
        try:
            with inside("http"):
                response = await send()
        finally:
            resend.reset(token)
        status = client.status(response)
        if status in statuses:
            attempts.last = response
            raise RetryableResponse(response, status)
        return response

    pipeline = pipeline_for(target)
    try:
        if retryable:
            return await pipeline.acall(attempt)
        with no_retry():
            return await pipeline.acall(attempt)
    except RetryableResponse as exc:
        return exc.response
    except PolicyTimeoutError as exc:
        raise compatible(exc, client.timed_out) from exc.__cause__
    except RejectedError as exc:
        raise compatible(exc, client.rejected) from exc.__cause__
