"""
Fallback: answer with a substitute when the call fails or is rejected.

The outermost policy, so it sees every failure the others let through: the dependency's own
errors, an open breaker, a full bulkhead, a timeout. Only the failures named by ``on`` are
replaced; anything else still reaches the caller unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .._context import PolicyContext
from .._exceptions import ConfigurationError
from .._predicates import (
    ExceptionPredicate,
    ExceptionSpec,
    compile_exception_spec,
    describe_spec,
    error_type,
)
from .._validate import shown
from ..telemetry._events import FallbackUsed


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclass(frozen=True, slots=True, kw_only=True)
class Fallback:
    """
    A substitute value, or a function that computes one from the failure.

    Args:
        value: The value to return instead of failing.
        handler: ``handler(exc) -> value``, sync or async (async handlers only for async calls).
            Give exactly one of *value* and *handler*.
        on: Which failures to replace (type, tuple of types, or predicate). Default: any
            :class:`Exception`, as Polly's fallback does; ``BaseException`` such as
            ``KeyboardInterrupt`` and cancellation are never replaced.

    .. versionadded:: 0.1.0
    """

    value: Any = MISSING
    handler: Callable[[BaseException], Any] | None = None
    on: ExceptionSpec = Exception

    def __post_init__(self) -> None:
        if (self.value is MISSING) == (self.handler is None):
            raise ConfigurationError(
                "Fallback: give exactly one of value=... or handler=...; "
                f"got value={shown(self.value)}, handler={shown(self.handler)}"
            )
        if self.handler is not None and not callable(self.handler):
            raise ConfigurationError(
                f"Fallback: handler={shown(self.handler)} is not accepted; expected a callable "
                "taking the exception and returning the substitute"
            )
        compile_exception_spec("Fallback", "on", self.on)

    def bind(self, ctx: PolicyContext) -> FallbackState:
        """Create the runtime state for one pipeline."""
        return FallbackState(self, ctx)

    def __repr__(self) -> str:
        what = f"value={self.value!r}" if self.handler is None else f"handler={self.handler!r}"
        return f"<Fallback {what} on={describe_spec(self.on)}>"


class FallbackState:
    """
    Applies a :class:`Fallback` for one pipeline.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_ctx", "_handler", "_value", "handles")

    def __init__(self, config: Fallback, ctx: PolicyContext) -> None:
        self._ctx = ctx
        self._value = config.value
        self._handler = config.handler
        self.handles: ExceptionPredicate = compile_exception_spec("Fallback", "on", config.on)

    def _used(self, exc: BaseException, observed: bool = False) -> None:
        ctx = self._ctx
        ctx.emit(
            FallbackUsed(
                target=ctx.target, kind=ctx.kind, error_type=error_type(exc), observed=observed
            )
        )

    def applies(self, exc: BaseException) -> bool:
        """
        Whether the fallback replaces *exc*.

        In observe mode the fallback is reported (``FallbackUsed(observed=True)``) but never
        applied: the caller sees the real failure.
        """
        if not self.handles(exc):
            return False
        if self._ctx.observe:
            self._used(exc, observed=True)
            return False
        return True

    def handle(self, exc: BaseException) -> Any:
        """
        Return the substitute for *exc*; the caller checked :meth:`applies` first.

        ``FallbackUsed`` is reported once the substitute exists: a handler that fails served
        nothing, and its error reaches the caller.
        """
        if self._handler is None:
            self._used(exc)
            return self._value
        result = self._handler(exc)
        if inspect.isawaitable(result):
            close = getattr(result, "close", None)
            if close is not None:
                close()  # do not leak a never-awaited coroutine
            raise ConfigurationError(
                f"Fallback for target {self._ctx.target!r}: handler={self._handler!r} is async; "
                "async handlers only work with acall() or async functions"
            )
        self._used(exc)
        return result

    async def ahandle(self, exc: BaseException) -> Any:
        """Like :meth:`handle`; awaits an async handler."""
        if self._handler is None:
            self._used(exc)
            return self._value
        result = self._handler(exc)
        if inspect.isawaitable(result):
            awaitable: Awaitable[Any] = result
            result = await awaitable
        self._used(exc)
        return result

    def __repr__(self) -> str:
        return f"<FallbackState target={self._ctx.target!r}>"
