"""What an application's ``except`` clauses see when buttress refuses or times out a PostgreSQL call.

Each driver's rejection (open breaker) is also the driver's own connection-level error, so code
written for the driver alone still catches it; its message is ours and holds no secret, and the
attributes the driver's error usually has are safe to read. The breaker is forced open after a
first call has created the target's pipeline; timeouts are real ones, in asyncio.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
import psycopg
import psycopg2
import pytest
import sqlalchemy
import sqlalchemy.exc
from sqlalchemy.ext.asyncio import create_async_engine
from tests.integrations.db.pg import CANARY, DSN, TARGET

import buttress
from buttress.integrations import asyncpg as asyncpg_integration
from buttress.integrations import psycopg2 as psycopg2_integration

URL = DSN.replace("postgresql://", "postgresql+{driver}://")


def force_open(target: str = TARGET) -> None:
    pipeline = buttress.get_target(target)
    assert pipeline is not None, f"no pipeline for {target}"
    assert pipeline.breaker is not None
    pipeline.breaker.force_open()


def check_ours(error: BaseException, kind: type[BaseException] = buttress.CircuitOpenError) -> None:
    """Ours too: buttress's class, the target, a message without the password."""
    assert isinstance(error, kind)
    assert isinstance(error, buttress.ResilienceError)
    assert TARGET == error.target
    text, shown = str(error), repr(error)
    assert TARGET in text
    assert CANARY not in text
    assert CANARY not in shown


# --- psycopg -------------------------------------------------------------------------------------


def check_psycopg(error: BaseException) -> None:
    assert isinstance(error, psycopg.OperationalError)
    assert None is error.sqlstate
    assert None is error.pgconn
    assert None is error.pgresult
    assert None is error.diag.sqlstate
    assert None is error.diag.message_primary


def test_psycopg_rejection_is_an_operational_error(activated: None) -> None:
    """Statements and connects refused by an open breaker: psycopg.OperationalError too."""
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute("SELECT 1")
        force_open()
        try:
            conn.execute("SELECT 1")
        except psycopg.OperationalError as exc:  # what the application already catches
            statement_error: BaseException = exc
        else:
            pytest.fail("an open breaker let a statement through")
    with pytest.raises(psycopg.OperationalError) as connect_error:
        psycopg.connect(DSN)
    for error in (statement_error, connect_error.value):
        check_ours(error)
        check_psycopg(error)


def test_psycopg_async_rejection_and_timeout(activate_db: Callable[..., None]) -> None:
    """asyncio: an open breaker and an attempt timeout are psycopg.OperationalError too."""
    activate_db({"timeout.attempt": 0.3})

    async def main() -> tuple[BaseException, BaseException]:
        # The server's own statement timeout (the attempt timeout by default) is set far
        # later, so that it is buttress that stops waiting.
        conn = await psycopg.AsyncConnection.connect(
            DSN, autocommit=True, options="-c statement_timeout=10000"
        )
        try:
            with pytest.raises(psycopg.OperationalError) as timed_out:
                await conn.execute("SELECT pg_sleep(3)")
        finally:
            await conn.close()
        force_open()
        with pytest.raises(psycopg.OperationalError) as rejected:
            await psycopg.AsyncConnection.connect(DSN)
        return timed_out.value, rejected.value

    timed_out, rejected = asyncio.run(main())
    check_ours(timed_out, buttress.TimeoutError)
    assert isinstance(timed_out, TimeoutError)
    assert "attempt" == timed_out.scope
    check_psycopg(timed_out)
    check_ours(rejected)
    check_psycopg(rejected)


# --- psycopg2 ------------------------------------------------------------------------------------


def check_psycopg2(error: BaseException) -> None:
    assert isinstance(error, psycopg2.OperationalError)
    assert None is error.pgcode
    assert None is error.pgerror
    assert None is error.cursor
    assert None is error.diag.sqlstate
    assert None is error.diag.message_primary


def test_psycopg2_rejection_is_an_operational_error(activated: None) -> None:
    """Statements and connects refused by an open breaker: psycopg2.OperationalError too."""
    conn = psycopg2.connect(DSN)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            force_open()
            with pytest.raises(psycopg2.OperationalError) as statement_error:
                cur.execute("SELECT 1")
    finally:
        conn.close()
    with pytest.raises(psycopg2.OperationalError) as connect_error:
        psycopg2.connect(DSN)
    for error in (statement_error.value, connect_error.value):
        check_ours(error)
        check_psycopg2(error)


def test_psycopg2_timeout_stays_ours() -> None:
    """A timeout cannot be mixed with psycopg2's C error type: it stays a builtin TimeoutError."""
    timeout = buttress.TimeoutError("timed out", target=TARGET, timeout=1.0, scope="total")
    assert timeout is psycopg2_integration.driver_error(timeout)
    rejection = buttress.BulkheadFullError("full", target=TARGET)
    mixed = psycopg2_integration.driver_error(rejection)
    assert isinstance(mixed, buttress.BulkheadFullError)
    check_psycopg2(mixed)


# --- asyncpg -------------------------------------------------------------------------------------


def check_asyncpg(error: BaseException) -> None:
    assert isinstance(error, asyncpg.exceptions.ConnectionDoesNotExistError)
    assert isinstance(error, asyncpg.PostgresConnectionError)
    assert isinstance(error, asyncpg.PostgresError)
    assert "08003" == error.sqlstate
    assert None is error.detail
    assert None is error.hint
    assert "08003" == error.as_dict()["sqlstate"]


def test_asyncpg_rejection_is_a_connection_error(activated: None) -> None:
    """Connection, pool and connect calls refused: ConnectionDoesNotExistError too."""

    async def main() -> list[BaseException]:
        errors: list[BaseException] = []
        conn = await asyncpg.connect(DSN)
        pool = await asyncpg.create_pool(DSN, min_size=1, max_size=1)
        try:
            assert 1 == await conn.fetchval("SELECT 1")
            force_open()
            for call in (
                lambda: conn.fetchval("SELECT 1"),
                lambda: pool.fetchval("SELECT 1"),
                lambda: asyncpg.connect(DSN),
            ):
                try:
                    await call()
                except asyncpg.PostgresConnectionError as exc:
                    errors.append(exc)
        finally:
            await conn.close()
            await pool.close()  # closing needs no pipeline call
        return errors

    errors = asyncio.run(main())
    assert 3 == len(errors)
    for error in errors:
        check_ours(error)
        check_asyncpg(error)


def test_asyncpg_timeout_is_asyncio_timeout(activate_db: Callable[..., None]) -> None:
    """An attempt timeout is a TimeoutError (asyncio's, as asyncpg's own), not a server error."""
    activate_db({"timeout.attempt": 0.3})

    async def main() -> BaseException:
        conn = await asyncpg.connect(DSN)
        try:
            with pytest.raises(asyncio.TimeoutError) as caught:
                await conn.fetchval("SELECT pg_sleep(3)")
        finally:
            conn.terminate()
        return caught.value

    error = asyncio.run(main())
    assert not isinstance(error, asyncpg.PostgresError)
    assert CANARY not in str(error)
    timeout = buttress.TimeoutError("timed out", target=TARGET, timeout=1.0, scope="total")
    assert timeout is asyncpg_integration.driver_error(timeout)


# --- SQLAlchemy ----------------------------------------------------------------------------------


def check_sqlalchemy(error: BaseException) -> None:
    assert isinstance(error, sqlalchemy.exc.OperationalError)
    assert isinstance(error, sqlalchemy.exc.DBAPIError)
    assert isinstance(error, ResilienceErrorText)
    assert None is error.orig
    assert None is error.statement
    assert None is error.params
    assert False is error.connection_invalidated
    assert None is error.code
    assert [] == error.detail
    with pytest.raises(ValueError, match="No original exception"):
        _ = error.driver_exception


class _TextMeta(type):
    def __instancecheck__(cls, obj: object) -> bool:
        # str() is our message alone: no "[SQL: ...]", no background link.
        return isinstance(obj, buttress.ResilienceError) and str(obj) == obj.args[0]


class ResilienceErrorText(metaclass=_TextMeta):
    """Matches an error of ours whose ``str()`` is exactly its message."""


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_sqlalchemy_rejection_is_an_operational_error(activated: None, driver: str) -> None:
    """Statements and checkouts refused: sqlalchemy.exc.OperationalError too."""
    engine = sqlalchemy.create_engine(URL.format(driver=driver), pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            assert 1 == conn.execute(sqlalchemy.text("SELECT 1")).scalar()
            force_open()
            with pytest.raises(sqlalchemy.exc.OperationalError) as statement_error:
                conn.execute(sqlalchemy.text("SELECT 1"))
        with pytest.raises(sqlalchemy.exc.OperationalError) as checkout_error:
            engine.connect()
    finally:
        engine.dispose()
    for error in (statement_error.value, checkout_error.value):
        check_ours(error)
        check_sqlalchemy(error)


def test_sqlalchemy_async_timeout_is_an_operational_error(
    activate_db: Callable[..., None],
) -> None:
    """AsyncEngine over asyncpg: an attempt timeout is sqlalchemy.exc.OperationalError too."""
    activate_db({"timeout.attempt": 0.3})

    async def main() -> BaseException:
        engine = create_async_engine(URL.format(driver="asyncpg"), pool_size=1, max_overflow=0)
        try:
            async with engine.connect() as conn:
                with pytest.raises(sqlalchemy.exc.OperationalError) as caught:
                    await conn.execute(sqlalchemy.text("SELECT pg_sleep(3)"))
                await conn.invalidate()
        finally:
            await engine.dispose()
        return caught.value

    error: Any = asyncio.run(main())
    check_ours(error, buttress.TimeoutError)
    assert isinstance(error, TimeoutError)
    check_sqlalchemy(error)
