"""
A pipeline: one target's policies, bound to their runtime state, with sync and async drivers.

``buttress.protect(name, ...)`` builds one and registers it under *name*. The pipeline itself is
only wiring: it binds each policy's immutable configuration to a fresh runtime state, compiles
the two drivers once, and exposes ``call``, ``acall`` and decorator use.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Sequence
from dataclasses import replace as _replace
from typing import Any, ParamSpec, TypeVar, overload

from . import _validate
from ._clock import Clock
from ._context import PolicyContext
from ._driver_async import AsyncRun, build_async
from ._driver_sync import SyncRun, build_sync
from ._exceptions import ConfigurationError
from ._order import Layout, parse_order
from ._shape import CallShape
from ._stats import CallStats
from ._validate import shown
from .policies._bulkhead import Bulkhead, BulkheadState
from .policies._cache import Cache, CacheState
from .policies._circuit_breaker import CircuitBreaker, CircuitBreakerState
from .policies._fallback import Fallback, FallbackState
from .policies._rate_limit import RateLimit, RateLimitState
from .policies._retry import Retry, RetryState
from .policies._timeout import Timeout
from .telemetry import _semconv

P = ParamSpec("P")
R = TypeVar("R")

KINDS = _semconv.KINDS


def _bind_ctx(ctx: PolicyContext, config: object) -> PolicyContext:
    # A policy configured with observe=True observes even when the pipeline enforces.
    if getattr(config, "observe", False) and not ctx.observe:
        return _replace(ctx, observe=True)
    return ctx


def _check(name: str, value: object, expected: type) -> None:
    if value is not None and not isinstance(value, expected):
        raise ConfigurationError(
            f"protect: {name}={shown(value)} is not accepted; expected a "
            f"buttress.{expected.__name__} or None"
        )


def _check_random(random: object) -> None:
    # Drawn once now: a jitter source returning something else would fail inside a retry.
    expected = "a callable returning a float in [0, 1)"
    _validate.function("protect", "random", random, expected)
    if random is None:
        return
    try:
        value = random()  # type: ignore[operator]
    except Exception as error:
        raise ConfigurationError(
            f"protect: random={shown(random)} raised {type(error).__name__} when called; "
            f"expected {expected}"
        ) from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ConfigurationError(
            f"protect: random={shown(random)} returned {shown(value)}; expected {expected}"
        )


def _check_clock(clock: object) -> None:
    # Checked here: a clock is first read inside the first call, too late to say what is wrong.
    if clock is None:
        return
    missing = [m for m in ("monotonic", "sleep", "asleep") if not callable(getattr(clock, m, None))]
    if missing:
        raise ConfigurationError(
            f"protect: clock={shown(clock)} is not accepted; expected a buttress.Clock (methods "
            f"monotonic(), sleep(seconds) and async asleep(seconds); missing: {', '.join(missing)})"
            ", such as buttress.testing.FakeClock(), or None"
        )


class Pipeline:
    """
    The resilience policies of one target, ready to run calls.

    Use :func:`buttress.protect` to create one. Then::

        guard.call(fn, *args, **kwargs)          # sync
        await guard.acall(afn, *args, **kwargs)  # async
        @guard                                   # decorator, sync or async
        def fn(...): ...
        guard.options(priority=5).call(fn, ...)  # per-call options

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        name: str,
        *,
        retry: Retry | None = None,
        breaker: CircuitBreaker | None = None,
        timeout: Timeout | None = None,
        bulkhead: Bulkhead | None = None,
        rate_limit: RateLimit | None = None,
        cache: Cache | None = None,
        fallback: Fallback | None = None,
        order: Sequence[str] | None = None,
        kind: str = "function",
        observe: bool = False,
        clock: Clock | None = None,
        random: Callable[[], float] | None = None,
        label: str | None = None,
        critical: bool = False,
        probe: Callable[[], object] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:  # type: ignore[redundant-expr]
            raise ConfigurationError(
                f"protect: name={shown(name)} is not accepted; expected a non-empty string"
            )
        if not isinstance(kind, str) or kind not in KINDS:  # type: ignore[redundant-expr]
            raise ConfigurationError(
                f"protect: kind={shown(kind)} is not accepted; expected one of {', '.join(KINDS)}"
            )
        _validate.boolean("protect", "observe", observe)
        _validate.boolean("protect", "critical", critical)
        _check_clock(clock)
        _check_random(random)
        _validate.function("protect", "probe", probe, "a callable taking no arguments")
        _check("retry", retry, Retry)
        _check("breaker", breaker, CircuitBreaker)
        _check("timeout", timeout, Timeout)
        _check("bulkhead", bulkhead, Bulkhead)
        _check("rate_limit", rate_limit, RateLimit)
        _check("cache", cache, Cache)
        _check("fallback", fallback, Fallback)
        self.name = name
        self.critical = bool(critical)
        """Whether an unhealthy state of this target makes the whole service unhealthy."""
        self.probe = probe
        """A function :func:`buttress.probe` runs through the pipeline on demand."""
        self.layout: Layout = parse_order(order)
        ctx_kwargs: dict[str, Any] = {"target": label or name, "kind": kind, "observe": observe}
        if clock is not None:
            ctx_kwargs["clock"] = clock
        if random is not None:
            ctx_kwargs["random"] = random
        self.context = PolicyContext(**ctx_kwargs)
        self.spec: tuple[object, ...] = (
            retry,
            breaker,
            timeout,
            bulkhead,
            rate_limit,
            cache,
            fallback,
            self.layout,
            kind,
            observe,
        )
        ctx = self.context
        self.retry: RetryState | None = retry.bind(_bind_ctx(ctx, retry)) if retry else None
        self.breaker: CircuitBreakerState | None = (
            breaker.bind(_bind_ctx(ctx, breaker)) if breaker else None
        )
        self.timeout_config = timeout
        self.bulkhead: BulkheadState | None = (
            bulkhead.bind(_bind_ctx(ctx, bulkhead)) if bulkhead else None
        )
        self.rate_limiter: RateLimitState | None = (
            rate_limit.bind(_bind_ctx(ctx, rate_limit)) if rate_limit else None
        )
        self.cache: CacheState | None = cache.bind(_bind_ctx(ctx, cache)) if cache else None
        self.fallback: FallbackState | None = (
            fallback.bind(_bind_ctx(ctx, fallback)) if fallback else None
        )
        self.stats = CallStats(self.context.target, kind)
        if self.retry is not None and self.breaker is not None and "breaker" in self.layout.inner:
            # A retry the open breaker would refuse is not worth waiting for.
            self.retry.refused_at = self.breaker.refuses_at
        if self.retry is not None and self.retry.budget is not None:
            # The budget counts traffic from the pipeline's own outcome counts: no extra work
            # per call.
            self.retry.budget.calls_source = self.stats.total
        self._run = build_sync(self)
        self._arun = build_async(self)
        self._shaped: dict[CallShape, SyncRun] = {}
        self._ashaped: dict[CallShape, AsyncRun] = {}

    def shaped(self, shape: CallShape) -> SyncRun:
        """
        The sync driver compiled for calls of *shape* (see :class:`~buttress._shape.CallShape`).

        Compiled on first use and cached: the client integrations call it once per request.
        """
        run = self._shaped.get(shape)
        if run is None:
            run = self._shaped[shape] = build_sync(self, shape)
        return run

    def ashaped(self, shape: CallShape) -> AsyncRun:
        """The async driver compiled for calls of *shape*; see :meth:`shaped`."""
        run = self._ashaped.get(shape)
        if run is None:
            run = self._ashaped[shape] = build_async(self, shape)
        return run

    @property
    def target(self) -> str:
        """The name this pipeline reports under (its name, or ``other`` past the target cap)."""
        return self.context.target

    @property
    def kind(self) -> str:
        """``http``, ``db``, ``llm`` or ``function``."""
        return self.context.kind

    def describe(self) -> tuple[str, ...]:
        """
        The policies this pipeline runs, outermost first (Polly.Testing's descriptor).

        .. versionadded:: 0.1.0
        """
        present = {
            "fallback": self.fallback is not None,
            "cache": self.cache is not None,
            "rate_limit": self.rate_limiter is not None,
            "bulkhead": self.bulkhead is not None,
            "timeout": self.timeout_config is not None and self.timeout_config.total is not None,
            "retry": self.retry is not None,
            "breaker": self.breaker is not None,
            "attempt_timeout": self.timeout_config is not None
            and self.timeout_config.attempt is not None,
        }
        return tuple(stage for stage in self.layout.order if present[stage])

    def spec_repr(self) -> str:
        """A short description of the configured policies."""
        names = ("retry", "breaker", "timeout", "bulkhead", "rate_limit", "cache", "fallback")
        return ", ".join(
            f"{n}={v!r}" for n, v in zip(names, self.spec, strict=False) if v is not None
        )

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """
        Run ``fn(*args, **kwargs)`` through the pipeline.

        .. versionadded:: 0.1.0
        """
        return self._run(fn, args, kwargs, 0, None)  # type: ignore[no-any-return]

    async def acall(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """
        Await ``fn(*args, **kwargs)`` through the pipeline.

        .. versionadded:: 0.1.0
        """
        return await self._arun(fn, args, kwargs, 0, None)  # type: ignore[no-any-return]

    def options(self, *, priority: int = 0, cache_key: Hashable = None) -> CallOptions:
        """
        Per-call options: bulkhead *priority* (higher first) and an explicit *cache_key*.

        .. versionadded:: 0.1.0
        """
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise ConfigurationError(
                f"options: priority={shown(priority)} is not accepted; expected an int"
            )
        try:
            hash(cache_key)
        except Exception:  # unhashable, or a __hash__ that fails: it could never be looked up
            raise ConfigurationError(
                f"options: cache_key={shown(cache_key)} is not accepted; expected a hashable "
                "value (a str, an int, a tuple of them...) or None"
            ) from None
        return CallOptions(self, priority, cache_key)

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...
    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...
    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Decorate a sync or async function so every call runs through the pipeline."""
        return _decorate(self, fn, 0, None)

    def __repr__(self) -> str:
        return f"<Pipeline {self.name!r} kind={self.kind} policies={'->'.join(self.describe())}>"


class CallOptions:
    """
    A pipeline with per-call options applied; made by :meth:`Pipeline.options`.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_cache_key", "_pipeline", "_priority")

    def __init__(self, pipeline: Pipeline, priority: int, cache_key: Hashable) -> None:
        self._pipeline = pipeline
        self._priority = priority
        self._cache_key = cache_key

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)`` with these options."""
        return self._pipeline._run(fn, args, kwargs, self._priority, self._cache_key)  # type: ignore[no-any-return]

    async def acall(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Await ``fn(*args, **kwargs)`` with these options."""
        return await self._pipeline._arun(fn, args, kwargs, self._priority, self._cache_key)  # type: ignore[no-any-return]

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...
    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...
    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Decorate *fn* with these options."""
        return _decorate(self._pipeline, fn, self._priority, self._cache_key)

    def __repr__(self) -> str:
        return f"<CallOptions {self._pipeline.name!r} priority={self._priority}>"


def _decorate(
    pipeline: Pipeline, fn: Callable[P, Any], priority: int, cache_key: Hashable
) -> Callable[P, Any]:
    if inspect.iscoroutinefunction(fn):
        arun = pipeline._arun

        @functools.wraps(fn)
        async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            return await arun(fn, args, kwargs, priority, cache_key)

        return async_wrapper
    run = pipeline._run

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
        return run(fn, args, kwargs, priority, cache_key)

    return wrapper
