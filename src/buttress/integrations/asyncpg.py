"""
asyncpg: connects, pool statements and connection statements run through their target's pipeline.

What is patched, and why there:

- ``asyncpg.connect`` and ``asyncpg.connection.connect`` (the package attribute is a second
  name for the same function; ``Pool`` calls the module one to open its connections, so pool
  connections are covered). Connecting is always safe to repeat: connects **retry** on
  connection failures. The caller's ``timeout`` (60 s by default) is cut to the time left.
- ``Pool.execute``/``executemany``/``fetch``/``fetchrow``/``fetchval``/``fetchmany``: each is
  one logical operation that acquires a connection, runs one statement outside any explicit
  transaction (asyncpg is in autocommit mode outside ``conn.transaction()``) and releases it.
  A **read** statement (``SELECT``, ``SHOW``, ``VALUES``... see ``_db.statement_kind``) is
  **retried** on connection failures: repeating a read changes nothing, and the retry acquires
  again, and the pool replaces a connection the server closed with a fresh one. Writes are not
  retried: in autocommit mode the server may have committed one before the connection dropped.
- ``Connection.execute``/``executemany``/``fetch``/``fetchrow``/``fetchval``/``fetchmany``
  (also reached through a pool's connection proxy): one pipeline call each, **never retried**.
  Inside ``conn.transaction()`` (``conn.is_in_transaction()``) a retry on another session
  would lose the transaction's earlier statements; outside one, the failure that would justify
  a retry (the server dropped the session) also closed the connection object, and a retry on
  it would only raise ``ConnectionDoesNotExistError`` and hide the real error. The caller gets
  asyncpg's own exception unchanged, and a connection failure counts for the breaker. A
  statement on a connection that is already closed bypasses the pipeline (it never reaches
  the network). Inside a pool operation the connection's own calls pass through: one
  pipeline per logical operation.
- **Transaction control** (``COMMIT``, ``ROLLBACK``, ``SAVEPOINT``, ``RELEASE SAVEPOINT``,
  ``ROLLBACK TO``...: ``_db.transaction_control``) passes straight through, even with the
  breaker open or the bulkhead full. That covers ``conn.transaction()``: asyncpg's
  ``Transaction`` sends its ``COMMIT;``, ``ROLLBACK;``, savepoints and their release through
  ``Connection.execute``. Its ``BEGIN`` goes through the pipeline: a refused ``BEGIN`` leaves
  no transaction open.
- **Timeouts** reach the driver only when configured: when ``timeout.attempt`` is configured
  for the target (never the template's default, never in observe mode), every statement gets
  ``timeout=`` the smaller of the caller's (or the connection's ``command_timeout``) and what is
  left of the attempt (``buttress.remaining()``); asyncpg then cancels the query on the server,
  and its ``TimeoutError`` carries a note saying that the timeout was buttress's. A connect
  without the caller's own ``timeout=`` gets the time left in its attempt (at most asyncpg's
  default, 60 s); the caller's is never changed.
- **Target** ``postgresql:<host>:<port>/<database>``: for connections from the address and
  parameters asyncpg connected with (``Connection._addr``/``_params``: asyncpg has no public
  accessor; they are what its query loggers report as ``conn_addr``/``conn_params``), for
  connects and pools from the DSN and keyword arguments (then ``PGHOST``/``PGPORT``/
  ``PGDATABASE``). Unix sockets and a missing host are ``localhost``. Never the user,
  password, statement or arguments.
- **Errors**: ``PostgresConnectionError`` (class 08, including ``ConnectionDoesNotExistError``),
  ``AdminShutdownError`` (57P01, ``pg_terminate_backend``), ``CrashShutdownError``,
  ``CannotConnectNowError``, ``IdleSessionTimeoutError``, ``TooManyConnectionsError``, and
  network ``OSError`` s (refused, reset, unreachable, DNS failure, and asyncio's "Multiple
  exceptions" for a host with several addresses). A syntax error is neither retried nor a
  breaker failure, and neither is a login failure (asyncpg reads the server's SQLSTATE: class
  28, ``InvalidPasswordError`` and ``InvalidAuthorizationSpecificationError``, or 3D000,
  ``InvalidCatalogNameError``). A rejection by buttress is raised as an exception that is also
  asyncpg's ``ConnectionDoesNotExistError``; a timeout of buttress stays its own
  ``TimeoutError`` (an ``asyncio.TimeoutError``, as asyncpg's own): see :func:`driver_error`.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import errno
import importlib
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .._exceptions import RejectedError, ResilienceError
from ..policies._timeout import remaining
from ._base import Integration, compatible, passthrough
from ._db import (
    KIND,
    add_note,
    adirect,
    arun,
    pipeline_for,
    predicate_error,
    pushed_timeout,
    register_login_failure,
    register_transient,
    statement_kind,
    timeout_note,
    transaction_control,
)
from .psycopg import pg_target, sqlstate_is_login_failure

__all__ = ["INTEGRATION", "AsyncpgIntegration"]

_STATEMENTS = ("execute", "executemany", "fetch", "fetchrow", "fetchval", "fetchmany")

_NETWORK_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EHOSTDOWN,
    }
)


def network_error(exc: BaseException) -> bool:
    """An ``OSError`` that means the server could not be reached."""
    if not isinstance(exc, OSError):
        return False
    if isinstance(exc, socket.gaierror) or exc.errno in _NETWORK_ERRNOS:
        return True
    # asyncio.create_connection over several addresses: OSError("Multiple exceptions: ...")
    return exc.errno is None and str(exc).startswith("Multiple exceptions")


class AsyncpgIntegration(Integration):
    """Patches asyncpg's connects, pool statements and connection statements."""

    name = "asyncpg"
    module = "asyncpg"

    def patches(self) -> list[tuple[str, str, Any]]:
        """The patch list."""
        exceptions = importlib.import_module("asyncpg.exceptions")
        failures = (
            exceptions.PostgresConnectionError,
            exceptions.AdminShutdownError,
            exceptions.CrashShutdownError,
            exceptions.CannotConnectNowError,
            exceptions.IdleSessionTimeoutError,
            exceptions.TooManyConnectionsError,
        )

        def check(exc: BaseException) -> bool:
            # A rejection of ours made asyncpg-compatible is not the server's doing.
            return isinstance(exc, failures) and not isinstance(exc, ResilienceError)

        def login(exc: BaseException) -> bool:
            return (
                isinstance(exc, exceptions.PostgresError)
                and not isinstance(exc, ResilienceError)
                and sqlstate_is_login_failure(getattr(exc, "sqlstate", None))
            )

        register_transient(
            predicate_error("AsyncpgConnectionFailure", check),
            predicate_error("NetworkOSError", network_error),
        )
        register_login_failure(predicate_error("AsyncpgLoginFailure", login))
        return [
            ("asyncpg", "connect", _wrap_connect),
            ("asyncpg.connection", "connect", _wrap_connect),
            *[("asyncpg.pool", f"Pool.{name}", _wrap_pool_statement) for name in _STATEMENTS],
            *[
                ("asyncpg.connection", f"Connection.{name}", _wrap_statement)
                for name in _STATEMENTS
            ],
        ]


def connect_target(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """The target of ``asyncpg.connect(*args, **kwargs)`` (host, port and database only)."""
    dsn = args[0] if args else kwargs.get("dsn")
    host: Any = None
    port: Any = None
    database: Any = None
    if dsn:
        parts = urlsplit(str(dsn))
        query = parse_qs(parts.query)
        netloc = parts.netloc.rpartition("@")[2]  # never look at the credentials
        first = netloc.split(",", 1)[0]
        if first.startswith("["):
            host, _, rest = first[1:].partition("]")
            port = rest.lstrip(":") or None
        elif first:
            host, _, port_text = first.partition(":")
            port = port_text or None
        database = unquote(parts.path.lstrip("/")) or None
        host = query.get("host", [host])[0] or host
        port = query.get("port", [port])[0] or port
        database = query.get("dbname", query.get("database", [database]))[0] or database
    host = kwargs.get("host") or host or os.environ.get("PGHOST")
    port = kwargs.get("port") or port or os.environ.get("PGPORT")
    database = kwargs.get("database") or database or os.environ.get("PGDATABASE")
    if isinstance(host, list | tuple):
        host = host[0] if host else None
    if isinstance(port, list | tuple):
        port = port[0] if port else None
    return pg_target(unquote(str(host)) if host else None, port, database)


def connection_target(conn: Any) -> str:
    """The target of an open asyncpg connection (or a pool's connection proxy)."""
    addr = getattr(conn, "_addr", None)
    params = getattr(conn, "_params", None)
    database = getattr(params, "database", None)
    if isinstance(addr, tuple) and len(addr) >= 2:
        return pg_target(addr[0], addr[1], database)
    port: Any = None
    if isinstance(addr, str):  # a Unix socket: /run/postgresql/.s.PGSQL.5432
        port = addr.rpartition(".")[2]
    return pg_target(None, port, database)


_CONNECT_TIMEOUT = 60.0
"""asyncpg.connect's own default timeout."""


def _connect_timeout(kwargs: dict[str, Any]) -> dict[str, Any]:
    # The caller's own timeout stays; without one, the time left in the attempt (not more
    # than asyncpg's default).
    if kwargs.get("timeout") is not None:
        return kwargs
    left = remaining()
    if left is None:
        return kwargs
    return {**kwargs, "timeout": min(max(left, 0.001), _CONNECT_TIMEOUT)}


def _statement_call(
    target: str,
    wrapped: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    default: float | None,
) -> Callable[[], Awaitable[Any]]:
    """
    One attempt of a statement: with ``timeout=`` cut to the attempt when one is configured.

    asyncpg's ``TimeoutError`` for a timeout buttress cut gets a note saying so.
    """
    attempt = pushed_timeout(pipeline_for(target))
    if attempt is None:
        return lambda: wrapped(*args, **kwargs)

    async def call() -> Any:
        left = remaining()
        if left is None:
            return await wrapped(*args, **kwargs)
        theirs = kwargs.get("timeout")
        if theirs is None:
            theirs = default
        left = max(left, 0.001)
        if theirs is not None and theirs <= left:
            return await wrapped(*args, **kwargs)
        try:
            return await wrapped(*args, **{**kwargs, "timeout": left})
        except TimeoutError as exc:
            if not isinstance(exc, ResilienceError):
                add_note(
                    exc,
                    timeout_note(
                        target,
                        f"this statement's timeout ({left:.3g} s)",
                        attempt,
                        "set timeout.respect_app_timeout = true for it, so that asyncpg's own "
                        "timeout= and command_timeout apply",
                    ),
                )
            raise

    return call


async def _wrap_connect(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if passthrough(KIND):
        return await wrapped(*args, **kwargs)
    try:
        target = connect_target(args, kwargs)
    except Exception:
        return await wrapped(*args, **kwargs)  # a DSN we cannot read: asyncpg's own error

    def attempt() -> Any:
        return wrapped(*args, **_connect_timeout(kwargs))

    return await _arun(target, attempt, retryable=True, connect=True)


def driver_error(exc: BaseException) -> BaseException:
    """
    A rejection of ours re-made as one that is also asyncpg's ``ConnectionDoesNotExistError``.

    That class (SQLSTATE 08003) is what asyncpg raises when an operation finds no usable
    connection, and it is a ``PostgresConnectionError`` and a ``PostgresError`` too, so every
    ``except`` clause an application writes for a lost connection catches it. Its message is
    ours; ``detail``, ``hint`` and the other server fields are ``None``. A timeout of ours is
    left as it is: it already is a builtin ``TimeoutError``, which is ``asyncio.TimeoutError``,
    what asyncpg raises when its own ``timeout=`` expires.
    """
    if not isinstance(exc, RejectedError):
        return exc
    exceptions = importlib.import_module("asyncpg.exceptions")
    return compatible(exc, exceptions.ConnectionDoesNotExistError)


async def _arun(
    target: str, fn: Callable[[], Awaitable[Any]], *, retryable: bool, connect: bool = False
) -> Any:
    try:
        return await arun(target, fn, retryable=retryable, connect=connect)
    except RejectedError as exc:
        raise driver_error(exc) from exc.__cause__


async def _wrap_pool_statement(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if passthrough(KIND) or instance.is_closing():
        return await wrapped(*args, **kwargs)
    try:
        target = connect_target(
            tuple(getattr(instance, "_connect_args", ())),
            dict(getattr(instance, "_connect_kwargs", {})),
        )
    except Exception:
        return await wrapped(*args, **kwargs)
    query = _query(args, kwargs)
    if transaction_control(query):
        return await adirect(lambda: wrapped(*args, **kwargs))
    default = getattr(instance, "_connect_kwargs", {}).get("command_timeout")
    read = wrapped.__name__ != "executemany" and statement_kind(query) == "read"
    attempt = _statement_call(target, wrapped, args, kwargs, default)
    return await _arun(target, attempt, retryable=read)


def _query(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return args[0] if args else kwargs.get("query", kwargs.get("command", ""))


async def _wrap_statement(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if passthrough(KIND) or instance.is_closed():
        return await wrapped(*args, **kwargs)
    if transaction_control(_query(args, kwargs)):
        return await adirect(lambda: wrapped(*args, **kwargs))
    config = getattr(instance, "_config", None)
    default = getattr(config, "command_timeout", None)
    target = connection_target(instance)
    attempt = _statement_call(target, wrapped, args, kwargs, default)
    return await _arun(target, attempt, retryable=False)


INTEGRATION = AsyncpgIntegration()
