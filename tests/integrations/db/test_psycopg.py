"""psycopg 3, sync and async, against the real PostgreSQL: connects retry, statements do not."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import psycopg
import psycopg.errors
import pytest
from tests.integrations.db.pg import DSN, TARGET, Counter, FlakyProxy, breaker_of, outcomes, retries

import buttress
from buttress.testing import capture_events


def test_target_is_host_port_and_database(activated: None) -> None:
    """A connection and its statements run under postgresql:127.0.0.1:5432/test."""
    with psycopg.connect(DSN, autocommit=True) as conn:
        assert [(1,)] == conn.execute("SELECT 1").fetchall()
    assert [TARGET] == buttress.targets()
    assert {"success": 2} == outcomes(TARGET)


def test_connect_retries_until_the_server_answers(
    activated: None, flaky_proxy: Callable[[int], FlakyProxy]
) -> None:
    """Two dropped connection attempts, then the real server: three attempts, one connection."""
    proxy = flaky_proxy(2)
    with capture_events() as events, psycopg.connect(proxy.dsn()) as conn:
        assert [(1,)] == conn.execute("SELECT 1").fetchall()
    assert 3 == proxy.accepted
    assert 2 == retries(events)


def test_async_connect_retries_until_the_server_answers(
    activated: None, flaky_proxy: Callable[[int], FlakyProxy]
) -> None:
    """AsyncConnection.connect: two dropped attempts, then a working connection."""
    proxy = flaky_proxy(2)

    async def main() -> int:
        async with await psycopg.AsyncConnection.connect(proxy.dsn()) as conn:
            cur = await conn.execute("SELECT 41 + 1")
            row = await cur.fetchone()
            assert row is not None
            return int(row[0])

    assert 42 == asyncio.run(main())
    assert 3 == proxy.accepted


def test_statement_in_a_transaction_runs_once(activated: None, counter: Counter) -> None:
    """A statement killed inside a transaction: psycopg's AdminShutdown, server count 1."""
    conn = psycopg.connect(DSN)  # not autocommit: the statement is inside a transaction
    with pytest.raises(psycopg.errors.AdminShutdown) as caught:
        conn.execute(counter.killed())
    conn.close()
    assert "57P01" == caught.value.sqlstate
    assert 1 == counter.count()
    assert 1 == breaker_of(TARGET).failures


def test_async_statement_in_an_explicit_transaction_runs_once(
    activated: None, counter: Counter
) -> None:
    """Async, autocommit with conn.transaction(): killed statement runs once, error unchanged."""

    async def main() -> None:
        conn = await psycopg.AsyncConnection.connect(DSN, autocommit=True)
        try:
            async with conn.transaction():
                await conn.execute(counter.killed())
        finally:
            await conn.close()

    with capture_events() as events, pytest.raises(psycopg.errors.AdminShutdown):
        asyncio.run(main())
    assert 1 == counter.count()
    assert 0 == retries(events)


def test_autocommit_read_on_a_plain_connection_is_not_retried(
    activated: None, counter: Counter
) -> None:
    """A dropped plain connection cannot be reused: the read runs once and the breaker counts it."""
    conn = psycopg.connect(DSN, autocommit=True)
    with capture_events() as events, pytest.raises(psycopg.errors.AdminShutdown):
        conn.execute(counter.killed())
    with pytest.raises(psycopg.OperationalError, match="closed"):
        conn.execute("SELECT 1")  # on the dead connection: psycopg's own error, no pipeline
    conn.close()
    assert 1 == counter.count()
    assert 0 == retries(events)
    snapshot = breaker_of(TARGET)
    assert (2, 1) == (snapshot.calls, snapshot.failures)  # the connect and the killed read


def test_syntax_error_passes_through_and_is_no_failure(activated: None) -> None:
    """A syntax error reaches the caller unchanged, once, and the breaker stays closed."""
    with psycopg.connect(DSN, autocommit=True) as conn, capture_events() as events:
        with pytest.raises(psycopg.errors.SyntaxError):
            conn.execute("SELEKT 1")
        assert [(1,)] == conn.execute("SELECT 1").fetchall()
    assert 0 == retries(events)
    snapshot = breaker_of(TARGET)
    assert (0, buttress.CircuitState.CLOSED) == (snapshot.failures, snapshot.state)


def test_breaker_opens_on_a_stopped_server(
    activate_db: Callable[..., None], spare_port: int
) -> None:
    """Refused connects open the breaker; the next connect is a CircuitOpenError."""
    activate_db({"breaker.minimum_calls": 2, "breaker.window_size": 2, "retry.attempts": 1})
    dsn = f"postgresql://root@127.0.0.1:{spare_port}/test"
    for _ in range(2):
        with pytest.raises(psycopg.OperationalError, match="refused"):
            psycopg.connect(dsn)
    with pytest.raises(buttress.CircuitOpenError):
        psycopg.connect(dsn)
    assert buttress.CircuitState.OPEN == breaker_of(f"postgresql:127.0.0.1:{spare_port}/test").state


def test_open_breaker_does_not_touch_the_network(
    activate_db: Callable[..., None], flaky_proxy: Callable[[int], FlakyProxy]
) -> None:
    """Once open, connects are rejected without a single new TCP connection."""
    activate_db({"breaker.minimum_calls": 2, "breaker.window_size": 2, "retry.attempts": 1})
    proxy = flaky_proxy(1000)  # a server that drops every connection
    for _ in range(2):
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(proxy.dsn())
    for _ in range(5):
        with pytest.raises(buttress.CircuitOpenError):
            psycopg.connect(proxy.dsn())
    assert 2 == proxy.accepted


def test_attempt_timeout_becomes_the_statement_timeout(activate_db: Callable[..., None]) -> None:
    """timeout.attempt = 0.3 reaches the server: statement_timeout is 300ms, pg_sleep is cancelled."""
    activate_db({"timeout.attempt": 0.3})
    with psycopg.connect(DSN, autocommit=True) as conn:
        assert [("300ms",)] == conn.execute("SHOW statement_timeout").fetchall()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(5)")
    assert 0 == breaker_of(TARGET).failures


def test_callers_statement_timeout_wins(activate_db: Callable[..., None]) -> None:
    """A statement_timeout in the caller's options is kept."""
    activate_db({"timeout.attempt": 0.3})
    with psycopg.connect(DSN, autocommit=True, options="-c statement_timeout=1234") as conn:
        assert [("1234ms",)] == conn.execute("SHOW statement_timeout").fetchall()
