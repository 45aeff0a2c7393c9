"""
The order of policies in a pipeline, and what may be changed.

Default order, outermost first (Polly's standard HTTP handler, extended)::

    fallback -> cache -> rate_limit -> bulkhead -> timeout -> retry -> breaker -> attempt_timeout

Why this order: fallback sees every failure; a cache hit costs no token and no slot; the rate
limit and the bulkhead admit a *call* once, not once per retry; the total timeout bounds the
retries; the breaker sits inside retry so that it sees every attempt (and an open breaker stops a
retry loop at once); the attempt timeout bounds each attempt.

What may change: each admission policy (``rate_limit``, ``bulkhead``, ``breaker``) may sit
outside ``retry`` (admitted once per call) or inside it (admitted per attempt). Everything else is
fixed: ``fallback`` and ``cache`` outermost, ``timeout`` directly before ``retry``,
``attempt_timeout`` innermost, and admission policies keep their relative order. Those are the
orders that make sense; others (a cache inside retry, a fallback inside a breaker) are refused
with a message instead of silently doing something odd.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ._exceptions import ConfigurationError
from ._validate import shown

DEFAULT_ORDER: tuple[str, ...] = (
    "fallback",
    "cache",
    "rate_limit",
    "bulkhead",
    "timeout",
    "retry",
    "breaker",
    "attempt_timeout",
)
ADMISSIONS: tuple[str, ...] = ("rate_limit", "bulkhead", "breaker")


@dataclass(frozen=True, slots=True)
class Layout:
    """Which admission policies run per call (``outer``) and which per attempt (``inner``)."""

    outer: frozenset[str]
    inner: frozenset[str]

    @property
    def order(self) -> tuple[str, ...]:
        """The full stage order this layout stands for."""
        outer = [a for a in ADMISSIONS if a in self.outer]
        inner = [a for a in ADMISSIONS if a in self.inner]
        return ("fallback", "cache", *outer, "timeout", "retry", *inner, "attempt_timeout")


DEFAULT_LAYOUT = Layout(outer=frozenset({"rate_limit", "bulkhead"}), inner=frozenset({"breaker"}))


def parse_order(order: Sequence[str] | None) -> Layout:
    """
    Validate a user-given order and return its :class:`Layout`.

    Raises:
        ConfigurationError: naming the order, and what is accepted.
    """
    if order is None:
        return DEFAULT_LAYOUT
    rules = (
        "expected a permutation of " + ", ".join(DEFAULT_ORDER) + " where fallback and cache come "
        "first, timeout comes directly before retry, attempt_timeout comes last, and rate_limit, "
        "bulkhead and breaker each sit before or after retry in that relative order"
    )
    try:
        given: tuple[object, ...] = tuple(order)
    except TypeError:  # not iterable
        raise ConfigurationError(f"order={shown(order)} is not accepted; {rules}") from None
    names = [stage for stage in given if isinstance(stage, str)]
    if len(names) != len(given) or sorted(names) != sorted(DEFAULT_ORDER):
        # Shown in full when it is a plausible order: the names are what the user must fix.
        plain = all(isinstance(stage, str) and len(stage) <= 40 for stage in given)
        text = repr(given) if plain and len(given) <= 32 else shown(given)
        raise ConfigurationError(f"order={text} is not accepted; {rules}")
    retry_at = given.index("retry")
    layout = Layout(
        outer=frozenset(a for a in ADMISSIONS if given.index(a) < retry_at),
        inner=frozenset(a for a in ADMISSIONS if given.index(a) > retry_at),
    )
    if layout.order != given:
        raise ConfigurationError(f"order={given!r} is not accepted; {rules}")
    return layout
