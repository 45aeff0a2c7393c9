"""
psycopg2: connects and statements run through the pipeline of their database target.

What is patched, and why there:

- ``psycopg2.connect``. Connecting is always safe to repeat (a failed attempt created nothing
  on the server), so connects **retry** on connection failures.
- Statements: psycopg2's connection and cursor are C types whose methods cannot be replaced,
  so the connect wrapper passes a ``connection_factory``: a subclass of the caller's connection
  class (``psycopg2.extensions.connection`` by default) whose ``cursor()`` hands out a subclass
  of the requested cursor class (``cursor_factory``, including ``DictCursor`` and friends)
  with ``execute``/``executemany`` wrapped. This is what OpenTelemetry's psycopg2
  instrumentation does too. ``isinstance`` checks keep working; ``type(conn) is ...`` does not.
  A ``connection_factory`` that is a plain function rather than a class cannot be subclassed:
  its statements run unprotected (its connects are still protected). Asynchronous connections
  (``async_=True``) are left alone.
- Each statement is one pipeline call (breaker, bulkhead as a limit on statements in flight,
  timeouts, metrics) and is **never retried**: psycopg2 is never in autocommit mode unless
  told, so a statement normally runs inside a transaction, where repeating one statement on
  another session would lose the ones before it; and in autocommit mode the failure that
  would justify a retry (the session was dropped) also killed the connection object, so a
  retry would only fail with "connection already closed" and hide the real error. The caller
  gets psycopg2's own exception unchanged; a connection failure counts for the breaker. A
  statement on an already closed connection is not a database call and bypasses the pipeline.
  Retrying statements needs a pool that can hand out a fresh connection: use SQLAlchemy's
  (``buttress.integrations.sqlalchemy``).
- **Target** ``postgresql:<host>:<port>/<dbname>`` from ``conn.info`` for statements and from
  the connect parameters (then ``PGHOST``/``PGPORT``/``PGDATABASE``) for connects; sockets and
  a missing host are ``localhost``. Never the user, password, statement or parameters.
- **Transaction control** sent through ``execute`` (``COMMIT``, ``ROLLBACK``, ``SAVEPOINT``,
  ``RELEASE``, ``ROLLBACK TO``, ``END``, ``ABORT``...: ``_db.transaction_control``) goes straight
  to psycopg2, even with the breaker open or the bulkhead full. ``conn.commit()`` and
  ``conn.rollback()`` are C methods that buttress never wraps.
- **Errors**: a ``psycopg2.OperationalError`` without ``pgcode`` (refused, dropped), SQLSTATE
  class 08, 57P01 (``pg_terminate_backend``), 57P02, 57P03, 57P05 or 53300. A syntax error or
  any other server error is neither retried nor a breaker failure. Login failures are neither,
  told apart from a lost connection as for psycopg (``psycopg.libpq_login_failure``: libpq's
  own error text, without SQLSTATE). A rejection by buttress is raised as an exception that is
  also a ``psycopg2.OperationalError``; a timeout of buttress stays its own ``TimeoutError``
  (see :func:`driver_error`).
- **Timeouts**: as for psycopg, a configured ``timeout.attempt`` (never the template's, never
  in observe mode) becomes ``-c statement_timeout=<ms>`` in the connect ``options`` (the
  caller's own ``statement_timeout`` wins; ``timeout.attempt = "none"`` turns it off), and a
  statement the server cancels for it carries a note saying so. A connect without the caller's
  own ``connect_timeout`` gets one from the time left in its attempt.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import Any

from .._exceptions import RejectedError, ResilienceError
from .._exceptions import TimeoutError as PolicyTimeoutError
from ._base import Integration, compatible, passthrough
from ._db import (
    KIND,
    direct,
    nested,
    pipeline_for,
    predicate_error,
    register_login_failure,
    register_transient,
    run,
    transaction_control,
)
from .psycopg import (
    connect_overrides,
    libpq_login_failure,
    note_cancelled,
    params_target,
    pg_target,
    query_text,
    remember_statement_timeout,
    sqlstate_is_connection_failure,
    sqlstate_is_login_failure,
    statement_timeout_options,
)

__all__ = ["INTEGRATION", "Psycopg2Integration"]


class Psycopg2Integration(Integration):
    """Patches ``psycopg2.connect`` (statements through the connection class it installs)."""

    name = "psycopg2"
    module = "psycopg2"

    def patches(self) -> list[tuple[str, str, Any]]:
        """The patch list."""
        psycopg2 = importlib.import_module("psycopg2")
        operational = psycopg2.OperationalError

        def check(exc: BaseException) -> bool:
            # A rejection of ours made psycopg2-compatible (pgcode None) is not the server's.
            return (
                isinstance(exc, operational)
                and not isinstance(exc, ResilienceError)
                and sqlstate_is_connection_failure(getattr(exc, "pgcode", None))
            )

        def login(exc: BaseException) -> bool:
            if not isinstance(exc, psycopg2.Error) or isinstance(exc, ResilienceError):
                return False
            state = getattr(exc, "pgcode", None)
            if state is not None:
                return sqlstate_is_login_failure(state)
            return isinstance(exc, operational) and libpq_login_failure(str(exc))

        register_transient(predicate_error("Psycopg2ConnectionFailure", check))
        register_login_failure(predicate_error("Psycopg2LoginFailure", login))
        return [("psycopg2", "connect", _wrap_connect)]


def _wrap_connect(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if (passthrough(KIND) and not nested()) or kwargs.get("async") or kwargs.get("async_"):
        return wrapped(*args, **kwargs)
    try:
        extensions = importlib.import_module("psycopg2.extensions")
        dsn = args[0] if args else kwargs.get("dsn")
        libpq = {
            k: v
            for k, v in kwargs.items()
            if k not in ("dsn", "connection_factory", "cursor_factory") and v is not None
        }
        if "database" in libpq:
            libpq["dbname"] = libpq.pop("database")
        params = {**extensions.parse_dsn(dsn or ""), **libpq}
        target = params_target(params)
        pipeline = pipeline_for(target)
        options = statement_timeout_options(params, pipeline)
        factory = kwargs.get("connection_factory")
        if factory is None and len(args) > 1:
            factory = args[1]
        protected = _connection_class(factory or extensions.connection)
    except Exception:
        return wrapped(*args, **kwargs)  # a bad DSN: psycopg2's own error, unprotected
    call_args = args[:1]
    call_kwargs = {k: v for k, v in kwargs.items() if k != "connection_factory"}
    if len(args) > 2:
        call_kwargs["cursor_factory"] = args[2]
    call_kwargs["connection_factory"] = protected or factory
    if call_kwargs["connection_factory"] is None:
        del call_kwargs["connection_factory"]

    def attempt() -> Any:
        return wrapped(*call_args, **{**call_kwargs, **connect_overrides(params, options)})

    # Inside SQLAlchemy's checkout, its pipeline protects the connect: only the options apply.
    conn = attempt() if passthrough(KIND) else _run(target, attempt, retryable=True, connect=True)
    if options is not None:
        remember_statement_timeout(conn, target, pipeline)
    return conn


def driver_error(exc: BaseException) -> BaseException:
    """
    A rejection of ours re-made as one that is also a ``psycopg2.OperationalError``.

    ``psycopg2.Error`` is a C type, but it adds its fields to the plain exception layout, so a
    class deriving from both our (pure Python) rejection and it can be made; the C fields of
    the copy are unset: ``pgcode``, ``pgerror`` and ``cursor`` are ``None`` and every field of
    ``diag`` is ``None``. Our timeout cannot be: :class:`buttress.TimeoutError` is also a
    builtin ``TimeoutError`` (an ``OSError``), whose C layout conflicts with psycopg2's, so a
    timeout stays :class:`buttress.TimeoutError` (``except TimeoutError`` catches it).
    """
    return compatible(exc, importlib.import_module("psycopg2").OperationalError)


def _run(target: str, fn: Callable[[], Any], *, retryable: bool, connect: bool = False) -> Any:
    try:
        return run(target, fn, retryable=retryable, connect=connect)
    except (RejectedError, PolicyTimeoutError) as exc:
        raise driver_error(exc) from exc.__cause__


_classes: dict[type, type] = {}
_classes_lock = threading.Lock()


def _protected(base: Any, root: str, members: Callable[[type], dict[str, Any]]) -> type | None:
    """
    The protected subclass of *base*, made once with *members* overridden.

    *base* itself if it is one already; None if it is not a subclass of
    ``psycopg2.extensions.<root>``.
    """
    extensions = importlib.import_module("psycopg2.extensions")
    if not isinstance(base, type) or not issubclass(base, getattr(extensions, root)):
        return None
    if getattr(base, "_buttress_protected", False):
        return base
    with _classes_lock:
        made = _classes.get(base)
        if made is None:
            made = _classes[base] = type(
                base.__name__,
                (base,),
                {
                    **members(base),
                    "_buttress_protected": True,
                    "__module__": base.__module__,
                    "__qualname__": base.__qualname__,
                },
            )
        return made


def _connection_class(base: Any) -> type | None:
    """The protected subclass of connection class *base*, or None if *base* is not a class."""
    return _protected(base, "connection", lambda cls: {"cursor": _cursor_method(cls)})


def _cursor_method(base: type) -> Any:
    original = base.cursor  # type: ignore[attr-defined]

    def cursor(self: Any, *args: Any, **kwargs: Any) -> Any:
        factory = kwargs.get("cursor_factory")
        if factory is None and len(args) > 1:
            factory = args[1]
        if factory is None:
            factory = self.cursor_factory
        if factory is None:
            factory = importlib.import_module("psycopg2.extensions").cursor
        protected = _cursor_class(factory)
        if protected is not None:
            if len(args) > 1:
                args = (args[0], protected, *args[2:])
            else:
                kwargs["cursor_factory"] = protected
        return original(self, *args, **kwargs)

    cursor.__doc__ = original.__doc__
    return cursor


def _cursor_class(base: Any) -> type | None:
    return _protected(
        base,
        "cursor",
        lambda cls: {
            "execute": _statement("execute", cls),
            "executemany": _statement("executemany", cls),
        },
    )


def _statement(name: str, base: type) -> Any:
    original = getattr(base, name)

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        if (
            not INTEGRATION.instrumented
            or passthrough(KIND)
            or self.closed
            or self.connection.closed
        ):
            return original(self, *args, **kwargs)
        if transaction_control(query_text(self, args, kwargs)):
            return direct(lambda: original(self, *args, **kwargs))
        info = self.connection.info
        target = pg_target(info.host, info.port, info.dbname)
        try:
            return _run(target, lambda: original(self, *args, **kwargs), retryable=False)
        except Exception as exc:
            note_cancelled(self.connection, exc)
            raise

    method.__name__ = name
    method.__qualname__ = f"{base.__qualname__}.{name}"
    method.__doc__ = original.__doc__
    return method


INTEGRATION = Psycopg2Integration()
