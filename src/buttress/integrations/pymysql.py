"""
PyMySQL (MariaDB, MySQL): connecting and every statement run through ``mysql:host:port/db``.

What is patched, and why there:

- ``Connection.connect``, the method that opens the socket and logs in. ``pymysql.connect`` is
  the ``Connection`` class itself and its ``__init__`` calls ``connect()``, so patching the
  method covers ``pymysql.connect(...)``, ``Connection(...)`` and ``defer_connect=True`` alike.
  Connecting is always retryable: nothing has run on the server yet.
- ``Connection.__init__``, only to hand the target's attempt timeout to the driver (see below).
- ``Cursor.execute`` and ``Cursor.executemany`` (every cursor class inherits them), one
  logical operation each: ``executemany`` calls ``execute`` per batch, and those inner calls
  pass straight through.

What is retried, and why only that:

- A **connect** that fails with a connection-level error (see :data:`CONNECTION_LOST`).
- A **read** (``statement_kind`` is ``read``) on a connection in **autocommit** mode that is
  **not inside a transaction** (the server's ``IN_TRANS`` status flag is clear), when it failed
  with a connection-level error. PyMySQL closes its socket when the connection is lost, so a
  retry that only re-sent the statement would fail at once: before a retried read buttress
  reconnects the same ``Connection`` object (``connect()``, which re-applies the database,
  character set, ``sql_mode``, ``init_command`` and autocommit given at connect time). A new
  session lacks whatever the application changed in the old one, so a connection that ran a
  statement changing session state (``SET``, ``USE``, ``CREATE TEMPORARY``, ``LOCK``,
  ``PREPARE``, a user variable ``@x``) is never reconnected by buttress: its reads run once.
  We use ``connect()`` rather than ``ping(reconnect=True)``, which PyMySQL 1.2 deprecates.
- Never a **write**, and never anything on a connection with autocommit off: PyMySQL's default
  is autocommit off, where every statement belongs to a transaction that a lost connection has
  rolled back; re-running one statement in a new session would silently apply half a
  transaction. Such statements still go through the breaker, bulkhead, timeouts and metrics,
  inside :func:`buttress.no_retry`, and the caller gets the driver's own error unchanged.

Transaction control sent as a statement (``COMMIT``, ``ROLLBACK``, ``SAVEPOINT``, ``RELEASE
SAVEPOINT``, ``ROLLBACK TO``, ``XA COMMIT``/``ROLLBACK``/``END``: ``_db.transaction_control``)
passes straight through, as ``conn.commit()`` and ``conn.rollback()`` do (they are never
wrapped): an open breaker or a full bulkhead must never keep a transaction (and its locks) open.

Connection-level errors are ``OperationalError`` with a code in :data:`CONNECTION_LOST` (can't
connect, server gone away, lost connection, too many connections, server shutting down,
connection killed). Every other error (a syntax error, access denied, a deadlock, a duplicate
key) is the application's or the data's, not the server's health: it is never retried and
never counts as a breaker failure. The login failures in :data:`LOGIN_FAILURES` (access
denied, unknown database) are registered as such, so no other rule can ever count them.

Timeouts: PyMySQL cannot be interrupted from outside, so when ``timeout.attempt`` is configured
for the target (never the template's default, never in observe mode) it becomes the driver's
``read_timeout`` and ``write_timeout``, and its ``connect_timeout``, for those the application
did not pass itself. A statement that runs longer than that loses its connection (PyMySQL
closes it; error 2013), the honest way a synchronous driver can stop waiting; that error then
carries a note saying that the timeout was buttress's. Without a configured timeout PyMySQL
keeps its own defaults (``connect_timeout`` 10 s, no read or write timeout).

A rejection by buttress (open breaker, full bulkhead) or its total timeout is raised as an
exception that is also a ``pymysql.err.OperationalError``, so existing ``except`` clauses
still catch it.

The target never holds the user, the password or the statement; buttress records only the
target, the operation's outcome and the error's type.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import importlib
import re
import weakref
from contextlib import suppress
from typing import Any

from .. import _activation
from .._exceptions import RejectedError, ResilienceError
from .._exceptions import TimeoutError as PolicyTimeoutError
from ._base import Integration, compatible, passthrough
from ._db import (
    KIND,
    db_target,
    direct,
    note_pushed,
    pipeline_for,
    predicate_error,
    pushed_timeout,
    register_login_failure,
    register_transient,
    remember_pushed,
    run,
    sql_text,
    statement_kind,
    transaction_control,
)

__all__ = ["CONNECTION_LOST", "INTEGRATION", "LOGIN_FAILURES", "PyMySQLIntegration"]

CONNECTION_LOST = frozenset({1040, 1053, 1927, 2002, 2003, 2006, 2013, 2055})
"""The ``OperationalError`` codes that mean the connection failed, not the statement: 1040 too
many connections, 1053 server shutdown, 1927 connection killed, 2002/2003 can't connect,
2006 server has gone away, 2013 lost connection during query, 2055 lost connection (system
error)."""

LOGIN_FAILURES = frozenset({1044, 1045, 1049, 1130, 1698, 1862})
"""Error codes of a refused login: 1044 access denied to the database, 1045 access denied for
the user (wrong password), 1049 unknown database, 1130 host not allowed, 1698 access denied
(socket authentication), 1862 password expired."""

_CR_SERVER_LOST = 2013
_IN_TRANS = 1  # SERVER_STATUS_IN_TRANS
_DEFAULT_PORT = 3306

# Statements after which a new session would differ from the old one.
_SESSION_STATE = re.compile(
    r"^\s*(SET|USE|LOCK|PREPARE|CREATE\s+TEMPORARY|DECLARE|HANDLER)\b|(?<!@)@(?!@)",
    re.IGNORECASE,
)
_stateful: weakref.WeakSet[Any] = weakref.WeakSet()


class _ConnectionLostMeta(type):
    def __instancecheck__(cls, obj: object) -> bool:
        if not isinstance(obj, _errors().OperationalError) or isinstance(obj, ResilienceError):
            return False
        code = obj.args[0] if obj.args else None
        return code in CONNECTION_LOST


class ConnectionLost(Exception, metaclass=_ConnectionLostMeta):  # noqa: N818
    """Matches (``isinstance``) a PyMySQL ``OperationalError`` whose code is connection-level."""


def _errors() -> Any:
    # Imported lazily (this module is imported before we know PyMySQL is installed), and
    # through importlib: PyMySQL ships no type information.
    return importlib.import_module("pymysql.err")


def _target(host: Any, port: Any, database: Any) -> str:
    if isinstance(database, bytes):
        database = database.decode(errors="replace")
    return db_target("mysql", str(host or "localhost"), int(port or _DEFAULT_PORT), database)


def _connection_target(conn: Any) -> str:
    return _target(conn.host, conn.port, conn.db)


class PyMySQLIntegration(Integration):
    """Patches ``Connection.__init__``, ``Connection.connect``, ``Cursor.execute[many]``."""

    name = "pymysql"
    module = "pymysql"

    def patches(self) -> list[tuple[str, str, Any]]:
        """The patch list."""
        register_transient(ConnectionLost)
        register_login_failure(predicate_error("PyMySQLLoginFailure", _is_login_failure))
        return [
            ("pymysql.connections", "Connection.__init__", _wrap_init),
            ("pymysql.connections", "Connection.connect", _wrap_connect),
            ("pymysql.cursors", "Cursor.execute", _wrap_execute),
            ("pymysql.cursors", "Cursor.executemany", _wrap_executemany),
        ]


def _is_login_failure(exc: BaseException) -> bool:
    if not isinstance(exc, _errors().OperationalError) or isinstance(exc, ResilienceError):
        return False
    return (exc.args[0] if exc.args else None) in LOGIN_FAILURES


def _reraise(exc: BaseException) -> BaseException:
    return compatible(exc, _errors().OperationalError)


def _wrap_init(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if passthrough(KIND) or _activation.observing():
        return wrapped(*args, **kwargs)
    target = _target(
        kwargs.get("host"), kwargs.get("port"), kwargs.get("database") or kwargs.get("db")
    )
    limit = pushed_timeout(pipeline_for(target))
    if limit is not None:
        # Keyword-only parameters (PyMySQL >= 1.1): what the caller passed, even None, stays.
        ours = [name for name in ("read_timeout", "write_timeout") if name not in kwargs]
        for name in ours:
            kwargs[name] = limit
        kwargs.setdefault("connect_timeout", limit)
        if "read_timeout" in ours:  # what ends a statement waiting for its result
            remember_pushed(
                instance,
                target,
                f"this connection's {' and '.join(ours)} ({limit:g} s)",
                limit,
                "pass your own read_timeout and write_timeout to pymysql.connect(), which "
                "buttress leaves as they are",
            )
    return wrapped(*args, **kwargs)


def _note_timed_out(conn: Any, exc: BaseException) -> None:
    # PyMySQL reports its own socket timeout as 2013 "Lost connection ... (timed out)", raised
    # while handling the TimeoutError.
    if (
        isinstance(exc, _errors().OperationalError)
        and exc.args
        and exc.args[0] == _CR_SERVER_LOST
        and isinstance(exc.__context__, TimeoutError)
    ):
        note_pushed(conn, exc)


def _wrap_connect(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if passthrough(KIND):
        return wrapped(*args, **kwargs)
    _stateful.discard(instance)  # a fresh session
    try:
        return run(
            _connection_target(instance),
            lambda: wrapped(*args, **kwargs),
            retryable=True,
            connect=True,
        )
    except (RejectedError, PolicyTimeoutError) as exc:
        raise _reraise(exc) from exc.__cause__


def _retryable(conn: Any, query: Any, many: bool) -> bool:
    if many or conn in _stateful or statement_kind(query) != "read":
        return False
    status = conn.server_status or 0
    return bool(conn.get_autocommit()) and not status & _IN_TRANS


def _reconnect(conn: Any) -> None:
    if conn.open:
        with suppress(_errors().Error):
            conn.ping()  # on a dead socket this fails and closes it
    if not conn.open:
        conn.connect()  # passes straight through: we are inside this statement's attempt


def _wrap_execute(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    return _statement(wrapped, instance, args, kwargs, many=False)


def _wrap_executemany(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    return _statement(wrapped, instance, args, kwargs, many=True)


def _statement(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any], *, many: bool
) -> Any:
    if passthrough(KIND):
        return wrapped(*args, **kwargs)
    conn = instance.connection
    if conn is None:  # a closed cursor: let the driver raise its own error
        return wrapped(*args, **kwargs)
    query = args[0] if args else kwargs.get("query", "")
    text = sql_text(query)
    if text is None:
        text = str(query)
    if transaction_control(text):
        return direct(lambda: wrapped(*args, **kwargs))
    if _SESSION_STATE.search(text):
        _stateful.add(conn)
    retryable = _retryable(conn, text, many)
    attempts = [0]

    def attempt() -> Any:
        if attempts[0] and retryable:
            _reconnect(conn)
        attempts[0] += 1
        return wrapped(*args, **kwargs)

    try:
        return run(_connection_target(conn), attempt, retryable=retryable)
    except (RejectedError, PolicyTimeoutError) as exc:
        raise _reraise(exc) from exc.__cause__
    except Exception as exc:
        _note_timed_out(conn, exc)
        raise


INTEGRATION = PyMySQLIntegration()
