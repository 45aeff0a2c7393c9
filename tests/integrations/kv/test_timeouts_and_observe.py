"""PyMySQL, redis-py and sqlite3: client timeouts change only when you configured one.

- Under the db template (its 5 s attempt timeout is a built-in default) the clients keep their
  own timeouts: PyMySQL no read timeout, redis-py no socket timeout, SQLite's 5 s lock wait.
- With ``timeout.attempt`` configured they get it, and the driver's error when it expires
  carries a note saying that buttress set it, from which setting, and how to change it.
- Observe mode changes no client setting, even with a configured timeout: no timeout, and
  redis-py keeps its own retries.
"""

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pymysql
import pytest
import redis

from buttress.integrations._base import inside

from .conftest import ORIGINALS

TEMPLATE_TIMEOUTS = {"timeout.attempt": None, "timeout.total": None}
UNPROTECTED_CONNECT = ORIGINALS[(sqlite3, "connect")]


def notes(error: BaseException) -> str:
    return "\n".join(getattr(error, "__notes__", ()))


def client_settings(mariadb: dict[str, Any], host: str, port: int, database: Path) -> Any:
    """What each client was given: PyMySQL's timeouts, redis-py's, SQLite's lock wait (ms)."""
    conn = pymysql.connect(**mariadb)
    mysql = (conn._read_timeout, conn._write_timeout, conn.connect_timeout)
    conn.close()
    client = redis.Redis(host=host, port=port)
    kwargs = client.connection_pool.connection_kwargs
    retries = client.get_retry().get_retries()
    client.close()
    lite = sqlite3.connect(database)
    [(busy,)] = lite.execute("PRAGMA busy_timeout").fetchall()
    lite.close()
    return {
        "pymysql read, write, connect": mysql,
        "redis socket, connect": (
            kwargs.get("socket_timeout"),
            kwargs.get("socket_connect_timeout"),
        ),
        "redis-py retries": retries,
        "sqlite busy_timeout": busy,
    }


def _redis_defaults() -> tuple[Any, Any]:
    with inside("db"):  # redis-py alone
        kwargs = redis.Redis(host="127.0.0.1").connection_pool.connection_kwargs
    return kwargs.get("socket_timeout"), kwargs.get("socket_connect_timeout")


UNTOUCHED = {
    "pymysql read, write, connect": (None, None, 10),
    "redis socket, connect": _redis_defaults(),
    "sqlite busy_timeout": 5000,
}
"""The clients' own defaults (PyMySQL's connect_timeout is 10 s, SQLite's lock wait 5 s,
redis-py 8's socket timeouts 5 s)."""


def test_the_template_changes_no_client_timeout(
    activate: Callable[..., None],
    mariadb: dict[str, Any],
    redis_server: tuple[str, int],
    tmp_path: Path,
) -> None:
    activate(db=TEMPLATE_TIMEOUTS)
    settings = client_settings(mariadb, *redis_server, tmp_path / "a.db")
    assert {**UNTOUCHED, "redis-py retries": 10} == settings  # redis-py's own, kept


def test_observe_mode_changes_no_client_setting(
    activate: Callable[..., None],
    mariadb: dict[str, Any],
    redis_server: tuple[str, int],
    tmp_path: Path,
) -> None:
    activate(db={"timeout.attempt": 0.5}, mode="observe")
    plain = redis.Redis(host=redis_server[0], port=redis_server[1], db=12)
    own_retries = plain.get_retry().get_retries()
    plain.close()
    with_buttress = client_settings(mariadb, *redis_server, tmp_path / "a.db")
    assert {**UNTOUCHED, "redis-py retries": own_retries} == with_buttress
    assert own_retries > 0  # redis-py's own default, kept


def test_a_configured_timeout_reaches_the_clients(
    activate: Callable[..., None],
    mariadb: dict[str, Any],
    redis_server: tuple[str, int],
    tmp_path: Path,
) -> None:
    activate(db={"timeout.attempt": 0.5})
    settings = client_settings(mariadb, *redis_server, tmp_path / "a.db")
    assert {
        "pymysql read, write, connect": (0.5, 0.5, 0.5),
        "redis socket, connect": (0.5, 0.5),
        "redis-py retries": 10,  # redis-py's own, kept
        "sqlite busy_timeout": 500,
    } == settings


def test_pymysql_read_timeout_note(
    activate: Callable[..., None], mariadb: dict[str, Any], tmp_path: Path
) -> None:
    """The lost connection of a statement past buttress's read_timeout says so; the app's own not."""
    activate(db={"timeout.attempt": 0.3})
    conn = pymysql.connect(**mariadb)
    with pytest.raises(pymysql.err.OperationalError) as caught, conn.cursor() as cur:
        cur.execute("SELECT SLEEP(1.5)")
    assert pymysql.err.OperationalError is type(caught.value)
    assert 2013 == caught.value.args[0]
    text = notes(caught.value)
    assert "read_timeout and write_timeout (0.3 s) was set by buttress" in text
    assert f"{tmp_path / 'buttress.toml'}: defaults.db.timeout.attempt" in text
    own = pymysql.connect(**mariadb, read_timeout=0.3)
    with pytest.raises(pymysql.err.OperationalError) as theirs, own.cursor() as cur:
        cur.execute("SELECT SLEEP(1.5)")
    assert "set by buttress" not in notes(theirs.value)


def test_redis_socket_timeout_note(
    activate: Callable[..., None], redis_server: tuple[str, int], redis_key: str
) -> None:
    """A blocking command past buttress's socket_timeout: redis-py's TimeoutError says so."""
    activate(db={"timeout.attempt": 0.3})
    client = redis.Redis(host=redis_server[0], port=redis_server[1], db=12)
    with pytest.raises(redis.TimeoutError) as caught:
        client.blpop([redis_key], timeout=2)
    client.close()
    assert redis.TimeoutError is type(caught.value)
    assert "this client's socket_timeout (0.3 s) was set by buttress" in notes(caught.value)
    own = redis.Redis(host=redis_server[0], port=redis_server[1], db=12, socket_timeout=0.3)
    with pytest.raises(redis.TimeoutError) as theirs:
        own.blpop([redis_key], timeout=2)
    own.close()
    assert "set by buttress" not in notes(theirs.value)


def test_sqlite3_lock_wait_note(activate: Callable[..., None], tmp_path: Path) -> None:
    """``database is locked`` after buttress's lock wait says so."""
    activate(db={"timeout.attempt": 0.2, "retry.attempts": 1})
    path = tmp_path / "locked.db"
    holder = UNPROTECTED_CONNECT(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        conn = sqlite3.connect(path)
        with pytest.raises(sqlite3.OperationalError, match="database is locked") as caught:
            conn.execute("SELECT * FROM t")
        conn.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert sqlite3.OperationalError is type(caught.value)
    assert "lock wait (sqlite3.connect's timeout, 0.2 s) was set by buttress" in notes(caught.value)
