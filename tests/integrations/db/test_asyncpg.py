"""asyncpg against the real PostgreSQL: pool reads retry on a fresh connection, the rest do not."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from tests.integrations.db.pg import DSN, TARGET, Counter, FlakyProxy, breaker_of, outcomes, retries

import buttress
from buttress.testing import capture_events

KILLED = (asyncpg.exceptions.ConnectionDoesNotExistError, asyncpg.exceptions.AdminShutdownError)
"""What asyncpg raises when the server ends the session mid-statement (the first, in practice)."""


def test_target_and_statements(activated: None) -> None:
    """A connection and a pool run under postgresql:127.0.0.1:5432/test, one call per statement."""

    async def main() -> tuple[Any, Any]:
        conn = await asyncpg.connect(DSN)
        try:
            one = await conn.fetchval("SELECT 1")
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(DSN, min_size=1, max_size=1)
        try:
            two = await pool.fetchval("SELECT 2")
        finally:
            await pool.close()
        return one, two

    assert (1, 2) == asyncio.run(main())
    assert [TARGET] == buttress.targets()
    # connect, fetchval; the pool's connect and its fetchval (the connection's own calls inside
    # it, the statement and the reset on release, pass through)
    assert 4 == outcomes(TARGET)["success"]


def test_pool_read_is_retried_on_a_fresh_connection(activated: None, counter: Counter) -> None:
    """A pool read whose session dies twice runs three times at the server, then succeeds."""

    async def main() -> Any:
        pool = await asyncpg.create_pool(DSN, min_size=1, max_size=1)
        try:
            return await pool.fetchval(counter.killed_until(3))
        finally:
            await pool.close()

    with capture_events() as events:
        assert True is asyncio.run(main())
    assert 3 == counter.count()
    assert 2 == retries(events)


def test_pool_read_gives_up_after_the_configured_attempts(
    activated: None, counter: Counter
) -> None:
    """Killed every time: three runs at the server, then asyncpg's own error."""

    async def main() -> Any:
        pool = await asyncpg.create_pool(DSN, min_size=1, max_size=1)
        try:
            return await pool.fetchval(counter.killed())
        finally:
            await pool.close()

    with pytest.raises(KILLED):
        asyncio.run(main())
    assert 3 == counter.count()


def test_pool_write_is_not_retried(activated: None, counter: Counter, admin: Any) -> None:
    """A write through the pool whose session dies runs once: it may have committed."""
    admin.run(f"CREATE TABLE {counter.name}_t (n bigint)")

    async def main() -> Any:
        pool = await asyncpg.create_pool(DSN, min_size=1, max_size=1)
        try:
            return await pool.execute(
                f"INSERT INTO {counter.name}_t "
                f"SELECT {counter.hit} WHERE pg_terminate_backend(pg_backend_pid())"
            )
        finally:
            await pool.close()

    try:
        with pytest.raises(KILLED):
            asyncio.run(main())
        assert 1 == counter.count()
    finally:
        admin.run(f"DROP TABLE {counter.name}_t")


def test_statement_in_a_transaction_runs_once(activated: None, counter: Counter) -> None:
    """Inside conn.transaction() a killed read runs once and asyncpg's error is unchanged."""

    async def main() -> None:
        conn = await asyncpg.connect(DSN)
        try:
            # started by hand: the context manager's exit would raise its own InterfaceError
            await conn.transaction().start()
            assert conn.is_in_transaction()
            await conn.fetchval(counter.killed())
        finally:
            await conn.close()

    with capture_events() as events, pytest.raises(KILLED):
        asyncio.run(main())
    assert 1 == counter.count()
    assert 0 == retries(events)


def test_plain_connection_read_runs_once_and_counts_for_the_breaker(
    activated: None, counter: Counter
) -> None:
    """Outside a transaction too: the connection is gone, so no retry; the breaker counts it."""

    async def main() -> None:
        conn = await asyncpg.connect(DSN)
        try:
            await conn.fetchval(counter.killed())
        finally:
            await conn.close()

    with pytest.raises(KILLED):
        asyncio.run(main())
    assert 1 == counter.count()
    assert 1 == breaker_of(TARGET).failures


def test_connect_retries_until_the_server_answers(
    activated: None, flaky_proxy: Callable[[int], FlakyProxy]
) -> None:
    """Two dropped connection attempts, then the real server."""
    proxy = flaky_proxy(2)

    async def main() -> Any:
        conn = await asyncpg.connect(proxy.dsn())
        try:
            return await conn.fetchval("SELECT 7")
        finally:
            await conn.close()

    assert 7 == asyncio.run(main())
    assert 3 == proxy.accepted


def test_syntax_error_passes_through(activated: None) -> None:
    """A syntax error is asyncpg's own, not retried, and no breaker failure."""

    async def main() -> None:
        pool = await asyncpg.create_pool(DSN, min_size=1, max_size=1)
        try:
            await pool.fetchval("SELEKT 1")
        finally:
            await pool.close()

    with capture_events() as events, pytest.raises(asyncpg.exceptions.PostgresSyntaxError):
        asyncio.run(main())
    assert 0 == retries(events)
    assert 0 == breaker_of(TARGET).failures


def test_breaker_opens_on_a_stopped_server(
    activate_db: Callable[..., None], spare_port: int
) -> None:
    """Refused connects open the breaker; then connect raises CircuitOpenError."""
    activate_db({"breaker.minimum_calls": 2, "breaker.window_size": 2, "retry.attempts": 1})
    dsn = f"postgresql://root@127.0.0.1:{spare_port}/test"

    async def main() -> None:
        for _ in range(2):
            with pytest.raises(OSError):
                await asyncpg.connect(dsn)
        with pytest.raises(buttress.CircuitOpenError):
            await asyncpg.connect(dsn)

    asyncio.run(main())


def test_attempt_timeout_reaches_the_query(activate_db: Callable[..., None]) -> None:
    """With timeout.attempt = 0.3, pg_sleep(5) is stopped by asyncpg's timeout at about 0.3 s."""
    activate_db({"timeout.attempt": 0.3})

    async def main() -> Any:
        conn = await asyncpg.connect(DSN)
        try:
            with pytest.raises(TimeoutError):
                await conn.fetchval("SELECT pg_sleep(5)")
            return await conn.fetchval("SELECT 1")  # the query was cancelled, not the session
        finally:
            await conn.close()

    assert 1 == asyncio.run(main())
