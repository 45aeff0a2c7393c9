"""
Ready-made policy sets for the three kinds of dependency, with documented defaults.

Use one as a starting point and override what differs::

    guard = buttress.protect("api.example.com:443", template=buttress.templates.http(),
                             kind="http", bulkhead=None)

Each function returns a fresh :class:`~buttress.PolicySet`; none of them shares state.

Every template starts from an anchor (Microsoft's standard handler, Envoy, the provider SDKs) and
deviates where the anchor's default would hurt an unmodified application, saying why. Two
things are common to all three, because zero-code activation puts them in front of apps that had
no retries and no breaker before:

- the breaker also trips on **5 consecutive failures** (Envoy's outlier detection,
  ``consecutive_5xx``), at any traffic level. A rate window alone needs ``minimum_calls`` calls
  first, which a caller making a few calls a second never reaches: without the trigger, a dead
  dependency is retried on every call forever;
- the retry budget **drops its floor** once 3 retries in its window all failed
  (``RetryBudget(drop_floor_after=3)``), so a caller whose every retry fails stops paying a
  back-off on every call. One call's own retries never drop it on their own.

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
from .policies._retry_budget import RetryBudget
from .policies._timeout import Timeout

__all__ = ["database", "http", "llm"]

# See the module docstring: Envoy's consecutive_5xx, and the budget's floor dropped once every
# retry in its window failed (3: more than one 3-attempt call's own 2 retries).
_CONSECUTIVE_FAILURES = 5
_DROP_FLOOR_AFTER = 3


def _is_failed_response(result: object, statuses: frozenset[int]) -> bool:
    status = status_of(result)
    return status is not None and status in statuses


def http() -> PolicySet:
    """
    Microsoft's standard HTTP resilience handler, in buttress terms, with a faster back-off.

    - concurrency limit 1000, no queue (the standard handler's rate limiter);
    - total timeout 30 s, attempt timeout 10 s;
    - retry: 3 attempts (2 retries), exponential from 0.5 s doubling to 8 s with full jitter, on
      connection errors, timeouts and 408/429/500/502/503/504 responses, honouring
      ``Retry-After`` up to 60 s; the budget drops its floor once 3 retries in a row failed;
    - breaker: failure rate 10 % over a 30 s window, at least 100 calls, or 5 consecutive
      failures; open 5 s.

    Where it departs from the standard handler (4 attempts, exponential from 2 s): an app
    without buttress made one request and got its answer at once. With 2 s and full jitter, a
    call to a dead dependency waits 7 s on average (up to 14 s) before it gets its 503, and the
    breaker, needing 100 calls in 30 s, never opens at a few calls a second. 0.5 s doubling to
    8 s is what the OpenAI and Anthropic SDKs use, inside the 0.1 s to 1 s where AWS and Google
    SDKs start; 3 attempts is theirs and AWS's standard mode's. A dead dependency now costs a
    call 0.75 s on average (1.5 s at most) and the breaker opens on the fifth failure in a row,
    while a 503, 503, 200 still succeeds. Envoy's 25 ms suits a proxy that retries on another
    host; a client retrying the same host that soon mostly meets the same failure.

    .. versionadded:: 0.1.0
    """
    return PolicySet(
        bulkhead=Bulkhead(max_concurrent=1000, max_queue=0),
        timeout=Timeout(attempt=10.0, total=30.0),
        retry=Retry(
            on=is_transient,
            attempts=3,
            backoff=exponential(initial=0.5, max=8.0),
            on_result=is_transient,
            retry_after=server_delay,
            max_retry_after=60.0,
            budget=RetryBudget(drop_floor_after=_DROP_FLOOR_AFTER),
        ),
        breaker=CircuitBreaker(
            failure_rate_threshold=0.1,
            window="time",
            window_size=30,
            minimum_calls=100,
            consecutive_failures=_CONSECUTIVE_FAILURES,
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
      the budget drops its floor once 3 retries in a row failed;
    - attempt timeout 5 s, total 15 s;
    - bulkhead: 20 concurrent (a connection pool's size), 50 queued for up to 2 s;
    - breaker: failure rate 50 % over the last 50 calls (at least 20), or 5 consecutive
      failures; open 15 s.

    The back-off is short because only connection errors are retried, and a dropped pooled
    connection is usually replaced by the next attempt at once: between Envoy's 25 ms and the
    100 ms where AWS SDKs start, so a call to a database that is down waits 0.15 s at most
    before its error (the 1 s cap matters only when configuration adds attempts). The
    consecutive trigger opens the breaker on a database that refuses every connection before
    20 calls have been made.

    .. versionadded:: 0.1.0
    """
    return PolicySet(
        retry=Retry(
            on=ConnectionError,
            attempts=3,
            backoff=exponential(initial=0.05, max=1.0),
            budget=RetryBudget(drop_floor_after=_DROP_FLOOR_AFTER),
        ),
        timeout=Timeout(attempt=5.0, total=15.0),
        bulkhead=Bulkhead(max_concurrent=20, max_queue=50, max_wait=2.0),
        breaker=CircuitBreaker(
            failure_rate_threshold=0.5,
            window_size=50,
            minimum_calls=20,
            consecutive_failures=_CONSECUTIVE_FAILURES,
            open_duration=15.0,
            failure_on=(ConnectionError, PolicyTimeoutError),
        ),
    )


def llm() -> PolicySet:
    """
    LLM providers: slow calls, rate limits, and servers that say when to come back.

    - retry: 3 attempts, exponential from 0.5 s doubling to 8 s with equal jitter, on
      408/409/429/5xx, connection errors and timeouts (what the OpenAI and Anthropic SDKs
      retry), honouring ``retry-after-ms`` and ``Retry-After`` up to 60 s; the budget drops its
      floor once 3 retries in a row failed;
    - attempt timeout 120 s, total 300 s (generations are slow);
    - bulkhead: 16 concurrent, 64 queued for up to 30 s;
    - breaker: failure rate 50 % over 60 s (at least 10 calls), or 5 consecutive failures;
      open 30 s, growing x2 to 5 min on repeated trips.

    The retry is the SDKs' own (``max_retries=2``: 3 attempts, 0.5 s doubling to 8 s). When
    buttress enforces, it turns the SDK's retries off and retries in their place, so matching
    them means the provider sees the requests it saw without buttress, at about the same
    times. The SDKs wait between 75 % and 100 % of each delay; equal jitter (50 % to 100 %) is
    the closest schedule buttress has, and still spreads clients that failed together.

    .. versionadded:: 0.1.0
    """
    return PolicySet(
        retry=Retry(
            on=is_transient_llm,
            attempts=3,
            backoff=exponential(initial=0.5, max=8.0, jitter="equal"),
            retry_after=server_delay,
            max_retry_after=60.0,
            budget=RetryBudget(drop_floor_after=_DROP_FLOOR_AFTER),
        ),
        timeout=Timeout(attempt=120.0, total=300.0),
        bulkhead=Bulkhead(max_concurrent=16, max_queue=64, max_wait=30.0),
        breaker=CircuitBreaker(
            failure_rate_threshold=0.5,
            window="time",
            window_size=60,
            minimum_calls=10,
            consecutive_failures=_CONSECUTIVE_FAILURES,
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
