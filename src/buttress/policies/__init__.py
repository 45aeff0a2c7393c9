"""
The resilience policies: immutable configuration plus the runtime state a pipeline binds.

.. versionadded:: 0.1.0
"""

from ._backoff import Backoff, constant, decorrelated, exponential
from ._bulkhead import Bulkhead, BulkheadState
from ._cache import Cache, CacheState
from ._circuit_breaker import CircuitBreaker, CircuitBreakerState, CircuitSnapshot, CircuitState
from ._fallback import Fallback, FallbackState
from ._rate_limit import RateLimit, RateLimitState
from ._retry import Retry, RetryState, no_retry
from ._retry_budget import RetryBudget, RetryBudgetState
from ._timeout import Timeout, remaining

__all__ = [
    "Backoff",
    "Bulkhead",
    "BulkheadState",
    "Cache",
    "CacheState",
    "CircuitBreaker",
    "CircuitBreakerState",
    "CircuitSnapshot",
    "CircuitState",
    "Fallback",
    "FallbackState",
    "RateLimit",
    "RateLimitState",
    "Retry",
    "RetryBudget",
    "RetryBudgetState",
    "RetryState",
    "Timeout",
    "constant",
    "decorrelated",
    "exponential",
    "no_retry",
    "remaining",
]
