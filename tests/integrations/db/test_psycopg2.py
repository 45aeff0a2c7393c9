"""psycopg2 against the real PostgreSQL: connects retry, statements run once through the pipeline."""

from __future__ import annotations

from collections.abc import Callable

import psycopg2
import psycopg2.errors
import psycopg2.extras
import pytest
from tests.integrations.db.pg import DSN, TARGET, Counter, FlakyProxy, breaker_of, outcomes, retries

import buttress
from buttress import _activation
from buttress.testing import capture_events


def test_target_and_statements(activated: None) -> None:
    """Connect, execute and executemany run under postgresql:127.0.0.1:5432/test."""
    conn = psycopg2.connect(DSN)
    try:
        assert isinstance(conn, psycopg2.extensions.connection)
        with conn.cursor() as cur:
            cur.execute("SELECT %s", (1,))
            assert (1,) == cur.fetchone()
            cur.executemany("SELECT %s", [(1,), (2,)])
    finally:
        conn.close()
    assert [TARGET] == buttress.targets()
    assert {"success": 3} == outcomes(TARGET)


def test_callers_cursor_factory_is_kept(activated: None) -> None:
    """A RealDictCursor asked for at connect or per cursor is still one, and still protected."""
    conn = psycopg2.connect(DSN, cursor_factory=psycopg2.extras.RealDictCursor)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 AS one")
            assert {"one": 1} == cur.fetchone()
            assert isinstance(cur, psycopg2.extras.RealDictCursor)
        with conn.cursor(cursor_factory=psycopg2.extras.NamedTupleCursor) as cur:
            cur.execute("SELECT 2 AS two")
            row = cur.fetchone()
            assert row is not None
            assert 2 == row.two
    finally:
        conn.close()
    assert {"success": 3} == outcomes(TARGET)


def test_connect_retries_until_the_server_answers(
    activated: None, flaky_proxy: Callable[[int], FlakyProxy]
) -> None:
    """Two dropped connection attempts, then the real server: three attempts."""
    proxy = flaky_proxy(2)
    with capture_events() as events:
        conn = psycopg2.connect(proxy.dsn())
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
    finally:
        conn.close()
    assert 3 == proxy.accepted
    assert 2 == retries(events)


def test_statement_in_a_transaction_runs_once(activated: None, counter: Counter) -> None:
    """psycopg2 always opens a transaction: a killed statement runs once, error unchanged."""
    conn = psycopg2.connect(DSN)
    try:
        with capture_events() as events, pytest.raises(psycopg2.OperationalError) as caught:
            conn.cursor().execute(counter.killed())
    finally:
        conn.close()
    assert caught.value.pgcode in (None, "57P01")
    assert 1 == counter.count()
    assert 0 == retries(events)
    assert 1 == breaker_of(TARGET).failures


def test_syntax_error_passes_through(activated: None) -> None:
    """A syntax error is psycopg2's own, runs once, and is no breaker failure."""
    conn = psycopg2.connect(DSN)
    try:
        with capture_events() as events, pytest.raises(psycopg2.errors.SyntaxError):
            conn.cursor().execute("SELEKT 1")
    finally:
        conn.close()
    assert 0 == retries(events)
    assert 0 == breaker_of(TARGET).failures


def test_breaker_opens_on_a_stopped_server(
    activate_db: Callable[..., None], spare_port: int
) -> None:
    """Refused connects open the breaker; then connect raises CircuitOpenError."""
    activate_db({"breaker.minimum_calls": 2, "breaker.window_size": 2, "retry.attempts": 1})
    dsn = f"postgresql://root@127.0.0.1:{spare_port}/test"
    for _ in range(2):
        with pytest.raises(psycopg2.OperationalError):
            psycopg2.connect(dsn)
    with pytest.raises(buttress.CircuitOpenError):
        psycopg2.connect(dsn)


def test_attempt_timeout_becomes_the_statement_timeout(activate_db: Callable[..., None]) -> None:
    """timeout.attempt = 0.3 reaches the server as statement_timeout 300ms."""
    activate_db({"timeout.attempt": 0.3})
    conn = psycopg2.connect(DSN)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW statement_timeout")
            assert ("300ms",) == cur.fetchone()
    finally:
        conn.close()


def test_deactivated_connections_bypass_buttress(activate_db: Callable[..., None]) -> None:
    """A connection made while active runs its statements unprotected after deactivate()."""
    activate_db()
    conn = psycopg2.connect(DSN)
    try:
        _activation.deactivate()
        buttress.reset_targets()
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        assert [] == buttress.targets()
    finally:
        conn.close()
