"""
redis-py (sync and asyncio): every command and every pipeline run through ``redis:host:port/db``.

What is patched, and why there:

- ``redis.Redis.execute_command`` and ``redis.asyncio.Redis.execute_command``: every command
  method (``get``, ``set``, ``hgetall``, ``scan_iter``...) ends there, one logical operation
  each.
- ``Pipeline.execute`` (sync and asyncio): a pipeline or ``MULTI``/``EXEC`` transaction is one
  logical operation. Commands queued on a pipeline do not pass through ``execute_command``;
  commands a pipeline sends immediately after ``WATCH`` are part of the transaction and are
  not wrapped on their own.
- ``Redis.__init__`` (sync and asyncio), to hand it a configured attempt timeout (see below).

What is retried, and why only that:

- **Read-only commands** (:data:`READ_ONLY`, a fixed, documented list so that a redis-py
  upgrade cannot silently widen it) on ``redis.ConnectionError`` and ``redis.TimeoutError``:
  running a read twice changes nothing. Authentication and authorization failures are
  subclasses of ``ConnectionError`` in redis-py, but a wrong password does not heal: they are
  neither retried nor counted as breaker failures.
- **Never a write** (``SET``, ``INCR``, ``LPUSH``, ``EVAL``, any command not in the list): after
  a lost connection the client cannot know whether the server ran it, and ``INCR`` twice is a
  wrong counter. Unless the target's configuration says ``db.retry_writes = true``
  (``[defaults.db]`` or a target table): then a write is retried like a read on a connection
  error (``redis.ConnectionError``: refused, reset, closed by the server), but never once one
  of its attempts timed out (``redis.TimeoutError``, or buttress's attempt timeout): a timed-out
  write was sent and has most likely run. That is at-least-once delivery, for idempotent
  writes (``SET``, ``HSET``, ``DEL``, ``EXPIRE``...) or counters that tolerate a double count:
  a connection that drops after the server ran the command but before its reply arrived
  makes the retry run it a second time.
- **Never a pipeline**: it may hold writes, and redis-py clears the pipeline's command stack
  when ``execute`` fails, so there would be nothing left to resend.

**redis-py's own retries are kept, and then buttress adds none.** Since redis-py 6 a client
built with ``Redis(...)`` retries by itself, ``Retry(ExponentialWithJitterBackoff(0.01, 1), 10)``
on connection errors and timeouts, for reads *and writes* (at-least-once). Switching that off
and retrying only reads would turn a connection blip on a write, which redis-py absorbed
without buttress, into an error the app never saw before. So a client with redis-py retries
(its default, or a retry policy the app configured) keeps them, and its commands run through
the pipeline without retries of buttress's: one buttress attempt is redis-py's whole loop, and
the breaker, the bulkhead and the metrics still apply. The rules above are buttress's for
clients without redis-py retries: those built from a URL or a connection pool (redis-py gives
their connections none), or given ``retry=Retry(..., 0)``.

Timeouts: when ``timeout.attempt`` is configured for the target (never the template's default,
never in observe mode) and the application passed no ``socket_timeout`` /
``socket_connect_timeout``, those become the attempt timeout: redis-py then stops waiting for a
reply in time (a synchronous call cannot be interrupted any other way), and its
``TimeoutError`` carries a note saying that the timeout was buttress's. In asyncio, the attempt
is also cancelled, which makes redis-py drop the connection so that a late reply is never read
as the next command's. Blocking commands (``BLPOP`` and friends) longer than the socket timeout
need an explicit ``socket_timeout`` from the application, as without buttress. In observe mode
nothing changes: redis-py keeps its own retries and timeouts.

Login failures: ``AuthenticationError`` (a wrong password or user: ``WRONGPASS``; no password
given to a server that requires one: ``NOAUTH``), ``AuthorizationError`` and
``ExternalAuthProviderError`` are registered as login failures: never retried, never a breaker
failure, although redis-py makes them ``ConnectionError`` subclasses.

A rejection by buttress (open breaker, full bulkhead) is raised as an exception that is also a
``redis.ConnectionError``; its total timeout as one that is also a ``redis.TimeoutError``.

The target never holds the password, the key names or the values: buttress records only the
target, the outcome and the error's type.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import asyncio
import builtins
import inspect
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from typing import Any

from .. import _activation
from .._exceptions import RejectedError, ResilienceError
from .._exceptions import TimeoutError as PolicyTimeoutError
from ..policies._retry import no_retry
from ._base import Integration, compatible, passthrough
from ._db import (
    KIND,
    arun,
    db_target,
    note_pushed,
    pipeline_for,
    predicate_error,
    pushed_timeout,
    register_login_failure,
    register_transient,
    remember_pushed,
    run,
)

__all__ = ["INTEGRATION", "READ_ONLY", "RedisIntegration"]

READ_ONLY = frozenset(
    {
        # connection and server
        "PING", "ECHO", "TIME", "DBSIZE", "INFO", "LASTSAVE", "ROLE",
        # keys
        "EXISTS", "TYPE", "TTL", "PTTL", "EXPIRETIME", "PEXPIRETIME", "KEYS", "SCAN",
        "RANDOMKEY", "DUMP", "OBJECT", "MEMORY",
        # strings and bits
        "GET", "MGET", "STRLEN", "GETRANGE", "SUBSTR", "GETBIT", "BITCOUNT", "BITPOS", "LCS",
        "BITFIELD_RO",
        # hashes
        "HGET", "HMGET", "HGETALL", "HKEYS", "HVALS", "HLEN", "HEXISTS", "HSTRLEN", "HSCAN",
        "HRANDFIELD", "HTTL", "HPTTL", "HEXPIRETIME", "HPEXPIRETIME",
        # lists
        "LRANGE", "LLEN", "LINDEX", "LPOS",
        # sets
        "SMEMBERS", "SISMEMBER", "SMISMEMBER", "SCARD", "SRANDMEMBER", "SSCAN", "SINTER",
        "SINTERCARD", "SUNION", "SDIFF",
        # sorted sets
        "ZRANGE", "ZRANGEBYSCORE", "ZRANGEBYLEX", "ZREVRANGE", "ZREVRANGEBYSCORE",
        "ZREVRANGEBYLEX", "ZSCORE", "ZMSCORE", "ZRANK", "ZREVRANK", "ZCARD", "ZCOUNT",
        "ZLEXCOUNT", "ZSCAN", "ZRANDMEMBER", "ZINTER", "ZUNION", "ZDIFF", "ZINTERCARD",
        # streams, geo, hyperloglog (PFCOUNT may rewrite its cache, but never its count)
        "XRANGE", "XREVRANGE", "XLEN", "XINFO", "XPENDING",
        "GEOPOS", "GEODIST", "GEOHASH", "GEOSEARCH", "GEORADIUS_RO", "GEORADIUSBYMEMBER_RO",
        "PFCOUNT",
        # read-only scripts
        "EVAL_RO", "EVALSHA_RO", "FCALL_RO",
    }
)  # fmt: skip
"""The commands retried on connection errors and timeouts: they only read."""

_NOT_TRANSIENT_NAMES = ("AuthenticationError", "AuthorizationError", "ExternalAuthProviderError")


def _login_errors() -> tuple[type[BaseException], ...]:
    from redis import exceptions  # noqa: PLC0415

    return tuple(
        getattr(exceptions, name) for name in _NOT_TRANSIENT_NAMES if hasattr(exceptions, name)
    )


def _is_login_failure(exc: BaseException) -> bool:
    return isinstance(exc, _login_errors()) and not isinstance(exc, ResilienceError)


class _ConnectionFailureMeta(type):
    def __instancecheck__(cls, obj: object) -> bool:
        from redis import exceptions  # noqa: PLC0415

        if not isinstance(obj, exceptions.ConnectionError | exceptions.TimeoutError):
            return False
        if isinstance(obj, ResilienceError):
            return False
        return not isinstance(obj, _login_errors())


class ConnectionFailure(Exception, metaclass=_ConnectionFailureMeta):  # noqa: N818
    """Matches redis-py connection errors and timeouts, but not authentication failures."""


def command_name(args: tuple[Any, ...]) -> str:
    """The command's name (its first word, upper case); never its keys or values."""
    if not args:
        return ""
    first = args[0]
    text = first.decode(errors="replace") if isinstance(first, bytes) else str(first)
    words = text.split(None, 1)
    return words[0].upper() if words else ""


def _target_of(client: Any) -> str:
    pool = getattr(client, "connection_pool", None)
    kw: dict[str, Any] = getattr(pool, "connection_kwargs", None) or {}
    host = kw.get("host")
    if host is None and kw.get("path"):
        host = str(kw["path"])  # a unix socket: its path, no port
        return db_target("redis", host, None, str(kw.get("db", 0)))
    return db_target(
        "redis", str(host or "localhost"), int(kw.get("port") or 6379), str(kw.get("db", 0))
    )


class RedisIntegration(Integration):
    """Patches ``Redis.__init__``, ``Redis.execute_command`` and ``Pipeline.execute``."""

    name = "redis"
    module = "redis"

    def patches(self) -> list[tuple[str, str, Any]]:
        """The patch list."""
        register_transient(ConnectionFailure)
        register_login_failure(predicate_error("RedisLoginFailure", _is_login_failure))
        return [
            ("redis.client", "Redis.__init__", _wrap_init),
            ("redis.client", "Redis.execute_command", _wrap_execute_command),
            ("redis.client", "Pipeline.execute", _wrap_pipeline),
            ("redis.asyncio.client", "Redis.__init__", _wrap_init),
            ("redis.asyncio.client", "Redis.execute_command", _wrap_async_execute_command),
            ("redis.asyncio.client", "Pipeline.execute", _wrap_async_pipeline),
        ]


# --- construction: socket timeouts from a configured attempt timeout ---------------------------

_PARAMETERS: dict[Any, list[str]] = {}


def _given(wrapped: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The arguments the application passed, by name (defaults not included)."""
    key = getattr(wrapped, "__func__", wrapped)
    names = _PARAMETERS.get(key)
    if names is None:
        names = [
            p.name
            for p in inspect.signature(wrapped).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        _PARAMETERS[key] = names
    return {**dict(zip(names, args, strict=False)), **kwargs}


def _adjust(
    wrapped: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[dict[str, Any], tuple[str, str, float] | None]:
    """The arguments to construct with, and the socket_timeout buttress added (for the note)."""
    given = _given(wrapped, args, kwargs)
    if "connection_pool" in given or _activation.observing():
        return kwargs, None
    kwargs = dict(kwargs)
    if given.get("unix_socket_path") is not None:
        return kwargs, None
    target = db_target(
        "redis",
        str(given.get("host") or "localhost"),
        int(given.get("port") or 6379),
        str(given.get("db", 0)),
    )
    limit = pushed_timeout(pipeline_for(target))
    ours = [n for n in ("socket_timeout", "socket_connect_timeout") if n not in given]
    if limit is None or not ours:
        return kwargs, None
    for name in ours:
        kwargs[name] = limit
    # The note is for a reply that did not come in time: only when socket_timeout is ours.
    return kwargs, ((target, "socket_timeout", limit) if "socket_timeout" in ours else None)


def _construct(
    wrapped: Any,
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    adjusted, pushed = _adjust(wrapped, args, kwargs)
    result = wrapped(*args, **adjusted)
    if pushed is not None:
        target, names, limit = pushed
        # The timeouts live in the client's connection pool, which its pipelines share.
        remember_pushed(
            getattr(instance, "connection_pool", None),
            target,
            f"this client's {names} ({limit:g} s)",
            limit,
            "pass your own socket_timeout to the client, which buttress leaves as it is",
        )
    return result


def _wrap_init(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if passthrough(KIND):
        return wrapped(*args, **kwargs)
    return _construct(wrapped, instance, args, kwargs)


# --- commands and pipelines -------------------------------------------------------------------


def _compatible(exc: BaseException) -> BaseException:
    from redis import exceptions  # noqa: PLC0415

    if isinstance(exc, PolicyTimeoutError):
        clone = compatible(exc, exceptions.TimeoutError)
    else:
        clone = compatible(exc, exceptions.ConnectionError)
    if clone is not exc:
        # What RedisError.__init__ would have set (its __repr__ reads error_type), as redis-py
        # sets them for its own connection errors and timeouts.
        clone.__dict__.update(error_type=exceptions.ExceptionType.NETWORK, status_code=None)
    return clone


def _sync(target: str, fn: Callable[[], Any], retryable: bool) -> Any:
    try:
        return run(target, fn, retryable=retryable)
    except (RejectedError, PolicyTimeoutError) as exc:
        raise _compatible(exc) from exc.__cause__


async def _async(target: str, fn: Callable[[], Awaitable[Any]], retryable: bool) -> Any:
    try:
        return await arun(target, fn, retryable=retryable)
    except (RejectedError, PolicyTimeoutError) as exc:
        raise _compatible(exc) from exc.__cause__


def _note_timed_out(client: Any, exc: BaseException) -> None:
    # redis-py's own TimeoutError, from a socket timeout buttress gave the client.
    from redis import exceptions  # noqa: PLC0415

    if isinstance(exc, exceptions.TimeoutError) and not isinstance(exc, ResilienceError):
        note_pushed(getattr(client, "connection_pool", None), exc)


def _timed_out(exc: BaseException) -> bool:
    # A write that timed out was sent: redis-py's socket timeout, or our attempt timeout (the
    # attempt sees the cancellation; a synchronous one, the builtin TimeoutError).
    from redis import exceptions  # noqa: PLC0415

    return isinstance(exc, exceptions.TimeoutError | builtins.TimeoutError | asyncio.CancelledError)


def _sync_write(target: str, fn: Callable[[], Any]) -> Any:
    """A write under ``db.retry_writes``: retried on connection errors, until one times out."""
    stop = ExitStack()

    def attempt() -> Any:
        try:
            return fn()
        except BaseException as exc:
            if _timed_out(exc):
                # Read by the retry when it decides, in this same context; undone below.
                stop.enter_context(no_retry())
            raise

    with stop:
        return _sync(target, attempt, True)


async def _async_write(target: str, fn: Callable[[], Awaitable[Any]]) -> Any:
    """Like :func:`_sync_write`, for asyncio (the attempt runs in the caller's task)."""
    stop = ExitStack()

    async def attempt() -> Any:
        try:
            return await fn()
        except BaseException as exc:
            if _timed_out(exc):
                stop.enter_context(no_retry())
            raise

    with stop:
        return await _async(target, attempt, True)


def _retries_itself(client: Any) -> bool:
    """Whether redis-py retries this client's commands itself (its default since redis-py 6)."""
    retry = client.get_retry()
    return retry is not None and retry.get_retries() > 0


def _command_wrapper(
    send: Callable[[str, Callable[[], Any], bool], Any],
    send_write: Callable[[str, Callable[[], Any]], Any],
) -> Callable[..., Any]:
    """The ``execute_command`` wrapper of one driver kind (sync or asyncio), sharing the rules."""

    def wrap(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if passthrough(KIND):
            return wrapped(*args, **kwargs)
        target = _target_of(instance)
        if _retries_itself(instance):  # redis-py's own retries stay; buttress adds none
            return send(target, lambda: wrapped(*args, **kwargs), False)
        if command_name(args) in READ_ONLY:
            return send(target, lambda: wrapped(*args, **kwargs), True)
        if _activation.db_options(target).retry_writes:
            return send_write(target, lambda: wrapped(*args, **kwargs))
        return send(target, lambda: wrapped(*args, **kwargs), False)

    return wrap


def _noting(wrap: Callable[..., Any]) -> Callable[..., Any]:
    """Sync *wrap*, adding the timeout note to redis-py's TimeoutError."""

    def noting(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            return wrap(wrapped, instance, args, kwargs)
        except Exception as exc:
            _note_timed_out(instance, exc)
            raise

    return noting


def _anoting(wrap: Callable[..., Any]) -> Callable[..., Any]:
    """Asyncio *wrap* (it returns an awaitable), adding the timeout note when awaited."""

    async def noting(
        wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        try:
            return await wrap(wrapped, instance, args, kwargs)
        except Exception as exc:
            _note_timed_out(instance, exc)
            raise

    return noting


def _pipeline_wrapper(send: Callable[[str, Callable[[], Any], bool], Any]) -> Callable[..., Any]:
    """The ``Pipeline.execute`` wrapper of one driver kind: a batch may write, never retried."""

    def wrap(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if passthrough(KIND):
            return wrapped(*args, **kwargs)
        return send(_target_of(instance), lambda: wrapped(*args, **kwargs), False)

    return wrap


_wrap_execute_command = _noting(_command_wrapper(_sync, _sync_write))
_wrap_async_execute_command = _anoting(_command_wrapper(_async, _async_write))
_wrap_pipeline = _noting(_pipeline_wrapper(_sync))
_wrap_async_pipeline = _anoting(_pipeline_wrapper(_async))


INTEGRATION = RedisIntegration()
