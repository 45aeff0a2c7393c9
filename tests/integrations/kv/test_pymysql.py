"""PyMySQL against the real MariaDB: connect retries, KILLed sessions, transactions, the breaker."""

import time
from collections.abc import Callable
from typing import Any

import pymysql
import pytest

import buttress
from buttress.telemetry import CallRejected, CircuitStateChanged, RetryScheduled
from buttress.testing import capture_events

from .conftest import connection_id


def kinds(events: list[Any], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def kill(admin: Any, session: int) -> None:
    """KILL *session* and wait until the server has dropped it (polling, no fixed sleep)."""
    with admin.cursor() as cur:
        cur.execute(f"KILL {session:d}")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            cur.execute(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s", (session,)
            )
            if cur.fetchone()[0] == 0:
                return
    raise AssertionError(f"session {session} still present after KILL")


def test_connect_is_retried_then_the_open_breaker_rejects_without_network(
    activate: Callable[..., None], spare_port: Any, mariadb: dict[str, Any]
) -> None:
    """A refused connect is tried three times; once the breaker opens, connect never touches the network."""
    port = spare_port.getsockname()[1]
    target = f"mysql:127.0.0.1:{port}/test"
    activate(
        targets={
            target: {
                "breaker.window_size": 3,
                "breaker.minimum_calls": 3,
                "breaker.failure_rate_threshold": 0.5,
            }
        }
    )
    arguments = {**mariadb, "port": port}
    with capture_events() as events:
        with pytest.raises(pymysql.err.OperationalError) as first:
            pymysql.connect(**arguments)
    assert 2003 == first.value.args[0]
    assert [target] * 2 == [e.target for e in kinds(events, RetryScheduled)]
    assert ["open"] == [e.to_state for e in kinds(events, CircuitStateChanged)]

    spare_port.listen(8)  # from now on a connection attempt would wait in the backlog
    spare_port.setblocking(False)
    with capture_events() as events:
        with pytest.raises(pymysql.err.OperationalError) as rejected:
            pymysql.connect(**arguments)
    assert isinstance(rejected.value, buttress.CircuitOpenError)
    assert 1 == len(kinds(events, CallRejected))
    with pytest.raises(BlockingIOError):
        spare_port.accept()


def test_read_on_autocommit_connection_is_retried_after_kill(
    activated: None, mariadb: dict[str, Any], mysql_admin: Any, bump: tuple[str, Callable[[], int]]
) -> None:
    """After KILL, an autocommit read reconnects and runs once on the server."""
    function, count = bump
    conn = pymysql.connect(**mariadb, autocommit=True)
    before = connection_id(conn)
    kill(mysql_admin, before)
    with capture_events() as events, conn.cursor() as cur:
        cur.execute(f"SELECT {function}()")
        assert (1,) == cur.fetchone()
    assert 1 == count()  # the first attempt never reached the server: its session was gone
    assert 1 == len(kinds(events, RetryScheduled))
    assert before != connection_id(conn)
    conn.close()


def _killed_statement(
    mariadb: dict[str, Any], admin: Any, sql: str, *, autocommit: bool
) -> BaseException:
    conn = pymysql.connect(**mariadb, autocommit=autocommit)
    kill(admin, connection_id(conn))
    with pytest.raises(pymysql.err.MySQLError) as caught, conn.cursor() as cur:
        cur.execute(sql)
    return caught.value


def test_statement_on_non_autocommit_connection_is_not_retried_after_kill(
    activate: Callable[..., None],
    mariadb: dict[str, Any],
    mysql_admin: Any,
    bump: tuple[str, Callable[[], int]],
) -> None:
    """Without autocommit every statement is in a transaction: one attempt, the driver's own error."""
    function, count = bump
    sql = f"SELECT {function}()"
    unprotected = _killed_statement(mariadb, mysql_admin, sql, autocommit=False)
    activate()
    with capture_events() as events:
        protected = _killed_statement(mariadb, mysql_admin, sql, autocommit=False)
    assert (type(unprotected), unprotected.args) == (type(protected), protected.args)
    assert pymysql.err.OperationalError is type(protected)
    assert [] == kinds(events, RetryScheduled)
    assert 0 == count()


def test_write_on_autocommit_connection_is_not_retried_after_kill(
    activated: None, mariadb: dict[str, Any], mysql_admin: Any, bump: tuple[str, Callable[[], int]]
) -> None:
    """A write runs once even with autocommit: the server might have run it already."""
    function, count = bump
    with capture_events() as events:
        error = _killed_statement(mariadb, mysql_admin, f"DO {function}()", autocommit=True)
    assert pymysql.err.OperationalError is type(error)
    assert [] == kinds(events, RetryScheduled)
    assert 0 == count()


def test_read_after_session_state_change_is_not_reconnected(
    activated: None, mariadb: dict[str, Any], mysql_admin: Any
) -> None:
    """A session that set a user variable is not silently replaced by a fresh one."""
    conn = pymysql.connect(**mariadb, autocommit=True)
    with conn.cursor() as cur:
        cur.execute("SET @buttress_kv = 42")
    kill(mysql_admin, connection_id(conn))
    with capture_events() as events, pytest.raises(pymysql.err.OperationalError):
        with conn.cursor() as cur:
            cur.execute("SELECT @buttress_kv")
    assert [] == kinds(events, RetryScheduled)


def test_syntax_error_is_neither_retried_nor_a_breaker_failure(
    activate: Callable[..., None], mariadb: dict[str, Any]
) -> None:
    """A syntax error reaches the caller after one attempt and leaves a hair-trigger breaker closed."""
    activate(db={"breaker.window_size": 1, "breaker.minimum_calls": 1})
    conn = pymysql.connect(**mariadb, autocommit=True)
    with capture_events() as events, conn.cursor() as cur:
        for _ in range(3):
            with pytest.raises(pymysql.err.ProgrammingError) as caught:
                cur.execute("SELEC 1")
            assert 1064 == caught.value.args[0]
        cur.execute("SELECT 1")
        assert (1,) == cur.fetchone()
    assert [] == kinds(events, RetryScheduled)
    assert [] == kinds(events, CircuitStateChanged)
    conn.close()


def test_attempt_timeout_becomes_the_read_timeout(
    activate: Callable[..., None], mariadb: dict[str, Any]
) -> None:
    """With timeout.attempt = 0.3 s a 1.5 s query loses its connection; an explicit read_timeout wins."""
    activate(db={"timeout.attempt": 0.3})
    conn = pymysql.connect(**mariadb)
    with pytest.raises(pymysql.err.OperationalError) as caught, conn.cursor() as cur:
        cur.execute("SELECT SLEEP(1.5)")
    assert 2013 == caught.value.args[0]
    patient = pymysql.connect(**mariadb, read_timeout=30)
    with patient.cursor() as cur:
        cur.execute("SELECT SLEEP(1.5)")
        assert (0,) == cur.fetchone()
    patient.close()


def test_open_breaker_rejects_statements_but_never_rollback(
    activate: Callable[..., None], mariadb: dict[str, Any], mysql_admin: Any
) -> None:
    """After a lost connection trips the breaker, SELECT is rejected and ROLLBACK still runs."""
    activate(db={"breaker.window_size": 1, "breaker.minimum_calls": 1})
    other = pymysql.connect(**mariadb)
    with other.cursor() as cur:
        cur.execute("SELECT 1")  # opens a transaction
    _killed_statement(mariadb, mysql_admin, "SELECT 1", autocommit=False)
    with pytest.raises(pymysql.err.OperationalError) as rejected, other.cursor() as cur:
        cur.execute("SELECT 1")
    assert isinstance(rejected.value, buttress.CircuitOpenError)
    with other.cursor() as cur:
        cur.execute("ROLLBACK")
    assert 0 == other.server_status & 1  # SERVER_STATUS_IN_TRANS: the transaction is over
    other.close()
