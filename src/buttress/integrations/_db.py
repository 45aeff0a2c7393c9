"""
What the database integrations share: targets, safe retries, and pipelines.

- **Target** = database system, server address and database name:
  ``postgresql:127.0.0.1:5432/app``, ``mysql:127.0.0.1:3306/shop``, ``redis:127.0.0.1:6379/0``,
  ``sqlite:app.db``. Never the user, the password, the statement or its parameters.
- **What is transient** (:func:`is_transient`): a builtin ``ConnectionError`` or
  ``TimeoutError`` (buttress's own timeout is one) or a connection-level error a driver
  registered (:func:`register_transient`). The retry retries only that and the breaker counts
  only that; a syntax error, a constraint or a wrong password reaches the caller once.
- **Safe retries only**: what running twice cannot change. Connecting, where an integration
  wraps it; a read (:func:`statement_kind`) outside any transaction, where the driver can run it
  again on a working connection; SQLite's ``database is locked`` outside a transaction; Redis
  read-only commands. Never a write, a pipeline, ``executemany`` or anything inside an explicit
  transaction: the integrations run such work with ``retryable=False`` (inside
  :func:`buttress.no_retry`), so the breaker, bulkhead, timeouts and metrics still apply but the
  statement runs once. :func:`statement_kind` reads the first word only: a ``SELECT`` calling a
  function that writes, ``EXPLAIN ANALYZE`` of a write, or ``WITH d AS (DELETE ...)`` count as
  reads.
- **Telemetry**: no database span of our own. When a DB instrumentation span is current, a
  retry's back-off is a ``buttress.retry`` child span of it, and rejections, timeouts and
  exhausted retries are events on it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from opentelemetry import trace

from .._pipeline import Pipeline
from .._predicates import error_type
from ..policies._retry import no_retry
from ._base import inside, passthrough, target_pipeline

T = TypeVar("T")

logger = logging.getLogger("buttress")

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
    pipeline: Pipeline = target_pipeline(target, KIND, is_transient)
    return pipeline


class _Operation:
    """
    What happened to one logical database operation, for its span.

    A span is emitted only when something happened (more than one attempt, or a failure): a
    plain successful operation adds nothing, as the rest of buttress's telemetry; OpenTelemetry's
    own database instrumentations, when installed, already give every operation a span.
    """

    __slots__ = ("errors", "start_ns", "target")

    def __init__(self, target: str) -> None:
        self.target = target
        self.start_ns = time.time_ns()
        self.errors: list[str] = []

    def failed(self, exc: BaseException) -> None:
        self.errors.append(error_type(exc))

    def end(self, outcome: BaseException | None) -> None:
        if not self.errors and outcome is None:
            return
        try:
            self._span(outcome)
        except Exception:  # telemetry never breaks the host
            logger.debug("buttress: could not record a database span", exc_info=True)

    def _span(self, outcome: BaseException | None) -> None:
        system, _, rest = self.target.partition(":")
        where, _, namespace = rest.partition("/")
        host, _, port = where.rpartition(":") if where.count(":") == 1 else (where, "", "")
        attributes: dict[str, Any] = {
            "db.system.name": system,
            "buttress.target": self.target,
            "buttress.attempts": len(self.errors) + (0 if outcome is not None else 1),
        }
        if namespace:
            attributes["db.namespace"] = namespace
        if host:
            attributes["server.address"] = host
        if port.isdigit():
            attributes["server.port"] = int(port)
        if outcome is not None:
            attributes["error.type"] = error_type(outcome)
        span = trace.get_tracer("buttress").start_span(
            namespace or self.target,
            kind=trace.SpanKind.CLIENT,
            attributes=attributes,
            start_time=self.start_ns,
        )
        for attempt, failure in enumerate(self.errors, start=1):
            span.add_event(
                "buttress.attempt_failed", {"buttress.attempt": attempt, "error.type": failure}
            )
        if outcome is not None:
            span.set_status(trace.Status(trace.StatusCode.ERROR))
        span.end()


def run(target: str, fn: Callable[[], T], *, retryable: bool) -> T:
    """Run one logical database operation through its pipeline."""
    if passthrough(KIND):
        return fn()
    pipeline = pipeline_for(target)
    operation = _Operation(target)

    def attempt() -> T:
        with inside(KIND):
            try:
                return fn()
            except Exception as exc:
                operation.failed(exc)
                raise

    try:
        if retryable:
            result = pipeline.call(attempt)
        else:
            with no_retry():
                result = pipeline.call(attempt)
    except Exception as exc:
        operation.end(exc)
        raise
    operation.end(None)
    return result


async def arun(target: str, fn: Callable[[], Awaitable[T]], *, retryable: bool) -> T:
    """Like :func:`run`, for coroutines."""
    if passthrough(KIND):
        return await fn()
    pipeline = pipeline_for(target)
    operation = _Operation(target)

    async def attempt() -> T:
        with inside(KIND):
            try:
                return await fn()
            except Exception as exc:
                operation.failed(exc)
                raise

    try:
        if retryable:
            result = await pipeline.acall(attempt)
        else:
            with no_retry():
                result = await pipeline.acall(attempt)
    except Exception as exc:
        operation.end(exc)
        raise
    operation.end(None)
    return result


_READ_STARTS = frozenset({"SELECT", "SHOW", "EXPLAIN", "VALUES", "TABLE", "WITH"})
# Anything that may change data or take a lock makes a statement a write, wherever it appears:
# a data-modifying CTE (WITH d AS (DELETE ...)), EXPLAIN ANALYZE of a DML statement, a
# sequence bump, SELECT ... INTO, row locks, advisory locks. Erring towards "write" only costs a
# retry; erring towards "read" could run a write twice.
_WRITE_MARKERS = re.compile(
    r"\b(INSERT|UPDATE|DELETE|MERGE|UPSERT|REPLACE|INTO|CALL|DO|LOCK|NEXTVAL|SETVAL|"
    r"PG_ADVISORY_\w*|GET_LOCK|FOR\s+(UPDATE|SHARE|NO\s+KEY\s+UPDATE|KEY\s+SHARE))\b",
    re.IGNORECASE,
)


def statement_kind(sql: Any) -> str:
    """
    ``read`` for statements that provably only read, else ``write``.

    A statement is a read when it starts with SELECT, SHOW, EXPLAIN, VALUES, TABLE or WITH and
    contains no keyword or function that writes or locks (see ``_WRITE_MARKERS``). Functions
    with side effects that are not listed are not detected: run such work inside
    :func:`buttress.no_retry` or an explicit transaction.
    """
    text = sql.decode(errors="replace") if isinstance(sql, bytes) else str(sql)
    words = text.lstrip(" \t\r\n(").split(None, 1)
    first = words[0].upper() if words else ""
    if first in _READ_STARTS and _WRITE_MARKERS.search(text) is None:
        return "read"
    return "write"
