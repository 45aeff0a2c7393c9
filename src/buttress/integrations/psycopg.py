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
- **Transaction control** sent as a statement (``COMMIT``, ``ROLLBACK``, ``SAVEPOINT``,
  ``RELEASE``, ``ROLLBACK TO``, ``END``, ``ABORT``, ``COMMIT/ROLLBACK PREPARED``: see
  ``_db.transaction_control``; a ``psycopg.sql`` object is read through ``as_string``) goes
  straight to psycopg, even with the breaker open or the bulkhead full: a transaction can always
  end. ``conn.commit()``, ``conn.rollback()`` and ``conn.transaction()`` never pass through
  cursors, so they are never held either.
- **Errors**: a connection failure is a ``psycopg.OperationalError`` without SQLSTATE (refused,
  dropped, connect timeout), SQLSTATE class 08 (connection exception), 57P01 admin shutdown
  (what ``pg_terminate_backend`` causes), 57P02 crash shutdown, 57P03 cannot connect now, 57P05
  idle-session timeout, or 53300 too many connections. Nothing else (a syntax error, a
  constraint violation, a statement timeout's 57014) is retried or counted as a failure.
  A rejection by buttress (open breaker, full bulkhead) or its timeout is raised as an
  exception that is also a ``psycopg.OperationalError`` (see :func:`driver_error`).
- **Login failures** (:func:`libpq_login_failure`) are never retried nor counted: libpq reports
  a refused login without SQLSTATE (it reads the server's error during start-up but keeps only
  its text), so psycopg's error has none. What tells one apart is structural: an error the
  server sent is printed by libpq as ``<severity>:  <message>``, with two spaces (its format
  string, the same in every language), and client-side failures (refused, reset, timed out)
  never are. A code-less error with such a server message is a refused login (wrong password,
  unknown role or database, no ``pg_hba.conf`` entry, ``NOLOGIN``, no ``CONNECT`` privilege),
  unless the message is one of the server's few transient start-up errors, recognised by their
  English text: too many clients or connections (53300), the database system starting up,
  shutting down or in recovery (57P03), a terminated connection. On a server whose
  ``lc_messages`` is not English those are then not retried either, which is what the caller
  would see without buttress. ``fe_sendauth: no password supplied`` (psycopg:
  ``pgconn.needs_password``) is a login failure too.
- **Timeouts**: a synchronous call cannot be pre-empted, so a timeout you configured goes to
  the server. When ``timeout.attempt`` is configured for the target (the template's default is
  never pushed: ``Timeout.respect_app_timeout``) and buttress enforces, a connect adds ``-c
  statement_timeout=<ms>`` to the ``options`` parameter (merged with the caller's options or
  ``PGOPTIONS``; a ``statement_timeout`` the caller set already wins). It is set once at
  connect rather than with ``SET LOCAL`` per statement, which would cost a round trip per
  statement and only work inside a transaction. A statement the server then cancels
  (``QueryCanceled``, 57014) carries a note saying so (``exc.__notes__``). Set
  ``timeout.attempt = "none"`` for the target to keep the server's default; note that PgBouncer
  rejects the ``options`` startup parameter unless told to ignore it. A connect without a
  ``connect_timeout`` of the caller's (argument or ``PGCONNECT_TIMEOUT``) gets one from the time
  left in its attempt (libpq's minimum is 2 s); the caller's own is never changed. Connections
  SQLAlchemy opens get the same ``options`` (the checkout is SQLAlchemy's pipeline call).

The helpers at the bottom (targets, libpq options, error predicates) are shared by the
psycopg2 integration.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from .._exceptions import RejectedError, ResilienceError
from .._exceptions import TimeoutError as PolicyTimeoutError
from ..policies._timeout import remaining
from ._base import Integration, compatible, passthrough
from ._db import (
    KIND,
    adirect,
    arun,
    db_target,
    direct,
    nested,
    note_pushed,
    pipeline_for,
    predicate_error,
    pushed_timeout,
    register_login_failure,
    register_transient,
    remember_pushed,
    run,
    sql_text,
    transaction_control,
)

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
        register_login_failure(predicate_error("PsycopgLoginFailure", _is_login_failure(psycopg)))
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
) -> tuple[str, Callable[[], Any], Callable[[Any], Any]]:
    """``(target, attempt, opened)``: *opened* marks the connection the attempt returned."""
    params = _connect_params(args, kwargs)
    target = params_target(params)
    pipeline = pipeline_for(target)
    options = statement_timeout_options(params, pipeline)

    def call() -> Any:
        return wrapped(*args, **{**kwargs, **connect_overrides(params, options)})

    def opened(conn: Any) -> Any:
        if options is not None:
            remember_statement_timeout(conn, target, pipeline)
        return conn

    return target, call, opened


def _wrap_connect(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if passthrough(KIND) and not nested():
        return wrapped(*args, **kwargs)
    try:
        target, call, opened = _connect_call(wrapped, args, kwargs)
    except Exception:
        return wrapped(*args, **kwargs)  # a bad conninfo: psycopg's own error, unprotected
    if passthrough(KIND):  # SQLAlchemy's checkout: its pipeline protects this connect
        return opened(call())
    return opened(_run(target, call, retryable=True, connect=True))


async def _wrap_aconnect(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if passthrough(KIND) and not nested():
        return await wrapped(*args, **kwargs)
    try:
        target, call, opened = _connect_call(wrapped, args, kwargs)
    except Exception:
        return await wrapped(*args, **kwargs)  # a bad conninfo: psycopg's own error
    if passthrough(KIND):
        return opened(await call())
    return opened(await _arun(target, call, retryable=True, connect=True))


def query_text(cursor: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """The text of the statement passed to ``execute``; a ``psycopg.sql`` object rendered."""
    query = args[0] if args else kwargs.get("query")
    text = sql_text(query)
    if text is None and query is not None and hasattr(query, "as_string"):
        try:
            text = sql_text(query.as_string(cursor))
        except Exception:  # not renderable here: psycopg will say why when it runs
            return None
    return text


def _wrap_statement(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if passthrough(KIND) or instance.closed or instance.connection.closed:
        return wrapped(*args, **kwargs)
    if transaction_control(query_text(instance, args, kwargs)):
        return direct(lambda: wrapped(*args, **kwargs))
    conn = instance.connection
    try:
        return _run(_info_target(conn.info), lambda: wrapped(*args, **kwargs), retryable=False)
    except Exception as exc:
        note_cancelled(conn, exc)
        raise


async def _wrap_astatement(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if passthrough(KIND) or instance.closed or instance.connection.closed:
        return await wrapped(*args, **kwargs)
    if transaction_control(query_text(instance, args, kwargs)):
        return await adirect(lambda: wrapped(*args, **kwargs))
    conn = instance.connection
    try:
        return await _arun(
            _info_target(conn.info), lambda: wrapped(*args, **kwargs), retryable=False
        )
    except Exception as exc:
        note_cancelled(conn, exc)
        raise


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


def _run(target: str, fn: Callable[[], Any], *, retryable: bool, connect: bool = False) -> Any:
    try:
        return run(target, fn, retryable=retryable, connect=connect)
    except (RejectedError, PolicyTimeoutError) as exc:
        raise driver_error(exc) from exc.__cause__


async def _arun(
    target: str, fn: Callable[[], Any], *, retryable: bool, connect: bool = False
) -> Any:
    try:
        return await arun(target, fn, retryable=retryable, connect=connect)
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


def _statement_timeout_ms(attempt: float) -> int:
    return max(1, math.ceil(attempt * 1000))


def statement_timeout_options(params: Mapping[str, Any], pipeline: Any) -> str | None:
    """
    The ``options`` to connect with so that the server stops a statement at the attempt timeout.

    ``None`` when there is nothing to add: no configured attempt timeout (see
    ``_db.pushed_timeout``: never the template's, never in observe mode), or a
    ``statement_timeout`` is already set by the caller (their choice wins).
    """
    attempt = pushed_timeout(pipeline)
    if attempt is None:
        return None
    options = str(libpq_default(params, "options") or "")
    if "statement_timeout" in options:
        return None
    setting = f"-c statement_timeout={_statement_timeout_ms(attempt)}"
    return f"{options} {setting}".strip()


def remember_statement_timeout(conn: Any, target: str, pipeline: Any) -> None:
    """Mark *conn* as given its ``statement_timeout`` by buttress, for :func:`note_cancelled`."""
    attempt = pushed_timeout(pipeline)
    if attempt is not None:
        remember_pushed(
            conn,
            target,
            f"this connection's statement_timeout ({_statement_timeout_ms(attempt)} ms)",
            attempt,
            "pass your own statement_timeout when connecting "
            "(options='-c statement_timeout=...'), which buttress leaves as it is",
        )


def note_cancelled(conn: Any, exc: BaseException) -> None:
    """Note on a 57014 (query canceled) that the server's statement timeout was buttress's."""
    code = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    if code == "57014":
        note_pushed(conn, exc)


def tighter_connect_timeout(params: Mapping[str, Any]) -> int | None:
    """
    A ``connect_timeout`` from the time left in the attempt, when the caller set none.

    libpq without one waits as long as the operating system lets a TCP connect wait; a caller's
    own ``connect_timeout`` (argument, conninfo or ``PGCONNECT_TIMEOUT``) is never changed.
    libpq's minimum is 2 s. ``None`` outside a published deadline (observe mode publishes none).
    """
    if libpq_default(params, "connect_timeout") is not None:
        return None
    left = remaining()
    if left is None:
        return None
    return max(2, math.ceil(left))


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


def sqlstate_is_connection_failure(state: str | None) -> bool:
    """No SQLSTATE (the client lost the server), class 08, or a shutdown/cannot-connect code."""
    return state is None or state.startswith("08") or state in CONNECTION_SQLSTATES


def sqlstate_is_login_failure(state: str | None) -> bool:
    """Class 28 (invalid authorization: wrong password, unknown role) or 3D000 (no database)."""
    return state is not None and (state.startswith("28") or state == "3D000")


# libpq prints an error the server sent as "<severity>:  <message>": two spaces, from its format
# string (fe-protocol3.c), whatever the language; its own messages never have them.
_SERVER_SAID = re.compile(r"\S:  ([^\n]*)")
# The server's transient start-up errors, in English (lc_messages): too many connections
# (53300), the database system starting up, shutting down or in recovery (57P03), a session
# ended by the server (57P01, 57P02, 57P05), no process or memory for a new session.
_TRANSIENT_ANSWER = re.compile(
    r"too many (?:clients|connections)|remaining connection slots|the database system is|"
    r"terminating connection|could not fork|out of memory|cannot connect now",
    re.IGNORECASE,
)
_QUOTED = re.compile(r'"[^"]*"')


def libpq_login_failure(message: str) -> bool:
    """
    Whether a libpq error message without SQLSTATE is a refused login (see the module doc).

    The server answered the start-up (an error it sent is in the message) with something other
    than a transient start-up error; or libpq had no password to give.
    """
    answers = _SERVER_SAID.findall(message)
    if not answers:
        return "no password supplied" in message
    # Quoted names (a role, a database) are the caller's, not the server's words.
    return not any(_TRANSIENT_ANSWER.search(_QUOTED.sub("", said)) for said in answers)


def _is_login_failure(psycopg: Any) -> Callable[[BaseException], bool]:
    operational = psycopg.OperationalError

    def check(exc: BaseException) -> bool:
        if not isinstance(exc, psycopg.Error) or isinstance(exc, ResilienceError):
            return False
        state = getattr(exc, "sqlstate", None)
        if state is not None:
            return sqlstate_is_login_failure(state)
        if not isinstance(exc, operational):
            return False
        pgconn = getattr(exc, "pgconn", None)
        if pgconn is not None and getattr(pgconn, "needs_password", False):
            return True  # the server asked for a password and libpq had none
        return libpq_login_failure(str(exc))

    return check


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
