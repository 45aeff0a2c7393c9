"""
Secrets: canary credentials sent through every client under zero-code appear nowhere buttress writes.

A child process runs with ``BUTTRESS_ENABLED=true`` (the start-up hook, as in production), a
health endpoint and a Prometheus exporter, and makes calls with a distinct canary in each place
a credential lives: URL user info, query string, ``Authorization``, ``x-api-key``, a cookie, a
PostgreSQL DSN, a MySQL password, a Redis URL and an LLM API key. Calls succeed, fail, are
retried, are refused, and are rejected by open breakers (``secrets_child.py``). Then every place
is searched for every canary: span attributes and events, metric labels (the scraped page), log
records of buttress and OpenTelemetry at DEBUG with their tracebacks, the health endpoint's
answers, the events, the target names and the messages of buttress's own errors.

The libraries' own error messages are theirs (``requests`` quotes the URL it was given, query
included); they are not counted, but the check still sees that buttress added nothing to them:
the rejections it raises in their place are buttress's own and are counted.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.reliability.figures import record

CHILD = Path(__file__).with_name("secrets_child.py")
ROOT = Path(__file__).resolve().parents[2]
PLACES = ("spans", "metrics", "logs", "health", "events", "targets", "errors")

CONFIG = """
[defaults.http]
timeout.attempt = 0.3
timeout.total = 1.0
retry.attempts = 2
retry.backoff = "constant"
retry.backoff_initial = 0.01
retry.budget = false
breaker.window = "count"
breaker.window_size = 4
breaker.minimum_calls = 4
breaker.open_duration = 60
http.open_breaker = "error"

[defaults.db]
retry.attempts = 2
retry.backoff = "constant"
retry.backoff_initial = 0.01
breaker.window = "count"
breaker.window_size = 4
breaker.minimum_calls = 4
breaker.open_duration = 60

[defaults.llm]
retry.attempts = 2
retry.backoff = "constant"
retry.backoff_initial = 0.01
breaker.window = "count"
breaker.window_size = 4
breaker.minimum_calls = 4
breaker.open_duration = 60
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def texts(value: Any) -> list[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in (str(k), *texts(v))]
    if isinstance(value, list):
        return [t for v in value for t in texts(v)]
    return [str(value)]


@pytest.mark.timeout(180)
def test_no_canary_anywhere(tmp_path: Path) -> None:
    canaries = {
        name: f"cnry{secrets.token_hex(8)}"
        for name in (
            "url_password",
            "query",
            "authorization",
            "x_api_key",
            "cookie",
            "postgres",
            "mysql",
            "redis",
            "llm_key",
        )
    }
    (tmp_path / "canaries.json").write_text(json.dumps(canaries))
    (tmp_path / "buttress.toml").write_text(CONFIG)
    out = tmp_path / "out.json"
    health, prometheus = free_port(), free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "BUTTRESS_ENABLED": "true",
        "BUTTRESS_STRICT": "true",
        "BUTTRESS_CONFIG": str(tmp_path / "buttress.toml"),
        "BUTTRESS_HEALTH_PORT": str(health),
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(prometheus),
        "OTEL_TRACES_EXPORTER": "console",
    }
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [
            sys.executable,
            str(CHILD),
            str(out),
            str(tmp_path / "canaries.json"),
            str(health),
            str(prometheus),
        ],
        capture_output=True,
        text=True,
        timeout=150,
        env=env,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    seen = json.loads(out.read_text())
    # The console exporter's output (stdout) is a span export too; stderr is the host's.
    seen["spans"] = [*seen["spans"], done.stdout]
    seen["logs"] = [*seen["logs"], done.stderr]

    leaks = [
        (place, name, next(t for t in texts(seen[place]) if canary in t))
        for place in PLACES
        for name, canary in canaries.items()
        if any(canary in t for t in texts(seen[place]))
    ]
    # The control: the libraries' own messages quote what they were given, so the canaries did
    # go out, and the search finds them where they are.
    quoted = sorted(n for n, c in canaries.items() if any(c in t for t in seen["library_errors"]))
    record(
        "secrets",
        "canaries quoted by the libraries' own errors (control, not buttress's)",
        ", ".join(quoted),
    )
    checked = len(PLACES) * len(canaries)
    record("secrets", "places x canaries checked", f"{len(PLACES)} x {len(canaries)} = {checked}")
    record(
        "secrets",
        "spans / span events / log records / events examined",
        f"{len(seen['spans']) - 1} / {seen['span_events']} / {len(seen['logs']) - 1} / {len(seen['events'])}",
    )
    record("secrets", "buttress errors examined (rejections, timeouts)", len(seen["errors"]))
    record("secrets", "canaries leaked", len(leaks), "0", not leaks)
    # The run must have exercised what it claims: failures, rejections, telemetry.
    assert seen["span_events"] > 0, "no buttress event reached the span"
    assert "query" in quoted  # requests quotes the URL of a refused request
    assert any("CircuitOpenError" in e for e in seen["errors"]), seen["errors"][:5]
    assert any(e.startswith("note: ") for e in seen["errors"]), seen["errors"][:5]
    assert any("reason='circuit_open'" in e for e in seen["events"])
    assert "buttress_" in seen["metrics"]
    assert any(t.startswith("postgresql:") for t in seen["targets"]), seen["targets"]
    assert any(t.startswith("openai/") for t in seen["targets"]), seen["targets"]
    assert not leaks, leaks
