"""
The SDK's own retry loop inside one buttress attempt: what the pipeline is told about it.

An SDK retries by itself in two cases (see :mod:`._llm`, "Who retries"): in observe mode, which
leaves every client setting alone, and in enforce mode when the application chose the SDK's
retries (``max_retries``, google-genai's ``retry_options``). One buttress attempt is then the
SDK's whole loop, and the pipeline sees only its last request. So that the breaker judges the
same requests as when buttress retries, each request the SDK retries is reported here, when
the SDK retries it:

- the breaker (when it judges attempts, as in the default order) records it as it records an
  attempt, with that request's own duration;
- in observe mode only, the retry policy reports the decision it would have taken on it (an
  observed ``RetryScheduled``, or ``RetriesExhausted`` where its attempts or the deadline
  would have stopped; nothing about requests it would not have sent), and before the SDK's
  next request the breaker reports the rejection it would have made if it were open. Nothing
  is refused or delayed.

The loop's last request is the attempt's own outcome, which the pipeline judges as usual: as
its first attempt, timed from the start of the loop (so an attempt-timeout overrun or a slow
call is measured over the whole loop, SDK back-off included).

:func:`sdk_loop` opens the reporting around one attempt; the integrations call
:func:`retrying` where the SDK decides to retry (the Stainless SDKs' ``_sleep_for_retry``),
then :func:`next_request` once it has slept, or :func:`failed` and :func:`starting` around
each request where the SDK's decision is not visible (google-genai's tenacity loop). Outside an
open loop each is one context-variable read. A fault of buttress's own here is logged once
and never reaches the application.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from .._pipeline import Pipeline
from ..policies._circuit_breaker import CircuitBreakerState

__all__ = ["failed", "next_request", "retrying", "sdk_loop", "starting"]

logger = logging.getLogger("buttress")


@dataclass(slots=True)
class _Loop:
    """The SDK loop running inside one attempt of *pipeline*."""

    pipeline: Pipeline
    observe: bool
    started: float
    """When the request now in flight was sent (the attempt's start for the first)."""
    deadline: float
    """No buttress attempt would start at or after this (total timeout, retry deadline)."""
    attempt: int = 1
    """The request now in flight, 1-based."""
    pending: BaseException | None = None
    """A request that failed, not yet known to be retried (see :func:`failed`)."""
    pending_at: float = 0.0


_loop: ContextVar[_Loop | None] = ContextVar("buttress_llm_sdk_loop", default=None)
_complained: list[bool] = []


@contextmanager
def sdk_loop(pipeline: Pipeline) -> Iterator[None]:
    """Report the requests the SDK retries inside this block (one attempt of *pipeline*)."""
    now = pipeline.context.clock.monotonic()
    limit = math.inf
    timeout = pipeline.timeout_config
    if timeout is not None and timeout.total is not None:
        limit = timeout.total
    retry = pipeline.retry
    if retry is not None and retry.config.deadline is not None:
        limit = min(limit, retry.config.deadline)
    token = _loop.set(_Loop(pipeline, pipeline.context.observe, now, now + limit))
    try:
        yield
    finally:
        _loop.reset(token)


def _complain(exc: Exception) -> None:
    if not _complained:
        _complained.append(True)
        logger.error(
            "buttress: reporting an SDK retry failed; the call goes on unchanged", exc_info=exc
        )


def retrying(failure: Callable[[], BaseException | None]) -> None:
    """
    The SDK will retry the request now in flight; ``failure()`` is how it ended.

    *failure* is called only inside an open loop (building the SDK's error has a cost).
    """
    loop = _loop.get()
    if loop is None:
        return
    try:
        exc = failure()
        if exc is not None:
            _report(loop, exc, None)
    except Exception as error:
        _complain(error)


def next_request() -> None:
    """The SDK is about to send its next request (after :func:`retrying` and its back-off)."""
    loop = _loop.get()
    if loop is None:
        return
    try:
        _next(loop)
    except Exception as error:
        _complain(error)


def failed(failure: BaseException) -> None:
    """The request now in flight failed; whether the SDK retries it shows at :func:`starting`."""
    loop = _loop.get()
    if loop is not None:
        loop.pending = failure
        loop.pending_at = loop.pipeline.context.clock.monotonic()


def starting() -> None:
    """The SDK sends a request: if the previous one failed, the SDK is retrying it."""
    loop = _loop.get()
    if loop is None or loop.pending is None:
        return
    failure, at = loop.pending, loop.pending_at
    loop.pending = None
    try:
        _report(loop, failure, at)
        _next(loop)
    except Exception as error:
        _complain(error)


def _breaker(pipeline: Pipeline) -> CircuitBreakerState | None:
    # The breaker when it judges attempts (the default order), not whole calls.
    breaker = pipeline.breaker
    return breaker if breaker is not None and "breaker" in pipeline.layout.inner else None


def _report(loop: _Loop, failure: BaseException, at: float | None) -> None:
    pipeline = loop.pipeline
    now = pipeline.context.clock.monotonic() if at is None else at
    breaker = _breaker(pipeline)
    if breaker is not None:
        breaker.on_exception(now, now - loop.started, failure)
    retry = pipeline.retry
    if not loop.observe or retry is None or not retry.is_retryable(failure):
        return
    attempts = retry.config.attempts
    if attempts is not None and loop.attempt > attempts:
        return  # buttress would not have sent this request: it decides nothing about it
    # Observe mode: decide() reports the retry it would schedule and schedules nothing.
    retry.decide(failure, True, loop.attempt, 0.0, now, loop.deadline)


def _next(loop: _Loop) -> None:
    pipeline = loop.pipeline
    now = pipeline.context.clock.monotonic()
    loop.attempt += 1
    loop.started = now
    breaker = _breaker(pipeline)
    # Observing, _admit() reports a rejection it would make and admits (None), taking a
    # half-open probe permit that the request's outcome then settles.
    if loop.observe and breaker is not None and not breaker._free:
        breaker._admit(now)
