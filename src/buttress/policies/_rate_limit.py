# Copyright 2026 buttress developers
# SPDX-License-Identifier: Apache-2.0
"""Rate limit: a token bucket that tells callers how long to wait instead of waiting itself.

:class:`RateLimit` is the frozen configuration; :meth:`RateLimit.bind` creates the
:class:`RateLimitState` a pipeline owns. The state is sans-IO: :meth:`RateLimitState.acquire`
takes the time as an argument and returns a delay, and the pipeline's sync or async driver does
the sleeping with its clock. One bucket therefore serves threads and event loops alike.

Tokens are *reserved*: a caller that must wait takes its token at once and the bucket goes into
debt, so the next caller's wait is counted after it. Concurrent callers are served in the order
they asked, at exactly *rate* per second, and nobody can overtake a waiter by polling.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from buttress import _fork, _validate
from buttress._exceptions import RateLimitedError
from buttress.telemetry._events import CallRejected, RateLimitWaited

if TYPE_CHECKING:
    from buttress._context import PolicyContext

__all__ = ["RateLimit", "RateLimitState"]

DEFAULT_RATE = 10.0
DEFAULT_MAX_WAIT = 0.0
"""Reject at once: waiting for a token is opt-in, as a queue hides overload from the caller."""


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class RateLimit:
    """Allow at most *rate* calls per second on average, with bursts of up to *burst*.

    Args:
        rate: Tokens added per second (> 0, finite).
        burst: Bucket size (>= 1): how many calls may go at once after a quiet period. ``None``
            means ``max(1, ceil(rate))``, one second's worth.
        max_wait: Seconds a call may wait for its token (>= 0); 0 rejects at once.
        observe: Never delay or reject: let every call through and report, with
            ``observed=True`` events, when it would have waited or been rejected.

    Raises:
        ConfigurationError: A parameter is out of range.

    .. versionadded:: 0.1.0
    """

    rate: float = DEFAULT_RATE
    burst: int | None = None
    max_wait: float = DEFAULT_MAX_WAIT
    observe: bool = False

    def __post_init__(self) -> None:
        rate = _validate.number(
            "RateLimit", "rate", self.rate, low=0, low_inclusive=False, finite=True
        )
        object.__setattr__(self, "rate", rate)
        _validate.integer("RateLimit", "burst", self.burst, low=1, allow_none=True)
        max_wait = _validate.number("RateLimit", "max_wait", self.max_wait, low=0)
        object.__setattr__(self, "max_wait", max_wait)
        _validate.boolean("RateLimit", "observe", self.observe)

    @classmethod
    def per_minute(cls, n: float, **kw: Any) -> RateLimit:
        """Build a limit of *n* calls per minute; *kw* are the other parameters.

        .. versionadded:: 0.1.0
        """
        # Validate n itself so that the message names what the caller wrote, not n / 60.
        _validate.number("RateLimit.per_minute", "n", n, low=0, low_inclusive=False)
        return cls(rate=n / 60.0, **kw)

    @property
    def effective_burst(self) -> int:
        """The bucket size in use: *burst*, or one second's worth of tokens when it is None.

        .. versionadded:: 0.1.0
        """
        return self.burst if self.burst is not None else max(1, math.ceil(self.rate))

    def bind(self, ctx: PolicyContext) -> RateLimitState:
        """Create the runtime state for one pipeline: each pipeline gets its own bucket.

        .. versionadded:: 0.1.0
        """
        return RateLimitState(self, ctx)

    def __repr__(self) -> str:
        burst = f"{self.burst}" if self.burst is not None else f"{self.effective_burst} (auto)"
        observe = " observe" if self.observe else ""
        wait = f"{self.max_wait:g}s"
        return f"<RateLimit rate={self.rate:g}/s burst={burst} max_wait={wait}{observe}>"


class RateLimitState:
    """The token bucket of one pipeline's rate limit; thread-safe, never sleeps.

    The bucket starts full.

    .. versionadded:: 0.1.0
    """

    __slots__ = (
        "__weakref__",
        "_burst",
        "_clock",
        "_emit",
        "_kind",
        "_last",
        "_lock",
        "_max_wait",
        "_observe",
        "_rate",
        "_target",
        "_tokens",
        "config",
    )

    def __init__(self, config: RateLimit, ctx: PolicyContext) -> None:
        self.config = config
        self._rate = config.rate
        self._burst = float(config.effective_burst)
        self._max_wait = config.max_wait
        self._observe = config.observe or ctx.observe
        self._clock = ctx.clock
        self._emit = ctx.emit
        self._target = ctx.target
        self._kind = ctx.kind
        self._lock = threading.Lock()
        self._tokens = self._burst
        self._last = ctx.clock.monotonic()
        _fork.track(self)

    def _after_fork_in_child(self) -> None:
        # The bucket's tokens are kept (calls in flight took theirs already); only the lock,
        # which another thread may have held at the fork, must be free.
        _fork.reinit(self._lock)

    @property
    def available(self) -> float:
        """Tokens in the bucket now; negative while reserved tokens are still owed."""
        elapsed = self._clock.monotonic() - self._last
        return min(self._burst, self._tokens + max(0.0, elapsed) * self._rate)

    @property
    def burst(self) -> int:
        """The bucket size."""
        return int(self._burst)

    def acquire(self, now: float, deadline: float = math.inf, cost: float = 1.0) -> float:
        """Take *cost* tokens and return how long the caller must wait before it proceeds.

        Args:
            now: The current time on the context clock (passed in so this never reads a clock).
            deadline: Absolute time on the same clock the call must not wait past;
                ``math.inf`` for none.
            cost: Tokens this call needs (> 0); a call larger than the bucket is served by
                going into debt, so it waits instead of failing forever.

        Returns:
            Seconds to wait, 0.0 when a token is available now. The token is already taken:
            the caller must proceed after the wait (not ask again).

        Raises:
            RateLimitedError: The wait would exceed ``min(max_wait, deadline - now)``. Nothing
                was taken; ``retry_after`` is the seconds until enough tokens will be there.
            ValueError: *cost* is not > 0.
        """
        lock = self._lock
        lock.acquire()
        try:
            elapsed = now - self._last
            if elapsed > 0:  # a caller that read the clock earlier must not refill twice
                tokens = self._tokens + elapsed * self._rate
                tokens = min(tokens, self._burst)
                self._last = now
            else:
                tokens = self._tokens
            if tokens >= cost > 0:
                self._tokens = tokens - cost
                return 0.0
            self._tokens = tokens
            if not cost > 0:
                raise ValueError(f"RateLimitState.acquire: cost={cost!r} must be > 0")
            wait = (cost - tokens) / self._rate
            allowed = min(self._max_wait, deadline - now)
            rejected = wait > allowed
            if not rejected or self._observe:
                # In observe mode the bucket keeps the books as if enforcing, so the events it
                # reports are the ones enforcement would have produced.
                self._tokens = tokens - cost
        finally:
            lock.release()
        return self._slow(wait, rejected=rejected)

    def _slow(self, wait: float, *, rejected: bool) -> float:
        """Report a wait or a rejection (outside the lock: hooks may be slow)."""
        observed = self._observe
        if rejected:
            self._emit(
                CallRejected(
                    target=self._target, kind=self._kind, reason="rate_limited", observed=observed
                )
            )
            if observed:
                return 0.0
            raise RateLimitedError(
                f"buttress: rate limit for target {self._target!r} exceeded: next token in"
                f" {wait:.3g}s, more than the allowed wait (max_wait={self._max_wait:g}s or the"
                f" call's deadline; rate={self._rate:g}/s, burst={self.burst})",
                target=self._target,
                reason="rate_limited",
                retry_after=wait,
            )
        self._emit(
            RateLimitWaited(target=self._target, kind=self._kind, wait=wait, observed=observed)
        )
        return 0.0 if observed else wait

    def __repr__(self) -> str:
        return (
            f"<RateLimitState target={self._target!r} tokens={self.available:.2f}/{self.burst}"
            f" rate={self._rate:g}/s>"
        )
