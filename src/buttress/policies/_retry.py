"""
Retry: try again after a failure, within attempts, a deadline and a budget.

Configuration (:class:`Retry`) is immutable; the per-pipeline runtime (:class:`RetryState`) holds
only the retry budget. Per-call data (the attempt number, the previous delay) lives in the
driver's local variables, never in shared state (tenacity #701).

The decision is one pure method, :meth:`RetryState.decide`: given the outcome of attempt *n*,
the time and the deadline, it returns the delay before attempt *n + 1* or ``None`` to stop. The
drivers only sleep and loop. When retrying stops, the caller gets its own last exception (or
result) unchanged, as stamina does: our retry never hides the dependency's real error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from .. import _validate
from .._config import CONFIG
from .._context import PolicyContext
from .._exceptions import ConfigurationError, RetryBudgetExhaustedError
from .._predicates import (
    ExceptionPredicate,
    ExceptionSpec,
    compile_exception_spec,
    describe_spec,
    error_type,
)
from ..telemetry._events import CallRejected, RetriesExhausted, RetryScheduled
from ._backoff import Backoff, exponential
from ._retry_budget import RetryBudget, RetryBudgetState

_no_retry: ContextVar[bool] = ContextVar("buttress_no_retry", default=False)


@contextmanager
def no_retry() -> Iterator[None]:
    """
    Forbid retries for every call made inside the block.

    For work that must not repeat (a statement inside a transaction, a non-idempotent request):
    failures inside the block reach the caller after one attempt. Scopes nest and are
    context-local (safe across threads and asyncio tasks).

    .. versionadded:: 0.1.0
    """
    token = _no_retry.set(True)
    try:
        yield
    finally:
        _no_retry.reset(token)


def retries_forbidden() -> bool:
    """Whether the current context is inside :func:`no_retry`."""
    return _no_retry.get()


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry:
    """
    Retry failed attempts with back-off.

    Args:
        on: What to retry: an exception type, a tuple of types, or a predicate over the
            exception. Required, as in stamina: retrying "everything" retries bugs.
        attempts: Total attempts including the first (>= 1), or ``None`` for unbounded until
            *deadline* (which is then required).
        deadline: Seconds from the first attempt after which no new attempt starts, or ``None``.
            A pipeline's total :class:`Timeout` also bounds retries.
        backoff: The schedule between attempts (default: full-jitter exponential, 0.2 s to 10 s).
        on_result: Retry when this predicate is true of a *returned* value (for example an HTTP
            response with status 503). When retrying stops the last result is returned.
        retry_after: Extract a server-suggested delay in seconds (Retry-After style) from the
            failed outcome (the exception, or the result); ``None`` when there is none. It
            replaces the back-off delay, capped by *max_retry_after* and the deadline.
        max_retry_after: The cap for server-suggested delays, in seconds.
        budget: A :class:`RetryBudget` (default 20 % of calls plus 3/s), or ``None`` for none.
        budget_exhausted: ``"reraise"`` (default) returns the last outcome when the budget
            refuses a retry; ``"raise"`` raises :class:`RetryBudgetExhaustedError` from it.
        veto: ``veto(outcome, attempt) -> bool``; return ``True`` to forbid retrying, for
            example for non-idempotent work. :func:`no_retry` does the same for a block.

    .. versionadded:: 0.1.0
    """

    on: ExceptionSpec
    attempts: int | None = 3
    deadline: float | None = None
    backoff: Backoff = field(default_factory=exponential)
    on_result: Callable[[Any], bool] | None = None
    retry_after: Callable[[Any], float | None] | None = None
    max_retry_after: float = 60.0
    budget: RetryBudget | None = field(default_factory=RetryBudget)
    budget_exhausted: str = "reraise"
    veto: Callable[[Any, int], bool] | None = None

    def __post_init__(self) -> None:
        owner = "Retry"
        compile_exception_spec(owner, "on", self.on)
        _validate.integer(owner, "attempts", self.attempts, low=1, allow_none=True)
        _validate.number(
            owner, "deadline", self.deadline, low=0, low_inclusive=False, allow_none=True
        )
        if self.attempts is None and self.deadline is None:
            raise ConfigurationError(
                "Retry: attempts=None with deadline=None would retry forever; "
                "set attempts (>= 1) or a deadline in seconds"
            )
        if not callable(getattr(self.backoff, "delay", None)):
            raise ConfigurationError(
                f"Retry: backoff={_validate.shown(self.backoff)} is not accepted; expected a "
                "back-off such as buttress.exponential(), buttress.constant() or "
                "buttress.decorrelated()"
            )
        _validate.number(owner, "max_retry_after", self.max_retry_after, low=0)
        _validate.function(
            owner, "on_result", self.on_result, "a callable taking the result and returning a bool"
        )
        _validate.function(
            owner,
            "retry_after",
            self.retry_after,
            "a callable taking the outcome and returning seconds or None",
        )
        _validate.function(
            owner, "veto", self.veto, "a callable taking (outcome, attempt) and returning a bool"
        )
        if self.budget is not None and not isinstance(self.budget, RetryBudget):
            raise ConfigurationError(
                f"Retry: budget={_validate.shown(self.budget)} is not accepted; "
                "expected a RetryBudget or None"
            )
        _validate.choice(owner, "budget_exhausted", self.budget_exhausted, ("reraise", "raise"))

    def bind(self, ctx: PolicyContext) -> RetryState:
        """Create the runtime state for one pipeline."""
        return RetryState(self, ctx)

    def __repr__(self) -> str:
        parts = [f"on={describe_spec(self.on)}", f"attempts={self.attempts}"]
        if self.deadline is not None:
            parts.append(f"deadline={self.deadline:g}")
        parts.append(f"backoff={self.backoff!r}")
        if self.budget is None:
            parts.append("budget=None")
        return f"<Retry {' '.join(parts)}>"


class RetryState:
    """
    One pipeline's retry decisions and its retry budget.

    .. versionadded:: 0.1.0
    """

    __slots__ = (
        "_backoff",
        "_ctx",
        "_raise_on_budget",
        "_retry_after",
        "budget",
        "config",
        "is_retryable",
        "on_result",
        "refused_at",
    )

    def __init__(self, config: Retry, ctx: PolicyContext) -> None:
        self.config = config
        self._ctx = ctx
        self.is_retryable: ExceptionPredicate = compile_exception_spec("Retry", "on", config.on)
        self.on_result = config.on_result
        self._backoff = config.backoff
        self._retry_after = config.retry_after
        self._raise_on_budget = config.budget_exhausted == "raise"
        self.budget: RetryBudgetState | None = (
            config.budget.bind() if config.budget is not None else None
        )
        self.refused_at: Callable[[float], bool] | None = None
        """Whether an attempt starting at a time would be refused (a breaker inside the retry
        that is open: ``CircuitBreakerState.refuses_at``); set by the pipeline."""

    def decide(
        self,
        outcome: object,
        is_exception: bool,
        attempt: int,
        previous: float,
        now: float,
        deadline: float,
    ) -> float | None:
        """
        Decide what follows a failed attempt.

        The caller has already established that *outcome* is retryable (an exception matching
        ``on``, or a result matching ``on_result``).

        Args:
            outcome: The exception raised, or the result returned, by attempt *attempt*.
            is_exception: Whether *outcome* is an exception.
            attempt: The attempt that failed, 1-based.
            previous: The previous back-off delay (0.0 before the first retry).
            now: The current time on the pipeline's clock.
            deadline: No attempt may start at or after this time (``math.inf`` for none).

        Returns:
            The delay in seconds before the next attempt, or ``None`` to stop and hand the
            outcome to the caller.

        Raises:
            RetryBudgetExhaustedError: when the budget refuses and ``budget_exhausted="raise"``.
        """
        ctx = self._ctx
        config = self.config
        if attempt > 1 and self.budget is not None:
            # Attempt n > 1 was made by a retry, and it failed retryably.
            self.budget.record_failed_retry(now)
        kind = error_type(outcome) if is_exception else "result"  # type: ignore[arg-type]
        if _no_retry.get() or (config.veto is not None and config.veto(outcome, attempt)):
            self._give_up(attempt, kind, "vetoed")
            return None
        max_attempts = config.attempts
        if CONFIG.testing:
            limit = CONFIG.testing_attempts
            max_attempts = limit if max_attempts is None else min(max_attempts, limit)
        if max_attempts is not None and attempt >= max_attempts:
            self._give_up(attempt, kind, "attempts")
            return None
        delay = self._backoff.delay(attempt, previous, ctx.random)
        server_delay = None
        if self._retry_after is not None:
            server_delay = self._retry_after(outcome)
            if not isinstance(server_delay, int | float):
                server_delay = None  # not a delay (None, or a value of the wrong type): ignored
            if server_delay is not None:
                delay = min(max(0.0, server_delay), config.max_retry_after)
        if CONFIG.testing:
            delay = 0.0
        if now + delay >= deadline:
            self._give_up(attempt, kind, "deadline")
            return None
        if self.refused_at is not None and self.refused_at(now + delay):
            # The breaker opened (this failure may have opened it): waiting to be refused would
            # only delay the answer the caller already has.
            self._give_up(attempt, kind, "circuit_open")
            return None
        if ctx.observe:
            ctx.emit(
                RetryScheduled(
                    target=ctx.target,
                    kind=ctx.kind,
                    attempt=attempt,
                    delay=delay,
                    error_type=kind,
                    server_delay=server_delay,
                    observed=True,
                )
            )
            return None
        if self.budget is not None and not self.budget.try_spend(now):
            ctx.emit(CallRejected(target=ctx.target, kind=ctx.kind, reason="retry_budget"))
            self._give_up(attempt, kind, "budget")
            if self._raise_on_budget:
                message = f"buttress: retry budget of target {ctx.target!r} is spent; not retrying"
                error = RetryBudgetExhaustedError(message, target=ctx.target)
                if is_exception:
                    raise error from outcome  # type: ignore[misc]
                raise error
            return None
        ctx.emit(
            RetryScheduled(
                target=ctx.target,
                kind=ctx.kind,
                attempt=attempt,
                delay=delay,
                error_type=kind,
                server_delay=server_delay,
            )
        )
        return delay

    def _give_up(self, attempt: int, kind: str, reason: str) -> None:
        """Report that retrying stops; always returns ``None`` so callers can return it."""
        ctx = self._ctx
        ctx.emit(
            RetriesExhausted(
                target=ctx.target, kind=ctx.kind, attempts=attempt, error_type=kind, reason=reason
            )
        )

    def __repr__(self) -> str:
        return f"<RetryState target={self._ctx.target!r} {self.config!r}>"
