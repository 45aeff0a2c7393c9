"""
The errors buttress raises, all from one root.

Our own errors never replace the caller's: when retries run out, the last exception the wrapped
function raised is re-raised unchanged. The errors below describe decisions buttress took itself::

    ResilienceError                 any decision buttress took that failed the call
      RejectedError                 the call (or its next attempt) never started
        CircuitOpenError            the target's breaker is open
        BulkheadFullError           no slot: queue full, queue wait expired, queue cleared
        RateLimitedError            no token within the allowed wait
        RetryBudgetExhaustedError   the retry budget refused a retry (see Retry)
      TimeoutError                  an attempt or the whole call ran past its timeout
                                    (also a builtin TimeoutError, so `except TimeoutError` works)

    ConfigurationError              a policy parameter is out of range (a ValueError; raised at
                                    construction, never at call time)
"""

from __future__ import annotations

import builtins
import threading
from typing import Any


class ResilienceError(Exception):
    """
    Root of every error that describes a decision buttress took.

    Attributes:
        target: The name of the pipeline ("target") that took the decision.

    .. versionadded:: 0.1.0
    """

    def __init__(self, message: str, *, target: str) -> None:
        super().__init__(message)
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception's own pickling calls cls(*args), which our keyword-only constructors refuse,
        # and a library-compatible error (see mixed_class) has a class made at run time. Both
        # must cross process boundaries intact (multiprocessing, process pools, task queues).
        parts = _MIXED_FROM.get(type(self))
        return (_rebuild, (parts or type(self), self.args, dict(self.__dict__)))


class RejectedError(ResilienceError):
    """
    The call, or its next attempt, was refused before it started: nothing reached the dependency.

    Attributes:
        reason: A low-cardinality reason: ``circuit_open``, ``bulkhead_full``, ``queue_timeout``,
            ``rate_limited`` or ``retry_budget``.
        retry_after: Seconds after which trying again may succeed, when known (for example the
            time left in the breaker's open state), else ``None``.

    .. versionadded:: 0.1.0
    """

    reason: str = "rejected"

    def __init__(
        self,
        message: str,
        *,
        target: str,
        reason: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        # One base __init__ instead of a chain of three: rejections are raised on the hot path
        # of an outage and must stay cheap.
        Exception.__init__(self, message)
        self.target = target
        if reason is not None:
            self.reason = reason
        self.retry_after = retry_after


class CircuitOpenError(RejectedError):
    """
    The target's circuit breaker is open (or forced open) and refused the call.

    Attributes:
        last_status: The HTTP status of the last failure the breaker counted before it refused
            (the 503 that tripped it, say), so an integration can answer the way the upstream
            last did; ``None`` when that failure carried no status (a connection error), or
            when the breaker was forced open or no failure was counted.

    .. versionadded:: 0.1.0
    """

    reason = "circuit_open"

    def __init__(
        self,
        message: str,
        *,
        target: str,
        reason: str | None = None,
        retry_after: float | None = None,
        last_status: int | None = None,
    ) -> None:
        # The outage's hot path (see RejectedError): no base __init__ at all. BaseException's
        # __new__ has already set args to (message,), which is all Exception.__init__ would do.
        self.target = target
        if reason is not None:
            self.reason = reason
        self.retry_after = retry_after
        self.last_status = last_status


class BulkheadFullError(RejectedError):
    """
    The bulkhead had no free slot: its queue was full, the wait expired or the queue was cleared.

    ``reason`` is ``bulkhead_full`` or ``queue_timeout``.

    .. versionadded:: 0.1.0
    """

    reason = "bulkhead_full"


class RateLimitedError(RejectedError):
    """
    The rate limiter had no token within the allowed wait.

    .. versionadded:: 0.1.0
    """

    reason = "rate_limited"


class RetryBudgetExhaustedError(RejectedError):
    """
    A retry was refused because the target's retry budget is spent.

    Only raised when ``Retry(budget_exhausted="raise")``; by default buttress re-raises the
    caller's last exception instead (as Envoy returns the last upstream response), and reports
    the refusal as a ``retry_budget`` rejection event. ``__cause__`` is that last exception.

    .. versionadded:: 0.1.0
    """

    reason = "retry_budget"


class TimeoutError(ResilienceError, builtins.TimeoutError):  # noqa: A001 - deliberate: see docstring
    """
    An attempt or the whole call ran past its timeout.

    It subclasses the builtin :class:`TimeoutError` too, so code that already catches timeouts
    keeps working.

    Attributes:
        timeout: The timeout that expired, in seconds.
        scope: ``attempt`` or ``total``.

    .. versionadded:: 0.1.0
    """

    def __init__(self, message: str, *, target: str, timeout: float, scope: str) -> None:
        super().__init__(message, target=target)
        self.timeout = timeout
        self.scope = scope


class ConfigurationError(ValueError):
    """
    A policy or configuration value is invalid.

    The message always names the parameter, the value given and what is accepted.

    .. versionadded:: 0.1.0
    """


# Report the public path (``buttress.CircuitOpenError``) in tracebacks and in the low-cardinality
# ``error.type`` of events and metrics, not the private module these classes live in.
for _cls in (
    ResilienceError,
    RejectedError,
    CircuitOpenError,
    BulkheadFullError,
    RateLimitedError,
    RetryBudgetExhaustedError,
    TimeoutError,
    ConfigurationError,
):
    _cls.__module__ = "buttress"
del _cls


_mixed: dict[tuple[type[BaseException], type[BaseException]], type[BaseException]] = {}
_MIXED_FROM: dict[type[BaseException], tuple[type[BaseException], type[BaseException]]] = {}
_mixed_lock = threading.Lock()


def mixed_class(
    base: type[ResilienceError], library_error: type[BaseException]
) -> type[BaseException] | None:
    """
    A subclass of both *base* and a client library's error, made once per pair.

    The client integrations raise our rejections and timeouts as instances of it, so that code
    written for the library (``except requests.ConnectionError``) keeps catching them. ``None``
    when the two cannot be combined (incompatible instance layouts).
    """
    key = (base, library_error)
    mixed = _mixed.get(key)
    if mixed is None:
        with _mixed_lock:
            mixed = _mixed.get(key)
            if mixed is None:
                try:
                    mixed = type(base.__name__, (base, library_error), {"__module__": "buttress"})
                except TypeError:
                    return None
                _MIXED_FROM[mixed] = key
                _mixed[key] = mixed
    return mixed


def _rebuild(
    kind: type[BaseException] | tuple[type[ResilienceError], type[BaseException]],
    args: tuple[Any, ...],
    state: dict[str, Any],
) -> BaseException:
    # Unpickles a ResilienceError without calling its constructor (see __reduce__).
    cls = kind if isinstance(kind, type) else (mixed_class(*kind) or kind[0])
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error
