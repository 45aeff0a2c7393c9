"""
Caches keyed by target that must stay bounded however many targets a process meets.

A target is a host, a database or a provider: a webhook sender or a crawler meets thousands of
hosts, so every per-target cache restarts when it is full instead of growing. Restarting (not
evicting one entry) keeps the hot path a plain dictionary lookup; a cleared entry is simply
resolved again on its next use.
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def remember(cache: dict[K, V], key: K, value: V, limit: int) -> V:
    """Store *value* under *key*, emptying *cache* first if it holds *limit* entries already."""
    if len(cache) >= limit:
        cache.clear()
    cache[key] = value
    return value
