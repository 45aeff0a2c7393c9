"""Fixtures for the PyMySQL, redis-py and sqlite3 integration tests: real servers, real faults.

MariaDB (127.0.0.1:3306, root, database ``test``) and Redis (127.0.0.1:6379) must be running;
tests that need one skip, saying why, when it cannot be reached. Every table and key a test
makes has a unique name and is removed afterwards: other suites share these servers.
"""

import contextlib
import gc
import socket
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pymysql
import pytest
import redis
import redis.asyncio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from buttress import _activation, _stats, integrations, telemetry

MYSQL: dict[str, Any] = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}
MYSQL_DB = "test"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
KV_INTEGRATIONS = ("pymysql", "redis", "sqlite3")

DB_CONFIG: dict[str, Any] = {
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
"""``[defaults.db]`` for these tests: tiny constant back-off, no budget, a breaker that never trips."""

PATCH_POINTS: tuple[tuple[Any, str], ...] = (
    (pymysql.connections.Connection, "__init__"),
    (pymysql.connections.Connection, "connect"),
    (pymysql.cursors.Cursor, "execute"),
    (pymysql.cursors.Cursor, "executemany"),
    (redis.client.Redis, "__init__"),
    (redis.client.Redis, "execute_command"),
    (redis.client.Pipeline, "execute"),
    (redis.asyncio.client.Redis, "__init__"),
    (redis.asyncio.client.Redis, "execute_command"),
    (redis.asyncio.client.Pipeline, "execute"),
)
"""Every class attribute these integrations wrap, as ``(owner, attribute)``."""

_SQLITE3 = __import__("sqlite3")
MODULE_PATCH_POINTS: tuple[tuple[Any, str], ...] = (
    (_SQLITE3, "connect"),
    (_SQLITE3.dbapi2, "connect"),
)
"""Module functions these integrations wrap."""

ORIGINALS: dict[tuple[Any, str], Any] = {
    **{(owner, name): owner.__dict__[name] for owner, name in PATCH_POINTS},
    **{(module, name): getattr(module, name) for module, name in MODULE_PATCH_POINTS},
}
"""The unpatched functions, taken when this conftest is imported (before any activation)."""


def patched_now() -> list[str]:
    """The patch points that do not hold their original function now."""
    changed = []
    for (owner, name), original in ORIGINALS.items():
        current = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
        if current is not original:
            changed.append(f"{owner.__name__}.{name}")
    return changed


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture
def mariadb() -> dict[str, Any]:
    """Connection arguments of the local MariaDB; skips when it is not reachable."""
    if not _reachable(MYSQL["host"], MYSQL["port"]):
        pytest.skip("MariaDB is not reachable at 127.0.0.1:3306")
    return {**MYSQL, "database": MYSQL_DB}


@pytest.fixture
def redis_server() -> tuple[str, int]:
    """``(host, port)`` of the local Redis; skips when it is not reachable."""
    if not _reachable(REDIS_HOST, REDIS_PORT):
        pytest.skip("Redis is not reachable at 127.0.0.1:6379")
    return REDIS_HOST, REDIS_PORT


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def write_config(
    path: Any, db: Mapping[str, Any] | None = None, targets: Mapping[str, Mapping[str, Any]] = {}
) -> Any:
    """
    Write ``[defaults.db]`` (DB_CONFIG with *db* overrides) and ``[targets."..."]`` tables.

    A key whose value is None is left out: the db template's value applies.
    """
    lines = ["[defaults.db]"]
    values = {**DB_CONFIG, **(db or {})}
    lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
    for pattern, values in targets.items():
        lines += ["", f'[targets."{pattern}"]']
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def activate(tmp_path: Any) -> Iterator[Callable[..., None]]:
    """A factory: ``activate(db={...}, targets={...}, mode=...)`` switches buttress on."""
    sdk_checked = _activation._sdk_checked

    def switch_on(
        db: Mapping[str, Any] | None = None,
        targets: Mapping[str, Mapping[str, Any]] = {},
        mode: str = "enforce",
    ) -> None:
        _activation.deactivate()
        path = write_config(tmp_path / "buttress.toml", db, targets)
        environ = {
            "BUTTRESS_ENABLED": "true",
            "BUTTRESS_MODE": mode,
            "BUTTRESS_CONFIG": str(path),
            "BUTTRESS_STRICT": "true",
        }
        assert True is _activation.activate(environ, owns_sdk=False)
        # instrument_lazily() hooks each library once per process (see the HTTP conftest):
        # after an earlier deactivate() nothing re-patches, so do what the hook does.
        for name in KV_INTEGRATIONS:
            integration = integrations.get(name)
            if integration is not None and _activation.current().wants(name):
                integration.instrument()

    try:
        yield switch_on
    finally:
        _activation.deactivate()
        _activation._sdk_checked = sdk_checked
        integrations.uninstrument_all()
        assert [] == patched_now(), "still patched after deactivate()"


@pytest.fixture
def activated(activate: Callable[..., None]) -> None:
    """buttress switched on with DB_CONFIG (enforce mode), off again afterwards."""
    activate()


@pytest.fixture
def spare_port() -> Iterator[socket.socket]:
    """A socket bound to a free port on 127.0.0.1 but not listening: connecting is refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


# --- MariaDB -------------------------------------------------------------------------------------


@pytest.fixture
def mysql_admin(mariadb: dict[str, Any]) -> Iterator[Any]:
    """An autocommit connection for killing sessions and reading counters (opened before activation)."""
    conn = pymysql.connect(**mariadb, autocommit=True)
    yield conn
    conn.close()


@pytest.fixture
def bump(mysql_admin: Any) -> Iterator[tuple[str, Callable[[], int]]]:
    """
    ``(function, count)``: ``SELECT <function>()`` adds one to a counter table, ``count()`` reads it.

    A read with a side effect on purpose: it lets the server count how often a read ran.
    """
    name = f"buttress_kv_{uuid.uuid4().hex[:12]}"
    with mysql_admin.cursor() as cur:
        cur.execute(f"CREATE TABLE {name} (n INT NOT NULL)")
        cur.execute(f"INSERT INTO {name} VALUES (0)")
        cur.execute(
            f"CREATE FUNCTION {name}_bump() RETURNS INT MODIFIES SQL DATA "
            f"BEGIN UPDATE {name} SET n = n + 1; RETURN 1; END"
        )

    def count() -> int:
        with mysql_admin.cursor() as cur:
            cur.execute(f"SELECT n FROM {name}")
            return int(cur.fetchone()[0])

    yield f"{name}_bump", count
    with mysql_admin.cursor() as cur:
        cur.execute(f"DROP FUNCTION IF EXISTS {name}_bump")
        cur.execute(f"DROP TABLE IF EXISTS {name}")


def connection_id(conn: Any) -> int:
    """The server's id of *conn*'s session."""
    with conn.cursor() as cur:
        cur.execute("SELECT CONNECTION_ID()")
        return int(cur.fetchone()[0])


# --- Redis ---------------------------------------------------------------------------------------


def own_rules_client(server: tuple[str, int], **kwargs: Any) -> Any:
    """
    A sync client without redis-py's own retries: the one buttress's retry rules apply to.

    A plain ``Redis(...)`` retries by itself (redis-py's default since 6), and buttress then
    keeps that and adds no retries (see ``buttress.integrations.redis``).
    """
    from redis.backoff import NoBackoff  # noqa: PLC0415
    from redis.retry import Retry  # noqa: PLC0415

    return redis.Redis(host=server[0], port=server[1], retry=Retry(NoBackoff(), 0), **kwargs)


def own_rules_async_client(server: tuple[str, int], **kwargs: Any) -> Any:
    """:func:`own_rules_client` for redis.asyncio."""
    import redis.asyncio  # noqa: PLC0415
    from redis.asyncio.retry import Retry  # noqa: PLC0415
    from redis.backoff import NoBackoff  # noqa: PLC0415

    return redis.asyncio.Redis(
        host=server[0], port=server[1], retry=Retry(NoBackoff(), 0), **kwargs
    )


@pytest.fixture
def redis_admin(redis_server: tuple[str, int]) -> Iterator[Any]:
    """A plain client for CLIENT KILL and INFO commandstats (made before activation)."""
    client = redis.Redis(host=redis_server[0], port=redis_server[1])
    yield client
    client.close()


@pytest.fixture
def redis_key(redis_admin: Any) -> Iterator[str]:
    """A unique key name, deleted after the test."""
    key = f"buttress:kv:{uuid.uuid4().hex}"
    yield key
    redis_admin.delete(key)


def command_calls(admin: Any, command: str) -> int:
    """How many times the server has run *command* (``INFO commandstats``), all clients."""
    stats = admin.info("commandstats")
    return int(stats.get(f"cmdstat_{command.lower()}", {}).get("calls", 0))


# --- telemetry -----------------------------------------------------------------------------------


@pytest.fixture
def otel() -> Iterator[Callable[[], tuple[InMemoryMetricReader, InMemorySpanExporter]]]:
    """Call after activation: buttress's metrics and spans go to in-memory readers from then on."""
    providers: list[Any] = []

    def install() -> tuple[InMemoryMetricReader, InMemorySpanExporter]:
        gc.collect()
        for stats in list(_stats.LIVE):
            _stats.LIVE.discard(stats)
        _stats.RETIRED.clear()
        reader = InMemoryMetricReader()
        exporter = InMemorySpanExporter()
        meter_provider = MeterProvider(metric_readers=[reader])
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        providers.extend((meter_provider, tracer_provider))
        telemetry.instrument(meter_provider=meter_provider, tracer_provider=tracer_provider)
        return reader, exporter

    yield install
    if providers:
        telemetry.uninstrument()
    for provider in providers:
        with contextlib.suppress(Exception):
            provider.shutdown()
