"""
Events and hooks: every decision a policy takes, delivered to whoever listens.

.. versionadded:: 0.1.0
"""

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

__all__ = [
    "BulkheadDequeued",
    "BulkheadQueued",
    "CacheAccessed",
    "CallRejected",
    "CircuitStateChanged",
    "Event",
    "FallbackUsed",
    "Hook",
    "RateLimitWaited",
    "RetriesExhausted",
    "RetryScheduled",
    "TimedOut",
    "add_hook",
    "get_hooks",
    "set_hooks",
]
