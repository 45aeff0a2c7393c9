"""PyMySQL and sqlite3: a transaction ends while the breaker is open or the bulkhead is full.

As for PostgreSQL (tests/integrations/db/test_transaction_control.py): a row is written inside a
transaction, the target is blocked and a plain statement is checked to be refused, then the
transaction ends, as a statement or with the driver's method. The row is visible from another
connection after a commit and gone after a rollback, and the transaction is really over: MariaDB
lists no InnoDB transaction for the session, and SQLite lets another connection take the write
lock at once. Ending it never runs through the pipeline: the target's call counts stay as they
were.
"""

import contextlib
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

import buttress

from .conftest import ORIGINALS, connection_id

BLOCKABLE = {"bulkhead.max_concurrent": 1, "bulkhead.max_queue": 0}

ENDINGS: dict[str, tuple[str, Callable[[Any], None]]] = {
    "COMMIT statement": ("commit", lambda s: s.execute("COMMIT")),
    "commit; statement": ("commit", lambda s: s.execute(" /* app */ commit;")),
    "commit() method": ("commit", lambda s: s.commit()),
    "ROLLBACK statement": ("rollback", lambda s: s.execute("ROLLBACK")),
    "rollback statement after a comment": ("rollback", lambda s: s.execute("-- undo\nrollback")),
    "rollback() method": ("rollback", lambda s: s.rollback()),
}


def outcomes(target: str) -> dict[str, int]:
    pipeline = buttress.get_target(target)
    assert pipeline is not None
    return {k: v for k, v in pipeline.stats.by_outcome().items() if v}


@contextlib.contextmanager
def blocked(target: str, how: str) -> Iterator[None]:
    """*target* refuses every statement: its breaker forced open, or its one bulkhead slot taken."""
    pipeline = buttress.get_target(target)
    assert pipeline is not None
    assert pipeline.breaker is not None
    assert pipeline.bulkhead is not None
    if how == "breaker open":
        pipeline.breaker.force_open()
        try:
            yield
        finally:
            pipeline.breaker.reset()
    else:
        pipeline.bulkhead.acquire()
        try:
            yield
        finally:
            pipeline.bulkhead.release()


# --- PyMySQL -------------------------------------------------------------------------------------


class MySQLSession:
    """A PyMySQL connection with autocommit off (PyMySQL's default)."""

    def __init__(self, arguments: dict[str, Any]) -> None:
        self.conn = pymysql.connect(**arguments)
        self.id = connection_id(self.conn)
        self.conn.rollback()  # connection_id() began nothing worth keeping

    def execute(self, sql: str) -> None:
        with self.conn.cursor() as cur:
            cur.execute(sql)

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()


@pytest.fixture
def mysql_table(mysql_admin: Any) -> Iterator[str]:
    name = f"buttress_txn_{uuid.uuid4().hex[:12]}"
    with mysql_admin.cursor() as cur:
        cur.execute(f"CREATE TABLE {name} (n INT) ENGINE=InnoDB")
    yield name
    with mysql_admin.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {name}")


@pytest.fixture
def mysql_session(
    activate: Callable[..., None], mariadb: dict[str, Any], mysql_table: str
) -> Iterator[MySQLSession]:
    """A session (closed before its table is dropped: an open transaction would hold the DROP)."""
    activate(db=BLOCKABLE)
    session = MySQLSession(mariadb)
    yield session
    session.conn.close()


def mysql_rows(admin: Any, table: str) -> int:
    with admin.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM {table}")
        return int(cur.fetchone()[0])


def open_transactions(admin: Any, session: MySQLSession, expected: int) -> int:
    """
    The session's InnoDB transactions, polled until *expected* or 5 s have passed.

    InnoDB refreshes this table only when it was last read more than 0.1 s ago: every read waits
    longer than that.
    """
    deadline = time.monotonic() + 5
    while True:
        time.sleep(0.15)
        with admin.cursor() as cur:
            cur.execute(
                "SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = %s",
                (session.id,),
            )
            found = int(cur.fetchone()[0])
        if found == expected or time.monotonic() > deadline:
            return found


def in_transaction(session: MySQLSession) -> bool:
    """The server's own flag, from its last reply (SERVER_STATUS_IN_TRANS)."""
    return bool(session.conn.server_status & 1)


MYSQL_TARGET = "mysql:127.0.0.1:3306/test"


@pytest.mark.parametrize("how", ["breaker open", "bulkhead full"])
@pytest.mark.parametrize("ending", list(ENDINGS))
def test_pymysql_transaction_ends_while_blocked(
    ending: str, how: str, mysql_session: MySQLSession, mysql_admin: Any, mysql_table: str
) -> None:
    effect, end = ENDINGS[ending]
    mysql_session.execute(f"INSERT INTO {mysql_table} VALUES (1)")
    assert in_transaction(mysql_session)
    assert 1 == open_transactions(mysql_admin, mysql_session, 1)
    with blocked(MYSQL_TARGET, how):
        with pytest.raises(buttress.ResilienceError):
            mysql_session.execute("SELECT 1")
        before = outcomes(MYSQL_TARGET)
        end(mysql_session)
        assert before == outcomes(MYSQL_TARGET)
    assert not in_transaction(mysql_session)
    assert 0 == open_transactions(mysql_admin, mysql_session, 0)
    assert (1 if effect == "commit" else 0) == mysql_rows(mysql_admin, mysql_table)


def test_pymysql_savepoints_pass_an_open_breaker(
    mysql_session: MySQLSession, mysql_admin: Any, mysql_table: str
) -> None:
    """SAVEPOINT, ROLLBACK TO SAVEPOINT and RELEASE SAVEPOINT with the breaker open."""
    mysql_session.execute(f"INSERT INTO {mysql_table} VALUES (1)")
    with blocked(MYSQL_TARGET, "breaker open"):
        mysql_session.execute("SAVEPOINT a")
    mysql_session.execute(f"INSERT INTO {mysql_table} VALUES (2)")
    with blocked(MYSQL_TARGET, "breaker open"):
        mysql_session.execute("ROLLBACK TO SAVEPOINT a")
        mysql_session.execute("savepoint b;")
        mysql_session.execute("RELEASE SAVEPOINT b")
        mysql_session.execute("COMMIT")
    assert not in_transaction(mysql_session)
    assert 0 == open_transactions(mysql_admin, mysql_session, 0)
    with mysql_admin.cursor() as cur:
        cur.execute(f"SELECT n FROM {mysql_table}")
        assert ((1,),) == cur.fetchall()


# --- sqlite3 -------------------------------------------------------------------------------------

UNPROTECTED_CONNECT = ORIGINALS[(sqlite3, "connect")]


class SQLiteSession:
    """A sqlite3 connection with the module's legacy transaction control (INSERT begins one)."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path)

    def execute(self, sql: str) -> None:
        self.conn.execute(sql)

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    path = tmp_path / "txn.db"
    conn = UNPROTECTED_CONNECT(path)
    conn.execute("CREATE TABLE t (n INTEGER)")
    conn.commit()
    conn.close()
    return path


@pytest.fixture
def sqlite_session(activate: Callable[..., None], sqlite_path: Path) -> Iterator[SQLiteSession]:
    activate(db=BLOCKABLE)
    session = SQLiteSession(sqlite_path)
    yield session
    session.conn.close()


def sqlite_rows(path: Path) -> int:
    conn = UNPROTECTED_CONNECT(path)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM t").fetchone()[0])
    finally:
        conn.close()


def write_lock_is_free(path: Path) -> bool:
    """Whether another connection can take the write lock at once."""
    conn = UNPROTECTED_CONNECT(path, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


SQLITE_TARGET = "sqlite:txn.db"
SQLITE_ENDINGS = {**ENDINGS, "END statement": ("commit", lambda s: s.execute("END"))}


@pytest.mark.parametrize("how", ["breaker open", "bulkhead full"])
@pytest.mark.parametrize("ending", list(SQLITE_ENDINGS))
def test_sqlite3_transaction_ends_while_blocked(
    ending: str, how: str, sqlite_session: SQLiteSession, sqlite_path: Path
) -> None:
    effect, end = SQLITE_ENDINGS[ending]
    sqlite_session.execute("INSERT INTO t VALUES (1)")
    assert sqlite_session.conn.in_transaction
    assert not write_lock_is_free(sqlite_path)
    with blocked(SQLITE_TARGET, how):
        with pytest.raises(buttress.ResilienceError):
            sqlite_session.execute("SELECT 1")
        before = outcomes(SQLITE_TARGET)
        end(sqlite_session)
        assert before == outcomes(SQLITE_TARGET)
    assert not sqlite_session.conn.in_transaction
    assert write_lock_is_free(sqlite_path)
    assert (1 if effect == "commit" else 0) == sqlite_rows(sqlite_path)


def test_sqlite3_savepoints_pass_an_open_breaker(
    sqlite_session: SQLiteSession, sqlite_path: Path
) -> None:
    sqlite_session.execute("INSERT INTO t VALUES (1)")
    with blocked(SQLITE_TARGET, "breaker open"):
        sqlite_session.execute("SAVEPOINT a")
    sqlite_session.execute("INSERT INTO t VALUES (2)")
    with blocked(SQLITE_TARGET, "breaker open"):
        sqlite_session.execute("ROLLBACK TO a")
        sqlite_session.execute("RELEASE SAVEPOINT a")
        sqlite_session.execute("COMMIT")
    assert write_lock_is_free(sqlite_path)
    assert 1 == sqlite_rows(sqlite_path)
