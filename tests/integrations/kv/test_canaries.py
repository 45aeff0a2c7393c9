"""Secrets never leave the drivers: passwords, statements, key names and values stay out of telemetry."""

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pymysql
import pytest
import redis

from buttress._registry import REGISTRY
from buttress.telemetry import RetryScheduled
from buttress.testing import capture_events

from .conftest import connection_id, own_rules_client
from .test_pymysql import kill

PASSWORD = "pw-canary-5d1e8b"
STATEMENT = "stmt-canary-0a9f47"
KEY = "buttress:kv:key-canary-93c2e1"
VALUE = "value-canary-4b7d20"
DIRECTORY = "dir-canary-61fa3c"
CANARIES = (PASSWORD, STATEMENT, KEY, "key-canary", VALUE, DIRECTORY)


def leaked(text: str) -> list[str]:
    return [canary for canary in CANARIES if canary in text]


def exercise_mariadb(mariadb: dict[str, Any], admin: Any, port: int) -> None:
    with pytest.raises(pymysql.err.OperationalError):  # refused, retried, with the password
        pymysql.connect(**{**mariadb, "port": port, "password": PASSWORD})
    with pytest.raises(pymysql.err.OperationalError):  # access denied, with the password
        pymysql.connect(**{**mariadb, "password": PASSWORD})
    conn = pymysql.connect(**mariadb, autocommit=True)
    kill(admin, connection_id(conn))
    with conn.cursor() as cur:
        cur.execute("SELECT %s", (STATEMENT,))  # retried after the kill
        assert (STATEMENT,) == cur.fetchone()
        with pytest.raises(pymysql.err.ProgrammingError):
            cur.execute(f"SELEC '{STATEMENT}'")
    conn.close()


def exercise_redis(server: tuple[str, int], admin: Any) -> None:
    client = own_rules_client(server, single_connection_client=True)
    client.set(KEY, VALUE)
    admin.client_kill_filter(_id=client.client_id())
    assert VALUE.encode() == client.get(KEY)  # retried after the kill
    admin.client_kill_filter(_id=client.client_id())
    with pytest.raises(redis.ConnectionError):
        client.append(KEY, VALUE)  # a write on a killed connection
    with pytest.raises(redis.ResponseError):
        client.execute_command("GETT", KEY, VALUE)
    client.delete(KEY)
    client.close()
    protected = redis.Redis(host=server[0], port=server[1], password=PASSWORD)
    assert True is protected.ping()  # no password is configured: the server accepts any
    protected.close()


def exercise_sqlite(tmp_path: Path) -> None:
    directory = tmp_path / DIRECTORY
    directory.mkdir()
    conn = sqlite3.connect(directory / "app.db")
    assert [(STATEMENT,)] == conn.execute("SELECT ?", (STATEMENT,)).fetchall()
    with pytest.raises(sqlite3.OperationalError):
        conn.execute(f"SELEC '{STATEMENT}'")
    conn.close()


def test_no_canary_in_targets_events_metrics_spans_or_logs(
    activated: None,
    otel: Callable[[], Any],
    mariadb: dict[str, Any],
    mysql_admin: Any,
    redis_server: tuple[str, int],
    redis_admin: Any,
    spare_port: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Canary passwords, statements, keys, values and directories appear nowhere buttress writes."""
    reader, exporter = otel()
    caplog.set_level(logging.DEBUG)
    with capture_events() as events:
        exercise_mariadb(mariadb, mysql_admin, spare_port.getsockname()[1])
        exercise_redis(redis_server, redis_admin)
        exercise_sqlite(tmp_path)

    retried = {e.target for e in events if isinstance(e, RetryScheduled)}
    port = spare_port.getsockname()[1]
    assert {
        f"mysql:127.0.0.1:{port}/test",
        "mysql:127.0.0.1:3306/test",
        "redis:127.0.0.1:6379/0",
    } == retried  # the checks below are not vacuous: every path failed and retried
    metrics = reader.get_metrics_data().to_json()
    spans = [span.to_json() for span in exporter.get_finished_spans()]
    assert "sqlite:app.db" in metrics
    assert spans
    assert [] == leaked(" ".join(REGISTRY.names()))
    assert [] == leaked(" ".join(repr(event) for event in events))
    assert [] == leaked(metrics)
    assert [] == leaked(" ".join(spans))
    assert [] == leaked(caplog.text)
