"""
End to end: an unmodified app under zero-code buttress, a failing dependency, the real
Prometheus with the generated rules, the real Alertmanager, and a webhook receiver.

The breaker opens, ButtressCircuitOpen fires and reaches the webhook through Alertmanager; the
dependency recovers, the breaker closes, and the resolved notification arrives. Alertmanager
runs with a minimal route to the webhook (the shipped example's Slack and e-mail receivers need
credentials); its routing is tested separately with amtool. ``for:`` is shortened to 2 s through
the generator's own parameter so the test takes seconds, not minutes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from tests.support.fault_server import FaultServer, ok, status

from buttress.observability import AlertParams, alert_files

pytest.importorskip("opentelemetry.exporter.prometheus", reason="the otel extra is absent")

APP = textwrap.dedent(
    """
    import sys, threading, time
    import requests

    url = sys.argv[1]
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    while not stop.is_set():
        try:
            requests.get(url, timeout=2)
        except requests.RequestException:
            pass
        time.sleep(0.1)
    """
)

CONFIG = textwrap.dedent(
    """
    [defaults.http]
    retry.attempts = 1
    breaker.window = "count"
    breaker.window_size = 4
    breaker.minimum_calls = 4
    breaker.failure_rate_threshold = 0.5
    breaker.open_duration = 1.0
    breaker.half_open_calls = 1
    """
)


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Webhook:
    """Records what Alertmanager posts, as (arrival time, payload)."""

    def __init__(self) -> None:
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.arrived = threading.Condition()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with hook.arrived:
                    hook.received.append((time.monotonic(), json.loads(body)))
                    hook.arrived.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, status: str, alertname: str, target: str, timeout: float) -> float:
        """Block until a notification with *status* for the alert arrives; its arrival time."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while True:
                for at, payload in self.received:
                    for alert in payload.get("alerts", []):
                        labels = alert.get("labels", {})
                        if (
                            alert.get("status") == status
                            and labels.get("alertname") == alertname
                            and labels.get("target") == target
                        ):
                            return at
                left = deadline - time.monotonic()
                assert left > 0, f"no {status} {alertname}; got {self.received}"
                self.arrived.wait(left)


def stop(process: subprocess.Popen[Any]) -> None:
    """Terminate by pid and reap."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)


@pytest.fixture
def stack(
    tmp_path: Path, prometheus_bin: str, root: Path
) -> Iterator[tuple[FaultServer, Webhook, subprocess.Popen[str], float]]:
    """Dependency, app, Prometheus (generated rules) and Alertmanager, all on 127.0.0.1."""
    alertmanager_bin = subprocess.run(  # noqa: S603
        [
            "/usr/bin/env",
            "sh",
            "-c",
            "command -v prometheus-alertmanager || command -v alertmanager",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if not alertmanager_bin:
        pytest.skip("alertmanager not installed: run scripts/install-prometheus.sh")
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    for name, text in alert_files(AlertParams(circuit_open_for="2s")).items():
        if name.endswith(".yaml") and "/" not in name and name.startswith("buttress-"):
            (rules_dir / name).write_text(text)
    hook = Webhook()
    am_port, prom_port, app_port = free_port(), free_port(), free_port()
    (tmp_path / "alertmanager.yml").write_text(
        json.dumps(
            {
                "route": {
                    "receiver": "hook",
                    "group_by": ["alertname", "target"],
                    "group_wait": "1s",
                    "group_interval": "1s",
                    "repeat_interval": "1h",
                },
                "receivers": [
                    {"name": "hook", "webhook_configs": [{"url": hook.url, "send_resolved": True}]}
                ],
            }
        )
    )
    (tmp_path / "prometheus.yml").write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(p) for p in sorted(rules_dir.glob("*.yaml"))],
                "alerting": {
                    "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]
                },
                "scrape_configs": [
                    {
                        "job_name": "checkout",
                        "static_configs": [{"targets": [f"127.0.0.1:{app_port}"]}],
                    }
                ],
            }
        )
    )
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "buttress.toml").write_text(CONFIG)
    server = FaultServer().start()
    server.script("/pay", status(503))
    processes: list[subprocess.Popen[Any]] = []
    logs = [(tmp_path / name).open("wb") for name in ("am.log", "prom.log", "app.log")]
    try:
        processes.append(
            subprocess.Popen(  # noqa: S603
                [
                    alertmanager_bin,
                    f"--config.file={tmp_path / 'alertmanager.yml'}",
                    f"--storage.path={tmp_path / 'am'}",
                    f"--web.listen-address=127.0.0.1:{am_port}",
                    "--cluster.listen-address=",
                ],
                stdout=subprocess.DEVNULL,
                stderr=logs[0],
            )
        )
        processes.append(
            subprocess.Popen(  # noqa: S603
                [
                    prometheus_bin,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=logs[1],
            )
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BUTTRESS_", "OTEL_"))}
        env.update(
            {
                "BUTTRESS_ENABLED": "true",
                "BUTTRESS_CONFIG": str(tmp_path / "buttress.toml"),
                "OTEL_METRICS_EXPORTER": "prometheus",
                "OTEL_TRACES_EXPORTER": "none",
                "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
                "OTEL_EXPORTER_PROMETHEUS_PORT": str(app_port),
            }
        )
        started = time.monotonic()
        app = subprocess.Popen(  # noqa: S603
            [sys.executable, str(tmp_path / "app.py"), server.url + "/pay"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=logs[2],
            text=True,
        )
        processes.append(app)
        yield server, hook, app, started
    finally:
        for process in reversed(processes):
            if process.stdin is not None:
                process.stdin.close()
            stop(process)
        server.stop()
        hook.server.shutdown()
        hook.server.server_close()
        for log in logs:
            log.close()


def test_breaker_open_alert_fires_then_resolves_through_alertmanager(
    stack: tuple[FaultServer, Webhook, subprocess.Popen[str], float],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """ButtressCircuitOpen reaches the webhook while the dependency fails, then resolves."""
    server, hook, _app, started = stack
    target = server.authority

    fired = hook.wait_for("firing", "ButtressCircuitOpen", target, timeout=90)
    server.script("/pay", ok())
    recovered = time.monotonic()
    resolved = hook.wait_for("resolved", "ButtressCircuitOpen", target, timeout=90)

    with capsys.disabled():
        print(
            f"\n[e2e] firing {fired - started:.1f}s after the app started; "
            f"resolved {resolved - recovered:.1f}s after the dependency recovered"
        )
    assert started < fired < recovered < resolved
