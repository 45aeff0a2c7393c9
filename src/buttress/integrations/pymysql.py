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

``COMMIT`` and ``ROLLBACK`` sent as statements pass straight through, as ``conn.commit()`` and
``conn.rollback()`` do: an open breaker must never keep a transaction (and its locks) open.

Connection-level errors are ``OperationalError`` with a code in :data:`CONNECTION_LOST` (can't
connect, server gone away, lost connection, too many connections, server shutting down,
connection killed). Every other error (a syntax error, access denied, a deadlock, a duplicate
key) is the application's or the data's, not the server's health: it is never retried and
never counts as a breaker failure.

Timeouts: PyMySQL cannot be interrupted from outside, so when the target has an attempt timeout
(``timeout.attempt``, enforce mode) it becomes the driver's ``connect_timeout``,
``read_timeout`` and ``write_timeout``, for those the application did not pass itself. A
statement that runs longer than that loses its connection (PyMySQL closes it; error 2013), the
honest way a synchronous driver can stop waiting. In observe mode nothing is changed.

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
from ._db import KIND, db_target, pipeline_for, register_transient, run, statement_kind

__all__ = ["CONNECTION_LOST", "INTEGRATION", "PyMySQLIntegration"]

CONNECTION_LOST = frozenset({1040, 1053, 1927, 2002, 2003, 2006, 2013, 2055})
"""The ``OperationalError`` codes that mean the connection failed, not the statement: 1040 too
many connections, 1053 server shutdown, 1927 connection killed, 2002/2003 can't connect,
2006 server has gone away, 2013 lost connection during query, 2055 lost connection (system
error)."""

_IN_TRANS = 1  # SERVER_STATUS_IN_TRANS
_DEFAULT_PORT = 3306

# Statements after which a new session would differ from the old one.
_SESSION_STATE = re.compile(
    r"^\s*(SET|USE|LOCK|PREPARE|CREATE\s+TEMPORARY|DECLARE|HANDLER)\b|(?<!@)@(?!@)",
    re.IGNORECASE,
)
_ENDS_TRANSACTION = re.compile(r"^\s*(COMMIT|ROLLBACK)\b", re.IGNORECASE)
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
        return [
            ("pymysql.connections", "Connection.__init__", _wrap_init),
            ("pymysql.connections", "Connection.connect", _wrap_connect),
            ("pymysql.cursors", "Cursor.execute", _wrap_execute),
            ("pymysql.cursors", "Cursor.executemany", _wrap_executemany),
        ]


def _reraise(exc: BaseException) -> BaseException:
    return compatible(exc, _errors().OperationalError)


def _wrap_init(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if passthrough(KIND) or _activation.observing():
        return wrapped(*args, **kwargs)
    target = _target(
        kwargs.get("host"), kwargs.get("port"), kwargs.get("database") or kwargs.get("db")
    )
    timeout = pipeline_for(target).timeout_config
    limit = timeout.attempt if timeout is not None else None
    if limit is not None:
        for name in ("connect_timeout", "read_timeout", "write_timeout"):
            kwargs.setdefault(name, limit)
    return wrapped(*args, **kwargs)


def _wrap_connect(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if passthrough(KIND):
        return wrapped(*args, **kwargs)
    _stateful.discard(instance)  # a fresh session
    try:
        return run(_connection_target(instance), lambda: wrapped(*args, **kwargs), retryable=True)
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
    text = query.decode(errors="replace") if isinstance(query, bytes | bytearray) else str(query)
    if _ENDS_TRANSACTION.match(text):
        return wrapped(*args, **kwargs)
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


INTEGRATION = PyMySQLIntegration()
