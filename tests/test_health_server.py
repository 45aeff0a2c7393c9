"""The HTTP health endpoint: a real server on a free loopback port, driven with urllib and raw
sockets."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import socket
import struct
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import buttress
from buttress._health_server import (
    HealthPortError,
    HealthServer,
    _Limits,
    _parse_head,
    _Refusal,
    _start,
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


# -- every method, sizes, malformed input: raw requests on real sockets -------------------------


class Raw:
    """An answer read off the socket: status, headers, body, and every byte sent."""

    def __init__(self, data: bytes) -> None:
        head, _, self.body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ", 2)[1])
        self.headers = dict(line.split(": ", 1) for line in lines[1:])
        self.data = data

    def json(self) -> Any:
        """The body, decoded."""
        return json.loads(self.body)


def read_until_closed(sock: socket.socket) -> bytes:
    """Every byte *sock* receives until the server closes it."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def exchange(server: HealthServer, data: bytes) -> Raw:
    """Send *data* on a fresh connection and read the answer until the server closes it."""
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(data)
        return Raw(read_until_closed(sock))


def request(method: str, path: str, *headers: str, body: bytes = b"") -> bytes:
    """The bytes of one HTTP/1.1 request."""
    lines = [f"{method} {path} HTTP/1.1", "Host: buttress", *headers, "", ""]
    return "\r\n".join(lines).encode("latin-1") + body


@contextlib.contextmanager
def limited(**limits: Any) -> Iterator[HealthServer]:
    """A server with the default limits but those given."""
    with _start(0, "127.0.0.1", TOKEN, _Limits(**limits)) as running:
        yield running


@pytest.mark.parametrize("path", ["/health", "/targets"])
def test_head_answers_like_get_without_a_body(
    server: HealthServer, open_target: buttress.Pipeline, path: str
) -> None:
    """HEAD on a GET route has GET's status and headers, and not one byte of body."""
    get = exchange(server, request("GET", path))
    head = exchange(server, request("HEAD", path))

    assert (get.status, get.headers["Content-Length"], b"") == (
        head.status,
        head.headers["Content-Length"],
        head.body,
    )
    assert head.data.endswith(b"\r\n\r\n")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("OPTIONS", "/health", "GET, HEAD"),
        ("POST", "/health", "GET, HEAD"),
        ("PUT", "/targets", "GET, HEAD"),
        ("BREW", "/targets", "GET, HEAD"),
        ("GET", "/targets/x/reset", "POST"),
        ("OPTIONS", "/targets/x/reset", "POST"),
        ("DELETE", "/targets/x/reset", "POST"),
    ],
)
def test_other_methods_on_known_routes_are_405_json_with_allow(
    server: HealthServer, method: str, path: str, allow: str
) -> None:
    """OPTIONS, unknown methods and wrong ones answer 405 JSON naming the allowed methods."""
    answer = exchange(server, request(method, path))

    assert (405, allow, "application/json") == (
        answer.status,
        answer.headers["Allow"],
        answer.headers["Content-Type"],
    )
    assert {"error": f"method not allowed; use {allow}"} == answer.json()


def test_head_on_the_reset_route_is_405_without_a_body(server: HealthServer) -> None:
    """HEAD on the POST route is a wrong method too, answered without a body."""
    answer = exchange(server, request("HEAD", "/targets/x/reset"))

    assert (405, "POST", b"") == (answer.status, answer.headers["Allow"], answer.body)


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"garbage\r\n\r\n", 400),
        (b"GET /health\r\n\r\n", 400),
        (b"GET  /health HTTP/1.1\r\n\r\n", 400),
        (b"GET /health HTTP/1.1 more\r\n\r\n", 400),
        (b"G(T /health HTTP/1.1\r\n\r\n", 400),
        (b"GET health HTTP/1.1\r\n\r\n", 400),
        (b"GET /he\x01lth HTTP/1.1\r\n\r\n", 400),
        (b"GET /health FTP/1.1\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\nno colon\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\nHost : x\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\nX-A: a\x00b\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"GET /health HTTP/2.0\r\n\r\n", 505),
        (b"POST /targets/x/reset HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411),
    ],
    ids=[
        "garbage",
        "http-0.9",
        "two-spaces",
        "four-parts",
        "bad-method",
        "relative-target",
        "control-in-target",
        "not-http",
        "no-colon",
        "space-before-colon",
        "folded",
        "nul-in-value",
        "length-not-a-number",
        "length-negative",
        "lengths-differ",
        "http-2",
        "chunked",
    ],
)
def test_malformed_requests_answer_json_errors(
    server: HealthServer, data: bytes, status: int
) -> None:
    """A request that is not well-formed HTTP/1.x answers a JSON error and closes."""
    answer = exchange(server, data)

    assert (status, "application/json", "close") == (
        answer.status,
        answer.headers["Content-Type"],
        answer.headers["Connection"],
    )
    assert {"error"} == set(answer.json())


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (request("GET", "/" + "a" * 9000), 414),
        (b"GET /" + b"a" * 20000, 414),
        (request("GET", "/health", "X-Big: " + "b" * 17000), 431),
        (request("GET", "/health", *[f"X-{i}: {i}" for i in range(101)]), 431),
        (request("POST", "/targets/x/reset", "Content-Length: 16385"), 413),
    ],
    ids=["long-line", "long-line-unfinished", "big-header", "101-headers", "big-body"],
)
def test_oversized_requests_are_refused(server: HealthServer, data: bytes, status: int) -> None:
    """The request line, the head and the body are capped; the refusal reaches the client."""
    answer = exchange(server, data)

    assert status == answer.status
    assert "longer than" in answer.json()["error"] or "more than" in answer.json()["error"]


def test_requests_within_the_caps_are_served(
    server: HealthServer, open_target: buttress.Pipeline
) -> None:
    """A long path, many headers and a body up to the caps are read whole and answered."""
    name = urllib.parse.quote(DB_TARGET, safe="")
    body = b"x" * 16 * 1024

    long_path = exchange(server, request("GET", "/" + "a" * 8000))
    many_headers = exchange(server, request("GET", "/health", *[f"X-{i}: 1" for i in range(99)]))
    with_body = exchange(
        server,
        request(
            "POST",
            f"/targets/{name}/reset",
            f"Authorization: Bearer {TOKEN}",
            f"Content-Length: {len(body)}",
            body=body,
        ),
    )

    assert [404, 503, 200] == [long_path.status, many_headers.status, with_body.status]


# Pieces of requests, so that the examples come near the grammar as well as far from it.
PIECES = st.sampled_from(
    [
        b"GET",
        b"HEAD",
        b"POST",
        b" ",
        b"/health",
        b"/targets/x/reset",
        b"?a=1",
        b"%0A",
        b"*",
        b"http://h",
        b"HTTP/1.1",
        b"HTTP/2.0",
        b"\r\n",
        b"\n",
        b":",
        b"\t",
        b"\x00",
        b"\xff",
        b"Authorization: Bearer ",
        b"Content-Length: ",
        b"Transfer-Encoding: chunked",
        b"Expect: 100-continue",
        b"0",
        b"-1",
    ]
)
HEADS = st.one_of(
    st.binary(max_size=200), st.lists(PIECES | st.binary(max_size=3), max_size=30).map(b"".join)
)


def parse_status(head: bytes) -> int:
    """200 when *head* parses, else the status of the refusal."""
    try:
        _parse_head(head, _Limits())
    except _Refusal as refusal:
        return int(refusal.status)
    return 200


@given(HEADS)
def test_any_head_is_parsed_or_refused(head: bytes) -> None:
    """Whatever the bytes, the parser returns a request or refuses it, and raises nothing else."""
    assert parse_status(head) in {200, 400, 411, 431, 505}


@settings(max_examples=40, deadline=None)
@given(HEADS)
def test_any_bytes_get_a_json_answer(head: bytes) -> None:
    """Whatever a client sends, it gets an HTTP answer with a JSON body (or none, for HEAD)."""
    with limited(request_timeout=0.3) as server:
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            sock.sendall(head + b"\r\n\r\n")
            data = read_until_closed(sock)
        answer = Raw(data.removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n"))

    assert 200 <= answer.status < 600
    assert answer.body == b"" or isinstance(answer.json(), dict | list)


def test_leading_empty_lines_and_the_absolute_form_are_accepted(server: HealthServer) -> None:
    """Empty lines before the request line are skipped; http://host/path is the path."""
    answers = [
        exchange(server, b"\r\n\r\n" + request("GET", "/health")),
        exchange(server, request("GET", "http://buttress:8081/health?x=1")),
        exchange(server, b"GET /health HTTP/1.0\n\n"),
    ]

    assert [200, 200, 200] == [a.status for a in answers]


def test_a_request_sent_in_pieces_is_served(server: HealthServer) -> None:
    """A request that arrives a few bytes at a time is put together, blank line split too."""
    data = request("GET", "/health")
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        for i in range(0, len(data), 3):
            sock.sendall(data[i : i + 3])
            time.sleep(0.002)
        answer = Raw(read_until_closed(sock))

    assert 200 == answer.status


def test_a_pipelined_request_is_not_answered_and_the_answer_arrives(server: HealthServer) -> None:
    """Two requests in one write: the first is answered in full, then the connection closes."""
    answer = exchange(server, request("GET", "/health") + request("GET", "/targets"))

    assert (200, "healthy") == (answer.status, answer.json()["status"])


def test_expect_100_continue_gets_an_interim_answer(server: HealthServer) -> None:
    """A client that waits for 100 Continue before its body gets it, then the answer."""
    head = request("POST", "/targets/x/reset", "Content-Length: 3", "Expect: 100-continue")
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(head)
        interim = sock.recv(65536)
        sock.sendall(b"abc")
        answer = Raw(read_until_closed(sock))

    assert b"HTTP/1.1 100 Continue\r\n\r\n" == interim
    assert 401 == answer.status


@pytest.mark.parametrize(
    "authorization",
    [f"bearer {TOKEN}", f"BEARER {TOKEN}", f"Bearer   {TOKEN}  "],
    ids=["lower-case", "upper-case", "spaces"],
)
def test_reset_accepts_the_scheme_in_any_case_and_spaces(
    server: HealthServer, open_target: buttress.Pipeline, authorization: str
) -> None:
    """The scheme is case-insensitive and spaces around the token do not count."""
    name = urllib.parse.quote(DB_TARGET, safe="")

    answer = exchange(
        server, request("POST", f"/targets/{name}/reset", f"Authorization: {authorization}")
    )

    assert 200 == answer.status


def test_reset_with_two_authorization_headers_is_400(
    server: HealthServer, open_target: buttress.Pipeline
) -> None:
    """Two Authorization headers are ambiguous: refused, the breaker stays open, nothing echoed."""
    name = urllib.parse.quote(DB_TARGET, safe="")
    data = request(
        "POST",
        f"/targets/{name}/reset",
        "Authorization: Bearer wrong",
        f"Authorization: Bearer {TOKEN}",
    )

    answer = exchange(server, data)

    assert 400 == answer.status
    assert TOKEN.encode() not in answer.data
    assert open_target.breaker is not None
    assert buttress.CircuitState.OPEN == open_target.breaker.state


def test_a_token_that_is_not_ascii_matches_its_utf8_bytes(open_target: buttress.Pipeline) -> None:
    """A token with non-ASCII characters matches the UTF-8 bytes a client sends."""
    token = "clé-secrète-€"
    name = urllib.parse.quote(DB_TARGET, safe="")
    head = f"POST /targets/{name}/reset HTTP/1.1\r\nAuthorization: Bearer ".encode()
    with start_health_server(0, admin_token=token) as server:
        wrong = exchange(server, head + "clé-secrète-e".encode() + b"\r\n\r\n")
        right = exchange(server, head + token.encode() + b"\r\n\r\n")

    assert (401, 200) == (wrong.status, right.status)


def test_a_partial_request_is_answered_408_and_closed_at_the_deadline() -> None:
    """A request still unfinished at the deadline gets 408 and is closed, bytes trickling or not."""
    with limited(request_timeout=0.5) as server:
        closed_after = []
        for trickle in (False, True):
            with socket.create_connection((server.host, server.port), timeout=10) as sock:
                start = time.monotonic()
                sock.sendall(b"GET /health HTTP/1.1\r\n")
                # A byte every 50 ms until the answer comes: the deadline is for the whole
                # request, not for the time between two bytes.
                while trickle and not select.select([sock], [], [], 0.05)[0]:
                    sock.sendall(b"X")
                answer = Raw(read_until_closed(sock))
                closed_after.append(time.monotonic() - start)

            assert 408 == answer.status

    assert all(0.4 < seconds < 3 for seconds in closed_after), closed_after


def test_a_new_connection_takes_the_slot_of_the_oldest() -> None:
    """With every slot held by partial requests, a new client is served and the oldest closed."""
    with limited(max_connections=4, evict_after=0.2, request_timeout=30) as server:
        held = [socket.create_connection((server.host, server.port), timeout=10) for _ in range(4)]
        for sock in held:
            sock.sendall(b"GET /health HTTP/1.1\r\n")
        while len(server._loop.connections) < 4:
            time.sleep(0.01)
        start = time.monotonic()
        answer = exchange(server, request("GET", "/health"))
        served_in = time.monotonic() - start
        oldest = Raw(read_until_closed(held[0]))
        open_now = len(server._loop.connections)
        for sock in held:
            sock.close()

    assert (200, 3) == (answer.status, open_now)
    assert served_in < 5
    assert (503, {"error": "all 4 connections are taken"}) == (oldest.status, oldest.json())
    assert 1 == server._loop.counts["evicted"]


def open_descriptors() -> int:
    """How many descriptors this process holds."""
    return sum(1 for _ in Path("/proc/self/fd").iterdir())


def test_stop_closes_every_connection_and_joins_the_thread() -> None:
    """stop() closes held connections, the listener and its own descriptors, and the thread ends."""
    before = open_descriptors()
    server = start_health_server(0)
    held = [socket.create_connection((server.host, server.port), timeout=10) for _ in range(3)]
    for sock in held:
        sock.sendall(b"GET /health HTTP/1.1\r\n")
    while len(server._loop.connections) < 3:
        time.sleep(0.01)

    server.stop()
    seen = [read_until_closed(sock) for sock in held]
    for sock in held:
        sock.close()

    assert ([b"", b"", b""], False) == (seen, server._thread.is_alive())
    assert before == open_descriptors()


@pytest.mark.parametrize("reset", [False, True], ids=["close", "reset"])
def test_a_client_hanging_up_early_is_logged_at_debug_only(
    server: HealthServer, caplog: pytest.LogCaptureFixture, reset: bool
) -> None:
    """Hang-ups before, during and after the request are DEBUG records; the server serves on."""
    with caplog.at_level(logging.DEBUG, logger="buttress"):
        for data in (b"", b"GET /hea", request("GET", "/health")):
            sock = socket.create_connection((server.host, server.port), timeout=10)
            if reset:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.sendall(data)
            sock.close()
        answer = exchange(server, request("GET", "/health"))

    assert 200 == answer.status
    assert [] == [r for r in caplog.records if r.levelno > logging.DEBUG or r.exc_info]


def test_logged_paths_are_escaped_and_carry_no_query_string(
    server: HealthServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A log line holds the path escaped, and never the query string (it may carry secrets)."""
    with caplog.at_level(logging.DEBUG, logger="buttress"):
        exchange(server, request("GET", "/x%0Afake-line?key=canary-secret"))

    [line] = [r.getMessage() for r in caplog.records if "/x" in r.getMessage()]
    assert "GET /x\\nfake-line -> 404" in line
    assert "canary-secret" not in line


def test_ipv6_loopback() -> None:
    """An address with a colon binds IPv6; the URL brackets it."""
    try:
        server = start_health_server(0, host="::1")
    except OSError as error:  # pragma: no cover - a machine without IPv6
        pytest.skip(f"no IPv6 loopback here: {error}")
    with server:
        answer = fetch(server, "/health")

    assert (f"http://[::1]:{server.port}", 200) == (server.url, answer.status)


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
