"""PostgreSQL test helpers: the server's address, attempt counters, real faults, breaker views."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import psycopg2
import sqlalchemy.engine.base

import buttress
from buttress.integrations._base import inside

HOST = "127.0.0.1"
PORT = 5432
DATABASE = "test"
CANARY = "canary-s3cret"
DSN = f"postgresql://root:{CANARY}@{HOST}:{PORT}/{DATABASE}"
"""Trust authentication ignores the password: it is a canary that must never show anywhere."""
TARGET = f"postgresql:{HOST}:{PORT}/{DATABASE}"

DB_INTEGRATIONS = ("psycopg", "psycopg2", "asyncpg", "sqlalchemy")

PATCH_POINTS: tuple[tuple[Any, str], ...] = (
    (psycopg, "connect"),
    (psycopg.Connection, "connect"),
    (psycopg.AsyncConnection, "connect"),
    (psycopg.Cursor, "execute"),
    (psycopg.Cursor, "executemany"),
    (psycopg.ServerCursor, "execute"),
    (psycopg.AsyncCursor, "execute"),
    (psycopg.AsyncCursor, "executemany"),
    (psycopg.AsyncServerCursor, "execute"),
    (psycopg2, "connect"),
    (asyncpg, "connect"),
    (asyncpg.connection, "connect"),
    *[
        (owner, name)
        for owner in (asyncpg.Pool, asyncpg.Connection)
        for name in ("execute", "executemany", "fetch", "fetchrow", "fetchval", "fetchmany")
    ],
    (sqlalchemy.engine.base.Engine, "raw_connection"),
    (sqlalchemy.engine.base.Connection, "execute"),
    (sqlalchemy.engine.base.Connection, "exec_driver_sql"),
    (sqlalchemy.engine.base.Connection, "scalar"),
)
"""Every function the PostgreSQL integrations wrap, as ``(owner, attribute)``."""


def _stored(owner: Any, name: str) -> Any:
    return owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)


ORIGINALS: dict[tuple[Any, str], Any] = {key: _stored(*key) for key in PATCH_POINTS}
"""The unpatched functions, taken when this conftest is imported (before any activation)."""


def patched_now() -> list[str]:
    """The patch points that do not hold their original function now."""
    return [
        f"{getattr(owner, '__name__', owner)}.{name}"
        for (owner, name), original in ORIGINALS.items()
        if _stored(owner, name) is not original
    ]


BASE_CONFIG: dict[str, Any] = {
    "retry.attempts": 3,
    "retry.backoff": "constant",
    "retry.backoff_initial": 0.01,
    "retry.budget": False,
    "timeout.attempt": 5.0,
    "timeout.total": 20.0,
    "breaker.window": "count",
    "breaker.window_size": 100,
    "breaker.minimum_calls": 100,
    "breaker.open_duration": 30.0,
}
"""``[defaults.db]`` for these tests: tiny back-off, no retry budget, a breaker that never trips."""


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def unreachable() -> str | None:
    try:
        with socket.create_connection((HOST, PORT), timeout=2):
            pass
        with psycopg.connect(DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"PostgreSQL is not reachable at {HOST}:{PORT}/{DATABASE}: {type(exc).__name__}"
    return None


class Admin:
    """A second, unprotected connection: counts attempts and kills sessions."""

    def __init__(self) -> None:
        with inside("db"):  # never through buttress: the admin's work is not under test
            self.conn = psycopg.connect(DSN, autocommit=True)

    def run(self, sql: str) -> list[tuple[Any, ...]]:
        """Run *sql* and return its rows."""
        with inside("db"):
            cur = self.conn.execute(sql)
            return cur.fetchall() if cur.description else []

    def close(self) -> None:
        """Close the admin connection."""
        with inside("db"):
            self.conn.close()


class Counter:
    """A sequence of its own: ``hit`` in a statement counts the times the server ran it."""

    def __init__(self, admin: Admin) -> None:
        self.admin = admin
        self.name = f"buttress_attempts_{uuid.uuid4().hex}"
        admin.run(f"CREATE SEQUENCE {self.name}")
        # Wrapped in a function: statement_kind() rightly calls a statement that mentions
        # nextval a write, and a counted read must still be a read to be retried.
        admin.run(
            f"CREATE FUNCTION {self.name}_hit() RETURNS bigint LANGUAGE sql VOLATILE "
            f"AS $$ SELECT nextval('{self.name}') $$"
        )

    @property
    def hit(self) -> str:
        """The SQL expression that counts one run."""
        return f"{self.name}_hit()"

    def killed(self) -> str:
        """A read that counts itself, then ends its own session (57P01 at the client)."""
        return f"SELECT {self.hit}, pg_terminate_backend(pg_backend_pid())"

    def killed_until(self, attempt: int) -> str:
        """A read that counts itself and ends its session on every run before run *attempt*."""
        return (
            f"SELECT CASE WHEN {self.hit} < {attempt} "
            "THEN pg_terminate_backend(pg_backend_pid()) ELSE true END"
        )

    def count(self) -> int:
        """How many times ``nextval`` ran."""
        [(last, called)] = self.admin.run(f"SELECT last_value, is_called FROM {self.name}")
        return int(last) if called else 0

    def drop(self) -> None:
        """Drop the sequence."""
        self.admin.run(f"DROP FUNCTION IF EXISTS {self.name}_hit()")
        self.admin.run(f"DROP SEQUENCE IF EXISTS {self.name}")


class FlakyProxy:
    """A TCP proxy to the real server that drops its first *drops* connections at once."""

    def __init__(self, drops: int, upstream: int = PORT) -> None:
        self.drops = drops
        self.upstream = upstream
        self.accepted = 0
        self.listener = socket.create_server((HOST, 0))
        self.port = int(self.listener.getsockname()[1])
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def target(self) -> str:
        """The proxy's target name."""
        return f"postgresql:{HOST}:{self.port}/{DATABASE}"

    def dsn(self, password: str = CANARY) -> str:
        """A DSN through the proxy."""
        return f"postgresql://root:{password}@{HOST}:{self.port}/{DATABASE}"

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                drop = self.accepted <= self.drops
            if drop:
                client.close()  # the server "crashed": EOF before any reply
                continue
            upstream = socket.create_connection((HOST, self.upstream))
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Stop accepting and close every proxied connection."""
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._thread.join(timeout=5)
        with self._lock:
            for s in self._sockets:
                s.close()


def breaker_of(target: str) -> Any:
    """The breaker snapshot of *target*'s pipeline now."""
    pipeline = buttress.get_target(target)
    assert pipeline is not None, f"no pipeline for {target}"
    assert pipeline.breaker is not None
    return pipeline.breaker.snapshot(pipeline.context.clock.monotonic())


def outcomes(target: str) -> dict[str, int]:
    """*target*'s call outcomes so far (success, failure, rejected...)."""
    pipeline = buttress.get_target(target)
    assert pipeline is not None, f"no pipeline for {target}"
    return {k: v for k, v in pipeline.stats.by_outcome().items() if v}


def retries(events: list[Any]) -> int:
    """How many RetryScheduled events were captured."""
    return sum(1 for e in events if isinstance(e, buttress.telemetry.RetryScheduled))


class PrivateCluster:
    """
    A PostgreSQL server of our own on 127.0.0.1 that checks passwords (scram-sha-256).

    The shared server trusts every local connection, so a wrong password cannot be refused
    there. This one is made with ``initdb`` in a temporary directory (as the ``postgres`` user
    when running as root: the server refuses to run as root) and removed by :meth:`stop`.
    """

    USER = "buttress_owner"
    PASSWORD = "right-s3cret"

    def __init__(self) -> None:
        self.port = 0
        self.directory: Path | None = None
        self._bindir: Path | None = None
        self._as_postgres: list[str] = []

    def start(self) -> str | None:
        """Start the server; the reason it cannot start, or None."""
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        which = shutil.which("initdb")
        if not found and which is None:
            return "initdb is not installed"
        initdb = found[-1] if found else Path(str(which))
        self._bindir = initdb.parent
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                return "running as root without runuser: cannot start PostgreSQL"
            self._as_postgres = ["runuser", "-u", "postgres", "--"]
        self.directory = Path(tempfile.mkdtemp(prefix="buttress-pg-"))
        self.directory.chmod(0o777)  # noqa: S103 - a throwaway directory the server owns
        password_file = self.directory / "password"
        password_file.write_text(self.PASSWORD + "\n")
        password_file.chmod(0o644)
        with socket.socket() as s:
            s.bind((HOST, 0))
            self.port = int(s.getsockname()[1])
        data = str(self.directory / "data")
        server_options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses={HOST} -c fsync=off "
            "-c shared_buffers=8MB -c max_connections=20"
        )
        steps = [
            [str(initdb), "-D", data, "-U", self.USER, "--pwfile", str(password_file)]
            + ["--auth=scram-sha-256", "--no-sync"],
            [str(self._bindir / "pg_ctl"), "-D", data, "-w", "-l", str(self.directory / "log")]
            + ["-o", server_options, "start"],
        ]
        for step in steps:
            done = subprocess.run(
                [*self._as_postgres, *step], capture_output=True, text=True, timeout=60, check=False
            )
            if done.returncode != 0:
                return f"{Path(step[0]).name} failed: {done.stderr[-300:]}"
        return None

    def dsn(self, password: str, database: str = "postgres") -> str:
        """A DSN with *password* for the owner."""
        return f"postgresql://{self.USER}:{password}@{HOST}:{self.port}/{database}"

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        if self.directory is None:
            return
        if self._bindir is not None:
            stop = [str(self._bindir / "pg_ctl"), "-D", str(self.directory / "data")]
            subprocess.run(
                [*self._as_postgres, *stop, "-m", "immediate", "stop"],
                capture_output=True,
                timeout=60,
                check=False,
            )
        shutil.rmtree(self.directory, ignore_errors=True)
