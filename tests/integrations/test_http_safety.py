"""What buttress must never do to an HTTP client: retry in observe mode, leak, double up, linger.

Observe mode, target names free of paths and secrets, one pipeline per logical call when one
client library runs on another, suppressed instrumentation, a clean ``deactivate()``, and the
client's own error for a URL it cannot parse.
"""

from __future__ import annotations

import json
import time

import pytest
import requests
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value
from tests.support.fault_server import FaultServer, delay, ok, status

import buttress
from buttress import _activation, telemetry
from buttress.integrations._http import route

# --- observe mode --------------------------------------------------------------------------------


def test_observe_mode_sends_each_call_once(activate_buttress, client, fault_server: FaultServer):
    """In observe mode a 503 is not retried: the server sees exactly one request per call."""
    activate_buttress(mode="observe")
    fault_server.script("/down", status(503, b"busy"))

    replies = [client.do("GET", f"{fault_server.url}/down") for _ in range(2)]

    assert [(503, b"busy")] * 2 == [(r.status, r.body) for r in replies]
    assert 2 == fault_server.count("/down")


def test_observe_mode_forced_open_breaker_does_not_block(
    activate_buttress, client, fault_server: FaultServer
):
    """In observe mode a forced-open breaker lets every call through to the server."""
    activate_buttress(mode="observe")
    url = f"{fault_server.url}/ok"
    client.do("GET", url)  # builds the target's pipeline
    buttress.get_target(fault_server.authority).breaker.force_open()

    reply = client.do("GET", url)

    assert (200, b"ok") == (reply.status, reply.body)
    assert 2 == fault_server.count("/ok")


def test_observe_mode_reports_what_it_would_have_done(
    activate_buttress, install_metrics, client, fault_server: FaultServer
):
    """Observe mode counts the retry and the rejection it did not make, under the target's name."""
    activate_buttress(mode="observe")
    metrics = install_metrics()
    fault_server.script("/down", status(503))
    client.do("GET", f"{fault_server.url}/down")
    buttress.get_target(fault_server.authority).breaker.force_open()

    client.do("GET", f"{fault_server.url}/down")

    retries = metrics.points("buttress.observed.retries", fault_server.authority)
    rejections = metrics.points("buttress.observed.rejections", fault_server.authority)
    assert 2 == sum(retries.values())  # one would-be retry per call
    assert {(("kind", "http"), ("reason", "circuit_open")): 1} == rejections
    assert {} == metrics.points("buttress.retries", fault_server.authority)
    assert {} == metrics.points("buttress.rejections", fault_server.authority)


def test_observe_mode_does_not_shorten_client_timeouts(
    activate_buttress, client, fault_server: FaultServer
):
    """In observe mode timeout.attempt = 0.3 must not cut short a response that takes 0.8 s."""
    activate_buttress({"timeout.attempt": 0.3, "retry.attempts": 1}, mode="observe")
    fault_server.script("/slow", delay(0.8, ok(b"late")))

    started = time.monotonic()
    reply = client.do("GET", f"{fault_server.url}/slow")
    elapsed = time.monotonic() - started

    assert (200, b"late") == (reply.status, reply.body)
    assert elapsed >= 0.8
    assert 1 == fault_server.count("/slow")


# --- target names --------------------------------------------------------------------------------


def test_target_is_the_authority_never_the_path_or_query(
    activated, client, fault_server: FaultServer
):
    """Calls to /users/123?token=secret register host:port only; no report shows the secret."""
    seen: list[object] = []
    remove = telemetry.add_hook(seen.append)
    fault_server.script("/users/123", status(503), then=ok(b"user"))
    try:
        reply = client.do("GET", f"{fault_server.url}/users/123?token=secret")
        client.do("GET", f"{fault_server.url}/users/456?token=secret")
    finally:
        remove()

    assert (200, b"user") == (reply.status, reply.body)
    assert [fault_server.authority] == buttress.targets()
    assert seen, "a retried call publishes events"
    assert {fault_server.authority} == {event.target for event in seen}
    assert "secret" not in repr(seen)
    assert "users" not in repr(seen)
    report = json.dumps(buttress.health().to_dict(), default=str)
    assert fault_server.authority in report
    assert "secret" not in report
    assert "users" not in report


# --- one pipeline per logical call ---------------------------------------------------------------


def test_requests_call_runs_through_one_pipeline(
    activated, install_metrics, fault_server: FaultServer
):
    """requests runs on urllib3: a requests call is one buttress call, retried by one loop."""
    metrics = install_metrics()
    fault_server.script("/flaky", status(503), status(503), ok(b"done"))

    response = requests.get(f"{fault_server.url}/flaky", timeout=5)

    assert (200, "done") == (response.status_code, response.text)
    assert 3 == fault_server.count("/flaky")  # not 9: urllib3's wrapper passed through
    assert [fault_server.authority] == buttress.targets()
    calls = metrics.points("buttress.calls", fault_server.authority)
    assert 1 == sum(calls.values())
    assert 1 == calls[(("kind", "http"), ("outcome", "success"))]
    assert 1 == buttress.get_target(fault_server.authority).stats.total()


# --- suppressed instrumentation ------------------------------------------------------------------


def test_suppressed_instrumentation_passes_straight_through(
    activated, client, fault_server: FaultServer
):
    """With OpenTelemetry instrumentation suppressed (an exporter's own request), no retry."""
    fault_server.script("/export", status(503, b"busy"), then=ok(b"done"))

    token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        reply = client.do("GET", f"{fault_server.url}/export")
    finally:
        detach(token)

    assert (503, b"busy") == (reply.status, reply.body)
    assert 1 == fault_server.count("/export")
    assert [] == buttress.targets()


# --- deactivation --------------------------------------------------------------------------------


ALL_PATCHED = [
    "Session.request",
    "Client.send",
    "AsyncClient.send",
    "ClientSession._request",
    "RequestMethods.request",
]


def test_deactivate_restores_every_patched_function(
    activated, patch_points, client, fault_server: FaultServer
):
    """deactivate() puts every original function back; calls are then unprotected."""
    assert ALL_PATCHED == patch_points()

    _activation.deactivate()
    fault_server.script("/down", status(503, b"busy"), then=ok(b"done"))
    reply = client.do("GET", f"{fault_server.url}/down")

    assert [] == patch_points()
    assert (503, b"busy") == (reply.status, reply.body)
    assert 1 == fault_server.count("/down")
    assert [] == buttress.targets()


def test_second_activation_patches_again(
    activate_buttress, patch_points, tmp_path, fault_server: FaultServer
):
    """Activating again after deactivate() protects the clients again (tests, embedding)."""
    activate_buttress()
    _activation.deactivate()

    environ = {"BUTTRESS_ENABLED": "true", "BUTTRESS_CONFIG": str(tmp_path / "buttress.toml")}
    assert True is _activation.activate(environ, owns_sdk=False)

    assert ALL_PATCHED == patch_points()
    fault_server.script("/flaky", status(503), then=ok(b"done"))
    assert 200 == requests.get(f"{fault_server.url}/flaky", timeout=5).status_code


@pytest.fixture(autouse=True)
def _no_leftover_activation():
    """Each test here starts and ends with buttress off (the fixtures switch it on)."""
    assert not _activation.is_active()
    yield
    assert not _activation.is_active()


# --- malformed URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:abc/x", "http://127.0.0.1:99999/x", "http://[::1/x"]
)
def test_a_malformed_url_fails_as_the_client_makes_it_fail(activate_buttress, client, url: str):
    """buttress takes no target from a URL it cannot parse: the client's own error reaches the app."""

    def error_of() -> type[BaseException] | None:
        try:
            client.do("GET", url, timeout=0.5)
        except Exception as exc:  # noqa: BLE001 - which error is the point
            return type(exc)
        return None

    without = error_of()
    activate_buttress()
    assert without is not None
    assert error_of() is without


# --- compiled drivers ----------------------------------------------------------------------------


def test_a_target_compiles_one_driver_per_client_however_many_calls(
    activate_buttress, client, fault_server: FaultServer
):
    """Each pipeline keeps the driver compiled for a client library: one, not one per request."""
    activate_buttress()
    for _ in range(5):
        assert 200 == client.do("GET", f"{fault_server.url}/ok").status

    via = route(fault_server.authority)
    pipeline = buttress.get_target(fault_server.authority)
    assert 1 == len(via.runs) + len(via.aruns)
    assert 1 == len(pipeline._shaped) + len(pipeline._ashaped)
