"""
sqlite3: every statement runs through ``sqlite:<file name>`` (``sqlite::memory:`` in memory).

What is patched, and why there: ``sqlite3.connect`` (and ``sqlite3.dbapi2.connect``, the same
function under the name SQLAlchemy uses). A ``sqlite3.Connection`` is a C type whose methods
cannot be patched, so the wrapper passes ``factory=`` a subclass of the connection class the
application asked for (``sqlite3.Connection`` or its own subclass): its ``execute``,
``executemany``, ``executescript`` and ``cursor`` hand out cursors of a subclass of the cursor
class asked for, whose ``execute``, ``executemany`` and ``executescript`` run through the
pipeline. ``isinstance`` checks keep working; ``type(conn) is sqlite3.Connection`` does not.
A cursor ``factory`` that is not a ``sqlite3.Cursor`` subclass runs unprotected. Connections
made before activation are unprotected; those made while active pass straight through again
after deactivation.

What is retried, and why: ``database is locked`` (``SQLITE_BUSY``: another connection holds a
lock) is the one transient failure; it counts as a breaker failure too. Every other error (a
syntax error, a constraint, a missing table) is neither retried nor counted.

- ``execute`` is retried, reads and writes alike, when the connection was **not in a
  transaction** before the statement (``conn.in_transaction`` false). SQLite returns
  ``SQLITE_BUSY`` before a statement changes anything and, as its documentation says, a
  statement outside an explicit transaction can then simply be retried. The sqlite3 module
  opens a transaction by itself before an ``INSERT``/``UPDATE``/``DELETE`` (legacy transaction
  control); if such a statement was refused, that empty transaction is rolled back before the
  retry, so the retry starts from where the application was.
- Inside an explicit transaction nothing is retried: ``SQLITE_BUSY`` there can be a deadlock
  between two transactions that only a rollback resolves, and that is the application's call.
- Transaction control run as a statement (``COMMIT``, ``END``, ``ROLLBACK``, ``SAVEPOINT``,
  ``RELEASE``, ``ROLLBACK TO``: ``_db.transaction_control``) passes straight through, as
  ``conn.commit()`` and ``conn.rollback()`` do (they are never wrapped): an open breaker or a
  full bulkhead that refused them would keep the transaction's locks held, making the
  contention it reacts to worse (and the breaker is per database file, shared by every
  connection to it). ``BEGIN`` goes through the pipeline: ``BEGIN IMMEDIATE`` is where a writer
  waits for the lock, and it is retried on ``database is locked`` like any statement outside a
  transaction.
- ``executemany`` and ``executescript`` are never retried: with ``isolation_level=None``
  ``executemany`` commits row by row, and a script commits as it goes, so part of the work may
  already be done when one fails.

Timeouts: SQLite waits for a lock itself, up to the ``timeout`` given to ``connect`` (5 s by
default), before it reports ``database is locked``; that wait is part of each attempt. When
the application passed no ``timeout`` and ``timeout.attempt`` is configured for the target
(never the template's default, never in observe mode), that becomes SQLite's lock wait, so one
attempt never waits longer than the configuration says; a ``database is locked`` that then
reaches the caller carries a note saying that the wait was buttress's. Nothing else of a
running statement can be interrupted.

A rejection by buttress (open breaker, full bulkhead) or its total timeout is raised as an
exception that is also a ``sqlite3.OperationalError``.

The target is the database file's name only, never its directory, a statement or parameters.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import PurePath
from typing import Any
from urllib.parse import unquote

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
    pushed_timeout,
    register_transient,
    remember_pushed,
    run,
    transaction_control,
)

__all__ = ["INTEGRATION", "SQLite3Integration", "target_of"]

_SQLITE_BUSY = 5
# sqlite3.connect's parameters in order (Python 3.11 to 3.13; 3.12 adds keyword-only autocommit).
_CONNECT_PARAMETERS = (
    "database",
    "timeout",
    "detect_types",
    "isolation_level",
    "check_same_thread",
    "factory",
    "cached_statements",
    "uri",
)


class _BusyMeta(type):
    def __instancecheck__(cls, obj: object) -> bool:
        if not isinstance(obj, sqlite3.OperationalError) or isinstance(obj, ResilienceError):
            return False
        code = getattr(obj, "sqlite_errorcode", None)
        if isinstance(code, int):
            return code & 0xFF == _SQLITE_BUSY
        return str(obj).startswith("database is locked")


class DatabaseLocked(Exception, metaclass=_BusyMeta):  # noqa: N818
    """Matches (``isinstance``) a ``sqlite3.OperationalError`` that is ``SQLITE_BUSY``."""


def target_of(database: Any, uri: bool = False) -> str:
    """``sqlite:<file name>``, or ``sqlite::memory:`` for in-memory and temporary databases."""
    try:
        path = os.fsdecode(os.fspath(database))
    except TypeError:
        return "sqlite::memory:"
    if uri and path.startswith("file:"):
        path, _, query = path[5:].partition("?")
        path = unquote(path.split("#", 1)[0])
        if "mode=memory" in query:
            return "sqlite::memory:"
    name = PurePath(path).name
    if not name or name == ":memory:":
        return "sqlite::memory:"
    return db_target("sqlite", name, None, None)


class SQLite3Integration(Integration):
    """Patches ``sqlite3.connect`` to hand out protected connection and cursor subclasses."""

    name = "sqlite3"
    module = "sqlite3"

    def patches(self) -> list[tuple[str, str, Any]]:
        """The patch list."""
        register_transient(DatabaseLocked)
        return [
            ("sqlite3", "connect", _wrap_connect),
            ("sqlite3.dbapi2", "connect", _wrap_connect),
        ]


def _off() -> bool:
    return not INTEGRATION.instrumented or passthrough(KIND)


def _statement(cursor: Any, fn: Any, args: tuple[Any, ...], *, retryable: bool) -> Any:
    conn = cursor.connection
    target = getattr(conn, "_buttress_target", None)
    if target is None or _off():
        return fn(*args)
    if args and transaction_control(args[0]):
        return direct(lambda: fn(*args))
    retryable = retryable and not conn.in_transaction
    attempts = [0]

    def attempt() -> Any:
        if attempts[0] and conn.in_transaction:
            # The empty transaction sqlite3 began for the refused statement (we only retry
            # statements that started outside any transaction).
            conn.rollback()
        attempts[0] += 1
        return fn(*args)

    try:
        return run(target, attempt, retryable=retryable)
    except (RejectedError, PolicyTimeoutError) as exc:
        raise compatible(exc, sqlite3.OperationalError) from exc.__cause__
    except sqlite3.OperationalError as exc:
        if isinstance(exc, DatabaseLocked):
            note_pushed(conn, exc)
        raise


_cursor_classes: dict[type[Any], type[Any]] = {}
_connection_classes: dict[type[Any], type[Any]] = {}


def _cursor_class(base: type[Any]) -> type[Any]:
    made = _cursor_classes.get(base)
    if made is not None:
        return made

    class Cursor(base):  # type: ignore[misc]
        def execute(self, *args: Any) -> Any:
            return _statement(self, super().execute, args, retryable=True)

        def executemany(self, *args: Any) -> Any:
            return _statement(self, super().executemany, args, retryable=False)

        def executescript(self, *args: Any) -> Any:
            return _statement(self, super().executescript, args, retryable=False)

    Cursor.__name__ = Cursor.__qualname__ = base.__name__
    Cursor.__module__ = base.__module__
    _cursor_classes[base] = Cursor
    return Cursor


def _connection_class(base: type[Any]) -> type[Any]:
    made = _connection_classes.get(base)
    if made is not None:
        return made

    class Connection(base):  # type: ignore[misc]
        _buttress_target: str | None = None

        def cursor(self, factory: Any = sqlite3.Cursor) -> Any:
            if isinstance(factory, type) and issubclass(factory, sqlite3.Cursor):
                factory = _cursor_class(factory)
            return super().cursor(factory)

        def execute(self, *args: Any) -> Any:
            return self.cursor().execute(*args)

        def executemany(self, *args: Any) -> Any:
            return self.cursor().executemany(*args)

        def executescript(self, *args: Any) -> Any:
            return self.cursor().executescript(*args)

    Connection.__name__ = Connection.__qualname__ = base.__name__
    Connection.__module__ = base.__module__
    _connection_classes[base] = Connection
    return Connection


def _wrap_connect(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if passthrough(KIND) or len(args) > len(_CONNECT_PARAMETERS):
        return wrapped(*args, **kwargs)
    call = {**dict(zip(_CONNECT_PARAMETERS, args, strict=False)), **kwargs}
    factory = call.get("factory", sqlite3.Connection)
    if "database" not in call or not (
        isinstance(factory, type) and issubclass(factory, sqlite3.Connection)
    ):
        return wrapped(*args, **kwargs)
    target = target_of(call["database"], bool(call.get("uri", False)))
    lock_wait = None
    if "timeout" not in call and not _activation.observing():
        lock_wait = pushed_timeout(pipeline_for(target))
        if lock_wait is not None:
            call["timeout"] = lock_wait
    call["factory"] = _connection_class(factory)
    conn = wrapped(**call)
    conn._buttress_target = target
    if lock_wait is not None:
        remember_pushed(
            conn,
            target,
            f"this connection's lock wait (sqlite3.connect's timeout, {lock_wait:g} s)",
            lock_wait,
            "pass your own timeout to sqlite3.connect(), which buttress leaves as it is",
        )
    return conn


INTEGRATION = SQLite3Integration()
