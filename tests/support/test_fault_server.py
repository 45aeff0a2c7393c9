"""The fault server itself, observed through the real client libraries (no mocks)."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import aiohttp
import httpx
import pytest
import requests
import urllib3
from tests.support.fault_server import (
    Exchange,
    FaultServer,
    Step,
    delay,
    drop,
    ok,
    refused_url,
    reset,
    reset_mid_body,
    retry_after,
    slow_body,
    status,
)

TIMEOUT = 10.0  # generous client timeout: only reached if the server is broken


@pytest.fixture
def anyio_backend() -> str:
    """aiohttp runs on asyncio only."""
    return "asyncio"


@pytest.fixture
def session() -> Iterator[requests.Session]:
    """A requests session (one connection pool), closed after the test."""
    with requests.Session() as client:
        yield client


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """Every exception reachable from *exc* through args, __cause__ and __context__."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend(arg for arg in current.args if isinstance(arg, BaseException))
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    return any(isinstance(cause, kind) for cause in _causes(exc))


# --------------------------------------------------------------------------- lifecycle


def test_addresses_are_loopback_with_an_os_assigned_port(fault_server: FaultServer) -> None:
    """The server listens on 127.0.0.1 only and reports its url, host, port and authority."""
    assert fault_server.host == "127.0.0.1"
    assert fault_server.port > 0
    assert fault_server.authority == f"127.0.0.1:{fault_server.port}"
    assert fault_server.url == f"http://127.0.0.1:{fault_server.port}"
    assert fault_server._listener is not None
    assert fault_server._listener.getsockname() == ("127.0.0.1", fault_server.port)


def test_start_twice_is_an_error_and_stop_is_idempotent() -> None:
    """A server starts once; stopping it again (or before starting) does nothing."""
    FaultServer().stop()
    server = FaultServer().start()
    with pytest.raises(RuntimeError):
        server.start()
    server.stop()
    server.stop()
    with pytest.raises(RuntimeError):
        server.start()


def test_stop_returns_promptly_with_a_client_mid_delay() -> None:
    """stop() returns within 2 s while a client waits on a 30 s delay, and the client fails."""
    server = FaultServer().start()
    server.script("/slow", delay(30))
    failures: list[BaseException] = []

    def call() -> None:
        try:
            requests.get(server.url + "/slow", timeout=TIMEOUT)
        except requests.RequestException as exc:
            failures.append(exc)

    client = threading.Thread(target=call)
    client.start()
    try:
        assert server.wait_for(1, "/slow")
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 2.0
    finally:
        server.stop()
        client.join(TIMEOUT)
    assert not client.is_alive()
    assert len(failures) == 1
    assert isinstance(failures[0], requests.ConnectionError)


def test_stop_closes_idle_keep_alive_connections() -> None:
    """stop() closes pooled idle connections too, so the next request on them fails."""
    server = FaultServer().start()
    with httpx.Client(timeout=TIMEOUT) as client:
        assert client.get(server.url + "/").status_code == 200
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 2.0
        with pytest.raises(httpx.TransportError):
            client.get(server.url + "/")


def test_refused_url_refuses_connections() -> None:
    """refused_url() is a stable loopback URL on which nothing listens."""
    url = refused_url()
    assert url == refused_url()
    assert url.startswith("http://127.0.0.1:")
    with pytest.raises(requests.ConnectionError) as caught:
        requests.get(url, timeout=TIMEOUT)
    assert _caused_by(caught.value, ConnectionRefusedError)
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=TIMEOUT)


def test_errors_in_a_step_are_recorded_not_raised_in_the_thread() -> None:
    """A step that raises is recorded in server.errors and the client sees a disconnect."""

    class Broken(Step):
        def run(self, exchange: Exchange) -> bool:
            raise RuntimeError("broken step")

    with FaultServer() as server:
        server.script("/broken", Broken())
        with pytest.raises(requests.ConnectionError):
            requests.get(server.url + "/broken", timeout=TIMEOUT)
    assert [str(error) for error in server.errors] == ["broken step"]


# --------------------------------------------------------------------------- scripting


def test_unscripted_paths_answer_200_ok(
    fault_server: FaultServer, session: requests.Session
) -> None:
    """Any path without a script answers 200 with the body b"ok"."""
    response = session.get(fault_server.url + "/anything", timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.content == b"ok"
    assert response.headers["Content-Length"] == "2"


def test_steps_are_consumed_in_order_and_the_last_repeats(
    fault_server: FaultServer, session: requests.Session
) -> None:
    """A 503 burst then ok: each request takes the next step and the last one repeats."""
    fault_server.script("/flaky", status(503), status(503, b"busy"), ok(b"done"))
    answers = [session.get(fault_server.url + "/flaky", timeout=TIMEOUT) for _ in range(5)]
    assert [(a.status_code, a.content) for a in answers] == [
        (503, b""),
        (503, b"busy"),
        (200, b"done"),
        (200, b"done"),
        (200, b"done"),
    ]
    assert fault_server.count("/flaky") == 5


def test_then_answers_after_the_steps(fault_server: FaultServer, session: requests.Session) -> None:
    """With then=, every request after the scripted steps gets the then step."""
    fault_server.script("/x", status(500), status(502), then=ok(b"later"))
    codes = [session.get(fault_server.url + "/x", timeout=TIMEOUT).status_code for _ in range(4)]
    assert codes == [500, 502, 200, 200]
    fault_server.script("/only-then", then=status(418))
    assert session.get(fault_server.url + "/only-then", timeout=TIMEOUT).status_code == 418


def test_a_script_needs_a_step() -> None:
    """script() without steps or then= is an error."""
    with pytest.raises(ValueError, match="step"):
        FaultServer().script("/nothing")


def test_method_scripts_win_over_any_method_scripts(
    fault_server: FaultServer, session: requests.Session
) -> None:
    """A script for POST applies to POST only; other methods use the path's general script."""
    fault_server.script("/item", status(201), method="post")
    fault_server.script("/item", status(204))
    assert session.post(fault_server.url + "/item", data=b"x", timeout=TIMEOUT).status_code == 201
    assert session.get(fault_server.url + "/item", timeout=TIMEOUT).status_code == 204
    assert session.put(fault_server.url + "/item", data=b"x", timeout=TIMEOUT).status_code == 204


def test_scripts_match_the_path_without_the_query(
    fault_server: FaultServer, session: requests.Session
) -> None:
    """The query string does not take part in matching a script."""
    fault_server.script("/search", status(404))
    response = session.get(fault_server.url + "/search?q=1&page=2", timeout=TIMEOUT)
    assert response.status_code == 404
    (record,) = fault_server.requests
    assert (record.path, record.query, record.target) == (
        "/search",
        "q=1&page=2",
        "/search?q=1&page=2",
    )


def test_scripting_again_restarts_and_clear_scripts_forgets(
    fault_server: FaultServer, session: requests.Session
) -> None:
    """Re-scripting a path starts its steps over; clear_scripts() restores the default."""
    fault_server.script("/p", status(500), ok())
    assert session.get(fault_server.url + "/p", timeout=TIMEOUT).status_code == 500
    fault_server.script("/p", status(503), ok())
    assert session.get(fault_server.url + "/p", timeout=TIMEOUT).status_code == 503
    fault_server.clear_scripts()
    assert session.get(fault_server.url + "/p", timeout=TIMEOUT).content == b"ok"


# --------------------------------------------------------------------------- responses


def test_ok_with_custom_status_body_and_headers(
    fault_server: FaultServer, session: requests.Session
) -> None:
    """ok() takes a body (bytes or str), a status and extra headers, which win over defaults."""
    fault_server.script(
        "/json",
        ok('{"a": 1}', status=201, headers={"Content-Type": "application/json", "X-Trace": "t1"}),
    )
    response = session.get(fault_server.url + "/json", timeout=TIMEOUT)
    assert response.status_code == 201
    assert response.json() == {"a": 1}
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["X-Trace"] == "t1"


def test_head_responses_have_no_body(fault_server: FaultServer, session: requests.Session) -> None:
    """HEAD gets the headers of the scripted response without its body, on a reusable connection."""
    response = session.head(fault_server.url + "/", timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.headers["Content-Length"] == "2"
    assert response.content == b""
    assert session.get(fault_server.url + "/", timeout=TIMEOUT).content == b"ok"
    assert fault_server.connections == 1


def test_retry_after_seconds_and_ms(fault_server: FaultServer, session: requests.Session) -> None:
    """retry_after() sets Retry-After in seconds and retry-after-ms on a 429 by default."""
    fault_server.script("/limited", retry_after(seconds=2, ms=150), retry_after(503, seconds=0.5))
    first = session.get(fault_server.url + "/limited", timeout=TIMEOUT)
    assert first.status_code == 429
    assert first.headers["Retry-After"] == "2"
    assert first.headers["retry-after-ms"] == "150"
    second = session.get(fault_server.url + "/limited", timeout=TIMEOUT)
    assert second.status_code == 503
    assert second.headers["Retry-After"] == "0.5"
    assert "retry-after-ms" not in second.headers


def test_retry_after_http_date(fault_server: FaultServer, session: requests.Session) -> None:
    """retry_after(http_date=...) writes an IMF-fixdate from a datetime, or a string as given."""
    fault_server.script(
        "/date",
        retry_after(http_date=datetime(2030, 1, 1, 12, 30, tzinfo=UTC)),
        retry_after(503, http_date="Wed, 21 Oct 2015 07:28:00 GMT"),
    )
    first = session.get(fault_server.url + "/date", timeout=TIMEOUT)
    assert (first.status_code, first.headers["Retry-After"]) == (
        429,
        "Tue, 01 Jan 2030 12:30:00 GMT",
    )
    second = session.get(fault_server.url + "/date", timeout=TIMEOUT)
    assert (second.status_code, second.headers["Retry-After"]) == (
        503,
        "Wed, 21 Oct 2015 07:28:00 GMT",
    )
    with pytest.raises(ValueError, match="not both"):
        retry_after(seconds=1, http_date="Wed, 21 Oct 2015 07:28:00 GMT")


def test_delay_answers_late(fault_server: FaultServer, session: requests.Session) -> None:
    """delay() holds the response back for the given time, then runs its then step."""
    fault_server.script("/slow", delay(0.1, then=status(202)))
    started = time.monotonic()
    response = session.get(fault_server.url + "/slow", timeout=TIMEOUT)
    assert time.monotonic() - started >= 0.1
    assert response.status_code == 202


def test_delay_trips_client_read_timeouts(fault_server: FaultServer) -> None:
    """A delay longer than the client's read timeout is a ReadTimeout in requests and httpx."""
    fault_server.script("/stuck", delay(5))
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(fault_server.url + "/stuck", timeout=(TIMEOUT, 0.1))
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(fault_server.url + "/stuck", timeout=httpx.Timeout(TIMEOUT, read=0.1))
    assert fault_server.count("/stuck") == 2


def test_slow_body_chunked_arrives_chunk_by_chunk(
    fault_server: FaultServer, session: requests.Session
) -> None:
    """slow_body() sends headers at once, then each chunk (chunked encoding) after a pause."""
    fault_server.script("/drip", slow_body([b"a", b"bb", b"ccc"], 0.05))
    started = time.monotonic()
    with session.get(fault_server.url + "/drip", timeout=TIMEOUT, stream=True) as response:
        assert response.headers["Transfer-Encoding"] == "chunked"
        assert "Content-Length" not in response.headers
        chunks = list(response.iter_content(chunk_size=None))
    assert time.monotonic() - started >= 0.15
    assert chunks == [b"a", b"bb", b"ccc"]


def test_slow_body_with_content_length(
    fault_server: FaultServer, session: requests.Session
) -> None:
    """slow_body(chunked=False) declares the total Content-Length and drips the bytes."""
    fault_server.script("/drip", slow_body([b"ab", b"cd"], 0.05, chunked=False))
    started = time.monotonic()
    response = session.get(fault_server.url + "/drip", timeout=TIMEOUT)
    assert time.monotonic() - started >= 0.1
    assert response.headers["Content-Length"] == "4"
    assert "Transfer-Encoding" not in response.headers
    assert response.content == b"abcd"


def test_slow_body_trips_read_timeouts_after_the_headers(fault_server: FaultServer) -> None:
    """With a slow body the status arrives at once but reading the body times out."""
    fault_server.script("/drip", slow_body([b"late"], 5))
    with (
        httpx.Client(timeout=httpx.Timeout(TIMEOUT, read=0.1)) as client,
        client.stream("GET", fault_server.url + "/drip") as response,
    ):
        assert response.status_code == 200
        with pytest.raises(httpx.ReadTimeout):
            response.read()


# --------------------------------------------------------------------------- connection faults


def test_reset_is_a_connection_reset(fault_server: FaultServer) -> None:
    """reset() aborts the connection: requests raises ConnectionError, httpx ReadError."""
    fault_server.script("/boom", reset())
    with pytest.raises(requests.ConnectionError) as caught:
        requests.get(fault_server.url + "/boom", timeout=TIMEOUT)
    assert _caused_by(caught.value, ConnectionResetError)
    with pytest.raises(httpx.ReadError):
        httpx.get(fault_server.url + "/boom", timeout=TIMEOUT)
    with (
        urllib3.PoolManager(retries=False) as pool,
        pytest.raises(urllib3.exceptions.ProtocolError),
    ):
        pool.request("GET", fault_server.url + "/boom", timeout=TIMEOUT)
    assert fault_server.count("/boom") == 3


def test_reset_mid_body_breaks_the_body(fault_server: FaultServer) -> None:
    """reset_mid_body() sends part of a promised body then resets: a broken body in both clients."""
    fault_server.script("/cut", reset_mid_body(b"partial", 100))
    with pytest.raises(requests.exceptions.ChunkedEncodingError) as caught:
        requests.get(fault_server.url + "/cut", timeout=TIMEOUT)
    assert _caused_by(caught.value, ConnectionResetError)
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.get(fault_server.url + "/cut", timeout=TIMEOUT)
    assert fault_server.count("/cut") == 2


def test_reset_mid_body_headers_arrive_first(fault_server: FaultServer) -> None:
    """The status and the declared Content-Length reach the client before the reset."""
    fault_server.script("/cut", reset_mid_body(b"0123", 10))
    with (
        httpx.Client(timeout=TIMEOUT) as client,
        client.stream("GET", fault_server.url + "/cut") as response,
    ):
        assert response.status_code == 200
        assert response.headers["Content-Length"] == "10"
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            response.read()


def test_truncated_body_without_reset(fault_server: FaultServer) -> None:
    """reset_mid_body(abrupt=False) closes cleanly: the clients report an incomplete body."""
    fault_server.script("/short", reset_mid_body(b"0123456", 100, abrupt=False))
    with pytest.raises(requests.exceptions.ChunkedEncodingError) as caught:
        requests.get(fault_server.url + "/short", timeout=TIMEOUT)
    assert _caused_by(caught.value, http.client.IncompleteRead)
    with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
        httpx.get(fault_server.url + "/short", timeout=TIMEOUT)
    with pytest.raises(ValueError, match="fewer"):
        reset_mid_body(b"0123", 4)


def test_drop_closes_without_a_response(fault_server: FaultServer) -> None:
    """drop() closes cleanly: requests sees RemoteDisconnected, httpx RemoteProtocolError."""
    fault_server.script("/gone", drop())
    with pytest.raises(requests.ConnectionError) as caught:
        requests.get(fault_server.url + "/gone", timeout=TIMEOUT)
    assert _caused_by(caught.value, http.client.RemoteDisconnected)
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        httpx.get(fault_server.url + "/gone", timeout=TIMEOUT)
    assert fault_server.count("/gone") == 2


@pytest.mark.anyio
async def test_aiohttp_sees_scripted_statuses_and_drops(fault_server: FaultServer) -> None:
    """aiohttp reuses one connection across scripted statuses and sees a drop as a disconnect."""
    fault_server.script("/flaky", status(503), ok(b"fine"))
    fault_server.script("/gone", drop())
    async with aiohttp.ClientSession() as client:
        async with client.get(fault_server.url + "/flaky") as first:
            assert first.status == 503
        async with client.get(fault_server.url + "/flaky") as second:
            assert (second.status, await second.read()) == (200, b"fine")
        assert fault_server.connections == 1
    async with aiohttp.ClientSession() as client:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await client.get(fault_server.url + "/gone")


# --------------------------------------------------------------------------- keep-alive


def test_keep_alive_survives_every_well_formed_step(
    fault_server: FaultServer, session: requests.Session
) -> None:
    """One pooled connection serves statuses, Retry-After, delays, slow bodies and request bodies."""
    fault_server.script(
        "/mixed",
        status(503),
        retry_after(seconds=1),
        delay(0.05, then=ok(b"late")),
        slow_body([b"x", b"y"], 0.02),
        slow_body([b"x", b"y"], 0.02, chunked=False),
        then=ok(),
    )
    url = fault_server.url + "/mixed"
    codes = [session.get(url, timeout=TIMEOUT).status_code for _ in range(5)]
    assert codes == [503, 429, 200, 200, 200]
    assert session.post(url, data=b"form=1", timeout=TIMEOUT).status_code == 200
    assert session.put(url, data=iter([b"chunk-1", b"chunk-2"]), timeout=TIMEOUT).status_code == 200
    assert session.get(url, timeout=TIMEOUT).content == b"ok"
    assert fault_server.connections == 1
    assert {record.connection for record in fault_server.requests} == {1}


def test_keep_alive_in_httpx_and_a_fresh_connection_after_a_reset(
    fault_server: FaultServer,
) -> None:
    """httpx reuses its connection until a reset, then opens a new one that works."""
    fault_server.script("/flaky", status(500), reset(), ok(b"back"))
    with httpx.Client(timeout=TIMEOUT) as client:
        assert client.get(fault_server.url + "/").status_code == 200
        assert client.get(fault_server.url + "/flaky").status_code == 500
        with pytest.raises(httpx.ReadError):
            client.get(fault_server.url + "/flaky")
        assert client.get(fault_server.url + "/flaky").content == b"back"
    assert [record.connection for record in fault_server.requests] == [1, 1, 1, 2]
    assert fault_server.connections == 2


def test_connection_close_is_honoured(fault_server: FaultServer, session: requests.Session) -> None:
    """A client's Connection: close (or a step's) closes the connection after the response."""
    first = session.get(fault_server.url + "/", headers={"Connection": "close"}, timeout=TIMEOUT)
    assert first.headers["Connection"] == "close"
    fault_server.script("/bye", ok(headers={"Connection": "close"}))
    session.get(fault_server.url + "/bye", timeout=TIMEOUT)
    session.get(fault_server.url + "/", timeout=TIMEOUT)
    assert [record.connection for record in fault_server.requests] == [1, 2, 3]


# --------------------------------------------------------------------------- counting


def test_counts_per_path_and_method(fault_server: FaultServer, session: requests.Session) -> None:
    """count() filters by path and/or method (any case); reset_counts() starts over."""
    fault_server.script("/a", status(500), ok())
    session.get(fault_server.url + "/a", timeout=TIMEOUT)
    session.get(fault_server.url + "/a?page=2", timeout=TIMEOUT)
    session.post(fault_server.url + "/a", data=b"body", timeout=TIMEOUT)
    session.get(fault_server.url + "/b", timeout=TIMEOUT)
    assert fault_server.count() == 4
    assert fault_server.count("/a") == 3
    assert fault_server.count("/a", "POST") == 1
    assert fault_server.count(method="get") == 3
    assert fault_server.count("/c") == 0
    fault_server.reset_counts()
    assert fault_server.count() == 0
    assert fault_server.requests == []
    # The script keeps its position: its last step (ok) repeats.
    assert session.get(fault_server.url + "/a", timeout=TIMEOUT).status_code == 200
    assert fault_server.count("/a") == 1


def test_records_hold_method_path_query_headers_body_and_time(
    fault_server: FaultServer, session: requests.Session
) -> None:
    """Each record has the method, path, query, case-insensitive headers, full body and time."""
    before = time.monotonic()
    session.post(
        fault_server.url + "/upload?kind=raw",
        data=b"x" * 10_000,
        headers={"X-Request-Id": "abc"},
        timeout=TIMEOUT,
    )
    session.put(fault_server.url + "/upload", data=iter([b"one,", b"two"]), timeout=TIMEOUT)
    after = time.monotonic()
    post, put = fault_server.requests
    assert (post.method, post.path, post.query, post.body) == (
        "POST",
        "/upload",
        "kind=raw",
        b"x" * 10_000,
    )
    assert post.headers["x-request-id"] == post.headers["X-REQUEST-ID"] == "abc"
    assert "content-length" in post.headers
    assert post.headers.get_all("Host") == [fault_server.authority]
    assert (put.method, put.query, put.body) == ("PUT", "", b"one,two")
    assert put.headers["transfer-encoding"] == "chunked"
    assert before <= post.received_at <= put.received_at <= after


def test_faulted_requests_are_counted_before_the_fault(fault_server: FaultServer) -> None:
    """A request answered with a reset or a drop is still counted, with its body."""
    fault_server.script("/boom", reset(), drop())
    for _ in range(2):
        with pytest.raises(requests.ConnectionError):
            requests.post(fault_server.url + "/boom", data=b"payload", timeout=TIMEOUT)
    assert fault_server.count("/boom", "POST") == 2
    assert [record.body for record in fault_server.requests] == [b"payload", b"payload"]


def test_concurrent_requests_from_eight_threads_are_all_counted(fault_server: FaultServer) -> None:
    """Eight threads in parallel are served concurrently and every request is counted."""
    fault_server.script("/slow", delay(0.2))
    barrier = threading.Barrier(8)
    first_done: list[float] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        try:
            with requests.Session() as client:
                barrier.wait(TIMEOUT)
                client.get(fault_server.url + "/slow", timeout=TIMEOUT).raise_for_status()
                with lock:
                    first_done.append(time.monotonic())
                for n in range(10):
                    client.get(
                        f"{fault_server.url}/fast?w={index}&n={n}", timeout=TIMEOUT
                    ).raise_for_status()
        except BaseException as exc:
            with lock:
                failures.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not failures
    assert fault_server.count("/slow") == 8
    assert fault_server.count("/fast") == 80
    assert fault_server.count() == 88
    # Every delayed request had arrived before the first of them was answered: served in parallel.
    slow = [record for record in fault_server.requests if record.path == "/slow"]
    assert max(record.received_at for record in slow) < min(first_done)
    assert len({record.connection for record in slow}) == 8
    queries = {record.query for record in fault_server.requests if record.path == "/fast"}
    assert len(queries) == 80


def test_wait_for_times_out_without_requests(fault_server: FaultServer) -> None:
    """wait_for() returns False when the requests do not come in time."""
    assert not fault_server.wait_for(1, "/never", timeout=0.05)
    httpx.get(fault_server.url + "/once", timeout=TIMEOUT)
    assert fault_server.wait_for(1, "/once", method="GET", timeout=0.05)
