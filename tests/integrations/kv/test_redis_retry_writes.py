"""``db.retry_writes`` against the real Redis: writes retried on connection errors, never on timeouts.

Attempts are counted by the server (``INFO commandstats``) and the result by the key itself. A
CLIENT KILL between two commands makes the next command fail on the client before the server
sees it, so a retried INCR runs exactly once (redis-py's ``incr`` sends ``INCRBY``); a write whose reply timed out has run, and is
never sent again.
"""

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import pytest
import redis
import redis.asyncio

from buttress import _activation
from buttress.telemetry import RetryScheduled, TimedOut
from buttress.testing import capture_events

from .conftest import command_calls, own_rules_async_client, own_rules_client
from .test_redis import SLOW_INCR, killed_sync_client

RETRY_WRITES = {"db.retry_writes": True}


def retries(events: list[Any]) -> int:
    return sum(1 for e in events if isinstance(e, RetryScheduled))


def test_incr_after_client_kill_is_retried_once_with_the_option(
    activate: Callable[..., None], redis_server: tuple[str, int], redis_admin: Any, redis_key: str
) -> None:
    """With db.retry_writes, INCR on a killed connection is retried once and runs once."""
    activate(db=RETRY_WRITES)
    client = killed_sync_client(redis_server, redis_admin)
    before = command_calls(redis_admin, "incrby")
    with capture_events() as events:
        assert 1 == client.incr(redis_key)
    assert b"1" == redis_admin.get(redis_key)
    assert 1 == command_calls(redis_admin, "incrby") - before
    assert 1 == retries(events)
    client.close()


def test_incr_after_client_kill_is_not_retried_without_the_option(
    activated: None, redis_server: tuple[str, int], redis_admin: Any, redis_key: str
) -> None:
    """Without it (the default), the same INCR fails once and the server never runs it."""
    client = killed_sync_client(redis_server, redis_admin)
    before = command_calls(redis_admin, "incrby")
    with capture_events() as events, pytest.raises(redis.ConnectionError):
        client.incr(redis_key)
    assert None is redis_admin.get(redis_key)
    assert 0 == command_calls(redis_admin, "incrby") - before
    assert 0 == retries(events)
    client.close()


def test_a_target_table_sets_the_option_for_its_targets(
    activate: Callable[..., None], redis_server: tuple[str, int], redis_admin: Any, redis_key: str
) -> None:
    """[targets."redis:*"] db.retry_writes = true overrides [defaults.db]; other targets keep it off."""
    activate(targets={"redis:*": RETRY_WRITES})
    target = f"redis:{redis_server[0]}:{redis_server[1]}/0"
    assert True is _activation.db_options(target).retry_writes
    assert False is _activation.db_options("postgresql:127.0.0.1:5432/test").retry_writes
    client = killed_sync_client(redis_server, redis_admin)
    with capture_events() as events:
        assert 1 == client.incr(redis_key)
    assert 1 == retries(events)
    client.close()


def test_a_write_that_timed_out_is_not_retried_even_with_the_option(
    activate: Callable[..., None], redis_server: tuple[str, int], redis_admin: Any, redis_key: str
) -> None:
    """The server ran the write but its reply came too late: it is not sent again."""
    activate(db={**RETRY_WRITES, "timeout.attempt": 0.05})
    client = own_rules_client(redis_server)
    before = command_calls(redis_admin, "eval")
    with capture_events() as events, pytest.raises(redis.TimeoutError):
        client.eval(SLOW_INCR, 1, redis_key, 300)
    assert b"1" == redis_admin.get(redis_key)  # queued behind the script: it has finished
    assert 1 == command_calls(redis_admin, "eval") - before
    assert 0 == retries(events)
    assert ["attempt"] == [e.scope for e in events if isinstance(e, TimedOut)]
    # The veto ended with the call: a later write on a killed connection is retried again.
    client.close()
    killed = killed_sync_client(redis_server, redis_admin)
    with capture_events() as later:
        assert 2 == killed.incr(redis_key)
    assert 1 == retries(later)
    killed.close()


def test_async_writes_with_the_option(
    activate: Callable[..., None], redis_server: tuple[str, int], redis_admin: Any, redis_key: str
) -> None:
    """asyncio: INCR after a kill is retried once; a timed-out write and a pipeline are not."""
    activate(db={**RETRY_WRITES, "timeout.attempt": 0.1})
    slow = f"{redis_key}:slow"
    queued = f"{redis_key}:pipeline"

    async def scenario() -> tuple[int, list[Any], BaseException | None, list[Any], list[Any]]:
        client = own_rules_async_client(redis_server)
        try:
            redis_admin.client_kill_filter(_id=await client.client_id())
            with capture_events() as incr_events:
                value = await client.incr(redis_key)
            redis_admin.client_kill_filter(_id=await client.client_id())
            with capture_events() as pipeline_events, contextlib.suppress(redis.ConnectionError):
                await client.pipeline().incr(queued).execute()
            # Last: the server stays busy with the script after the client stopped waiting.
            timed_out = None
            with capture_events() as slow_events:
                try:
                    await client.eval(SLOW_INCR, 1, slow, 500)
                except (redis.TimeoutError, TimeoutError) as exc:
                    timed_out = exc
            return value, incr_events, timed_out, slow_events, pipeline_events
        finally:
            await client.aclose()

    incr_before = command_calls(redis_admin, "incrby")
    eval_before = command_calls(redis_admin, "eval")
    try:
        value, incr_events, timed_out, slow_events, pipeline_events = asyncio.run(scenario())
        assert 1 == value
        assert 1 == retries(incr_events)
        assert timed_out is not None
        assert "TimeoutError" in repr(timed_out)  # a mixed redis error reads like redis-py's
        assert 0 == retries(slow_events)
        assert 1 == command_calls(redis_admin, "eval") - eval_before
        assert 0 == retries(pipeline_events)
        assert None is redis_admin.get(queued)
        assert 1 == command_calls(redis_admin, "incrby") - incr_before
    finally:
        redis_admin.delete(slow, queued)
