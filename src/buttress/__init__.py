"""
buttress: OpenTelemetry-native resilience for Python services.

Retries with jittered back-off and a retry budget, circuit breakers, timeouts, a priority
bulkhead, rate limits, cache and request dedup, and fallback, composed per target into one
pipeline whose every decision is an event (and, with the telemetry extra, an OpenTelemetry
metric or span)::

    import buttress

    guard = buttress.protect(
        "payments",
        retry=buttress.Retry(on=ConnectionError, attempts=3),
        breaker=buttress.CircuitBreaker(),
        timeout=buttress.Timeout(),
    )

    @guard
    def charge(order): ...

.. versionadded:: 0.1.0
"""

from . import telemetry, templates
from ._api import PolicySet, configure, get_target, protect, reset_targets, targets
from ._clock import Clock, SystemClock
from ._config import is_active
from ._exceptions import (
    BulkheadFullError,
    CircuitOpenError,
    ConfigurationError,
    RateLimitedError,
    RejectedError,
    ResilienceError,
    RetryBudgetExhaustedError,
    TimeoutError,  # noqa: A004 - ours subclasses the builtin; see _exceptions
)
from ._health import HealthReport, HealthRules, ProbeResult, TargetHealth, health, probe, reset
from ._health_server import HealthServer, start_health_server
from ._pipeline import CallOptions, Pipeline
from .policies import (
    Backoff,
    Bulkhead,
    Cache,
    CircuitBreaker,
    CircuitState,
    Fallback,
    RateLimit,
    Retry,
    RetryBudget,
    Timeout,
    constant,
    decorrelated,
    exponential,
    no_retry,
    remaining,
)

__all__ = [
    "Backoff",
    "Bulkhead",
    "BulkheadFullError",
    "Cache",
    "CallOptions",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitState",
    "Clock",
    "ConfigurationError",
    "Fallback",
    "HealthReport",
    "HealthRules",
    "HealthServer",
    "Pipeline",
    "PolicySet",
    "ProbeResult",
    "RateLimit",
    "RateLimitedError",
    "RejectedError",
    "ResilienceError",
    "Retry",
    "RetryBudget",
    "RetryBudgetExhaustedError",
    "SystemClock",
    "TargetHealth",
    "Timeout",
    "TimeoutError",
    "configure",
    "constant",
    "decorrelated",
    "exponential",
    "get_target",
    "health",
    "is_active",
    "no_retry",
    "probe",
    "protect",
    "remaining",
    "reset",
    "reset_targets",
    "start_health_server",
    "targets",
    "telemetry",
    "templates",
]


def __getattr__(name: str) -> str:
    if name == "__version__":
        from importlib.metadata import version  # noqa: PLC0415

        return version("buttress")
    raise AttributeError(f"module 'buttress' has no attribute {name!r}")
