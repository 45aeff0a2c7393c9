"""
Ready-made policy sets for the three kinds of dependency, with documented defaults.

Use one as a starting point and override what differs::

    guard = buttress.protect("api.example.com:443", template=buttress.templates.http(),
                             kind="http", bulkhead=None)

Each function returns a fresh :class:`~buttress.PolicySet`; none of them shares state.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from ._api import PolicySet
from ._exceptions import TimeoutError as PolicyTimeoutError
from ._http_signals import is_transient, is_transient_llm, server_delay, status_of
from .policies._backoff import exponential
from .policies._bulkhead import Bulkhead
from .policies._circuit_breaker import CircuitBreaker
from .policies._retry import Retry
from .policies._timeout import Timeout

__all__ = ["database", "http", "llm"]


def _is_failed_response(result: object, statuses: frozenset[int]) -> bool:
    status = status_of(result)
    return status is not None and status in statuses


def http() -> PolicySet:
    """
    Microsoft's standard HTTP resilience handler, in buttress terms.

    - concurrency limit 1000, no queue (the standard handler's rate limiter);
    - total timeout 30 s, attempt timeout 10 s;
    - retry: 4 attempts (3 retries), exponential from 2 s with full jitter, on connection
      errors, timeouts and 408/429/500/502/503/504 responses, honouring ``Retry-After`` up to 60 s;
    - breaker: failure rate 10 % over a 30 s window, at least 100 calls, open 5 s.

    .. versionadded:: 0.1.0
    """
    return PolicySet(
        bulkhead=Bulkhead(max_concurrent=1000, max_queue=0),
        timeout=Timeout(attempt=10.0, total=30.0),
        retry=Retry(
            on=is_transient,
            attempts=4,
            backoff=exponential(initial=2.0, max=30.0),
            on_result=is_transient,
            retry_after=server_delay,
            max_retry_after=60.0,
        ),
        breaker=CircuitBreaker(
            failure_rate_threshold=0.1,
            window="time",
            window_size=30,
            minimum_calls=100,
            open_duration=5.0,
            failure_on=is_transient,
            failure_on_result=is_transient,
        ),
    )


def database() -> PolicySet:
    """
    Databases: retry only what cannot have run twice, and never inside a transaction.

    - retry: 3 attempts, exponential 50 ms to 1 s, on connection errors only. Integrations mark
      explicit transactions with :func:`buttress.no_retry`, which vetoes every retry inside;
    - attempt timeout 5 s, total 15 s;
    - bulkhead: 20 concurrent (a connection pool's size), 50 queued for up to 2 s;
    - breaker: failure rate 50 % over the last 50 calls (at least 20), open 15 s.

    .. versionadded:: 0.1.0
    """
    return PolicySet(
        retry=Retry(
            on=ConnectionError,
            attempts=3,
            backoff=exponential(initial=0.05, max=1.0),
        ),
        timeout=Timeout(attempt=5.0, total=15.0),
        bulkhead=Bulkhead(max_concurrent=20, max_queue=50, max_wait=2.0),
        breaker=CircuitBreaker(
            failure_rate_threshold=0.5,
            window_size=50,
            minimum_calls=20,
            open_duration=15.0,
            failure_on=(ConnectionError, PolicyTimeoutError),
        ),
    )


def llm() -> PolicySet:
    """
    LLM providers: slow calls, rate limits, and servers that say when to come back.

    - retry: 4 attempts, exponential 1 s to 30 s, on 408/409/429/5xx, connection errors and
      timeouts (what the OpenAI and Anthropic SDKs retry), honouring ``retry-after-ms`` and
      ``Retry-After`` up to 60 s;
    - attempt timeout 120 s, total 300 s (generations are slow);
    - bulkhead: 16 concurrent, 64 queued for up to 30 s;
    - breaker: failure rate 50 % over 60 s (at least 10 calls), open 30 s, growing x2 to 5 min
      on repeated trips.

    .. versionadded:: 0.1.0
    """
    return PolicySet(
        retry=Retry(
            on=is_transient_llm,
            attempts=4,
            backoff=exponential(initial=1.0, max=30.0),
            retry_after=server_delay,
            max_retry_after=60.0,
        ),
        timeout=Timeout(attempt=120.0, total=300.0),
        bulkhead=Bulkhead(max_concurrent=16, max_queue=64, max_wait=30.0),
        breaker=CircuitBreaker(
            failure_rate_threshold=0.5,
            window="time",
            window_size=60,
            minimum_calls=10,
            open_duration=30.0,
            open_duration_multiplier=2.0,
            max_open_duration=300.0,
            failure_on=is_transient_llm,
        ),
    )


# Re-exported for users composing their own templates.
is_transient_http = is_transient
is_transient_llm_error = is_transient_llm
retry_after = server_delay
del _is_failed_response
