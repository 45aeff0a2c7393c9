"""
psycopg (3): connects and statements run through the pipeline of their database target.

What is patched, and why there:

- ``psycopg.connect`` and ``psycopg.Connection.connect`` (the module attribute is a bound copy
  of the class method taken at import time, so both are wrapped; one never calls the other),
  and ``psycopg.AsyncConnection.connect``. Connecting is always safe to repeat: a refused or
  dropped connection attempt created nothing on the server, so connects **retry** on
  connection failures.
- ``Cursor.execute``/``executemany`` (every synchronous cursor class inherits them, and
  ``Connection.execute`` calls them), ``ServerCursor.execute``, and their async twins. Each
  statement is one pipeline call: breaker, bulkhead (a limit on statements in flight to the
  target, with its queue), timeouts and metrics apply. Statements are **never retried**:

  - on a connection that is not in autocommit mode every statement runs inside a transaction
    (PostgreSQL's implicit one, ``transaction_status`` INTRANS/INERROR afterwards), and
    repeating one statement of a transaction on another session would silently lose the
    statements before it;
  - on an autocommit connection a read outside ``conn.transaction()`` would be safe to repeat,
    but the failure that would justify a retry (the server dropped the session) also killed
    the ``Connection`` object: a retry on it fails at once with "the connection is closed" and
    would replace the caller's real error. Only a pool can offer a fresh connection, and
    psycopg has none built in (SQLAlchemy's pool does: see ``buttress.integrations.sqlalchemy``).

  So the rule that can be observed is: the statement runs once, the caller gets psycopg's own
  exception unchanged, and a connection failure counts as a breaker failure. A statement on a
  connection that is already closed is not a database call at all and bypasses the pipeline.

- **Target**: ``postgresql:<host>:<port>/<dbname>`` from ``conn.info`` for statements, and from
  the connection parameters (then ``PGHOST``/``PGPORT``/``PGDATABASE``, as libpq does) for
  connects. A Unix-socket directory, or no host at all, is named ``localhost`` (a socket is a
  local server, and both ways then name the same target); with several hosts, a connect names
  the first. The user, password, statement and parameters are never part of a target, an
  event, a log record or an error message of ours.
- **Errors**: a connection failure is a ``psycopg.OperationalError`` without SQLSTATE (refused,
  dropped, connect timeout), SQLSTATE class 08 (connection exception), 57P01 admin shutdown
  (what ``pg_terminate_backend`` causes), 57P02 crash shutdown, 57P03 cannot connect now, 57P05
  idle-session timeout, or 53300 too many connections. Nothing else (a syntax error, a
  constraint violation, a statement timeout's 57014) is retried or counted as a failure.
  A rejection by buttress (open breaker, full bulkhead) or its timeout is raised as an
  exception that is also a ``psycopg.OperationalError`` (see :func:`driver_error`).
- **Timeouts**: a synchronous call cannot be pre-empted, so the timeout goes to the server.
  When the target has an attempt timeout, a connect adds ``-c statement_timeout=<ms>`` to the
  ``options`` parameter (merged with the caller's options or ``PGOPTIONS``; a
  ``statement_timeout`` the caller set already wins). It is set once at connect rather than
  with ``SET LOCAL`` per statement, which would cost a round trip per statement and only work
  inside a transaction. Set ``timeout.attempt = "none"`` for the target to keep the server's
  default; note that PgBouncer rejects the ``options`` startup parameter unless told to ignore
  it. A connect also gets ``connect_timeout`` from the time left (libpq's minimum is 2 s).

The helpers at the bottom (targets, libpq options, error predicates) are shared by the
psycopg2 integration.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Any, cast

from .._exceptions import RejectedError, ResilienceError
from .._exceptions import TimeoutError as PolicyTimeoutError
from ..policies._timeout import remaining
from ._base import Integration, compatible, passthrough
from ._db import KIND, arun, db_target, pipeline_for, register_transient, run

__all__ = ["INTEGRATION", "PsycopgIntegration"]

SYSTEM = "postgresql"
DEFAULT_PORT = 5432

CONNECTION_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "57P05", "53300"})
"""Server errors (besides class 08) that mean the session is gone or could not start."""

# psycopg.Connection.connect's own keyword arguments: everything else is a libpq parameter.
_CONNECT_OWN = frozenset(
    {"autocommit", "prepare_threshold", "context", "row_factory", "cursor_factory"}
)


class PsycopgIntegration(Integration):
    """Patches psycopg's connects and cursor statements."""

    name = "psycopg"
    module = "psycopg"

    def patches(self) -> list[tuple[str, str, Any]]:
        """The patch list."""
        import psycopg  # noqa: PLC0415

        register_transient(
            predicate_error("PsycopgConnectionFailure", _is_connection_failure(psycopg))
        )
        return [
            ("psycopg", "connect", _wrap_connect),
            ("psycopg", "Connection.connect", _wrap_connect),
            ("psycopg", "AsyncConnection.connect", _wrap_aconnect),
            ("psycopg", "Cursor.execute", _wrap_statement),
            ("psycopg", "Cursor.executemany", _wrap_statement),
            ("psycopg", "ServerCursor.execute", _wrap_statement),
            ("psycopg", "AsyncCursor.execute", _wrap_astatement),
            ("psycopg", "AsyncCursor.executemany", _wrap_astatement),
            ("psycopg", "AsyncServerCursor.execute", _wrap_astatement),
        ]


def _connect_params(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415

    conninfo = args[0] if args else kwargs.get("conninfo", "")
    extra = {k: v for k, v in kwargs.items() if k not in _CONNECT_OWN and k != "conninfo"}
    return dict(conninfo_to_dict(conninfo or "", **extra))


def _connect_call(
    wrapped: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[str, Callable[[], Any]]:
    params = _connect_params(args, kwargs)
    target = params_target(params)
    options = statement_timeout_options(params, pipeline_for(target))

    def call() -> Any:
        return wrapped(*args, **{**kwargs, **connect_overrides(params, options)})

    return target, call


def _wrap_connect(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if passthrough(KIND):
        return wrapped(*args, **kwargs)
    try:
        target, call = _connect_call(wrapped, args, kwargs)
    except Exception:
        return wrapped(*args, **kwargs)  # a bad conninfo: psycopg's own error, unprotected
    return _run(target, call, retryable=True)


async def _wrap_aconnect(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if passthrough(KIND):
        return await wrapped(*args, **kwargs)
    try:
        target, call = _connect_call(wrapped, args, kwargs)
    except Exception:
        return await wrapped(*args, **kwargs)  # a bad conninfo: psycopg's own error
    return await _arun(target, call, retryable=True)


def _wrap_statement(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if passthrough(KIND) or instance.closed or instance.connection.closed:
        return wrapped(*args, **kwargs)
    return _run(
        _info_target(instance.connection.info), lambda: wrapped(*args, **kwargs), retryable=False
    )


async def _wrap_astatement(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if passthrough(KIND) or instance.closed or instance.connection.closed:
        return await wrapped(*args, **kwargs)
    return await _arun(
        _info_target(instance.connection.info), lambda: wrapped(*args, **kwargs), retryable=False
    )


def driver_error(exc: BaseException) -> BaseException:
    """
    A rejection or timeout of ours re-made as one that is also a ``psycopg.OperationalError``.

    ``psycopg.Error.__init__`` never runs for the copy, so the private state its ``diag``,
    ``pgconn`` and ``pgresult`` properties read is given here: no diagnostic, no connection, no
    result (``sqlstate`` is the class's ``None``, as for a client-side connection failure).
    """
    import psycopg  # noqa: PLC0415

    clone = compatible(exc, psycopg.OperationalError)
    if clone is not exc:
        clone.__dict__.update(_info=None, _encoding="utf-8", _pgconn=None)
    return clone


def _run(target: str, fn: Callable[[], Any], *, retryable: bool) -> Any:
    try:
        return run(target, fn, retryable=retryable)
    except (RejectedError, PolicyTimeoutError) as exc:
        raise driver_error(exc) from exc.__cause__


async def _arun(target: str, fn: Callable[[], Any], *, retryable: bool) -> Any:
    try:
        return await arun(target, fn, retryable=retryable)
    except (RejectedError, PolicyTimeoutError) as exc:
        raise driver_error(exc) from exc.__cause__


def _info_target(info: Any) -> str:
    return pg_target(info.host, info.port, info.dbname)


INTEGRATION = PsycopgIntegration()


# --- shared by the libpq-based integrations (psycopg, psycopg2) ---------------------------------


def pg_target(host: Any, port: Any, dbname: Any) -> str:
    """The target of a PostgreSQL server: first host, sockets and no host as ``localhost``."""
    first = str(host).split(",", 1)[0].strip() if host else ""
    if not first or first.startswith(("/", "@")):
        first = "localhost"
    port_text = str(port).split(",", 1)[0].strip() if port not in (None, "") else ""
    number = int(port_text) if port_text.isdigit() else DEFAULT_PORT
    return db_target(SYSTEM, first, number, str(dbname) if dbname else None)


def libpq_default(params: Mapping[str, Any], key: str) -> Any:
    """A libpq parameter as given, else from its ``PG*`` environment variable, as libpq does."""
    value = params.get(key)
    if value not in (None, ""):
        return value
    return os.environ.get(_ENV_OF[key]) or None


_ENV_OF = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "options": "PGOPTIONS",
    "connect_timeout": "PGCONNECT_TIMEOUT",
}


def params_target(params: Mapping[str, Any]) -> str:
    """The target named by libpq connection parameters (host, port, dbname only)."""
    host = libpq_default(params, "host") or libpq_default(params, "hostaddr")
    return pg_target(host, libpq_default(params, "port"), libpq_default(params, "dbname"))


def statement_timeout_options(params: Mapping[str, Any], pipeline: Any) -> str | None:
    """
    The ``options`` to connect with so that the server stops a statement at the attempt timeout.

    ``None`` when there is nothing to add: no attempt timeout, or a ``statement_timeout`` is
    already set by the caller (their choice wins).
    """
    config = pipeline.timeout_config
    attempt = config.attempt if config is not None else None
    if attempt is None or pipeline.context.observe:  # observe mode never shortens a call
        return None
    options = str(libpq_default(params, "options") or "")
    if "statement_timeout" in options:
        return None
    setting = f"-c statement_timeout={max(1, math.ceil(attempt * 1000))}"
    return f"{options} {setting}".strip()


def tighter_connect_timeout(params: Mapping[str, Any]) -> int | None:
    """``connect_timeout`` cut to the time left in the attempt (libpq's minimum is 2 s)."""
    left = remaining()
    if left is None:
        return None
    ours = max(2, math.ceil(left))
    given = libpq_default(params, "connect_timeout")
    try:
        theirs = int(given) if given is not None else 0
    except ValueError:
        theirs = 0
    if 0 < theirs <= ours:
        return None
    return ours


def connect_overrides(params: Mapping[str, Any], options: str | None) -> dict[str, Any]:
    """
    What one connection attempt adds to the caller's arguments.

    The ``options`` from :func:`statement_timeout_options` (computed once per call) and the
    ``connect_timeout`` left in this attempt; shared by psycopg and psycopg2.
    """
    extra: dict[str, Any] = {}
    if options is not None:
        extra["options"] = options
    connect_timeout = tighter_connect_timeout(params)
    if connect_timeout is not None:
        extra["connect_timeout"] = connect_timeout
    return extra


class _PredicateMeta(type):
    # isinstance(exc, cls) asks the predicate: lets a condition on an exception's *value* (its
    # SQLSTATE) go through register_transient(), which takes types.
    def __instancecheck__(cls, instance: Any) -> bool:
        check: Callable[[BaseException], bool] = cls.__dict__["_check"]
        return isinstance(instance, BaseException) and check(instance)


def predicate_error(name: str, check: Callable[[BaseException], bool]) -> type[Exception]:
    """An exception type whose ``isinstance`` is *check*: a predicate for register_transient."""
    made = _PredicateMeta(
        name, (Exception,), {"_check": staticmethod(check), "__module__": __name__}
    )
    return cast("type[Exception]", made)


def sqlstate_is_connection_failure(state: str | None) -> bool:
    """No SQLSTATE (the client lost the server), class 08, or a shutdown/cannot-connect code."""
    return state is None or state.startswith("08") or state in CONNECTION_SQLSTATES


def _is_connection_failure(psycopg: Any) -> Callable[[BaseException], bool]:
    operational = psycopg.OperationalError

    def check(exc: BaseException) -> bool:
        # A rejection of ours made psycopg-compatible (sqlstate None) is not the server's doing.
        return (
            isinstance(exc, operational)
            and not isinstance(exc, ResilienceError)
            and sqlstate_is_connection_failure(getattr(exc, "sqlstate", None))
        )

    return check
