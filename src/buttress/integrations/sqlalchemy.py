"""
SQLAlchemy (engine level): checkouts and statements of PostgreSQL engines, through the pipeline.

What is patched, and why there:

- ``Engine.raw_connection``: every DBAPI connection a ``Connection`` gets (``engine.connect()``,
  ``engine.begin()``, and the reconnect after an invalidation) comes through it. A checkout
  that has to open a connection **retries** on connection failures; connecting is always safe.
- ``Connection.execute``, ``Connection.exec_driver_sql`` and ``Connection.scalar`` (the one
  execution path that does not go through ``execute``): each is one logical operation. The
  ORM's ``Session`` executes through them too.
- **Retry rule.** A statement is retried on a connection failure only when:

  - the ``Connection`` was not in a transaction before the call (``conn.in_transaction()`` is
    false), so the statement starts one of its own (SQLAlchemy's autobegin) and nothing
    earlier can be lost; inside ``engine.begin()``, ``conn.begin()`` or after an earlier
    statement of the same transaction it runs once (``buttress.no_retry``);
  - it is a read: text that ``_db.statement_kind`` calls a read, or a ``select()`` construct
    without ``with_for_update()`` (the functions it calls are not inspected: wrap a select of
    a writing function in ``buttress.no_retry()``). A write that the server committed before
    the connection dropped (autocommit isolation) must not run twice;
  - SQLAlchemy itself judged the error a disconnect (``DBAPIError.connection_invalidated``,
    from the dialect's ``is_disconnect``) or the driver's error is a registered connection
    failure.

  Unlike a plain driver connection, a retry here helps: SQLAlchemy has invalidated the dead
  DBAPI connection (and, by default, every older one in the pool), so before the next attempt
  the transaction it began is rolled back (SQLAlchemy's own recipe for reconnecting) and the
  statement runs on a fresh connection from the pool. A ``Session`` always begins its
  transaction explicitly, so ORM statements are not retried.
- **Transaction control** passes straight through, even with the breaker open or the bulkhead
  full: ``COMMIT``, ``ROLLBACK``, ``SAVEPOINT``, ``RELEASE``, ``ROLLBACK TO`` (see
  ``_db.transaction_control``) as text, ``text()`` or through ``exec_driver_sql``, and the
  driver calls under it. ``Connection.commit()``/``rollback()`` (and a ``Session``'s) are
  never wrapped: SQLAlchemy ends the transaction through the DBAPI connection's own
  ``commit()``/``rollback()``, which psycopg and psycopg2 do without a cursor and asyncpg's
  adapter does with a ``COMMIT``/``ROLLBACK`` statement that its integration lets through.
- **Login failures** (a wrong password, an unknown role or database) are never retried nor
  counted as breaker failures, whichever driver reported them: SQLAlchemy's wrapper is judged
  by the driver's error it holds (``.orig``), even when SQLAlchemy calls it a disconnect.
- **Nesting.** The driver integrations (psycopg, psycopg2, asyncpg) see that they run inside a
  SQLAlchemy operation and pass through: one pipeline per logical operation, never two.
- **asyncio.** ``AsyncEngine``/``AsyncConnection``/``AsyncSession`` run the synchronous engine
  in a greenlet and await the driver from there. A synchronous pipeline there would block the
  event loop while it backs off or queues, so the wrappers see the greenlet and run the
  operation through the asynchronous pipeline instead (awaited in the event loop, the
  operation itself in a new greenlet): back-off sleeps and bulkhead waits are ``await`` s,
  and an attempt timeout cancels the driver call.
- **Target** ``postgresql:<host>:<port>/<database>`` from ``engine.url`` (host, port and
  database only; a missing host, a Unix socket, is ``localhost``; the port defaults to 5432).
  Never the user, password, statement or parameters. Engines of other databases are left to
  their own integrations: this one wraps PostgreSQL engines only, and passes the rest through.
- **Errors** are SQLAlchemy's own (``sqlalchemy.exc.OperationalError`` wrapping the driver's),
  unchanged; a syntax error (``ProgrammingError``) is neither retried nor a breaker failure.
  A rejection or timeout of buttress is raised as an exception that is also a
  ``sqlalchemy.exc.OperationalError`` (see :func:`driver_error`).
  Statement timeouts you configure reach the server through the driver integration's connect
  options (psycopg, psycopg2: the checkout's connect passes through their integration, which
  only adds ``statement_timeout``); a statement the server cancels for it carries a note, on
  SQLAlchemy's error and on the driver's (``.orig``). With asyncpg, the asynchronous pipeline
  cancels the attempt instead.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import Any

from .._exceptions import RejectedError
from .._exceptions import TimeoutError as PolicyTimeoutError
from ._base import Integration, compatible, passthrough
from ._db import (
    KIND,
    arun,
    direct,
    is_login_failure,
    is_transient,
    note_pushed,
    predicate_error,
    register_login_failure,
    register_transient,
    run,
    sql_text,
    statement_kind,
    transaction_control,
)
from .psycopg import pg_target

__all__ = ["INTEGRATION", "SQLAlchemyIntegration"]


class SQLAlchemyIntegration(Integration):
    """Patches ``Engine.raw_connection`` and the ``Connection`` execution methods."""

    name = "sqlalchemy"
    module = "sqlalchemy"

    def patches(self) -> list[tuple[str, str, Any]]:
        """The patch list."""
        register_transient(predicate_error("SQLAlchemyDisconnect", _is_disconnect))
        register_login_failure(predicate_error("SQLAlchemyLoginFailure", _is_login_failure))
        return [
            ("sqlalchemy.engine.base", "Engine.raw_connection", _wrap_checkout),
            ("sqlalchemy.engine.base", "Connection.execute", _wrap_statement),
            ("sqlalchemy.engine.base", "Connection.exec_driver_sql", _wrap_statement),
            ("sqlalchemy.engine.base", "Connection.scalar", _wrap_statement),
        ]


def _adapted(exc: BaseException) -> BaseException | None:
    # SQLAlchemy's asyncio adapters (asyncpg's) raise DBAPI errors of their own with the
    # driver's as the cause; a checkout sees them bare, before SQLAlchemy wraps them.
    if type(exc).__module__.startswith("sqlalchemy.dialects.") and exc.__cause__ is not None:
        return exc.__cause__
    return None


def _is_disconnect(exc: BaseException) -> bool:
    dbapi_error = importlib.import_module("sqlalchemy.exc").DBAPIError
    if not isinstance(exc, dbapi_error):
        cause = _adapted(exc)
        return cause is not None and is_transient(cause)
    if exc.connection_invalidated:
        return True
    return any(is_transient(error) for error in _driver_errors(exc))


def _driver_errors(exc: BaseException) -> list[BaseException]:
    # The driver's error a DBAPIError holds; asyncpg's adapter wraps asyncpg's as its cause.
    orig = getattr(exc, "orig", None)
    if not isinstance(orig, BaseException):
        return []
    cause = orig.__cause__
    return [orig] if cause is None else [orig, cause]


def _is_login_failure(exc: BaseException) -> bool:
    dbapi_error = importlib.import_module("sqlalchemy.exc").DBAPIError
    if not isinstance(exc, dbapi_error):
        cause = _adapted(exc)
        return cause is not None and is_login_failure(cause)
    return any(is_login_failure(error) for error in _driver_errors(exc))


def _statement_text(statement: Any) -> str | None:
    text = sql_text(statement)
    if text is None:
        text = sql_text(getattr(statement, "text", None))  # text("...")
    return text


def _note_cancelled(conn: Any, exc: BaseException) -> None:
    # A statement the server cancelled (57014) on a connection whose statement_timeout is
    # buttress's: the note goes on SQLAlchemy's error, which the caller sees, and the driver's.
    errors = _driver_errors(exc)
    if not any(
        (getattr(e, "sqlstate", None) or getattr(e, "pgcode", None)) == "57014" for e in errors
    ):
        return
    try:
        driver_connection = conn.connection.driver_connection
    except Exception:  # invalidated or closed: nothing to tell
        return
    for error in (exc, *errors):
        note_pushed(driver_connection, error)


def engine_target(engine: Any) -> str | None:
    """``postgresql:host:port/database`` of a PostgreSQL engine, else None."""
    url = engine.url
    if url.get_backend_name() != "postgresql":
        return None
    return pg_target(url.host, url.port, url.database)


def _read(statement: Any) -> bool:
    if isinstance(statement, str | bytes):
        return statement_kind(statement) == "read"
    if getattr(statement, "is_select", False):
        # FOR UPDATE/SHARE takes row locks: a write, as statement_kind says of the text. The
        # functions a select() calls are not inspected (compiling every statement to text
        # would cost more than the check is worth): use buttress.no_retry() around a select()
        # whose function writes.
        return getattr(statement, "_for_update_arg", None) is None
    if getattr(statement, "is_dml", False) or getattr(statement, "is_ddl", False):
        return False
    text = getattr(statement, "text", None)  # text("...")
    return isinstance(text, str) and statement_kind(text) == "read"


def _greenlet_tools() -> tuple[Callable[[Awaitable[Any]], Any], Any] | None:
    """``(await_, greenlet_spawn)`` when running in SQLAlchemy's asyncio greenlet, else None."""
    concurrency = importlib.import_module("sqlalchemy.util.concurrency")
    if not concurrency.in_greenlet():
        return None
    await_ = getattr(concurrency, "await_", None) or concurrency.await_only
    return await_, concurrency.greenlet_spawn


def driver_error(exc: BaseException) -> BaseException:
    """
    A rejection or timeout of ours re-made as one that is also ``sqlalchemy.exc.OperationalError``.

    ``DBAPIError.__init__`` (``message, statement, params, orig``) never runs for the copy, so
    the attributes it would set are given here: no ``statement`` or ``params`` (nothing was
    sent, and a statement could hold literal values), no ``orig`` (no driver raised anything:
    ``driver_exception`` raises ``ValueError``, as for any ``DBAPIError`` without one),
    ``connection_invalidated`` false, and no error ``code`` (its "background" link is about
    driver errors), so ``str()`` is our message alone.
    """
    clone = compatible(exc, importlib.import_module("sqlalchemy.exc").OperationalError)
    if clone is not exc:
        clone.__dict__.update(
            statement=None,
            params=None,
            orig=None,
            ismulti=None,
            hide_parameters=True,
            connection_invalidated=False,
            detail=[],
            code=None,
        )
    return clone


def _through(target: str, fn: Callable[[], Any], *, retryable: bool, connect: bool = False) -> Any:
    try:
        tools = _greenlet_tools()
        if tools is None:
            return run(target, fn, retryable=retryable, connect=connect)
        await_, greenlet_spawn = tools

        def attempt() -> Awaitable[Any]:
            result: Awaitable[Any] = greenlet_spawn(fn)
            return result

        return await_(arun(target, attempt, retryable=retryable, connect=connect))
    except (RejectedError, PolicyTimeoutError) as exc:
        raise driver_error(exc) from exc.__cause__


def _wrap_checkout(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if passthrough(KIND):
        return wrapped(*args, **kwargs)
    target = engine_target(instance)
    if target is None:
        return wrapped(*args, **kwargs)
    return _through(target, lambda: wrapped(*args, **kwargs), retryable=True, connect=True)


def _wrap_statement(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if passthrough(KIND) or instance.closed:
        return wrapped(*args, **kwargs)
    target = engine_target(instance.engine)
    if target is None:
        return wrapped(*args, **kwargs)
    statement = args[0] if args else kwargs.get("statement")
    if transaction_control(_statement_text(statement)):
        return direct(lambda: wrapped(*args, **kwargs))
    try:
        return _statement(target, wrapped, instance, statement, args, kwargs)
    except Exception as exc:
        _note_cancelled(instance, exc)
        raise


def _statement(
    target: str,
    wrapped: Any,
    instance: Any,
    statement: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    retryable = not instance.in_transaction() and _read(statement)
    if not retryable:
        return _through(target, lambda: wrapped(*args, **kwargs), retryable=False)
    attempts = [0]

    def attempt() -> Any:
        attempts[0] += 1
        if attempts[0] > 1 and instance.in_transaction():
            # The previous attempt's autobegun transaction died with its connection: roll it
            # back so that the Connection may check out a fresh one (SQLAlchemy's recipe).
            instance.rollback()
        return wrapped(*args, **kwargs)

    return _through(target, attempt, retryable=True)


INTEGRATION = SQLAlchemyIntegration()
