"""The shared classifiers: transaction control statements, and libpq's code-less login errors."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from buttress.integrations import _db
from buttress.integrations._db import transaction_control
from buttress.integrations.psycopg import libpq_login_failure

CONTROL = [
    "COMMIT",
    "commit",
    "Commit;",
    "COMMIT WORK",
    "COMMIT AND CHAIN",
    "  \n\tCOMMIT ;",
    ";COMMIT",
    "-- finish\nCOMMIT",
    "/* app: orders */ COMMIT",
    "/* multi\n line */\n-- and more\n  rollback",
    "ROLLBACK",
    "ROLLBACK TO SAVEPOINT a",
    "rollback to a",
    "ROLLBACK PREPARED 'tx1'",
    "COMMIT PREPARED 'tx1'",
    "SAVEPOINT sp_1",
    "RELEASE SAVEPOINT sp_1",
    "release sp_1",
    "END",
    "end transaction",
    "ABORT",
    "XA COMMIT 'x'",
    "xa  rollback 'x'",
    "XA END 'x'",
    b"COMMIT",
    bytearray(b" rollback"),
    "COMMIT; SELECT 1",  # the first statement decides: the batch passes whole
]

NOT_CONTROL = [
    "",
    "   ",
    "-- COMMIT",
    "/* COMMIT */",
    "SELECT 1",
    "BEGIN",
    "START TRANSACTION",
    "begin immediate",
    "INSERT INTO commits VALUES (1)",
    "SELECT 'COMMIT'",
    "COMMITTED",
    "ending",
    "ABORTED_JOBS",
    "RELEASE_LOCK('x')",
    "savepoints",
    "PREPARE TRANSACTION 'tx1'",
    "XA START 'x'",
    "XA PREPARE 'x'",
    "UPDATE t SET state = 'ROLLBACK'",
    "/* unterminated COMMIT",
    None,
    42,
    object(),
]


@pytest.mark.parametrize("sql", CONTROL, ids=repr)
def test_transaction_control(sql: object) -> None:
    assert transaction_control(sql)


@pytest.mark.parametrize("sql", NOT_CONTROL, ids=repr)
def test_not_transaction_control(sql: object) -> None:
    assert not transaction_control(sql)


PREFIX = 'connection failed: connection to server at "127.0.0.1", port 5432 failed: '

LOGIN_FAILURES = [
    PREFIX + 'FATAL:  role "nobody" does not exist',
    PREFIX + 'FATAL:  password authentication failed for user "app"',
    PREFIX + 'FATAL:  database "nodb" does not exist',
    PREFIX + 'FATAL:  role "app" is not permitted to log in',
    PREFIX + 'FATAL:  no pg_hba.conf entry for host "10.0.0.1", user "app", database "x"',
    PREFIX + 'FATAL:  permission denied for database "x"\nDETAIL:  User does not have CONNECT',
    # A server whose lc_messages is German: the two spaces after the severity are libpq's.
    PREFIX + "FATAL:  Passwort-Authentifizierung für Benutzer »app« fehlgeschlagen",
    # A role named like a transient error is still the caller's name, in quotes.
    PREFIX + 'FATAL:  role "too many clients" does not exist',
    PREFIX + "fe_sendauth: no password supplied",
]

LOST_CONNECTIONS = [
    PREFIX + "Connection refused\n\tIs the server running on that host and accepting TCP/IP "
    "connections?",
    PREFIX + "server closed the connection unexpectedly\n\tThis probably means the server "
    "terminated abnormally\n\tbefore or while processing the request.",
    PREFIX + "timeout expired",
    'connection failed: connection to server at "::1", port 5432 failed: Connection refused',
    "connection timeout expired",
    "consuming input failed: server closed the connection unexpectedly",
    PREFIX + "FATAL:  sorry, too many clients already",
    PREFIX + 'FATAL:  too many connections for role "app"',
    PREFIX + "FATAL:  remaining connection slots are reserved for roles with the SUPERUSER "
    "attribute",
    PREFIX + "FATAL:  the database system is starting up",
    PREFIX + "FATAL:  the database system is shutting down",
    PREFIX + "FATAL:  the database system is in recovery mode",
    (
        "FATAL:  terminating connection due to administrator command\nserver closed the "
        "connection unexpectedly"
    ),
]


@pytest.mark.parametrize("message", LOGIN_FAILURES)
def test_libpq_login_failure(message: str) -> None:
    assert libpq_login_failure(message)


@pytest.mark.parametrize("message", LOST_CONNECTIONS)
def test_libpq_lost_connection(message: str) -> None:
    assert not libpq_login_failure(message)


def test_instrumenting_again_does_not_grow_the_error_registries(
    activate_db: Callable[..., None],
) -> None:
    """Each activation registers the drivers' predicates anew: they replace, never pile up."""
    activate_db()
    sizes = (len(_db._transient), len(_db._login))
    for _ in range(5):
        activate_db()
    assert sizes == (len(_db._transient), len(_db._login))
    assert sizes[1] >= 4  # psycopg, psycopg2, asyncpg, SQLAlchemy
