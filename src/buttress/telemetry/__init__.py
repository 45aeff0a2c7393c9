"""
Events, hooks and the OpenTelemetry listener: every decision a policy takes, made visible.

``instrument()`` publishes metrics and spans through OpenTelemetry; ``semconv`` holds every
metric name, unit and attribute (dashboards, alerts and docs read it too).

.. versionadded:: 0.1.0
"""

from . import _semconv as semconv
from ._events import (
    BulkheadDequeued,
    BulkheadQueued,
    CacheAccessed,
    CallRejected,
    CircuitStateChanged,
    Event,
    FallbackUsed,
    RateLimitWaited,
    RetriesExhausted,
    RetryScheduled,
    TimedOut,
)
from ._hooks import Hook, add_hook, get_hooks, set_hooks
from ._otel import OTelTelemetry, instrument, uninstrument

__all__ = [
    "BulkheadDequeued",
    "BulkheadQueued",
    "CacheAccessed",
    "CallRejected",
    "CircuitStateChanged",
    "Event",
    "FallbackUsed",
    "Hook",
    "OTelTelemetry",
    "RateLimitWaited",
    "RetriesExhausted",
    "RetryScheduled",
    "TimedOut",
    "add_hook",
    "get_hooks",
    "instrument",
    "semconv",
    "set_hooks",
    "uninstrument",
]
