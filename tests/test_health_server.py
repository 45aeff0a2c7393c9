"""The HTTP health endpoint: a real server on a free loopback port, driven with urllib."""

from __future__ import annotations

import json
import logging
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

import buttress
from buttress._health_server import (
    HealthPortError,
    HealthServer,
    start_from_environment,
    start_health_server,
)
from buttress.testing import FakeClock

TOKEN = "s3cr3t-admin-token-4f2a"
DB_TARGET = "postgresql:127.0.0.1:5432/app"


class Response:
    """What the server answered: status, headers and the decoded JSON body."""

    def __init__(self, status: int, headers: dict[str, str], raw: bytes) -> None:
        self.status = status
        self.headers = headers
        self.raw = raw
        self.body: Any = json.loads(raw)


def fetch(
    server: HealthServer,
    path: str,
    method: str = "GET",
    token: str | None = None,
    authorization: str | None = None,
) -> Response:
    """Send one request to *server* and return its answer, error statuses included."""
    request = urllib.request.Request(
        server.url + path, method=method, data=b"" if method == "POST" else None
    )
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    if authorization is not None:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return Response(answer.status, dict(answer.headers), answer.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return Response(exc.code, dict(exc.headers), exc.read())


@pytest.fixture
def server() -> Iterator[HealthServer]:
    """A health server with an admin token, on a free port."""
    with start_health_server(0, admin_token=TOKEN) as running:
        yield running


@pytest.fixture
def open_target(clock: FakeClock) -> buttress.Pipeline:
    """A critical target whose breaker is open."""
    guard = buttress.protect(
        DB_TARGET,
        kind="db",
        breaker=buttress.CircuitBreaker(window_size=2, minimum_calls=2),
        clock=clock,
        critical=True,
    )
    for _ in range(2):
        with pytest.raises(ConnectionError):
            guard.call(_refuse)
    return guard


def _refuse() -> None:
    raise ConnectionError("refused")


def test_port_zero_picks_a_free_port(server: HealthServer) -> None:
    """Port 0 binds a real free port, reported on the server."""
    assert server.port > 0
    assert f"http://127.0.0.1:{server.port}" == server.url


def test_health_is_200_when_healthy(server: HealthServer, clock: FakeClock) -> None:
    """GET /health answers 200 with the JSON report when every target is healthy."""
    guard = buttress.protect("payments", clock=clock, critical=True)
    guard.call(lambda: None)

    answer = fetch(server, "/health")

    assert (200, "application/json") == (answer.status, answer.headers["Content-Type"])
    assert "healthy" == answer.body["status"]
    assert ["payments"] == [t["target"] for t in answer.body["targets"]]
    assert 1 == answer.body["targets"][0]["calls"]


def test_health_is_200_when_a_non_critical_target_is_down(
    server: HealthServer, clock: FakeClock
) -> None:
    """A non-critical unhealthy target degrades the service, which still answers 200."""
    guard = buttress.protect(
        "search", breaker=buttress.CircuitBreaker(window_size=1, minimum_calls=1), clock=clock
    )
    with pytest.raises(ConnectionError):
        guard.call(_refuse)

    answer = fetch(server, "/health")

    assert (200, "degraded") == (answer.status, answer.body["status"])


def test_health_is_503_when_a_critical_target_is_unhealthy(
    server: HealthServer, open_target: buttress.Pipeline
) -> None:
    """GET /health answers 503 when a critical target is unhealthy, with the report as body."""
    answer = fetch(server, "/health")

    assert (503, "unhealthy") == (answer.status, answer.body["status"])
    assert "open" == answer.body["targets"][0]["state"]


def test_targets_lists_entries(server: HealthServer, open_target: buttress.Pipeline) -> None:
    """GET /targets answers 200 with the per-target entries, even when unhealthy."""
    answer = fetch(server, "/targets")

    assert 200 == answer.status
    assert [(DB_TARGET, "db", "unhealthy")] == [
        (t["target"], t["kind"], t["status"]) for t in answer.body
    ]


@pytest.mark.parametrize(
    "name",
    [urllib.parse.quote(DB_TARGET, safe=""), DB_TARGET],
    ids=["encoded", "raw"],
)
def test_reset_with_the_token_closes_the_breaker(
    server: HealthServer, open_target: buttress.Pipeline, name: str
) -> None:
    """POST /targets/{name}/reset with the right token closes the breaker, encoded name or not."""
    answer = fetch(server, f"/targets/{name}/reset", "POST", token=TOKEN)

    assert (200, {"target": DB_TARGET, "state": "closed"}) == (answer.status, answer.body)
    assert open_target.breaker is not None
    assert buttress.CircuitState.CLOSED == open_target.breaker.state
    assert 200 == fetch(server, "/health").status


@pytest.mark.parametrize(
    ("authorization", "token"),
    [(None, None), (None, "wrong-token"), ("Basic " + TOKEN, None), (None, TOKEN[:-1])],
    ids=["missing", "wrong", "not-bearer", "prefix"],
)
def test_reset_with_a_bad_token_is_401(
    server: HealthServer,
    open_target: buttress.Pipeline,
    authorization: str | None,
    token: str | None,
) -> None:
    """A missing, wrong or non-bearer token is refused with 401 and the breaker stays open."""
    name = urllib.parse.quote(DB_TARGET, safe="")

    answer = fetch(
        server, f"/targets/{name}/reset", "POST", token=token, authorization=authorization
    )

    assert (401, "Bearer") == (answer.status, answer.headers["WWW-Authenticate"].split()[0])
    assert open_target.breaker is not None
    assert buttress.CircuitState.OPEN == open_target.breaker.state


def test_reset_without_configured_token_is_403(open_target: buttress.Pipeline) -> None:
    """With no admin token configured, reset is disabled: 403 saying how to enable it."""
    name = urllib.parse.quote(DB_TARGET, safe="")
    with start_health_server(0) as server:
        answer = fetch(server, f"/targets/{name}/reset", "POST", token="anything")

    assert 403 == answer.status
    assert "BUTTRESS_ADMIN_TOKEN" in answer.body["error"]
    assert open_target.breaker is not None
    assert buttress.CircuitState.OPEN == open_target.breaker.state


def test_reset_unknown_target_is_404(server: HealthServer) -> None:
    """Resetting a target that is not registered answers 404."""
    answer = fetch(server, "/targets/nope/reset", "POST", token=TOKEN)

    assert 404 == answer.status
    assert "'nope'" in answer.body["error"]


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/", 404),
        ("GET", "/healthz", 404),
        ("GET", "/targets/x", 404),
        ("GET", "/targets//reset", 404),
        ("DELETE", "/health", 405),
        ("GET", "/targets/x/reset", 405),
        ("PUT", "/nowhere", 404),
    ],
)
def test_other_routes_answer_json_errors(
    server: HealthServer, method: str, path: str, expected: int
) -> None:
    """Anything but the three routes answers a JSON 404 (or 405 for a known path)."""
    answer = fetch(server, path, method)

    assert expected == answer.status
    assert "error" in answer.body


def test_health_ignores_the_query_string(server: HealthServer) -> None:
    """A query string (a cache buster, say) does not change the route."""
    assert 200 == fetch(server, "/health?ts=1").status


class BreakingClock(FakeClock):
    """A fake clock that raises while *broken* is set: an exception inside a handler."""

    broken = False

    def monotonic(self) -> float:
        if self.broken:
            raise RuntimeError("clock exploded: internal detail")
        return super().monotonic()


def test_handler_exception_is_500_and_the_server_survives(
    server: HealthServer, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception in a handler answers 500 without a traceback; the next request works."""
    clock = BreakingClock()
    buttress.protect("api", clock=clock)
    clock.broken = True

    with caplog.at_level(logging.ERROR, logger="buttress"):
        failed = fetch(server, "/health")
    clock.broken = False
    recovered = fetch(server, "/health")

    assert (500, {"error": "internal error", "type": "RuntimeError"}) == (
        failed.status,
        failed.body,
    )
    assert b"Traceback" not in failed.raw
    assert b"internal detail" not in failed.raw
    assert (200, "healthy") == (recovered.status, recovered.body["status"])
    assert any(r.exc_info and r.levelno == logging.ERROR for r in caplog.records)


def test_requests_are_logged_at_debug_and_the_token_never_appears(
    server: HealthServer, open_target: buttress.Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    """Requests go to the buttress logger at DEBUG; no answer or log record holds the token."""
    name = urllib.parse.quote(DB_TARGET, safe="")
    with caplog.at_level(logging.DEBUG, logger="buttress"):
        answers = [
            fetch(server, "/health"),
            fetch(server, f"/targets/{name}/reset", "POST", token="wrong"),
            fetch(server, f"/targets/{name}/reset", "POST"),
            fetch(server, f"/targets/{name}/reset", "POST", token=TOKEN),
            fetch(server, "/targets/nope/reset", "POST", token=TOKEN),
            fetch(server, "/targets"),
        ]

    assert [503, 401, 401, 200, 404, 200] == [a.status for a in answers]
    assert any(
        "GET /health" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records
    )
    assert [] == [a for a in answers if TOKEN.encode() in a.raw or TOKEN in str(a.headers)]
    assert [] == [r for r in caplog.records if TOKEN in r.getMessage() or TOKEN in str(r.args)]


def test_server_header_hides_the_python_version(server: HealthServer) -> None:
    """The Server header names buttress, not the Python version."""
    assert "buttress-health" == fetch(server, "/health").headers["Server"].strip()


def test_stop_closes_the_port() -> None:
    """After stop() the port refuses connections, and stop() may be called again."""
    server = start_health_server(0)
    url = server.url
    server.stop()
    server.stop()

    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/health", timeout=5)  # noqa: S310
    assert "stopped" in repr(server)


@pytest.mark.parametrize("port", [-1, 65536, True, "8080"])
def test_bad_port_is_refused(port: object) -> None:
    """start_health_server() validates the port, naming it."""
    with pytest.raises(buttress.ConfigurationError, match="port="):
        start_health_server(port)  # type: ignore[arg-type]


@pytest.mark.parametrize("environ", [{}, {"BUTTRESS_HEALTH_PORT": ""}])
def test_environment_without_port_starts_nothing(environ: dict[str, str]) -> None:
    """Without BUTTRESS_HEALTH_PORT no server starts."""
    assert None is start_from_environment(environ)


@pytest.mark.parametrize("value", ["http", "-1", "65536", "80.5", "0x50", "1_000"])
def test_environment_with_bad_port_is_refused(value: str) -> None:
    """A port that is not an integer in 0..65535 names the variable, the value and the range."""
    with pytest.raises(buttress.ConfigurationError) as info:
        start_from_environment({"BUTTRESS_HEALTH_PORT": value})

    message = str(info.value)
    assert "BUTTRESS_HEALTH_PORT" in message
    assert repr(value) in message
    assert "0 to 65535" in message


def listening_on_free_ports(n: int) -> list[socket.socket]:
    """*n* listening sockets on consecutive loopback ports (the test's own, busy until closed)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            first = int(s.getsockname()[1])
        held: list[socket.socket] = []
        try:
            for port in range(first, first + n):
                held.append(socket.socket())
                held[-1].bind(("127.0.0.1", port))
                held[-1].listen()
        except OSError:
            for sock in held:
                sock.close()
            continue
        return held
    raise AssertionError(f"no {n} consecutive free ports")


def port_of(sock: socket.socket) -> int:
    """The port *sock* is bound to."""
    return int(sock.getsockname()[1])


def test_environment_with_a_busy_port_says_another_process_serves_it() -> None:
    """The second worker on one port learns who serves it, that its targets miss, what to do."""
    [busy] = listening_on_free_ports(1)
    port = port_of(busy)
    with busy, pytest.raises(HealthPortError) as info:
        start_from_environment({"BUTTRESS_HEALTH_PORT": str(port)})

    message = str(info.value)
    assert message.startswith(f"BUTTRESS_HEALTH_PORT={port}: 127.0.0.1:{port} is in use")
    assert "in use by another process, which serves the health endpoint there" in message
    assert f"the targets of this process (pid {os.getpid()}) are not reported on it" in message
    assert "give a range with a port per worker, such as 8081-8084" in message


def test_environment_range_takes_the_first_free_port(caplog: pytest.LogCaptureFixture) -> None:
    """Ports taken by other processes are skipped; the one taken is logged at INFO."""
    held = listening_on_free_ports(3)
    first = port_of(held[0])
    held[1].close()  # the middle one is free
    with held[0], held[2], caplog.at_level(logging.INFO, logger="buttress"):
        server = start_from_environment({"BUTTRESS_HEALTH_PORT": f"{first}-{first + 2}"})
        assert server is not None
        with server:
            answer = fetch(server, "/health").status

    assert (first + 1, 200) == (server.port, answer)
    expected = (
        f"buttress: health endpoint of pid {os.getpid()} on {server.url} "
        f"(BUTTRESS_HEALTH_PORT={first}-{first + 2})"
    )
    assert [expected] == [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]


def test_environment_range_with_no_free_port_says_to_widen_it() -> None:
    """Every port of the range busy: one message naming the range and the remedy."""
    held = listening_on_free_ports(2)
    first = port_of(held[0])
    with held[0], held[1], pytest.raises(HealthPortError) as info:
        start_from_environment({"BUTTRESS_HEALTH_PORT": f"{first}-{first + 1}"})

    assert (
        f"BUTTRESS_HEALTH_PORT={first}-{first + 1}: every port of the range is in use on "
        f"127.0.0.1, so this process (pid {os.getpid()}) serves no health endpoint. Widen the "
        "range to a port per worker"
    ) == str(info.value)


def test_environment_with_an_address_that_cannot_be_bound_names_the_host() -> None:
    """Not a busy port but a bad host: the message says why and points at the host variable."""
    with pytest.raises(HealthPortError) as info:
        start_from_environment(
            {"BUTTRESS_HEALTH_PORT": "0", "BUTTRESS_HEALTH_HOST": "no-such-host.invalid"}
        )

    message = str(info.value)
    assert message.startswith("BUTTRESS_HEALTH_PORT=0: cannot listen on no-such-host.invalid:0 (")
    assert message.endswith("Choose another port, or check BUTTRESS_HEALTH_HOST")


def test_environment_starts_the_server(open_target: buttress.Pipeline) -> None:
    """Port, host and admin token are read from the environment."""
    server = start_from_environment(
        {
            "BUTTRESS_HEALTH_PORT": "0",
            "BUTTRESS_HEALTH_HOST": "127.0.0.1",
            "BUTTRESS_ADMIN_TOKEN": TOKEN,
        }
    )
    assert server is not None
    name = urllib.parse.quote(DB_TARGET, safe="")
    with server:
        answers = [
            fetch(server, "/health").status,
            fetch(server, f"/targets/{name}/reset", "POST", token=TOKEN).status,
        ]

    assert ("127.0.0.1", [503, 200]) == (server.host, answers)
