"""redis-py (sync and asyncio) against the real Redis: killed connections, reads, writes, pipelines.

A synchronous client with a connection pool checks an idle connection before lending it and
silently replaces one the server closed, so a CLIENT KILL between two commands never fails
there; the synchronous tests use ``single_connection_client=True``, which does not. The asyncio
pool lends the killed connection as it is.
"""

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

from buttress.telemetry import CircuitStateChanged, RetryScheduled, TimedOut
from buttress.testing import capture_events

from .conftest import command_calls, own_rules_async_client, own_rules_client

# Increments KEYS[1], then keeps the server busy for ARGV[1] ms before replying: the write has
# run but its reply arrives after the client stopped waiting.
SLOW_INCR = """
redis.call('INCR', KEYS[1])
local t = redis.call('TIME')
local stop = t[1] * 1000000 + t[2] + tonumber(ARGV[1]) * 1000
repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] >= stop
return 1
"""


def kinds(events: list[Any], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def killed_sync_client(server: tuple[str, int], admin: Any) -> Any:
    client = own_rules_client(server, single_connection_client=True)
    admin.client_kill_filter(_id=client.client_id())
    return client


def test_sync_read_is_retried_after_client_kill(
    activated: None, redis_server: tuple[str, int], redis_admin: Any, redis_key: str
) -> None:
    """STRLEN on a killed connection reconnects and runs once on the server."""
    redis_admin.set(redis_key, "four")
    client = killed_sync_client(redis_server, redis_admin)
    before = command_calls(redis_admin, "strlen")
    with capture_events() as events:
        assert 4 == client.strlen(redis_key)
    assert 1 == command_calls(redis_admin, "strlen") - before
    assert [f"redis:{redis_server[0]}:{redis_server[1]}/0"] == [
        e.target for e in kinds(events, RetryScheduled)
    ]
    client.close()


def test_sync_write_is_not_retried_after_client_kill(
    activated: None, redis_server: tuple[str, int], redis_admin: Any, redis_key: str
) -> None:
    """INCR on a killed connection fails once: neither buttress nor redis-py sends it again."""
    client = killed_sync_client(redis_server, redis_admin)
    before = command_calls(redis_admin, "incrby")
    with capture_events() as events, pytest.raises(redis.ConnectionError):
        client.incr(redis_key)
    assert None is redis_admin.get(redis_key)
    assert 0 == command_calls(redis_admin, "incrby") - before
    assert [] == kinds(events, RetryScheduled)
    client.close()


def test_write_whose_reply_is_lost_runs_once(
    activate: Callable[..., None], redis_server: tuple[str, int], redis_admin: Any, redis_key: str
) -> None:
    """A write the server ran but whose reply timed out is not sent again: the counter is 1."""
    activate(db={"timeout.attempt": 0.05})
    client = own_rules_client(redis_server)
    with capture_events() as events, pytest.raises(redis.TimeoutError):
        client.eval(SLOW_INCR, 1, redis_key, 300)
    assert b"1" == redis_admin.get(redis_key)  # queued behind the script: it has finished
    assert [] == kinds(events, RetryScheduled)
    assert ["attempt"] == [e.scope for e in kinds(events, TimedOut)]
    client.close()


def test_async_read_is_retried_and_write_is_not_after_client_kill(
    activated: None, redis_server: tuple[str, int], redis_admin: Any, redis_key: str
) -> None:
    """asyncio: STRLEN is retried and runs once; INCR fails once and the counter stays unset."""
    redis_admin.set(redis_key, "four")
    counter = f"{redis_key}:n"

    async def scenario() -> tuple[int, BaseException | None, list[Any], list[Any]]:
        client = own_rules_async_client(redis_server)
        try:
            redis_admin.client_kill_filter(_id=await client.client_id())
            with capture_events() as read_events:
                length = await client.strlen(redis_key)
            redis_admin.client_kill_filter(_id=await client.client_id())
            error = None
            with capture_events() as write_events:
                try:
                    await client.incr(counter)
                except redis.ConnectionError as exc:
                    error = exc
            return length, error, read_events, write_events
        finally:
            await client.aclose()

    strlen_before = command_calls(redis_admin, "strlen")
    incr_before = command_calls(redis_admin, "incrby")
    length, error, read_events, write_events = asyncio.run(scenario())
    redis_admin.delete(counter)
    assert 4 == length
    assert 1 == command_calls(redis_admin, "strlen") - strlen_before
    assert 1 == len(kinds(read_events, RetryScheduled))
    assert isinstance(error, redis.ConnectionError)
    assert 0 == command_calls(redis_admin, "incrby") - incr_before
    assert [] == kinds(write_events, RetryScheduled)


def test_async_pipeline_is_one_attempt(
    activated: None, redis_server: tuple[str, int], redis_admin: Any, redis_key: str
) -> None:
    """A pipeline on a killed connection fails once, even when it only reads."""

    async def scenario() -> tuple[BaseException | None, list[Any]]:
        client = own_rules_async_client(redis_server)
        try:
            redis_admin.client_kill_filter(_id=await client.client_id())
            with capture_events() as events:
                try:
                    await client.pipeline().incr(redis_key).get(redis_key).execute()
                except redis.ConnectionError as exc:
                    return exc, events
            return None, events
        finally:
            await client.aclose()

    error, events = asyncio.run(scenario())
    assert isinstance(error, redis.ConnectionError)
    assert None is redis_admin.get(redis_key)
    assert [] == kinds(events, RetryScheduled)


def test_sync_pipeline_runs_through_the_pipeline(
    activated: None, redis_server: tuple[str, int], redis_key: str
) -> None:
    """A sync MULTI/EXEC pipeline works unchanged under buttress."""
    client = redis.Redis(host=redis_server[0], port=redis_server[1])
    assert [1, 2] == client.pipeline().incr(redis_key).incr(redis_key).execute()
    client.close()


def test_redis_py_own_retries_are_kept_and_buttress_adds_none(
    activated: None, redis_server: tuple[str, int], redis_admin: Any, redis_key: str
) -> None:
    """A default client keeps redis-py's retries, and a write on a killed connection succeeds
    as it would without buttress: redis-py resends it, buttress schedules no retry of its own."""
    host, port = redis_server
    plain = redis.Redis(host=host, port=port, single_connection_client=True)
    assert 0 < plain.get_retry().get_retries()
    redis_admin.client_kill_filter(_id=plain.client_id())
    with capture_events() as events:
        assert 1 == plain.incr(redis_key)
    assert [] == kinds(events, RetryScheduled)
    plain.close()
    own = redis.Redis(host=host, port=port, retry=Retry(NoBackoff(), 2), socket_timeout=9)
    assert 2 == own.get_retry().get_retries()
    assert 9 == own.connection_pool.connection_kwargs["socket_timeout"]
    plain_async = redis.asyncio.Redis(host=host, port=port)
    assert 0 < plain_async.get_retry().get_retries()


def test_unknown_command_is_neither_retried_nor_a_breaker_failure(
    activate: Callable[..., None], redis_server: tuple[str, int]
) -> None:
    """A server error reply reaches the caller once and leaves a hair-trigger breaker closed."""
    activate(db={"breaker.window_size": 1, "breaker.minimum_calls": 1})
    client = redis.Redis(host=redis_server[0], port=redis_server[1])
    with capture_events() as events:
        for _ in range(3):
            with pytest.raises(redis.ResponseError):
                client.execute_command("GETT", "x")
        assert True is client.ping()
    assert [] == kinds(events, RetryScheduled)
    assert [] == kinds(events, CircuitStateChanged)
    client.close()
