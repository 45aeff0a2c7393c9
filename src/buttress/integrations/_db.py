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
- **Transaction control passes straight through** (:func:`transaction_control`): ``COMMIT``,
  ``ROLLBACK``, ``SAVEPOINT``, ``RELEASE``, ``ROLLBACK TO``, PostgreSQL's ``END``, ``ABORT`` and
  ``COMMIT/ROLLBACK PREPARED``, MySQL's ``XA COMMIT/ROLLBACK/END``, sent as statements, go to
  the driver without the pipeline: no breaker, no bulkhead queue, no timeout, no metrics. A
  transaction must always be able to end: an open breaker or a full bulkhead that refused its
  ``COMMIT`` or ``ROLLBACK`` would keep its locks held (and the session "idle in transaction").
  ``BEGIN`` and ``START TRANSACTION`` stay in the pipeline: refusing one leaves nothing open,
  and it is where SQLite waits for a lock (``BEGIN IMMEDIATE``).
- **Login failures never count** (:func:`register_login_failure`, :func:`is_login_failure`): a
  wrong password, an unknown role or database, a missing permission to connect. They do not
  heal by retrying, so :func:`is_transient` is false for them whatever else they are (redis-py's
  ``AuthenticationError`` is a ``ConnectionError``): they reach the caller after one attempt
  and the breaker does not count them.
- **Timeouts pushed to the server or the client only when configured**
  (:func:`pushed_timeout`): an integration hands the attempt timeout to the driver (PostgreSQL's
  ``statement_timeout``, PyMySQL's ``read_timeout``, redis-py's socket timeouts, SQLite's lock
  wait) only when ``timeout.attempt`` or ``timeout.total`` was configured for the target (the
  template's timeouts have ``Timeout.respect_app_timeout`` true) and never in observe mode. When
  a driver then reports that timeout, its exception gets a note (:func:`timeout_note`) saying
  that buttress set it, from which setting, and how to change it.
- **Telemetry**: no database span of our own. When a DB instrumentation span is current, a
  retry's back-off is a ``buttress.retry`` child span of it, and rejections, timeouts and
  exhausted retries are events on it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from opentelemetry import trace

from .. import _activation
from .._config import CONFIG
from .._pipeline import Pipeline
from .._predicates import error_type
from .._shape import APP_TIMEOUT
from .._suppression import suppressed
from ..policies._retry import no_retry
from ._base import _inside, inside, passthrough, target_pipeline

T = TypeVar("T")

logger = logging.getLogger("buttress")

KIND = "db"

_transient: tuple[type[BaseException], ...] = ()
_login: tuple[type[BaseException], ...] = ()
# By name: an integration registers again each time it is instrumented, with predicate types
# made anew (see predicate_error); the newest replaces the one of the same name, so that a
# failure is never checked against a growing list.
_registered: dict[str, dict[str, type[BaseException]]] = {"transient": {}, "login": {}}
_lock = threading.Lock()


def _register(
    kind: str, errors: tuple[type[BaseException], ...]
) -> tuple[type[BaseException], ...]:
    with _lock:
        table = _registered[kind]
        for error in errors:
            table[f"{error.__module__}.{error.__qualname__}"] = error
        return tuple(table.values())


def register_transient(*errors: type[BaseException]) -> None:
    """Add a driver's connection-level errors to what DB pipelines retry and count as failures."""
    global _transient  # noqa: PLW0603 - copy-on-write, read on every failure
    _transient = _register("transient", errors)


def register_login_failure(*errors: type[BaseException]) -> None:
    """Add a driver's authentication and authorization failures: never transient (see above)."""
    global _login  # noqa: PLW0603 - copy-on-write, read on every failure
    _login = _register("login", errors)


def is_login_failure(exc: BaseException) -> bool:
    """A refused login (or connection authorization) of any registered driver."""
    return isinstance(exc, _login)


def is_transient(exc: BaseException) -> bool:
    """Connection-level failures of any registered driver (and builtin connection errors)."""
    return isinstance(exc, (ConnectionError, TimeoutError, *_transient)) and not isinstance(
        exc, _login
    )


class _PredicateMeta(type):
    # isinstance(exc, cls) asks the predicate: lets a condition on an exception's *value* (its
    # SQLSTATE) go through register_transient(), which takes types.
    def __instancecheck__(cls, instance: Any) -> bool:
        check: Callable[[BaseException], bool] = cls.__dict__["_check"]
        return isinstance(instance, BaseException) and check(instance)


def predicate_error(name: str, check: Callable[[BaseException], bool]) -> type[Exception]:
    """An exception type whose ``isinstance`` is *check*: a predicate for the registries above."""
    made = _PredicateMeta(
        name, (Exception,), {"_check": staticmethod(check), "__module__": __name__}
    )
    return cast("type[Exception]", made)


# --- transaction control ----------------------------------------------------------------------

# What may come before a statement's first word: whitespace, empty statements, comments.
_NOISE = re.compile(r"(?:\s+|;|--[^\n]*|/\*.*?\*/)*", re.DOTALL)
_CONTROL = re.compile(
    r"(?:COMMIT|ROLLBACK|SAVEPOINT|RELEASE|END|ABORT|XA\s+(?:COMMIT|ROLLBACK|END))(?![\w$])",
    re.IGNORECASE,
)
# First characters that cannot start transaction control nor noise: most statements stop here.
_CONTROL_FIRST = frozenset("cCrRsSeEaAxX-/; \t\r\n\f\v")


def sql_text(sql: Any) -> str | None:
    """A statement's text: *sql* itself, or decoded bytes; ``None`` for anything else."""
    if isinstance(sql, str):
        return sql
    if isinstance(sql, bytes | bytearray | memoryview):
        return bytes(sql).decode(errors="replace")
    return None


def transaction_control(sql: Any) -> bool:
    """
    Whether *sql* ends a transaction or works on its savepoints: it must always reach the driver.

    ``COMMIT``, ``ROLLBACK`` (and ``ROLLBACK TO [SAVEPOINT]``, ``ROLLBACK PREPARED``),
    ``SAVEPOINT``, ``RELEASE [SAVEPOINT]``, ``END``, ``ABORT`` and ``XA COMMIT``/``ROLLBACK``/
    ``END``, in any case, after whitespace, empty statements and ``--`` or ``/* */`` comments
    (not nested ones). Only the first statement of a batch is read: ``COMMIT; SELECT 1`` passes
    through whole. Text only (``str`` or bytes); a statement object says ``False`` unless its
    integration gives its text.
    """
    text = sql_text(sql)
    if not text or text[0] not in _CONTROL_FIRST:
        return False
    start = _NOISE.match(text)
    return _CONTROL.match(text, start.end() if start is not None else 0) is not None


def direct(fn: Callable[[], T]) -> T:
    """Run *fn* without a pipeline (transaction control); nested driver calls pass through."""
    with inside(KIND):
        return fn()


async def adirect(fn: Callable[[], Awaitable[T]]) -> T:
    """Like :func:`direct`, for coroutines."""
    with inside(KIND):
        return await fn()


def nested() -> bool:
    """
    Whether this is a driver call made inside another database integration's call.

    SQLAlchemy's checkout opens its DBAPI connection through the driver's ``connect``: the
    checkout's pipeline protects it, and the driver integration only adds what it hands the
    server (see :func:`pushed_timeout`).
    """
    return CONFIG.active and _inside.get() == KIND and not suppressed()


# --- timeouts handed to drivers ---------------------------------------------------------------


def pushed_timeout(pipeline: Pipeline) -> float | None:
    """
    The attempt timeout an integration may hand to its driver or server, or ``None``.

    Only a configured one: the template's timeout (``respect_app_timeout`` true) never changes
    what a statement may take, and observe mode changes no client setting at all.
    """
    config = pipeline.timeout_config
    if config is None or config.attempt is None or config.respect_app_timeout:
        return None
    if pipeline.context.observe:
        return None
    return config.attempt


def timeout_origin(target: str) -> str:
    """Where *target*'s ``timeout.attempt`` comes from: a variable, a file key, or the template."""
    try:
        from .._settings_env import quick_patches  # noqa: PLC0415

        settings = _activation.current()
        layers = [quick_patches(settings).get("timeout")]
        file = settings.file
        if file is not None:
            section = file.section_for(target)
            defaults = file.defaults.get(KIND)
            layers += [
                t.policies.get("timeout") if t is not None else None for t in (section, defaults)
            ]
        # The value's own origin; else what made the template's value enforced: an explicit
        # respect_app_timeout = false, or a configured total timeout.
        for key in ("attempt", "respect_app_timeout", "total"):
            for patch in layers:
                if patch is not None and key in patch.origins:
                    origin = str(patch.origins[key])
                    return origin if key == "attempt" else f"the db template, enforced by {origin}"
    except Exception:  # a note must never fail the call it explains
        logger.debug("buttress: could not find where timeout.attempt was set", exc_info=True)
    return "the db template"


def timeout_note(target: str, setting: str, attempt: float, remedy: str) -> str:
    """
    The note added to a driver's error when a timeout buttress handed it (*setting*) expired.

    It says that buttress set it, from which setting, and how to change it (*remedy*: the
    driver's own way to set it, which buttress then leaves alone).
    """
    return (
        f"buttress: {setting} was set by buttress from timeout.attempt = {attempt:g} s for "
        f"{target} ({timeout_origin(target)}). To let it run longer, raise timeout.attempt for "
        f'this target, set it to "none", or {remedy}.'
    )


_pushed: weakref.WeakKeyDictionary[Any, tuple[str, str, float, str]] = weakref.WeakKeyDictionary()


def remember_pushed(client: Any, target: str, setting: str, attempt: float, remedy: str) -> None:
    """Remember that buttress gave *client* (a connection) a timeout: see :func:`note_pushed`."""
    with contextlib.suppress(TypeError):  # not weakly referenceable: its errors get no note
        _pushed[client] = (target, setting, attempt, remedy)


def pushed_to(client: Any) -> bool:
    """Whether buttress gave *client* a timeout (:func:`remember_pushed`)."""
    try:
        return client in _pushed
    except TypeError:
        return False


def note_pushed(client: Any, exc: BaseException) -> None:
    """Add :func:`timeout_note` to *exc* if buttress gave *client* the timeout that expired."""
    try:
        pushed = _pushed.get(client)
    except TypeError:
        return
    if pushed is not None:
        add_note(exc, timeout_note(*pushed))


def add_note(exc: BaseException, note: str) -> None:
    """Add *note* to *exc* once (PEP 678); its type, message and arguments stay as they are."""
    try:
        if note not in getattr(exc, "__notes__", ()):
            exc.add_note(note)
    except Exception:  # an exception type that refuses notes keeps its own text
        logger.debug("buttress: could not add a note to %s", type(exc).__name__, exc_info=True)


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


def run(target: str, fn: Callable[[], T], *, retryable: bool, connect: bool = False) -> T:
    """
    Run one logical database operation through its pipeline.

    A statement or command (not a *connect*) keeps the server's and the client's own timeouts:
    it runs through ``CallShape.app_timeout``, so the template's attempt timeout neither bounds
    nor cancels its first attempt (a configured one does). A connect keeps the attempt timeout:
    a server that does not answer must not hold the caller for the operating system's TCP
    timeout.
    """
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
            result = _call(pipeline, attempt, connect)
        else:
            with no_retry():
                result = _call(pipeline, attempt, connect)
    except Exception as exc:
        operation.end(exc)
        raise
    operation.end(None)
    return result


def _call(pipeline: Pipeline, attempt: Callable[[], T], connect: bool) -> T:
    if connect:
        return pipeline.call(attempt)
    result: T = pipeline.shaped(APP_TIMEOUT)(attempt, (), {}, 0, None)
    return result


async def arun(
    target: str, fn: Callable[[], Awaitable[T]], *, retryable: bool, connect: bool = False
) -> T:
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
            result = await _acall(pipeline, attempt, connect)
        else:
            with no_retry():
                result = await _acall(pipeline, attempt, connect)
    except Exception as exc:
        operation.end(exc)
        raise
    operation.end(None)
    return result


async def _acall(pipeline: Pipeline, attempt: Callable[[], Awaitable[T]], connect: bool) -> T:
    if connect:
        return await pipeline.acall(attempt)
    result: T = await pipeline.ashaped(APP_TIMEOUT)(attempt, (), {}, 0, None)
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
