"""sqlite3 against real database files: ``database is locked`` with a second connection holding the lock."""

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import pytest

import buttress
from buttress import telemetry
from buttress.integrations.sqlite3 import target_of
from buttress.telemetry import CircuitStateChanged, RetryScheduled
from buttress.testing import capture_events

from .conftest import ORIGINALS, patched_now


def kinds(events: list[Any], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


@pytest.fixture
def database(tmp_path: Path) -> Path:
    """A database file with one table ``t`` holding one row (made without buttress)."""
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x INTEGER)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    conn.close()
    return path


UNPROTECTED_CONNECT = ORIGINALS[(sqlite3, "connect")]
"""``sqlite3.connect`` itself: the lock holder stays outside buttress (and its breaker)."""


class Locker:
    """Another connection, in its own thread, holding ``BEGIN EXCLUSIVE`` until told to commit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.locked = threading.Event()
        self.release = threading.Event()
        self.released = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = UNPROTECTED_CONNECT(self.path, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        self.locked.set()
        self.release.wait(10)
        conn.execute("COMMIT")
        conn.close()
        self.released.set()

    def __enter__(self) -> Self:
        self.thread.start()
        assert self.locked.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(10)


@pytest.fixture
def release_after_first_failure() -> Iterator[Callable[[Locker], None]]:
    """``arm(locker)``: when the first attempt has failed, the locker commits before the retry."""
    removers: list[Callable[[], None]] = []

    def arm(locker: Locker) -> None:
        def hook(event: Any) -> None:
            if isinstance(event, RetryScheduled) and not locker.release.is_set():
                locker.release.set()
                locker.released.wait(10)  # runs in the caller's thread, before the back-off

        removers.append(telemetry.add_hook(hook))

    yield arm
    for remove in removers:
        remove()


def traced(conn: sqlite3.Connection, statement: str) -> list[str]:
    """The runs of *statement* that SQLite began on *conn*."""
    seen: list[str] = []
    conn.set_trace_callback(lambda sql: seen.append(sql) if sql == statement else None)
    return seen


def test_read_outside_transaction_is_retried_until_the_lock_is_released(
    activated: None, database: Path, release_after_first_failure: Callable[[Locker], None]
) -> None:
    """A SELECT refused by a lock runs again once the other connection commits, and succeeds."""
    reader = sqlite3.connect(database, timeout=0)
    runs = traced(reader, "SELECT x FROM t")
    with Locker(database) as locker, capture_events() as events:
        release_after_first_failure(locker)
        assert [(1,)] == reader.execute("SELECT x FROM t").fetchall()
    assert 1 == len(runs)  # the refused attempt failed while preparing, before SQLite ran it
    assert ["sqlite:app.db"] == [e.target for e in kinds(events, RetryScheduled)]
    reader.close()


def test_write_outside_transaction_is_retried_and_applied_once(
    activated: None, database: Path, release_after_first_failure: Callable[[Locker], None]
) -> None:
    """An INSERT refused by a lock is retried (its empty implicit transaction rolled back first)."""
    writer = sqlite3.connect(database, timeout=0)
    with Locker(database) as locker, capture_events() as events:
        release_after_first_failure(locker)
        writer.execute("INSERT INTO t VALUES (2)")
    writer.commit()
    assert [(1,), (2,)] == writer.execute("SELECT x FROM t ORDER BY x").fetchall()
    assert 1 == len(kinds(events, RetryScheduled))
    writer.close()


def test_read_inside_explicit_transaction_is_not_retried(activated: None, database: Path) -> None:
    """Inside BEGIN ... a lock error reaches the caller after one attempt."""
    reader = sqlite3.connect(database, timeout=0, isolation_level=None)
    reader.execute("BEGIN")
    runs = traced(reader, "SELECT x FROM t")
    with Locker(database), capture_events() as events:
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            reader.execute("SELECT x FROM t")
    assert [] == runs
    assert [] == kinds(events, RetryScheduled)
    reader.close()


def test_executemany_is_not_retried(activated: None, database: Path) -> None:
    """executemany may have committed some rows before failing: one attempt."""
    writer = sqlite3.connect(database, timeout=0, isolation_level=None)
    with Locker(database), capture_events() as events:
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            writer.executemany("INSERT INTO t VALUES (?)", [(2,), (3,)])
    assert [] == kinds(events, RetryScheduled)
    writer.close()


def test_syntax_error_is_neither_retried_nor_a_breaker_failure(
    activate: Callable[..., None], database: Path
) -> None:
    """sqlite3 reports syntax errors as OperationalError too; they are not transient."""
    activate(db={"breaker.window_size": 1, "breaker.minimum_calls": 1})
    conn = sqlite3.connect(database)
    runs = traced(conn, "SELEC 1")
    with capture_events() as events:
        for _ in range(3):
            with pytest.raises(sqlite3.OperationalError, match="syntax error"):
                conn.execute("SELEC 1")
        assert [(1,)] == conn.execute("SELECT 1").fetchall()
    assert [] == runs  # never even prepared
    assert [] == kinds(events, RetryScheduled)
    assert [] == kinds(events, CircuitStateChanged)
    conn.close()


def test_open_breaker_rejects_statements_but_never_rollback(
    activate: Callable[..., None], database: Path
) -> None:
    """Locks trip the breaker; rejections are OperationalErrors, and ROLLBACK still reaches SQLite."""
    activate(db={"breaker.window_size": 2, "breaker.minimum_calls": 2})
    conn = sqlite3.connect(database, timeout=0, isolation_level=None)
    conn.execute("BEGIN")  # one success...
    with Locker(database):
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            conn.execute("SELECT x FROM t")  # ...and one failure: 50 % of 2 calls, open
    with pytest.raises(sqlite3.OperationalError) as rejected:
        conn.execute("SELECT x FROM t")
    assert isinstance(rejected.value, buttress.CircuitOpenError)
    conn.execute("ROLLBACK")
    assert False is conn.in_transaction
    conn.close()


def test_busy_timeout_follows_the_attempt_timeout(
    activate: Callable[..., None], database: Path
) -> None:
    """Without an explicit timeout SQLite waits for a lock as long as timeout.attempt says."""
    activate(db={"timeout.attempt": 0.25})
    assert [(250,)] == sqlite3.connect(database).execute("PRAGMA busy_timeout").fetchall()
    explicit = sqlite3.connect(database, timeout=1.0)
    assert [(1000,)] == explicit.execute("PRAGMA busy_timeout").fetchall()


def test_targets_name_the_file_only() -> None:
    """The directory, URI parameters and memory databases never reach the target."""
    assert "sqlite:app.db" == target_of("/srv/secret-dir/app.db")
    assert "sqlite:app.db" == target_of(Path("/srv/app.db"))
    assert "sqlite:app.db" == target_of("file:/srv/app.db?mode=ro&cache=shared", uri=True)
    assert "sqlite::memory:" == target_of(":memory:")
    assert "sqlite::memory:" == target_of("")
    assert "sqlite::memory:" == target_of("file:mem1?mode=memory&cache=shared", uri=True)


def test_deactivate_restores_every_patched_function(
    activate: Callable[..., None], database: Path
) -> None:
    """While active every patch point is wrapped; deactivate() puts the originals back."""
    activate()
    conn = sqlite3.connect(database, timeout=0)
    assert 12 == len(patched_now())
    buttress._activation.deactivate()
    assert [] == patched_now()
    with Locker(database), capture_events() as events:
        with pytest.raises(sqlite3.OperationalError):
            conn.execute("SELECT x FROM t")
    assert [] == events  # a connection made while active passes straight through now
    conn.close()
