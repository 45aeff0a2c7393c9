"""A transaction can always end: COMMIT, ROLLBACK and savepoints pass an open breaker or full bulkhead.

For every PostgreSQL driver (psycopg sync and async, psycopg2, asyncpg, SQLAlchemy's sync and
asyncio engines), a row is inserted inside a transaction, then the target is blocked (its
breaker forced open, or its one bulkhead slot taken with no queue) and a plain statement is
checked to be refused. The transaction is then ended, as a statement or with the driver's
method: after a commit the row is visible from another connection, after a rollback it is gone,
and ``pg_stat_activity`` shows the session idle, no longer "idle in transaction". Ending it
never runs through the pipeline: the target's call counts do not move.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator

import pytest
from tests.integrations.db.pg import TARGET, Admin, outcomes
from tests.integrations.db.sessions import SESSIONS, Session

import buttress

BLOCKED_CONFIG = {"bulkhead.max_concurrent": 1, "bulkhead.max_queue": 0}
"""One statement in flight at a time and no queue: holding the slot blocks every statement."""

ENDINGS = {
    "COMMIT statement": ("commit", lambda s: s.execute("COMMIT")),
    "commit; statement": ("commit", lambda s: s.execute("  /* app */ commit;")),
    "END statement": ("commit", lambda s: s.execute("END")),
    "commit() method": ("commit", lambda s: s.commit()),
    "ROLLBACK statement": ("rollback", lambda s: s.execute("ROLLBACK")),
    "ABORT statement": ("rollback", lambda s: s.execute("-- give up\nABORT")),
    "rollback() method": ("rollback", lambda s: s.rollback()),
}
"""How a test ends its transaction: ``(effect, end(session))``."""


@pytest.fixture
def open_session(
    activate_db: Callable[..., None], table: str
) -> Iterator[Callable[[str], Session]]:
    """
    A factory of sessions by name (buttress active, one bulkhead slot), closed afterwards.

    Closed before *table* is dropped: a transaction left open (what this file tests against)
    would hold the DROP.
    """
    activate_db(BLOCKED_CONFIG)
    made: list[Session] = []

    def make(name: str) -> Session:
        session = SESSIONS[name]()
        made.append(session)
        return session

    yield make
    for session in made:
        with contextlib.suppress(Exception):
            session.close()


@pytest.fixture
def table(admin: Admin) -> Iterator[str]:
    """A table of its own, dropped after the test (after every session: see open_session)."""
    name = f"buttress_txn_{uuid.uuid4().hex[:12]}"
    admin.run(f"CREATE TABLE {name} (n int)")
    yield name
    admin.run("SET lock_timeout = '10s'")
    admin.run(f"DROP TABLE IF EXISTS {name}")


@contextlib.contextmanager
def blocked(how: str) -> Iterator[None]:
    """The target refuses every statement: its breaker forced open, or its bulkhead full."""
    pipeline = buttress.get_target(TARGET)
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


def backend_state(admin: Admin, session: Session) -> str:
    """The ``pg_stat_activity`` state of *session*'s backend."""
    [(state,)] = admin.run(
        f"SELECT state FROM pg_stat_activity WHERE application_name = '{session.app_name}'"
    )
    return str(state)


def rows(admin: Admin, table: str) -> int:
    [(count,)] = admin.run(f"SELECT count(*) FROM {table}")
    return int(count)


@pytest.mark.parametrize("how", ["breaker open", "bulkhead full"])
@pytest.mark.parametrize("ending", list(ENDINGS))
@pytest.mark.parametrize("driver", list(SESSIONS))
def test_a_transaction_ends_while_the_target_is_blocked(
    driver: str,
    ending: str,
    how: str,
    open_session: Callable[[str], Session],
    admin: Admin,
    table: str,
) -> None:
    """Blocked target: a plain statement is refused, the ending goes through and takes effect."""
    effect, end = ENDINGS[ending]
    session = open_session(driver)
    session.begin()
    session.execute(f"INSERT INTO {table} VALUES (1)")
    assert "idle in transaction" == backend_state(admin, session)
    assert 0 == rows(admin, table)  # not committed yet
    with blocked(how):
        with pytest.raises(buttress.ResilienceError):
            session.execute("SELECT 1")
        before = outcomes(TARGET)
        end(session)
        assert before == outcomes(TARGET)  # no pipeline call
    assert "idle" == backend_state(admin, session)
    assert (1 if effect == "commit" else 0) == rows(admin, table)


SAVEPOINTS = {
    "statements": (
        lambda s: s.execute("SAVEPOINT a"),
        lambda s: s.execute("rollback to savepoint a"),
        lambda s: s.execute("SAVEPOINT b"),
        lambda s: s.execute("RELEASE b"),
    ),
    "short forms": (
        lambda s: s.execute("savepoint a;"),
        lambda s: s.execute("ROLLBACK TO a"),
        lambda s: s.execute("SAVEPOINT b"),
        lambda s: s.execute("RELEASE SAVEPOINT b"),
    ),
}


@pytest.mark.parametrize("form", list(SAVEPOINTS))
@pytest.mark.parametrize("driver", list(SESSIONS))
def test_savepoints_pass_an_open_breaker(
    driver: str, form: str, open_session: Callable[[str], Session], admin: Admin, table: str
) -> None:
    """SAVEPOINT, ROLLBACK TO and RELEASE with the breaker open; the rollback undoes row 2."""
    savepoint, rollback_to, savepoint_b, release_b = SAVEPOINTS[form]
    session = open_session(driver)
    session.begin()
    session.execute(f"INSERT INTO {table} VALUES (1)")
    with blocked("breaker open"):
        savepoint(session)
    session.execute(f"INSERT INTO {table} VALUES (2)")
    with blocked("breaker open"):
        rollback_to(session)
        savepoint_b(session)
        release_b(session)
        session.execute("COMMIT")
    assert "idle" == backend_state(admin, session)
    assert [(1,)] == admin.run(f"SELECT n FROM {table}")


def test_asyncpg_nested_transactions_end_with_the_breaker_open(
    open_session: Callable[[str], Session], admin: Admin, table: str
) -> None:
    """asyncpg's own Transaction objects: savepoint, rollback to it, release, commit, all open."""
    session = open_session("asyncpg")
    conn, run = session.conn, session.run  # type: ignore[attr-defined]
    outer = conn.transaction()
    run(outer.start)
    session.execute(f"INSERT INTO {table} VALUES (1)")
    inner = conn.transaction()
    with blocked("breaker open"):
        run(inner.start)  # SAVEPOINT
    session.execute(f"INSERT INTO {table} VALUES (2)")
    second = conn.transaction()
    with blocked("bulkhead full"):
        run(inner.rollback)  # ROLLBACK TO
        run(second.start)  # SAVEPOINT
        run(second.commit)  # RELEASE SAVEPOINT
        run(outer.commit)  # COMMIT;
    assert "idle" == backend_state(admin, session)
    assert [(1,)] == admin.run(f"SELECT n FROM {table}")


def test_begin_stays_in_the_pipeline(
    open_session: Callable[[str], Session], admin: Admin, table: str
) -> None:
    """BEGIN is refused by an open breaker: nothing is left open, no backend in a transaction."""
    session = open_session("asyncpg")
    session.execute("SELECT 1")
    with blocked("breaker open"), pytest.raises(buttress.CircuitOpenError):
        session.begin()
    assert "idle" == backend_state(admin, session)
