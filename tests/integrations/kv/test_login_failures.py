"""PyMySQL and redis-py: a refused login reaches the caller once and never counts.

26 tries of each case under the db template's breaker (opens at 50 % of >= 20 calls): each try
reaches the server with one connection, raises the driver's own error with the driver's own
message, schedules no retry, and leaves the breaker closed with no failure recorded.

- MariaDB, through a TCP proxy that counts connections: a wrong password (1045, for a user
  created for the test), no access to the database (1044, the same user without grants) and an
  unknown database (1049).
- Redis, a private ``redis-server`` started for these tests with ``requirepass`` (the shared one
  has no password), counting connections with ``INFO stats``: a wrong password (``WRONGPASS``,
  redis-py's ``AuthenticationError``, a ``ConnectionError`` subclass) and none at all (the
  server refuses ``HELLO``/commands before ``AUTH``: ``NOAUTH``).
"""

import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pymysql
import pytest
import redis
from tests.integrations.db.pg import FlakyProxy
from tests.integrations.kv.conftest import own_rules_client

import buttress
from buttress.integrations._base import inside
from buttress.telemetry import RetryScheduled
from buttress.testing import capture_events

TRIES = 26
TEMPLATE_BREAKER = {
    "breaker.window": None,
    "breaker.window_size": None,
    "breaker.minimum_calls": None,
    "breaker.open_duration": None,
}


def failure(call: Callable[[], Any]) -> BaseException:
    with pytest.raises(Exception) as caught:  # noqa: PT011 - any driver's own error
        call()
    return caught.value


def breaker(target: str) -> Any:
    pipeline = buttress.get_target(target)
    assert pipeline is not None
    assert pipeline.breaker is not None
    return pipeline.breaker.snapshot(pipeline.context.clock.monotonic())


# --- MariaDB -------------------------------------------------------------------------------------

PASSWORD = "right-s3cret"


@pytest.fixture
def mysql_user(mysql_admin: Any) -> Iterator[str]:
    """A user with a password and no privileges, dropped afterwards."""
    name = f"buttress_u_{uuid.uuid4().hex[:8]}"
    with mysql_admin.cursor() as cur:
        cur.execute(f"CREATE USER '{name}'@'%' IDENTIFIED BY '{PASSWORD}'")
    yield name
    with mysql_admin.cursor() as cur:
        cur.execute(f"DROP USER IF EXISTS '{name}'@'%'")


@pytest.fixture
def mysql_proxy(mariadb: dict[str, Any]) -> Iterator[FlakyProxy]:
    """A proxy to MariaDB that counts the connections it forwards."""
    proxy = FlakyProxy(0, int(mariadb["port"]))
    yield proxy
    proxy.close()


MYSQL_CASES = {
    "wrong password": (1045, lambda user: {"user": user, "password": "wrong-s3cret"}),
    "no access to the database": (1044, lambda user: {"user": user, "password": PASSWORD}),
    "unknown database": (
        1049,
        lambda user: {"database": f"buttress_nodb_{uuid.uuid4().hex[:8]}"},
    ),
}


@pytest.mark.parametrize("case", list(MYSQL_CASES))
def test_pymysql_refused_login(
    case: str,
    activate: Callable[..., None],
    mariadb: dict[str, Any],
    mysql_user: str,
    mysql_proxy: FlakyProxy,
) -> None:
    activate(db=TEMPLATE_BREAKER)
    code, overrides = MYSQL_CASES[case]
    arguments = {**mariadb, "port": mysql_proxy.port, **overrides(mysql_user)}
    target = f"mysql:127.0.0.1:{mysql_proxy.port}/{arguments['database']}"

    def connect() -> None:
        pymysql.connect(**arguments).close()

    with inside("db"):
        alone = failure(connect)
    assert 1 == mysql_proxy.accepted
    with capture_events() as events:
        errors = [failure(connect) for _ in range(TRIES)]
    assert [] == [e for e in events if isinstance(e, RetryScheduled)]
    assert [(pymysql.err.OperationalError, alone.args)] * TRIES == [
        (type(e), e.args) for e in errors
    ]
    assert code == alone.args[0]
    assert 1 + TRIES == mysql_proxy.accepted
    snapshot = breaker(target)
    assert (buttress.CircuitState.CLOSED, 0) == (snapshot.state, snapshot.failures)


def test_pymysql_right_password_logs_in(
    activated: None, mariadb: dict[str, Any], mysql_user: str
) -> None:
    """The user's own password works: the failures above are the login's alone."""
    conn = pymysql.connect(
        **{**mariadb, "database": None, "user": mysql_user, "password": PASSWORD}
    )
    conn.close()


# --- Redis ---------------------------------------------------------------------------------------


class PrivateRedis:
    """A redis-server of our own on 127.0.0.1 with a password, stopped by :meth:`stop`."""

    PASSWORD = "right-s3cret"

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.directory = tempfile.mkdtemp(prefix="buttress-redis-")
        self.process = subprocess.Popen(  # noqa: S603 - a fixed command line
            [
                str(shutil.which("redis-server")),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--requirepass",
                self.PASSWORD,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.directory,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.05)
        with inside("db"):
            self.admin = redis.Redis(port=self.port, password=self.PASSWORD)
            self.admin.ping()

    def connections(self) -> int:
        """Connections the server has accepted so far (the admin's one included)."""
        with inside("db"):
            return int(self.admin.info("stats")["total_connections_received"])

    def stop(self) -> None:
        with inside("db"):
            self.admin.close()
        self.process.terminate()
        self.process.wait(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(scope="module")
def private_redis() -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis()
    yield server
    server.stop()


REDIS_CASES = {"wrong password (WRONGPASS)": "wrong-s3cret", "no password (NOAUTH)": None}


@pytest.mark.parametrize("case", list(REDIS_CASES))
def test_redis_refused_login(
    case: str, activate: Callable[..., None], private_redis: PrivateRedis
) -> None:
    activate(db=TEMPLATE_BREAKER)
    password = REDIS_CASES[case]
    target = f"redis:127.0.0.1:{private_redis.port}/0"

    def command() -> None:
        # Without redis-py's own retries (which would resend the login 10 times, with or without
        # buttress): the client buttress's own rules apply to.
        client = own_rules_client(("127.0.0.1", private_redis.port), password=password)
        try:
            client.get("buttress:kv:any")
        finally:
            client.close()

    before = private_redis.connections()
    with inside("db"):  # buttress out of the way: redis-py alone
        alone = failure(command)
    per_try = private_redis.connections() - before
    before = private_redis.connections()
    with capture_events() as events:
        errors = [failure(command) for _ in range(TRIES)]
    assert TRIES * per_try == private_redis.connections() - before  # as many as redis-py alone
    assert [] == [e for e in events if isinstance(e, RetryScheduled)]
    assert [(type(alone), str(alone))] * TRIES == [(type(e), str(e)) for e in errors]
    assert isinstance(alone, redis.AuthenticationError)
    snapshot = breaker(target)
    assert (buttress.CircuitState.CLOSED, 0) == (snapshot.state, snapshot.failures)


def test_redis_right_password_works(activated: None, private_redis: PrivateRedis) -> None:
    client = redis.Redis(port=private_redis.port, password=PrivateRedis.PASSWORD)
    assert client.ping()
    client.close()
