"""SQLAlchemy engines (psycopg, psycopg2, asyncpg) against the real PostgreSQL: pool-backed retries."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy
import sqlalchemy.exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from tests.integrations.db.pg import CANARY, TARGET, Admin, Counter, breaker_of, outcomes, retries

import buttress
from buttress.testing import capture_events

URL = f"postgresql+{{driver}}://root:{CANARY}@127.0.0.1:5432/test"


@pytest.fixture(params=["psycopg", "psycopg2"])
def engine(request: pytest.FixtureRequest, activated: None) -> Iterator[sqlalchemy.Engine]:
    """A synchronous engine on each libpq driver, with a one-connection pool."""
    e = sqlalchemy.create_engine(URL.format(driver=request.param), pool_size=1, max_overflow=0)
    yield e
    e.dispose()


def test_one_pipeline_call_per_statement(engine: sqlalchemy.Engine) -> None:
    """The driver integration passes through under SQLAlchemy: one call per logical operation."""
    with engine.connect() as conn:
        assert 1 == conn.execute(text("SELECT 1")).scalar()
        assert 2 == conn.scalar(sqlalchemy.select(sqlalchemy.literal(2)))
        assert [(3,)] == conn.exec_driver_sql("SELECT 3").fetchall()
    assert [TARGET] == buttress.targets()
    assert {"success": 4} == outcomes(TARGET)  # the checkout and three statements


def test_read_is_retried_on_a_fresh_connection(engine: sqlalchemy.Engine, counter: Counter) -> None:
    """A read whose session dies twice runs three times at the server, then returns its row."""
    with engine.connect() as conn, capture_events() as events:
        assert True is conn.execute(text(counter.killed_until(3))).scalar()
        assert 1 == conn.execute(text("SELECT 1")).scalar()  # the connection is usable
    assert 3 == counter.count()
    assert 2 == retries(events)


def test_read_gives_up_after_the_configured_attempts(
    engine: sqlalchemy.Engine, counter: Counter
) -> None:
    """Killed every time: three runs at the server, then SQLAlchemy's own OperationalError."""
    with engine.connect() as conn, pytest.raises(sqlalchemy.exc.OperationalError) as caught:
        conn.execute(text(counter.killed()))
    assert caught.value.connection_invalidated
    assert 3 == counter.count()


def test_pooled_connection_killed_by_an_admin_heals(
    engine: sqlalchemy.Engine, counter: Counter, admin: Admin
) -> None:
    """A pooled session killed from outside: the next read fails once, then runs on a new session."""
    with engine.connect() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        conn.rollback()
        assert [(True,)] == admin.run(f"SELECT pg_terminate_backend({pid}, 5000)")
        with capture_events() as events:
            assert 1 == conn.execute(text(f"SELECT {counter.hit}")).scalar()
        assert pid != conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    assert 1 == counter.count()  # the dead session never ran it
    assert 1 == retries(events)


def test_statement_in_an_explicit_transaction_runs_once(
    engine: sqlalchemy.Engine, counter: Counter
) -> None:
    """Inside engine.begin() a killed read runs once and SQLAlchemy's error is unchanged."""
    with capture_events() as events, pytest.raises(sqlalchemy.exc.OperationalError):
        with engine.begin() as conn:
            conn.execute(text(counter.killed()))
    assert 1 == counter.count()
    assert 0 == retries(events)
    assert 1 == breaker_of(TARGET).failures


def test_second_statement_of_a_transaction_runs_once(
    engine: sqlalchemy.Engine, counter: Counter
) -> None:
    """After an autobegun statement the transaction is open: the next one is not retried."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
        with pytest.raises(sqlalchemy.exc.OperationalError):
            conn.execute(text(counter.killed()))
    assert 1 == counter.count()


def test_write_is_not_retried(engine: sqlalchemy.Engine, counter: Counter) -> None:
    """A write whose session dies runs once."""
    with engine.connect() as conn, pytest.raises(sqlalchemy.exc.OperationalError):
        conn.execute(
            text(
                f"CREATE TEMP TABLE t AS SELECT {counter.hit} AS n, pg_terminate_backend(pg_backend_pid())"
            )
        )
    assert 1 == counter.count()


def test_syntax_error_passes_through(engine: sqlalchemy.Engine) -> None:
    """A syntax error is SQLAlchemy's ProgrammingError, not retried, no breaker failure."""
    with engine.connect() as conn, capture_events() as events:
        with pytest.raises(sqlalchemy.exc.ProgrammingError):
            conn.execute(text("SELEKT 1"))
    assert 0 == retries(events)
    assert 0 == breaker_of(TARGET).failures


def test_breaker_opens_on_a_stopped_server(activate_db: Any, spare_port: int) -> None:
    """Refused checkouts open the breaker; then engine.connect() raises CircuitOpenError."""
    activate_db({"breaker.minimum_calls": 2, "breaker.window_size": 2, "retry.attempts": 1})
    engine = sqlalchemy.create_engine(f"postgresql+psycopg://root@127.0.0.1:{spare_port}/test")
    try:
        for _ in range(2):
            with pytest.raises(sqlalchemy.exc.OperationalError):
                engine.connect()
        with pytest.raises(buttress.CircuitOpenError):
            engine.connect()
    finally:
        engine.dispose()


def test_async_engine_read_is_retried(activated: None, counter: Counter) -> None:
    """AsyncEngine on asyncpg: a read whose session dies twice runs three times, then succeeds."""

    async def main() -> Any:
        engine = create_async_engine(URL.format(driver="asyncpg"), pool_size=1, max_overflow=0)
        try:
            async with engine.connect() as conn:
                value = (await conn.execute(text(counter.killed_until(3)))).scalar()
                assert 1 == (await conn.execute(text("SELECT 1"))).scalar()
                return value
        finally:
            await engine.dispose()

    with capture_events() as events:
        assert True is asyncio.run(main())
    assert 3 == counter.count()
    assert 2 == retries(events)
    assert [TARGET] == buttress.targets()


def test_async_engine_explicit_transaction_runs_once(activated: None, counter: Counter) -> None:
    """AsyncEngine.begin(): a killed read runs once, SQLAlchemy's error unchanged."""

    async def main() -> None:
        engine = create_async_engine(URL.format(driver="asyncpg"), pool_size=1, max_overflow=0)
        try:
            async with engine.begin() as conn:
                await conn.execute(text(counter.killed()))
        finally:
            await engine.dispose()

    with capture_events() as events, pytest.raises(sqlalchemy.exc.DBAPIError):
        asyncio.run(main())
    assert 1 == counter.count()
    assert 0 == retries(events)
