"""A statement may run as long as the server allows, unless you configured a timeout.

- Under the db template (its 5 s attempt timeout is a built-in default), ``pg_sleep(7)``
  succeeds through every driver, and no connection gets a ``statement_timeout`` of buttress's.
- With ``timeout.attempt = 1`` configured (file or ``BUTTRESS_TIMEOUT_ATTEMPT``), the server
  cancels a longer statement, and the driver's own exception (type unchanged) carries a note
  saying that buttress set the timeout, from which setting, and how to change it.
- A connect timeout the application chose is never changed.
- Observe mode changes no session setting, even with a configured timeout.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import asyncpg
import psycopg
import psycopg.errors
import psycopg2
import psycopg2.errors
import pytest
import sqlalchemy
import sqlalchemy.exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from tests.integrations.db.pg import DSN, TARGET, breaker_of, outcomes

import buttress

TEMPLATE_TIMEOUTS = {"timeout.attempt": None, "timeout.total": None}
"""Leaves the db template's timeouts (5 s per attempt, 15 s in all) as they are."""

LONG = 7.0
"""Longer than the db template's attempt timeout (5 s)."""

SA_URL = DSN.replace("postgresql://", "postgresql+{driver}://")


def _psycopg() -> Any:
    with psycopg.connect(DSN) as conn:
        return conn.execute(f"SELECT pg_sleep({LONG}), 1").fetchone()[1]


async def _psycopg_async() -> Any:
    async with await psycopg.AsyncConnection.connect(DSN) as conn:
        cur = await conn.execute(f"SELECT pg_sleep({LONG}), 1")
        row = await cur.fetchone()
        assert row is not None
        return row[1]


def _psycopg2() -> Any:
    conn = psycopg2.connect(DSN)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT pg_sleep({LONG}), 1")
            return cur.fetchone()[1]
    finally:
        conn.close()


async def _asyncpg() -> Any:
    conn = await asyncpg.connect(DSN)
    try:
        return (await conn.fetchrow(f"SELECT pg_sleep({LONG}), 1"))[1]
    finally:
        await conn.close()


async def _asyncpg_pool() -> Any:
    pool = await asyncpg.create_pool(DSN, min_size=1, max_size=1)
    try:
        return (await pool.fetchrow(f"SELECT pg_sleep({LONG}), 1"))[1]
    finally:
        await pool.close()


def _sqlalchemy() -> Any:
    engine = sqlalchemy.create_engine(SA_URL.format(driver="psycopg2"))
    try:
        with engine.connect() as conn:
            return conn.execute(text(f"SELECT pg_sleep({LONG}), 1")).fetchone()[1]  # type: ignore[index]
    finally:
        engine.dispose()


async def _sqlalchemy_async() -> Any:
    engine = create_async_engine(SA_URL.format(driver="asyncpg"))
    try:
        async with engine.connect() as conn:
            result = await conn.execute(text(f"SELECT pg_sleep({LONG}), 1"))
            return result.fetchone()[1]  # type: ignore[index]
    finally:
        await engine.dispose()


LONG_STATEMENTS: dict[str, Callable[[], Any]] = {
    "psycopg": _psycopg,
    "psycopg-async": lambda: asyncio.run(_psycopg_async()),
    "psycopg2": _psycopg2,
    "asyncpg": lambda: asyncio.run(_asyncpg()),
    "asyncpg-pool": lambda: asyncio.run(_asyncpg_pool()),
    "sqlalchemy-psycopg2": _sqlalchemy,
    "sqlalchemy-asyncpg": lambda: asyncio.run(_sqlalchemy_async()),
}
"""``pg_sleep(7)`` through each driver; each returns the 1 selected next to it."""


def test_a_long_statement_succeeds_under_the_template(activate_db: Callable[..., None]) -> None:
    """pg_sleep(7), past the template's 5 s attempt timeout, succeeds through every driver.

    The drivers run at once, each in a thread of its own: one 7 s wait for all of them.
    """
    activate_db(TEMPLATE_TIMEOUTS)
    results: dict[str, Any] = {}

    def run(name: str) -> None:
        try:
            results[name] = LONG_STATEMENTS[name]()
        except BaseException as exc:  # reported below, per driver
            results[name] = f"{type(exc).__name__}: {exc}"

    threads = [threading.Thread(target=run, args=(name,)) for name in LONG_STATEMENTS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert dict.fromkeys(LONG_STATEMENTS, 1) == results
    snapshot = breaker_of(TARGET)
    assert (0, buttress.CircuitState.CLOSED) == (snapshot.failures, snapshot.state)
    assert {"success"} == set(outcomes(TARGET))


def test_no_statement_timeout_is_pushed_by_the_template(activate_db: Callable[..., None]) -> None:
    """The connections keep the server's statement_timeout (0) and have no connect_timeout of ours."""
    activate_db(TEMPLATE_TIMEOUTS)
    with psycopg.connect(DSN) as conn:
        assert [("0",)] == conn.execute("SHOW statement_timeout").fetchall()
    conn2 = psycopg2.connect(DSN)
    try:
        with conn2.cursor() as cur:
            cur.execute("SHOW statement_timeout")
            assert ("0",) == cur.fetchone()
    finally:
        conn2.close()


def _cancelled_psycopg() -> BaseException:
    with psycopg.connect(DSN) as conn, pytest.raises(psycopg.errors.QueryCanceled) as caught:
        conn.execute("SELECT pg_sleep(3)")
    return caught.value


def _cancelled_psycopg2() -> BaseException:
    conn = psycopg2.connect(DSN)
    try:
        with conn.cursor() as cur, pytest.raises(psycopg2.errors.QueryCanceled) as caught:
            cur.execute("SELECT pg_sleep(3)")
    finally:
        conn.close()
    return caught.value


def _cancelled_sqlalchemy() -> BaseException:
    engine = sqlalchemy.create_engine(SA_URL.format(driver="psycopg"))
    try:
        with engine.connect() as conn, pytest.raises(sqlalchemy.exc.OperationalError) as caught:
            conn.execute(text("SELECT pg_sleep(3)"))
    finally:
        engine.dispose()
    assert isinstance(caught.value.orig, psycopg.errors.QueryCanceled)
    return caught.value


CANCELLED: dict[str, tuple[Callable[[], BaseException], type[BaseException]]] = {
    "psycopg": (_cancelled_psycopg, psycopg.errors.QueryCanceled),
    "psycopg2": (_cancelled_psycopg2, psycopg2.errors.QueryCanceled),
    "sqlalchemy-psycopg": (_cancelled_sqlalchemy, sqlalchemy.exc.OperationalError),
}
"""A 3 s statement under a 1 s timeout; the exception and the type it must keep."""


def notes(error: BaseException) -> str:
    return "\n".join(getattr(error, "__notes__", ()))


@pytest.mark.parametrize("driver", list(CANCELLED))
def test_a_configured_timeout_cancels_and_says_so(
    driver: str, activate_db: Callable[..., None], tmp_path: Any
) -> None:
    """timeout.attempt = 1 in the file: the server cancels; the note names the file's key."""
    activate_db({"timeout.attempt": 1})
    cancel, kind = CANCELLED[driver]
    error = cancel()
    assert kind is type(error)
    text_ = notes(error)
    assert "statement_timeout (1000 ms) was set by buttress" in text_
    assert "timeout.attempt = 1 s" in text_
    assert f"{tmp_path / 'buttress.toml'}: defaults.db.timeout.attempt" in text_
    assert "canceling statement due to statement timeout" in str(error)  # driver's own text
    assert "buttress" not in str(error)


def test_the_note_names_the_variable_that_set_the_timeout(
    activate_db: Callable[..., None],
) -> None:
    """BUTTRESS_TIMEOUT_ATTEMPT=1: the note names the variable."""
    activate_db(TEMPLATE_TIMEOUTS, BUTTRESS_TIMEOUT_ATTEMPT="1")
    error = _cancelled_psycopg()
    assert "BUTTRESS_TIMEOUT_ATTEMPT=1" in notes(error)


def test_a_callers_statement_timeout_gets_no_note(activate_db: Callable[..., None]) -> None:
    """The caller's own statement_timeout wins and its cancellation is not buttress's."""
    activate_db({"timeout.attempt": 1})
    with (
        psycopg.connect(DSN, options="-c statement_timeout=500") as conn,
        pytest.raises(psycopg.errors.QueryCanceled) as caught,
    ):
        conn.execute("SELECT pg_sleep(3)")
    assert "" == notes(caught.value)


def test_asyncpg_configured_timeout_points_at_buttress(activate_db: Callable[..., None]) -> None:
    """asyncpg with timeout.attempt = 1: its timeout (or the pipeline's) says it was buttress's."""
    activate_db({"timeout.attempt": 1})

    async def main() -> BaseException:
        conn = await asyncpg.connect(DSN)
        try:
            with pytest.raises(TimeoutError) as caught:
                await conn.fetchval("SELECT pg_sleep(3)")
            return caught.value
        finally:
            await conn.close()

    error = asyncio.run(main())
    if isinstance(error, buttress.ResilienceError):  # the pipeline's cancellation came first
        assert str(error).startswith("buttress:")
    else:
        assert "timeout (1 s) was set by buttress" in notes(error)


def test_the_callers_connect_timeout_is_kept(activate_db: Callable[..., None]) -> None:
    """A configured timeout fills in a connect_timeout only where the caller gave none."""
    activate_db({"timeout.attempt": 1})
    with psycopg.connect(DSN, connect_timeout=30) as conn:
        assert "30" == conn.info.get_parameters()["connect_timeout"]
    with psycopg.connect(DSN) as conn:
        assert "2" == conn.info.get_parameters()["connect_timeout"]  # libpq's minimum
    conn2 = psycopg2.connect(DSN, connect_timeout=30)
    try:
        assert "30" == conn2.get_dsn_parameters()["connect_timeout"]
    finally:
        conn2.close()


def test_observe_mode_changes_no_session_setting(activate_db: Callable[..., None]) -> None:
    """Observe mode with timeout.attempt = 1: no statement_timeout, no connect_timeout, 2 s ok."""
    activate_db({"timeout.attempt": 1}, BUTTRESS_MODE="observe")
    with psycopg.connect(DSN) as conn:
        assert [("0",)] == conn.execute("SHOW statement_timeout").fetchall()
        assert "connect_timeout" not in conn.info.get_parameters()
        assert [("",)] == conn.execute("SELECT pg_sleep(1.5)::text").fetchall()
    conn2 = psycopg2.connect(DSN)
    try:
        assert "connect_timeout" not in conn2.get_dsn_parameters()
        with conn2.cursor() as cur:
            cur.execute("SHOW statement_timeout")
            assert ("0",) == cur.fetchone()
    finally:
        conn2.close()

    async def main() -> Any:
        conn = await asyncpg.connect(DSN)
        try:
            return await conn.fetchval("SELECT pg_sleep(1.5)::text")
        finally:
            await conn.close()

    assert "" == asyncio.run(main())
