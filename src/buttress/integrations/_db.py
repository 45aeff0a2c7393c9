"""
What the database integrations share: targets, safe retries, and pipelines.

- **Target** = database system, server address and database name:
  ``postgresql:127.0.0.1:5432/app``, ``mysql:127.0.0.1:3306/shop``, ``redis:127.0.0.1:6379/0``,
  ``sqlite:app.db``. Never the user, the password, the statement or its parameters.
- **Safe retries only.** Connecting is always safe to retry. A statement is retried only when
  the failure happened before the server could have run it (the connection was refused or
  already dropped before the statement was sent) and never inside an explicit transaction:
  the integrations run such work inside :func:`buttress.no_retry`, so the breaker, bulkhead,
  timeouts and metrics still apply but the statement runs once. Read-only Redis commands may
  retry on connection errors; writes only when configured.
- **One span per logical operation**, as the OTel database conventions ask, with retries as
  events on it: the pipeline's telemetry does that already when a DB instrumentation span is
  current.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .. import _activation
from .._pipeline import Pipeline
from .._registry import REGISTRY
from ..policies._retry import no_retry
from ._base import inside, passthrough

T = TypeVar("T")

KIND = "db"

_transient: tuple[type[BaseException], ...] = ()
_lock = threading.Lock()


def register_transient(*errors: type[BaseException]) -> None:
    """Add a driver's connection-level errors to what DB pipelines retry and count as failures."""
    global _transient  # noqa: PLW0603 - copy-on-write, read on every failure
    with _lock:
        _transient = tuple(dict.fromkeys((*_transient, *errors)))


def is_transient(exc: BaseException) -> bool:
    """Connection-level failures of any registered driver (and builtin connection errors)."""
    return isinstance(exc, (ConnectionError, TimeoutError, *_transient))


def db_target(system: str, host: str | None, port: int | None, database: str | None) -> str:
    """``system:host:port/database``; parts that are unknown are left out."""
    where = host or "localhost"
    if port is not None:
        where = f"{where}:{port}"
    return f"{system}:{where}/{database}" if database is not None else f"{system}:{where}"


def pipeline_for(target: str) -> Pipeline:
    """The pipeline of a database target, built from the active settings on first use."""
    pipeline = REGISTRY.get(target)
    if pipeline is not None:
        return pipeline
    return REGISTRY.get_or_create(target, lambda label: _build(target, label))


def _build(target: str, label: str) -> Pipeline:
    import dataclasses  # noqa: PLC0415

    policies = _activation.policies(target, KIND)
    retry = policies.retry
    if retry is not None:
        retry = dataclasses.replace(retry, on=is_transient, on_result=None)
    breaker = policies.breaker
    if breaker is not None:
        breaker = dataclasses.replace(breaker, failure_on=is_transient, failure_on_result=None)
    return Pipeline(
        target,
        retry=retry,
        breaker=breaker,
        timeout=policies.timeout,
        bulkhead=policies.bulkhead,
        rate_limit=policies.rate_limit,
        kind=KIND,
        observe=_activation.observing(),
        label=label,
    )


def run(target: str, fn: Callable[[], T], *, retryable: bool) -> T:
    """Run one logical database operation through its pipeline."""
    if passthrough(KIND):
        return fn()
    pipeline = pipeline_for(target)

    def attempt() -> T:
        with inside(KIND):
            return fn()

    if retryable:
        return pipeline.call(attempt)
    with no_retry():
        return pipeline.call(attempt)


async def arun(target: str, fn: Callable[[], Awaitable[T]], *, retryable: bool) -> T:
    """Like :func:`run`, for coroutines."""
    if passthrough(KIND):
        return await fn()
    pipeline = pipeline_for(target)

    async def attempt() -> T:
        with inside(KIND):
            return await fn()

    if retryable:
        return await pipeline.acall(attempt)
    with no_retry():
        return await pipeline.acall(attempt)


def statement_kind(sql: Any) -> str:
    """``read`` for statements that only read (SELECT, SHOW, EXPLAIN...), else ``write``."""
    text = sql.decode(errors="replace") if isinstance(sql, bytes) else str(sql)
    words = text.lstrip(" \t\r\n(").split(None, 1)
    first = words[0].upper() if words else ""
    if first in ("SELECT", "SHOW", "EXPLAIN", "VALUES", "TABLE"):
        return "read"
    if first == "WITH":
        upper = text.upper()
        if not any(w in upper for w in (" INSERT ", " UPDATE ", " DELETE ", " MERGE ")):
            return "read"
    return "write"
