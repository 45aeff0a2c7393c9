"""The ``buttress`` command: the pure table renderer, and ``status`` against a real server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import buttress
from buttress._cli import main, render_status
from buttress._health_server import HealthServer, start_health_server
from buttress.testing import FakeClock


def entry(**overrides: Any) -> dict[str, Any]:
    """A target entry as /health serves it, healthy and idle unless overridden."""
    base: dict[str, Any] = {
        "target": "payments",
        "kind": "http",
        "critical": True,
        "status": "healthy",
        "reasons": [],
        "state": "closed",
        "window": 60.0,
        "calls": 0,
        "failure_rate": None,
        "p50": None,
        "p95": None,
        "bulkhead_active": None,
        "bulkhead_queued": None,
        "bulkhead_limit": None,
    }
    base.update(overrides)
    return base


def test_render_status_table() -> None:
    """The overall line comes first, then aligned columns, then reasons for sick targets."""
    report = {
        "status": "degraded",
        "window": 60.0,
        "targets": [
            entry(
                calls=120,
                failure_rate=0.125,
                p50=0.045,
                p95=1.5,
                bulkhead_active=3,
                bulkhead_queued=2,
                bulkhead_limit=10,
                status="degraded",
                reasons=["failure rate 12% >= 10%"],
            ),
            entry(target="postgresql:db:5432/app", kind="db", state=None, p50=0.0004),
        ],
    }

    expected = (
        "status: DEGRADED  (2 targets, last 60s)\n"
        "TARGET                  KIND  STATUS    BREAKER  CALLS  FAIL%  P50    P95    BULKHEAD\n"
        "payments                http  degraded  closed   120    12.5%  45ms   1.50s  3/10 +2\n"
        "postgresql:db:5432/app  db    healthy   -        0      -      0.4ms  -      -\n"
        "payments: failure rate 12% >= 10%\n"
    )

    assert expected == render_status(report)


def test_render_status_without_targets() -> None:
    """An empty report says so instead of printing an empty table."""
    assert "status: HEALTHY  (0 targets, last 60s)\nno targets registered\n" == render_status(
        {"status": "healthy", "window": 60, "targets": []}
    )


def test_render_status_bulkhead_without_queue() -> None:
    """A bulkhead with nobody waiting shows active/limit only."""
    table = render_status(
        {
            "status": "healthy",
            "targets": [entry(bulkhead_active=0, bulkhead_queued=0, bulkhead_limit=5)],
        }
    )

    assert "status: HEALTHY  (1 target)" == table.splitlines()[0]
    assert table.splitlines()[2].endswith("  0/5")


@pytest.fixture
def server() -> Iterator[HealthServer]:
    """A health server on a free port."""
    with start_health_server(0) as running:
        yield running


def sick(clock: FakeClock, *, critical: bool) -> None:
    """Register a target whose breaker is open."""
    guard = buttress.protect(
        "search",
        breaker=buttress.CircuitBreaker(window_size=1, minimum_calls=1),
        clock=clock,
        critical=critical,
    )

    def refuse() -> None:
        raise ConnectionError

    with pytest.raises(ConnectionError):
        guard.call(refuse)


@pytest.mark.parametrize(
    ("critical", "code", "word"), [(False, 0, "DEGRADED"), (True, 1, "UNHEALTHY")]
)
def test_status_exit_code_follows_the_report(
    server: HealthServer,
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
    critical: bool,
    code: int,
    word: str,
) -> None:
    """Exit 0 for a degraded service, 1 for an unhealthy one (a 503), with the table printed."""
    sick(clock, critical=critical)

    exit_code = main(["status", "--url", server.url + "/"])
    out = capsys.readouterr().out

    assert code == exit_code
    assert out.startswith(f"status: {word}")
    assert "search  function  unhealthy  open" in out


def test_status_json(
    server: HealthServer, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json prints the report as JSON."""
    buttress.protect("payments", clock=clock).call(lambda: None)

    exit_code = main(["status", "--url", server.url, "--json"])
    report = json.loads(capsys.readouterr().out)

    assert (0, "healthy", 1) == (exit_code, report["status"], report["targets"][0]["calls"])


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    "url", [f"http://127.0.0.1:{free_port()}", "ftp://127.0.0.1:21"], ids=["refused", "scheme"]
)
def test_status_unreachable_is_exit_2(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """An endpoint that does not answer exits 2 with a message on stderr."""
    exit_code = main(["status", "--url", url, "--timeout", "5"])
    captured = capsys.readouterr()

    assert (2, "") == (exit_code, captured.out)
    assert captured.err.startswith(f"buttress: {url}/health: ")


def test_status_against_a_non_buttress_endpoint_is_exit_2(
    server: HealthServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A URL that answers something else (here a 404) exits 2 too."""
    exit_code = main(["status", "--url", server.url + "/nope"])

    assert 2 == exit_code
    assert "HTTP 404" in capsys.readouterr().err


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a command the help goes to stderr and the exit code is 2."""
    assert 2 == main([])
    assert "status" in capsys.readouterr().err


def test_python_m_buttress_status(server: HealthServer, clock: FakeClock) -> None:
    """`python -m buttress status` works as a real process against a real server."""
    sick(clock, critical=True)

    done = subprocess.run(
        [sys.executable, "-m", "buttress", "status", "--url", server.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert (1, "") == (done.returncode, done.stderr)
    assert done.stdout.startswith("status: UNHEALTHY  (1 target, last 60s)\n")
