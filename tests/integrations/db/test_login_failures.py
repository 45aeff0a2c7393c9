"""A refused login reaches the caller once, unchanged, and never counts against the breaker.

Every connect goes through a TCP proxy that counts the connections the server received. Each
case is first tried once with buttress out of the way, which gives the driver's own error and
the number of connections one attempt of this driver makes; then 26 connects with buttress
(the db template's breaker: at least 20 calls, 50 % failures) must reach the server exactly as
often, raise the same error (type and message), schedule no retry, and leave the breaker closed
with no failure recorded.

Cases: an unknown role, a role with ``NOLOGIN``, a missing database (on the shared server, which
trusts local connections and so never asks for a password), and a wrong or missing password (on
a private server started for these tests with scram-sha-256 authentication). A role whose
connection limit is 0 (53300, too many connections) is the counter-check: that one is a
transient start-up error, retried and counted as before.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator

import asyncpg
import psycopg
import psycopg2
import pytest
import sqlalchemy
from sqlalchemy.ext.asyncio import create_async_engine
from tests.integrations.db.pg import HOST, Admin, FlakyProxy, PrivateCluster, breaker_of, retries

import buttress
from buttress.integrations._base import inside
from buttress.testing import capture_events

TRIES = 26

TEMPLATE_BREAKER = {
    "breaker.window": None,
    "breaker.window_size": None,
    "breaker.minimum_calls": None,
    "breaker.open_duration": None,
}
"""Drops the test breaker settings: the db template's breaker (opens at 50 % of >= 20 calls)."""


def _sqlalchemy(driver: str, dsn: str) -> None:
    engine = sqlalchemy.create_engine(
        dsn.replace("postgresql://", f"postgresql+{driver}://"), poolclass=sqlalchemy.NullPool
    )
    try:
        engine.connect().close()
    finally:
        engine.dispose()


async def _sqlalchemy_async(driver: str, dsn: str) -> None:
    engine = create_async_engine(
        dsn.replace("postgresql://", f"postgresql+{driver}://"), poolclass=sqlalchemy.NullPool
    )
    try:
        conn = await engine.connect()
        await conn.close()
    finally:
        await engine.dispose()


async def _psycopg_async(dsn: str) -> None:
    conn = await psycopg.AsyncConnection.connect(dsn)
    await conn.close()


async def _asyncpg(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.close()


CONNECTS: dict[str, Callable[[str], None]] = {
    "psycopg": lambda dsn: psycopg.connect(dsn).close(),
    "psycopg-async": lambda dsn: asyncio.run(_psycopg_async(dsn)),
    "psycopg2": lambda dsn: psycopg2.connect(dsn).close(),
    "asyncpg": lambda dsn: asyncio.run(_asyncpg(dsn)),
    "sqlalchemy-psycopg2": lambda dsn: _sqlalchemy("psycopg2", dsn),
    "sqlalchemy-psycopg": lambda dsn: _sqlalchemy("psycopg", dsn),
    "sqlalchemy-asyncpg": lambda dsn: asyncio.run(_sqlalchemy_async("asyncpg", dsn)),
}
"""Open and close one connection with each driver (the way an application would)."""


def failure(connect: Callable[[], None]) -> BaseException:
    """The exception *connect* raises (the test fails if it raises none)."""
    with pytest.raises(Exception) as caught:  # noqa: PT011 - any driver's own error
        connect()
    return caught.value


def described(error: BaseException) -> tuple[type[BaseException], str]:
    return type(error), str(error)


@pytest.fixture
def roles(admin: Admin) -> Iterator[Callable[[str], str]]:
    """A factory: ``make("NOLOGIN")`` creates a role with those options; all dropped afterwards."""
    made: list[str] = []

    def make(options: str) -> str:
        name = f"buttress_role_{uuid.uuid4().hex[:10]}"
        admin.run(f"CREATE ROLE {name} {options}")
        made.append(name)
        return name

    yield make
    for name in made:
        admin.run(f"DROP ROLE IF EXISTS {name}")


def _case(
    case: str,
    proxy_to: Callable[[int], FlakyProxy],
    roles: Callable[[str], str],
    password_server: Callable[[], PrivateCluster],
) -> tuple[FlakyProxy, str, str]:
    """``(proxy, dsn, target)`` of a login *case* through a counting proxy."""
    if case in ("wrong password", "no password"):
        cluster = password_server()
        proxy = proxy_to(cluster.port)
        credentials = f"{cluster.USER}:wrong-s3cret" if case == "wrong password" else cluster.USER
        return proxy, f"postgresql://{credentials}@{HOST}:{proxy.port}/postgres", "postgres"
    proxy = proxy_to(5432)
    user, database = "root", "test"
    if case == "unknown role":
        user = f"buttress_nobody_{uuid.uuid4().hex[:10]}"
    elif case == "NOLOGIN role":
        user = roles("NOLOGIN")
    elif case == "missing database":
        database = f"buttress_nodb_{uuid.uuid4().hex[:10]}"
    elif case == "connection limit 0":
        user = roles("LOGIN CONNECTION LIMIT 0")
    return proxy, f"postgresql://{user}@{HOST}:{proxy.port}/{database}", database


@pytest.fixture
def login_case(
    request: pytest.FixtureRequest,
    flaky_proxy: Callable[..., FlakyProxy],
    roles: Callable[[str], str],
) -> Callable[[str], tuple[FlakyProxy, str, str]]:
    """A factory: ``login_case(case)`` gives ``(proxy, dsn, target)``."""

    def cluster() -> PrivateCluster:
        found: PrivateCluster = request.getfixturevalue("password_server")
        return found

    def make(case: str) -> tuple[FlakyProxy, str, str]:
        proxy, dsn, database = _case(case, lambda port: flaky_proxy(0, port), roles, cluster)
        return proxy, dsn, f"postgresql:{HOST}:{proxy.port}/{database}"

    return make


LOGIN_CASES = ["unknown role", "NOLOGIN role", "missing database", "wrong password", "no password"]


@pytest.mark.parametrize("case", LOGIN_CASES)
@pytest.mark.parametrize("driver", list(CONNECTS))
def test_a_refused_login_is_tried_once_and_never_counted(
    driver: str,
    case: str,
    activate_db: Callable[..., None],
    login_case: Callable[[str], tuple[FlakyProxy, str, str]],
) -> None:
    """26 refused logins: 26 attempts' worth of connections, the driver's error, breaker closed."""
    activate_db(TEMPLATE_BREAKER)
    connect = CONNECTS[driver]
    proxy, dsn, target = login_case(case)
    with inside("db"):  # buttress out of the way: what the driver alone does
        alone = failure(lambda: connect(dsn))
    per_attempt = proxy.accepted
    assert per_attempt >= 1
    with capture_events() as events:
        errors = [failure(lambda: connect(dsn)) for _ in range(TRIES)]
    assert 0 == retries(events)
    assert [described(alone)] * TRIES == [described(e) for e in errors]
    assert not any(isinstance(e, buttress.ResilienceError) for e in errors)
    assert (TRIES + 1) * per_attempt == proxy.accepted
    snapshot = breaker_of(target)
    assert (buttress.CircuitState.CLOSED, 0) == (snapshot.state, snapshot.failures)


@pytest.mark.parametrize("driver", list(CONNECTS))
def test_too_many_connections_is_still_a_connection_failure(
    driver: str,
    activate_db: Callable[..., None],
    login_case: Callable[[str], tuple[FlakyProxy, str, str]],
) -> None:
    """53300 at start-up (a role's connection limit) is transient: retried, and counted."""
    activate_db()
    connect = CONNECTS[driver]
    proxy, dsn, target = login_case("connection limit 0")
    with inside("db"):
        failure(lambda: connect(dsn))
    per_attempt = proxy.accepted
    failure(lambda: connect(dsn))
    assert (1 + 3) * per_attempt == proxy.accepted  # retry.attempts = 3 in the test configuration
    assert 3 == breaker_of(target).failures  # the breaker sits inside the retry: each attempt


def test_the_private_server_accepts_the_right_password(
    activated: None, password_server: PrivateCluster
) -> None:
    """The wrong-password cases fail for the password alone: the right one logs in."""
    dsn = password_server.dsn(PrivateCluster.PASSWORD)
    with psycopg.connect(dsn) as conn:
        assert [(1,)] == conn.execute("SELECT 1").fetchall()


def test_login_failures_leave_no_trace_of_the_password(
    activate_db: Callable[..., None],
    login_case: Callable[[str], tuple[FlakyProxy, str, str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The wrong password appears in no log record of buttress's."""
    activate_db(TEMPLATE_BREAKER)
    _, dsn, _ = login_case("wrong password")
    with caplog.at_level("DEBUG", logger="buttress"):
        failure(lambda: CONNECTS["psycopg"](dsn))
    assert "wrong-s3cret" not in caplog.text
