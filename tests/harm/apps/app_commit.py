"""An unmodified app: COMMIT and ROLLBACK sent as statements after a session of its was killed.

    python app_commit.py DRIVER HOST PORT DBNAME USER TABLE APPLICATION_NAME

DRIVER is ``psycopg``, ``psycopg2``, ``asyncpg`` or ``sqlalchemy`` (on psycopg2). The app:

1. opens four sessions: A and D each insert a row into TABLE (A id 1, D id 2) and keep their
   transaction open; K is a victim; C (autocommit) is a helper;
2. C ends K with ``pg_terminate_backend`` and waits until the backend is gone; the app then uses
   K, which fails (a lost connection: what a breaker counts). With asyncpg, K is ended in the
   middle of a ``pg_sleep`` instead;
3. pauses at checkpoint ``breaker`` (the test looks at buttress's health endpoint);
4. sends ``COMMIT`` on A and ``ROLLBACK`` on D as statements, prints its result, and pauses at
   checkpoint ``done`` while it still holds every session (the test looks at the table and at
   ``pg_stat_activity``).
"""

import asyncio
import importlib
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

IMPORTS = {
    "psycopg": ["psycopg"],
    "psycopg2": ["psycopg2"],
    "asyncpg": ["asyncpg"],
    "sqlalchemy": ["sqlalchemy", "psycopg2"],
}
MODULES = {name: importlib.import_module(name) for name in IMPORTS[sys.argv[1]]}
print("HARM-READY", flush=True)  # imports done: the test starts its clock

RESULT: dict[str, Any] = {"outcomes": {}}
START = time.monotonic()
PAUSED = [0.0]  # seconds spent waiting at checkpoints, left out of the elapsed time


def checkpoint(at: str) -> None:
    print("HARM-CHECKPOINT " + json.dumps({"at": at}), flush=True)
    began = time.monotonic()
    sys.stdin.readline()
    PAUSED[0] += time.monotonic() - began


def describe(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__qualname__}"


def record(step: str, action: Callable[[], object]) -> None:
    try:
        action()
    except Exception as exc:
        RESULT["outcomes"][step] = describe(exc)
    else:
        RESULT["outcomes"][step] = "ok"


async def arecord(step: str, action: Callable[[], Awaitable[object]]) -> None:
    try:
        await action()
    except Exception as exc:
        RESULT["outcomes"][step] = describe(exc)
    else:
        RESULT["outcomes"][step] = "ok"


def victim(step: Callable[[], object]) -> None:
    """Use the killed session: which error it raises depends on timing, so keep only that it failed."""
    try:
        step()
    except Exception:
        RESULT["outcomes"]["killed session"] = "failed"
    else:
        RESULT["outcomes"]["killed session"] = "ok"


def wait_gone(count: Callable[[], int]) -> None:
    deadline = time.monotonic() + 10
    while count() and time.monotonic() < deadline:
        time.sleep(0.05)


GONE = "SELECT count(*) FROM pg_stat_activity WHERE pid = %s"


def run_psycopg(params: dict[str, str], table: str) -> None:
    psycopg = MODULES["psycopg"]
    a, d, k = (psycopg.connect(**params) for _ in range(3))
    c = psycopg.connect(**params, autocommit=True)
    a.cursor().execute(f"INSERT INTO {table} VALUES (1)")
    d.cursor().execute(f"INSERT INTO {table} VALUES (2)")
    pid = k.info.backend_pid
    c.cursor().execute("SELECT pg_terminate_backend(%s)", (pid,))
    wait_gone(lambda: c.cursor().execute(GONE, (pid,)).fetchone()[0])
    victim(lambda: k.cursor().execute("SELECT 1"))
    checkpoint("breaker")
    record("COMMIT", lambda: a.cursor().execute("COMMIT"))
    record("ROLLBACK", lambda: d.cursor().execute("ROLLBACK"))
    finish()


def run_psycopg2(params: dict[str, str], table: str) -> None:
    psycopg2 = MODULES["psycopg2"]
    a, d, k, c = (psycopg2.connect(**params) for _ in range(4))
    c.autocommit = True
    a.cursor().execute(f"INSERT INTO {table} VALUES (1)")
    d.cursor().execute(f"INSERT INTO {table} VALUES (2)")
    pid = k.get_backend_pid()
    helper = c.cursor()
    helper.execute("SELECT pg_terminate_backend(%s)", (pid,))

    def count() -> int:
        helper.execute(GONE, (pid,))
        return int(helper.fetchone()[0])

    wait_gone(count)
    victim(lambda: k.cursor().execute("SELECT 1"))
    checkpoint("breaker")
    record("COMMIT", lambda: a.cursor().execute("COMMIT"))
    record("ROLLBACK", lambda: d.cursor().execute("ROLLBACK"))
    finish()


async def run_asyncpg(params: dict[str, str], table: str) -> None:
    asyncpg = MODULES["asyncpg"]
    kwargs = {
        "host": params["host"],
        "port": int(params["port"]),
        "database": params["dbname"],
        "user": params["user"],
        "server_settings": {"application_name": params["application_name"]},
    }
    a, d, k, c = [await asyncpg.connect(**kwargs) for _ in range(4)]
    await a.execute("BEGIN")
    await a.execute(f"INSERT INTO {table} VALUES (1)")
    await d.execute("BEGIN")
    await d.execute(f"INSERT INTO {table} VALUES (2)")
    # asyncpg notices a session the server closed while it sat idle and then fails the next
    # statement before sending it, so here K is ended in the middle of a statement.
    pid = k.get_server_pid()
    sleeping = asyncio.ensure_future(k.fetchval("SELECT pg_sleep(30)"))
    active = "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'"
    deadline = time.monotonic() + 10
    while not await c.fetchval(active, pid) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    await c.fetchval("SELECT pg_terminate_backend($1)", pid)
    try:
        await sleeping
    except Exception:
        RESULT["outcomes"]["killed session"] = "failed"
    else:
        RESULT["outcomes"]["killed session"] = "ok"
    checkpoint("breaker")
    await arecord("COMMIT", lambda: a.execute("COMMIT"))
    await arecord("ROLLBACK", lambda: d.execute("ROLLBACK"))
    finish()


def run_sqlalchemy(params: dict[str, str], table: str) -> None:
    sqlalchemy = MODULES["sqlalchemy"]
    text = sqlalchemy.text
    url = sqlalchemy.URL.create(
        "postgresql+psycopg2",
        username=params["user"],
        host=params["host"],
        port=int(params["port"]),
        database=params["dbname"],
    )
    engine = sqlalchemy.create_engine(
        url, connect_args={"application_name": params["application_name"]}
    )
    a, d, k = (engine.connect() for _ in range(3))
    c = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    a.execute(text(f"INSERT INTO {table} VALUES (1)"))
    d.execute(text(f"INSERT INTO {table} VALUES (2)"))
    pid = k.execute(text("SELECT pg_backend_pid()")).scalar_one()
    c.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    gone = text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")
    wait_gone(lambda: c.execute(gone, {"pid": pid}).scalar_one())
    victim(lambda: k.execute(text("SELECT 1")))
    checkpoint("breaker")
    record("COMMIT", lambda: a.execute(text("COMMIT")))
    record("ROLLBACK", lambda: d.execute(text("ROLLBACK")))
    finish()


def finish() -> None:
    RESULT["elapsed"] = time.monotonic() - START - PAUSED[0]
    RESULT["buttress_loaded"] = "buttress" in sys.modules
    print("HARM-RESULT " + json.dumps(RESULT), flush=True)
    checkpoint("done")  # every session is still open while the test looks


def main() -> None:
    driver, host, port, dbname, user, table, name = sys.argv[1:8]
    params = {"host": host, "port": port, "dbname": dbname, "user": user, "application_name": name}
    if driver == "psycopg":
        run_psycopg(params, table)
    elif driver == "psycopg2":
        run_psycopg2(params, table)
    elif driver == "asyncpg":
        asyncio.run(run_asyncpg(params, table))
    else:
        run_sqlalchemy(params, table)


main()
