"""Every patched HTTP client behaves the same under buttress: retries, breaker, deadlines.

Each test runs against a real HTTP server on 127.0.0.1 (``fault_server``) through the client
drivers of ``conftest.py``: requests, httpx (sync and async), aiohttp and urllib3's PoolManager.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest
import requests
from tests.support.fault_server import (
    FaultServer,
    delay,
    ok,
    refused_url,
    reset,
    retry_after,
    status,
)

import buttress
from buttress import telemetry
from buttress.integrations import _http
from buttress.telemetry import RetryScheduled

ALL = ["requests", "httpx", "httpx-async", "aiohttp", "urllib3"]


@pytest.fixture
def retries() -> Iterator[list[RetryScheduled]]:
    """Every RetryScheduled event published during the test."""
    seen: list[RetryScheduled] = []

    def hook(event: object) -> None:
        if isinstance(event, RetryScheduled):
            seen.append(event)

    remove = telemetry.add_hook(hook)
    yield seen
    remove()


def gap(server: FaultServer, path: str) -> float:
    """Seconds between the first two requests the server received for *path*."""
    first, second = [r.received_at for r in server.requests if r.path == path][:2]
    return second - first


def raised(fn: Callable[[], object]) -> BaseException:
    """The exception *fn* raises (the test fails if it returns)."""
    with pytest.raises(BaseException) as info:
        fn()
    return info.value


# --- retried responses ---------------------------------------------------------------------------


def test_retried_get_returns_the_final_success(activated, client, fault_server: FaultServer):
    """A GET answered 503, 503, 200 is sent three times and returns the final 200 and its body."""
    fault_server.script("/flaky", status(503), status(503), ok(b"done"))

    reply = client.do("GET", f"{fault_server.url}/flaky")

    assert (200, b"done") == (reply.status, reply.body)
    assert 3 == fault_server.count("/flaky", "GET")


def test_exhausted_retries_return_the_real_last_response(
    activated, client, fault_server: FaultServer
):
    """With three attempts all answered 503, the caller gets the third 503 with its body intact."""
    fault_server.script(
        "/down", status(503, b"first"), status(503, b"second"), status(503, b"third")
    )

    reply = client.do("GET", f"{fault_server.url}/down")

    assert (503, b"third") == (reply.status, reply.body)
    assert 3 == fault_server.count("/down", "GET")


def test_post_without_idempotency_key_is_sent_once(activated, client, fault_server: FaultServer):
    """A POST may have had effects: it is sent once and its 503 returned."""
    fault_server.script("/orders", status(503, b"busy"), then=ok(b"created"))

    reply = client.do("POST", f"{fault_server.url}/orders", body=b"{}")

    assert (503, b"busy") == (reply.status, reply.body)
    assert 1 == fault_server.count("/orders", "POST")


def test_post_with_idempotency_key_is_retried(activated, client, fault_server: FaultServer):
    """A POST carrying an Idempotency-Key header is safe to resend, with the same key and body."""
    fault_server.script("/orders", status(503), then=ok(b"created"))

    reply = client.do(
        "POST", f"{fault_server.url}/orders", headers={"Idempotency-Key": "k-1"}, body=b"{}"
    )

    assert (200, b"created") == (reply.status, reply.body)
    sent = [(r.headers.get("Idempotency-Key"), r.body) for r in fault_server.requests]
    assert [("k-1", b"{}"), ("k-1", b"{}")] == sent


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_idempotent_methods_are_retried(activated, client, fault_server: FaultServer, method):
    """PUT and DELETE are idempotent: a 503 is retried like a GET's."""
    fault_server.script("/item", status(503), then=ok(b"done"))

    reply = client.do(method, f"{fault_server.url}/item", body=b"x" if method == "PUT" else None)

    assert (200, b"done") == (reply.status, reply.body)
    assert 2 == fault_server.count("/item", method)


def test_one_shot_streaming_body_is_never_retried(activated, client, fault_server: FaultServer):
    """A PUT whose body is a generator cannot be replayed: it is sent once despite its 503."""
    fault_server.script("/upload", status(503, b"busy"), then=ok(b"stored"))

    reply = client.do(
        "PUT", f"{fault_server.url}/upload", body=client.stream_body([b"chunk-1", b"chunk-2"])
    )

    assert (503, b"busy") == (reply.status, reply.body)
    assert [b"chunk-1chunk-2"] == [r.body for r in fault_server.requests]


# --- transport errors ----------------------------------------------------------------------------


def test_connection_refused_is_retried_then_raises_the_library_error(
    activated, client, retries: list[RetryScheduled]
):
    """A refused connection is retried, then the library's own error reaches the caller as is."""
    url = refused_url()

    error = raised(lambda: client.do("GET", f"{url}/x"))

    assert isinstance(error, client.connection_error)
    assert not isinstance(error, buttress.ResilienceError)
    assert [1, 2] == [event.attempt for event in retries]


def test_connection_reset_is_retried_then_raises_the_library_error(
    activated, client, fault_server: FaultServer
):
    """A reset before any response is retried; the last reset error reaches the caller as is."""
    fault_server.script("/reset", reset())

    error = raised(lambda: client.do("GET", f"{fault_server.url}/reset"))

    assert isinstance(error, client.connection_error)
    assert not isinstance(error, buttress.ResilienceError)
    assert 3 * client.sends_per_reset == fault_server.count("/reset", "GET")


# --- circuit breaker -----------------------------------------------------------------------------

BREAKER = {
    "retry.attempts": 1,
    "breaker.window_size": 4,
    "breaker.minimum_calls": 4,
    "breaker.failure_rate_threshold": 0.5,
    "breaker.open_duration": 0.2,
    "breaker.half_open_calls": 1,
}


def test_open_breaker_answers_with_the_last_status_without_reaching_the_server(
    activate_buttress, client, fault_server: FaultServer
):
    """After the threshold the breaker opens; a request then gets, without being sent, the 503
    the dependency kept answering: the shape the app already handles, marked as buttress's."""
    activate_buttress(BREAKER)
    fault_server.script("/down", status(503))
    url = f"{fault_server.url}/down"
    statuses = [client.do("GET", url).status for _ in range(4)]

    reply = client.do("GET", url)

    headers = {k.lower(): v for k, v in reply.headers.items()}
    assert [503, 503, 503, 503] == statuses
    assert 503 == reply.status
    assert "circuit_open" == headers["x-buttress-rejected"]
    assert 1 <= int(headers["retry-after"])
    assert {"error": "circuit_open", "target": fault_server.authority} == {
        k: v for k, v in json.loads(reply.body).items() if k != "detail"
    }
    assert 4 == fault_server.count("/down")


def test_429s_never_open_the_breaker(activate_buttress, client, fault_server: FaultServer):
    """A 429 is a live server pacing its clients: however many, the breaker stays closed and
    every request is sent, as without buttress."""
    activate_buttress({**BREAKER, "breaker.consecutive_failures": 2})
    fault_server.script("/busy", retry_after(429, seconds=0))
    url = f"{fault_server.url}/busy"

    statuses = [client.do("GET", url).status for _ in range(6)]

    assert [429] * 6 == statuses
    assert 6 == fault_server.count("/busy")
    assert "closed" == buttress.get_target(fault_server.authority).breaker.state


def test_the_open_breakers_response_behaves_like_a_real_one(activate_buttress, fault_server):
    """What apps do with a response works on buttress's: raise_for_status, iteration, close."""
    activate_buttress(BREAKER)
    fault_server.script("/down", status(503))
    url = f"{fault_server.url}/down?token=secret"
    with requests.Session() as session:
        for _ in range(4):
            session.get(url)
        response = session.get(url)

    with pytest.raises(requests.HTTPError, match="503 Server Error: Service Unavailable"):
        response.raise_for_status()
    assert response.content == b"".join(response.iter_content(7))
    assert ("GET", url) == (response.request.method, response.url)
    assert "secret" not in response.text
    response.close()


def test_open_breaker_raises_the_connection_error_when_configured(
    activate_buttress, client, fault_server: FaultServer
):
    """With http.open_breaker = "error", an open breaker is a double-typed connection error."""
    activate_buttress({**BREAKER, "http.open_breaker": "error"})
    fault_server.script("/down", status(503))
    url = f"{fault_server.url}/down"
    statuses = [client.do("GET", url).status for _ in range(4)]

    error = raised(lambda: client.do("GET", url))

    assert [503, 503, 503, 503] == statuses
    assert isinstance(error, buttress.CircuitOpenError)
    assert isinstance(error, client.connection_error)
    assert 4 == fault_server.count("/down")


def test_a_breaker_opened_by_connection_errors_raises_the_connection_error(
    activate_buttress, client
):
    """The app saw connection errors, so an open breaker raises one: no status to repeat."""
    activate_buttress(BREAKER)
    url = refused_url()
    errors = [raised(lambda: client.do("GET", url)) for _ in range(4)]

    error = raised(lambda: client.do("GET", url))

    assert not any(isinstance(e, buttress.CircuitOpenError) for e in errors)
    assert isinstance(error, buttress.CircuitOpenError)
    assert isinstance(error, client.connection_error)


def test_breaker_half_open_probe_closes_it_again(
    activate_buttress, client, fault_server: FaultServer
):
    """Once the open duration has passed, a probe reaches the server and its success closes."""
    activate_buttress(BREAKER)
    fault_server.script("/down", *[status(503)] * 4, then=ok(b"back"))
    url = f"{fault_server.url}/down"
    for _ in range(4):
        client.do("GET", url)
    breaker = buttress.get_target(fault_server.authority).breaker
    assert "open" == breaker.state

    time.sleep(0.25)  # the breaker's open_duration (0.2 s) on the real clock
    probe = client.do("GET", url)

    assert (200, b"back") == (probe.status, probe.body)
    assert "closed" == breaker.state
    assert 200 == client.do("GET", url).status
    assert 6 == fault_server.count("/down")


# --- server-suggested delays ---------------------------------------------------------------------


def test_retry_after_seconds_is_honoured(activated, client, fault_server: FaultServer):
    """A 503 with Retry-After: 1 is retried no sooner than one second later."""
    fault_server.script("/later", retry_after(503, seconds=1), then=ok(b"done"))

    reply = client.do("GET", f"{fault_server.url}/later")

    assert (200, b"done") == (reply.status, reply.body)
    assert 1.0 <= gap(fault_server, "/later") < 2.0


def test_retry_after_ms_is_honoured(activated, client, fault_server: FaultServer):
    """A 429 with retry-after-ms: 300 is retried no sooner than 0.3 s later."""
    fault_server.script("/later", retry_after(429, ms=300), then=ok(b"done"))

    reply = client.do("GET", f"{fault_server.url}/later")

    assert (200, b"done") == (reply.status, reply.body)
    assert 0.3 <= gap(fault_server, "/later") < 1.3


def test_retry_after_beyond_the_cap_is_capped(activate_buttress, client, fault_server):
    """A Retry-After of 30 s under retry.max_retry_after = 0.3 waits 0.3 s, not 30."""
    activate_buttress({"retry.max_retry_after": 0.3})
    fault_server.script("/later", retry_after(503, seconds=30), then=ok(b"done"))

    reply = client.do("GET", f"{fault_server.url}/later")

    assert (200, b"done") == (reply.status, reply.body)
    assert 0.3 <= gap(fault_server, "/later") < 1.3


# --- deadlines -----------------------------------------------------------------------------------


def test_attempt_timeout_reaches_the_client(activate_buttress, client, fault_server):
    """With timeout.attempt = 0.3 the client itself gives up on a 2 s response after ~0.3 s."""
    activate_buttress({"timeout.attempt": 0.3, "retry.attempts": 1})
    fault_server.script("/slow", delay(2.0))

    started = time.monotonic()
    error = raised(lambda: client.do("GET", f"{fault_server.url}/slow"))
    elapsed = time.monotonic() - started

    assert elapsed < 1.5, f"took {elapsed:.2f} s: {error!r}"
    assert isinstance(error, client.timeout_error)
    assert 1 == fault_server.count("/slow")


# The built-in timeouts respect the app's (Timeout.respect_app_timeout, true unless a timeout is
# configured): small values here stand for the templates' 10 s and 30 s.
RESPECTING = {"timeout.attempt": 0.3, "timeout.respect_app_timeout": True}


def noted(error: BaseException) -> str:
    """What an error says: its message and its PEP 678 notes."""
    return " ".join([str(error), *getattr(error, "__notes__", ())])


@pytest.mark.parametrize("app_timeout", [None, 3.0])
def test_a_built_in_attempt_timeout_never_cuts_a_call_the_client_allows(
    activate_buttress, client, fault_server, app_timeout
):
    """A 1 s answer under a 0.3 s built-in attempt timeout arrives: the app's own timeout (3 s,
    or the client's default) governs the attempt, as without buttress."""
    activate_buttress({**RESPECTING, "retry.attempts": 1})
    fault_server.script("/report", delay(1.0, then=ok(b"report")))

    reply = client.do("GET", f"{fault_server.url}/report", timeout=app_timeout)

    assert (200, b"report") == (reply.status, reply.body)
    assert 1 == fault_server.count("/report")


def test_the_total_timeout_never_cuts_the_first_attempt(activate_buttress, client, fault_server):
    """A first attempt that outlives the total timeout still returns its answer, and no retry
    starts after the deadline: the caller gets that 503, sent once."""
    activate_buttress({**RESPECTING, "timeout.total": 0.5})
    fault_server.script("/slow", delay(0.8, then=status(503, b"late")), then=ok(b"fine"))

    reply = client.do("GET", f"{fault_server.url}/slow", timeout=5.0)

    assert (503, b"late") == (reply.status, reply.body)
    assert 1 == fault_server.count("/slow")


def test_a_retry_cut_by_the_total_timeout_says_buttress_ended_it(
    activate_buttress, client, fault_server
):
    """The retry after a quick 503 gets what is left of a 1 s total; when that runs out the
    caller's error says that buttress's total timeout ended it, and how to change it."""
    activate_buttress({**RESPECTING, "timeout.total": 1.0})
    fault_server.script("/stall", status(503), then=delay(3.0))

    started = time.monotonic()
    error = raised(lambda: client.do("GET", f"{fault_server.url}/stall", timeout=10.0))
    elapsed = time.monotonic() - started

    assert elapsed < 2.5, f"took {elapsed:.2f} s: {error!r}"
    assert isinstance(error, client.timeout_error)
    assert "buttress: the total timeout of 1s" in noted(error)
    assert "timeout.total" in noted(error)
    assert 2 == fault_server.count("/stall")


# --- connections ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["requests", "httpx", "urllib3"])
def test_retried_responses_release_their_connection(
    activated, make_client, fault_server: FaultServer, name
):
    """Twenty calls answered 503, 503, 200 on one pooled client reuse a single connection."""
    client = make_client(name)
    for i in range(20):
        fault_server.script(f"/r{i}", status(503, b"a"), status(503, b"b"), ok(b"c"))
        assert 200 == client.do("GET", f"{fault_server.url}/r{i}").status

    assert 60 == fault_server.count()
    assert fault_server.connections <= 2


def test_requests_session_reuses_connections_across_retries(activated, fault_server: FaultServer):
    """The same check straight on a requests.Session: reading .text after the call returned."""
    with requests.Session() as session:
        texts = []
        for _ in range(20):
            fault_server.script("/r", status(503), status(503), ok(b"fine"))
            texts.append(session.get(f"{fault_server.url}/r").text)

    assert ["fine"] * 20 == texts
    assert fault_server.connections <= 2


# --- the lane ------------------------------------------------------------------------------------


def test_a_get_that_needs_no_decision_runs_through_the_lane(
    activated, client, fault_server: FaultServer
):
    """The default HTTP pipeline compiles the lane (``_driver_lane``) for every client: a guard
    against a change that would quietly send every request down the general driver."""
    fault_server.script("/lane", ok(b"fast"))

    reply = client.do("GET", f"{fault_server.url}/lane")

    via = _http.route(fault_server.authority)
    compiled = [run.__name__ for run in (*via.runs.values(), *via.aruns.values())]
    assert (200, b"fast") == (reply.status, reply.body)
    assert compiled in (["lane"], ["alane"])


def test_the_lane_serves_pipelines_that_respect_the_app_timeout(
    activate_buttress, client, fault_server: FaultServer
):
    """The templates' timeouts respect the client's: that layout gets the lane too."""
    activate_buttress({"timeout.attempt": None, "timeout.total": None})
    fault_server.script("/lane", ok(b"fast"))

    reply = client.do("GET", f"{fault_server.url}/lane")

    via = _http.route(fault_server.authority)
    compiled = [run.__name__ for run in (*via.runs.values(), *via.aruns.values())]
    assert via.pipeline.timeout_config.respect_app_timeout
    assert (200, b"fast") == (reply.status, reply.body)
    assert compiled in (["lane"], ["alane"])
