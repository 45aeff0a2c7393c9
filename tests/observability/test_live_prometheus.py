"""Against a real Prometheus scraping a real buttress run, every dashboard query returns data."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.exporter.prometheus", reason="the otel extra is absent")

HERE = Path(__file__).resolve().parent
# Queries that need something the scripted run does not produce.
NO_DATA_EXPECTED: dict[str, str] = {}
# Targets tried, in order, for the drill-down's $target: the first that returns data wins.
TARGETS = ("api.example.com", "orders-db", "openai/gpt-4o", "geo", "search", "anthropic/claude")


def _free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate *proc* (by its pid) and reap it."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _get(url: str) -> dict:
    """GET *url* as JSON."""
    with urllib.request.urlopen(url, timeout=5) as response:  # our own 127.0.0.1 server
        return json.loads(response.read())


@pytest.fixture(scope="module")
def prometheus(prometheus_bin, root, tmp_path_factory) -> Iterator[str]:
    """A Prometheus (1 s scrapes, the generated rules loaded) scraping a buttress run."""
    tmp = tmp_path_factory.mktemp("prometheus")
    app_port, prom_port = _free_port(), _free_port()
    rules = sorted(str(p) for p in (root / "alerts").glob("*.yaml"))
    (tmp / "prometheus.yml").write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": rules,
                "scrape_configs": [
                    {
                        "job_name": "checkout",
                        "static_configs": [{"targets": [f"127.0.0.1:{app_port}"]}],
                    }
                ],
            }
        )
    )
    app = subprocess.Popen(
        [sys.executable, str(HERE / "live_app.py"), str(app_port), "90"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with (tmp / "prometheus.log").open("wb") as log:
        prom = subprocess.Popen(
            [
                prometheus_bin,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    base = f"http://127.0.0.1:{prom_port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                # Enough samples for rate() over 1m and a breaker that has opened.
                got = _get(
                    f"{base}/api/v1/query?query="
                    + urllib.parse.quote(
                        'count_over_time(buttress_calls_total{target="api.example.com"}[1m])'
                    )
                )
                if got["data"]["result"] and float(got["data"]["result"][0]["value"][1]) >= 8:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp / "prometheus.log").read_text()[-2000:]
            time.sleep(0.5)
        yield base
    finally:
        _stop(prom)
        _stop(app)


def _query(base: str, expr: str) -> list[dict]:
    """The instant-query result of *expr*."""
    got = _get(f"{base}/api/v1/query?query=" + urllib.parse.quote(expr))
    assert "success" == got["status"], got
    return got["data"]["result"]


def test_every_dashboard_query_returns_data(prometheus, queries, substitute) -> None:
    """Each panel query, $__rate_interval = 1m and $target a real target, returns a series."""
    missing, nan_only = [], []
    for board, pid, title, expr in queries:
        key = f"{board}#{pid} {title}"
        results = [_query(prometheus, substitute(expr, target=t)) for t in TARGETS]
        found = [r for r in results if r]
        if not found and key not in NO_DATA_EXPECTED:
            missing.append(f"{key}: {substitute(expr)}")
        elif found and all(s["value"][1] == "NaN" for r in found for s in r):
            nan_only.append(key)

    assert [] == missing
    assert [] == nan_only
    assert [] == _query(prometheus, 'buttress_calls_total{target="no-such-target"}')


def test_recording_rules_produce_data(prometheus) -> None:
    """The SLO recording rules evaluate to a series per target of the run."""
    deadline = time.monotonic() + 10
    while not _query(prometheus, "buttress_target:error_ratio:rate5m"):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    targets = {
        r["metric"]["target"] for r in _query(prometheus, "buttress_target:error_ratio:rate5m")
    }

    assert {"api.example.com", "openai/gpt-4o"} <= targets
