"""Pipelines built from the order rules, a ledger of what callers saw, and the exact invariants.

Shared by the policy-combination, load and soak tests. A :class:`Spec` names a subset of the
policies, where each admission policy sits (outside or inside the retry) and their parameters;
:func:`build` makes the pipeline, with a rate limit whose bucket counts the tokens it hands out
per call (:class:`CountingRateLimit`; the call is named by :data:`CALL_ID`). A :class:`Ledger`
holds what the callers saw, classified with the rule buttress documents for its outcome counts
(``docs/telemetry.md``: every call ends as exactly one of success, failure, rejected, timeout
or fallback; a cancelled call ends as none). :func:`violations` compares the two.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from itertools import combinations, product
from typing import Any

import buttress
from buttress import RateLimitedError, RejectedError
from buttress._clock import Clock
from buttress._context import PolicyContext
from buttress._order import ADMISSIONS, DEFAULT_ORDER, Layout
from buttress.policies._breaker_state import CircuitState
from buttress.policies._rate_limit import RateLimit, RateLimitState

POLICIES = ("retry", "breaker", "timeout", "bulkhead", "rate_limit", "cache", "fallback")
OUTCOMES = ("success", "failure", "rejected", "timeout", "fallback")

CALL_ID: ContextVar[int | None] = ContextVar("CALL_ID", default=None)
"""The test's number for the call in progress, read by the counting bucket."""

FALLBACK_VALUE = ("fallback",)
"""What the fallback answers: a sentinel compared by identity."""


def is_again(result: object) -> bool:
    """The retry's result predicate: a result the dependency asks us to come back for."""
    return isinstance(result, tuple) and len(result) == 2 and result[0] == "again"  # noqa: PLR2004


class CountingRateLimitState(RateLimitState):
    """A token bucket that also books every token it hands out, and every refusal, per call."""

    def __init__(self, config: RateLimit, ctx: PolicyContext) -> None:
        super().__init__(config, ctx)
        self.books = threading.Lock()
        self.granted: Counter[int | None] = Counter()
        self.refused: Counter[int | None] = Counter()

    def acquire(self, now: float, deadline: float = math.inf, cost: float = 1.0) -> float:
        """Take a token as the real bucket does, and book it against the call in progress."""
        call = CALL_ID.get()
        try:
            wait = super().acquire(now, deadline, cost)
        except RateLimitedError:
            with self.books:
                self.refused[call] += 1
            raise
        with self.books:
            self.granted[call] += 1
        return wait


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class CountingRateLimit(RateLimit):
    """A :class:`RateLimit` whose pipelines get a :class:`CountingRateLimitState`."""

    def bind(self, ctx: PolicyContext) -> RateLimitState:
        """The counting bucket, otherwise the real one."""
        return CountingRateLimitState(self, ctx)


@dataclass(frozen=True)
class Spec:
    """One pipeline: which policies, which admission policies sit inside the retry, and values."""

    policies: frozenset[str]
    inner: frozenset[str] = frozenset({"breaker"})
    attempts: int = 3
    budget: str = "none"  # none | reraise | raise
    on_result: bool = False
    minimum_calls: int = 4
    open_duration: float = 0.5
    half_open_calls: int = 2
    attempt_timeout: float | None = 0.02
    total_timeout: float | None = 0.5
    max_concurrent: int = 2
    max_queue: int = 4
    max_wait: float = 0.02
    rate: float = 1e-9
    burst: int = 20
    rl_max_wait: float = 0.0
    cache_keys: int = 3
    fallback_on: str = "all"  # all | connection | broken
    observe: bool = False
    priorities: int = 1
    """Callers use priorities 0 to this - 1 (call number modulo): the bulkhead queue ranks them."""

    @property
    def order(self) -> tuple[str, ...]:
        """The full stage order, from the layout the order rules allow (``_order.Layout``)."""
        inner = frozenset(self.inner) & frozenset(ADMISSIONS)
        return Layout(outer=frozenset(ADMISSIONS) - inner, inner=inner).order

    @property
    def frozen_bucket(self) -> bool:
        """A rate so low that the bucket never refills while the test runs: tokens are exact."""
        return self.rate < 1e-6  # noqa: PLR2004

    def __str__(self) -> str:
        present = [p for p in self.order if p in self.policies or p == "attempt_timeout"]
        return "->".join(p for p in present if p != "attempt_timeout" or "timeout" in self.policies)


def layouts() -> Iterator[frozenset[str]]:
    """Every set of admission policies that may sit inside the retry (the order rules)."""
    for k in range(len(ADMISSIONS) + 1):
        for inner in combinations(ADMISSIONS, k):
            yield frozenset(inner)


def every_pipeline(**values: Any) -> Iterator[Spec]:
    """Every subset of the policies in every allowed order, with *values* for the parameters;
    orders differing only in where an absent admission policy would sit are the same pipeline,
    and come once."""
    for flags in product((False, True), repeat=len(POLICIES)):
        present = frozenset(p for p, on in zip(POLICIES, flags, strict=True) if on)
        placed = [a for a in ADMISSIONS if a in present]
        for where in product((False, True), repeat=len(placed)):
            inner = frozenset(a for a, inside in zip(placed, where, strict=True) if inside)
            yield Spec(policies=present, inner=inner, **values)


def allowed_orders() -> set[tuple[str, ...]]:
    """The full orders the rules allow: one per placement of the three admission policies."""
    return {Spec(policies=frozenset(), inner=inner).order for inner in layouts()}


assert len(DEFAULT_ORDER) == len(set(DEFAULT_ORDER))  # noqa: S101 - a permutation of names


def build(spec: Spec, name: str, clock: Clock | None = None) -> buttress.Pipeline:
    """The pipeline *spec* describes (not registered: each test owns its pipelines)."""
    has = spec.policies.__contains__
    budget = (
        buttress.RetryBudget(ratio=0.2, min_per_second=2.0, window=1)
        if spec.budget != "none"
        else None
    )
    return buttress.Pipeline(
        name,
        retry=buttress.Retry(
            on=(ConnectionError, buttress.TimeoutError),
            attempts=spec.attempts,
            backoff=buttress.constant(0.001),
            on_result=is_again if spec.on_result else None,
            budget=budget,
            budget_exhausted="raise" if spec.budget == "raise" else "reraise",
        )
        if has("retry")
        else None,
        breaker=buttress.CircuitBreaker(
            window_size=max(spec.minimum_calls, 4),
            minimum_calls=spec.minimum_calls,
            open_duration=spec.open_duration,
            half_open_calls=spec.half_open_calls,
        )
        if has("breaker")
        else None,
        timeout=buttress.Timeout(attempt=spec.attempt_timeout, total=spec.total_timeout)
        if has("timeout")
        else None,
        bulkhead=buttress.Bulkhead(
            max_concurrent=spec.max_concurrent, max_queue=spec.max_queue, max_wait=spec.max_wait
        )
        if has("bulkhead")
        else None,
        rate_limit=CountingRateLimit(rate=spec.rate, burst=spec.burst, max_wait=spec.rl_max_wait)
        if has("rate_limit")
        else None,
        cache=buttress.Cache(ttl=0.05, max_entries=64, key=_cache_key(spec.cache_keys))
        if has("cache")
        else None,
        fallback=_fallback(spec.fallback_on) if has("fallback") else None,
        order=spec.order,
        observe=spec.observe,
        clock=clock,
    )


def _fallback(on: str) -> buttress.Fallback:
    if on == "broken":  # a handler that fails: its error is how the call ends
        return buttress.Fallback(handler=_no_substitute, on=ConnectionError)
    return buttress.Fallback(value=FALLBACK_VALUE, on=Exception if on == "all" else ConnectionError)


def _no_substitute(exc: BaseException) -> object:
    raise ValueError("no substitute for this failure") from exc


def _cache_key(keys: int) -> Any:
    def key(call: int, *_: object, **__: object) -> int:
        return call % keys

    return key


@dataclass
class Ledger:
    """What the callers saw, and how often the dependency was called, per call."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    started: int = 0
    seen: Counter[str] = field(default_factory=Counter)
    attempts: Counter[int] = field(default_factory=Counter)
    surprises: list[str] = field(default_factory=list)
    expected: tuple[type[BaseException], ...] = (ConnectionError, ValueError, OSError)
    """The dependency's own errors: anything else that reaches a caller is a surprise."""

    def attempt(self, call: int) -> int:
        """Book one call of the dependency for *call*; returns how many came before it."""
        with self.lock:
            before = self.attempts[call]
            self.attempts[call] = before + 1
        return before

    def start(self) -> None:
        """A caller is about to call the pipeline."""
        with self.lock:
            self.started += 1

    def end(self, outcome: str) -> None:
        """A call ended as *outcome* (an outcome name, or ``cancelled``)."""
        with self.lock:
            self.seen[outcome] += 1

    def returned(self, result: object, gave_up: Callable[[object], bool] | None) -> None:
        """Classify a returned value: the fallback's, a result the retry gave up on (*gave_up*:
        the retry's result predicate, if it has one), a success."""
        if result is FALLBACK_VALUE:
            self.end("fallback")
        elif gave_up is not None and gave_up(result):
            self.end("failure")
        else:
            self.end("success")

    def raised(self, exc: BaseException) -> None:
        """Classify an exception that reached the caller."""
        if isinstance(exc, RejectedError):
            self.end("rejected")
        elif isinstance(exc, buttress.TimeoutError):
            self.end("timeout")
        elif isinstance(exc, self.expected):
            self.end("failure")
        elif isinstance(exc, BaseException) and not isinstance(exc, Exception):
            self.end("cancelled")
        else:  # an error of buttress's own making, or of the test's
            self.end("failure")
            with self.lock:
                if len(self.surprises) < 10:  # a few tell the story; a soak must not grow
                    self.surprises.append(f"{type(exc).__name__}: {exc}")

    @property
    def ended(self) -> int:
        """Calls that ended with an outcome (not cancelled)."""
        return sum(self.seen[o] for o in OUTCOMES)


def violations(pipeline: buttress.Pipeline, spec: Spec, ledger: Ledger) -> tuple[list[str], int]:
    """
    The invariants that must hold once every call has ended; returns (violations, checked).

    - every call counted once: the pipeline's counts per outcome equal what callers saw, and
      calls counted = successes + failures + rejections + timeouts + fallbacks = calls started -
      calls cancelled;
    - the bulkhead's slots all back (active 0, queued 0, every permit free);
    - the breaker, if half-open, has no probe outstanding;
    - the rate limit's tokens conserved: outside the retry one token per admitted call (a call
      that reached the dependency had one; none had two), inside it one per admitted attempt;
      with a bucket that does not refill, the bucket lost exactly the tokens handed out;
    - the cache has no flight left open.
    """
    problems: list[str] = list(ledger.surprises[:5])
    checked = 0
    counts = pipeline.stats.by_outcome()
    seen = {o: ledger.seen[o] for o in OUTCOMES}
    checked += 1
    if counts != seen:
        problems.append(f"outcome counts {counts} != what callers saw {seen}")
    checked += 1
    total = sum(counts.values())
    if total != ledger.started - ledger.seen["cancelled"]:
        problems.append(
            f"calls counted {total} != started {ledger.started} - cancelled "
            f"{ledger.seen['cancelled']}"
        )
    bulkhead = pipeline.bulkhead
    if bulkhead is not None:
        checked += 3
        if (bulkhead.active, bulkhead.queued) != (0, 0):
            problems.append(f"bulkhead active={bulkhead.active} queued={bulkhead.queued}, not 0")
        if len(bulkhead._free) != bulkhead.limit:
            problems.append(f"bulkhead has {len(bulkhead._free)} free permits of {bulkhead.limit}")
    breaker = pipeline.breaker
    if breaker is not None:
        checked += 1
        if breaker.state is CircuitState.HALF_OPEN and breaker._probes_taken != breaker._probe_done:
            problems.append(
                f"half-open breaker holds {breaker._probes_taken - breaker._probe_done} probes"
            )
    bucket = pipeline.rate_limiter
    if isinstance(bucket, CountingRateLimitState):
        more, extra_checks = _token_violations(bucket, spec, ledger)
        problems += more
        checked += extra_checks
    cache = pipeline.cache
    if cache is not None:
        checked += 1
        if cache._threads or cache._tasks:
            problems.append(f"cache flights left open: {len(cache._threads) + len(cache._tasks)}")
    return problems, checked


def _token_violations(
    bucket: CountingRateLimitState, spec: Spec, ledger: Ledger
) -> tuple[list[str], int]:
    problems = []
    granted, refused, attempts = bucket.granted, bucket.refused, ledger.attempts
    checked = 1
    if None in granted or None in refused:
        problems.append("tokens taken outside any call")
    granted_total = sum(granted.values())
    if spec.frozen_bucket:
        checked += 1
        lost = round(bucket.burst - bucket.available)
        if lost != granted_total:
            problems.append(f"the bucket lost {lost} tokens but handed out {granted_total}")
    calls = set(granted) | set(refused) | set(attempts)
    if "rate_limit" in spec.inner and "retry" in spec.policies:
        checked += 1
        # Per attempt: every attempt made had its token, and at most one token went unused
        # (the last admission, turned away after it by the bulkhead, breaker or deadline).
        bad = [c for c in calls if not attempts[c] <= granted[c] <= attempts[c] + 1]
        if bad:
            c = bad[0]
            problems.append(
                f"{len(bad)} calls with tokens != attempts, e.g. call {c}: {granted[c]} tokens, "
                f"{attempts[c]} attempts"
            )
    else:
        checked += 2
        twice = [c for c in calls if granted[c] + refused[c] > 1]
        if twice:
            c = twice[0]
            problems.append(
                f"{len(twice)} calls asked the rate limit more than once, e.g. call {c}: "
                f"{granted[c]} tokens, {refused[c]} refusals"
            )
        untaxed = [c for c in calls if attempts[c] and not granted[c]]
        if untaxed:
            problems.append(f"{len(untaxed)} calls reached the dependency without a token")
    return problems, checked
