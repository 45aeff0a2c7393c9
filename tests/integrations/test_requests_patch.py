"""``requests.Session.request`` replaced by a plain function (``integrations._base.Direct``).

The replacement binds ``method`` and ``url`` like the original, whether they come by position or
by keyword; takes the parameters after ``url`` by position too; fails a malformed call with the
original's own error; keeps the original's signature; and cooperates with another library's
wrapper installed before or after it.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import requests
import wrapt
from tests.integrations.conftest import ORIGINALS
from tests.support.fault_server import FaultServer, ok, status

import buttress
from buttress import _activation

ORIGINAL = ORIGINALS[(requests.Session, "request")]


def test_parameters_after_url_by_position_still_run_through_the_pipeline(
    activated, fault_server: FaultServer
):
    """params, data and headers by position: the request is retried and sent as given."""
    fault_server.script("/flaky", status(503), then=ok(b"done"))

    with requests.Session() as session:
        # (method, url, params, data, headers): requests' own positional order.
        reply = session.request(
            "GET", f"{fault_server.url}/flaky", {"q": "1"}, None, {"X-Probe": "7"}
        )

    assert (200, b"done") == (reply.status_code, reply.content)
    sent = [r for r in fault_server.requests if r.path == "/flaky"]
    assert 2 == len(sent)
    assert {("q=1", "7")} == {(r.query, r.headers["X-Probe"]) for r in sent}
    assert [fault_server.authority] == buttress.targets()


def test_a_positional_timeout_is_shortened_like_a_keyword_one(
    activate_buttress, fault_server: FaultServer
):
    """A timeout given by position is the caller's timeout: the attempt's deadline caps it."""
    activate_buttress({"timeout.attempt": 0.2, "retry.attempts": 1})
    fault_server.script("/slow", ok(b"fine"))
    names = list(inspect.signature(ORIGINAL).parameters)
    position = names.index("timeout") - 3  # after self, method, url
    args: list[Any] = [None] * (position + 1)
    args[position] = 30.0
    seen: list[Any] = []

    def spy(self: Any, request: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["timeout"])
        return send(self, request, **kwargs)

    send = requests.Session.send
    requests.Session.send = spy  # type: ignore[method-assign]
    try:
        with requests.Session() as session:
            session.request("GET", f"{fault_server.url}/slow", *args)
    finally:
        requests.Session.send = send  # type: ignore[method-assign]

    assert 1 == len(seen)
    assert 0 < seen[0] <= 0.2


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((), {}),  # no url
        (({"q": "1"},), {"params": {"q": "2"}}),  # params twice
        ((None,) * 20, {}),  # more positional arguments than there are parameters
        ((), {"no_such_argument": 1}),
    ],
    ids=["missing-url", "params-twice", "too-many", "unknown-keyword"],
)
def test_a_malformed_call_fails_as_it_does_without_buttress(
    activated, fault_server: FaultServer, args: tuple[Any, ...], kwargs: dict[str, Any]
):
    """The same exception type and message as the original method raises."""
    url = f"{fault_server.url}/x"
    call_args = args if args == () and not kwargs else (url, *args)
    with requests.Session() as session:
        with pytest.raises(TypeError) as expected:
            ORIGINAL(session, "GET", *call_args, **kwargs)
        with pytest.raises(TypeError) as got:
            session.request("GET", *call_args, **kwargs)

    assert str(expected.value) == str(got.value)
    assert 0 == fault_server.count("/x")


def test_the_replacement_keeps_the_original_signature_and_name(activated):
    """Introspection (and other instrumentations) see requests' own method."""
    patched = requests.Session.__dict__["request"]

    assert patched is not ORIGINAL
    assert ORIGINAL is patched.__wrapped__
    assert inspect.signature(ORIGINAL) == inspect.signature(patched)
    assert ("request", "Session.request") == (patched.__name__, patched.__qualname__)


def test_a_wrapper_installed_before_buttress_still_runs(
    activate_buttress, fault_server: FaultServer
):
    """Another library's wrapt wrapper, there first, runs once per attempt with its instance."""
    seen: list[Any] = []

    def theirs(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        seen.append(instance)
        return wrapped(*args, **kwargs)

    _activation.deactivate()
    wrapt.wrap_function_wrapper(requests.Session, "request", theirs)
    installed = requests.Session.__dict__["request"]
    try:
        activate_buttress()
        fault_server.script("/flaky", status(503), then=ok(b"done"))
        with requests.Session() as session:
            reply = session.get(f"{fault_server.url}/flaky")

        assert (200, b"done") == (reply.status_code, reply.content)
        assert [session, session] == seen  # bound to the session on each of the two attempts
        assert 2 == fault_server.count("/flaky")

        _activation.deactivate()
        assert installed is requests.Session.__dict__["request"]
    finally:
        requests.Session.request = ORIGINAL  # type: ignore[method-assign]


def test_a_wrapper_installed_after_buttress_leaves_it_disarmed_on_deactivate(
    activated, fault_server: FaultServer
):
    """buttress cannot unwrap from under someone else's wrapper: it passes straight through."""
    calls: list[str] = []

    def theirs(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        calls.append("theirs")
        return wrapped(*args, **kwargs)

    wrapt.wrap_function_wrapper(requests.Session, "request", theirs)
    try:
        _activation.deactivate()
        fault_server.script("/down", status(503, b"busy"))
        with requests.Session() as session:
            reply = session.get(f"{fault_server.url}/down")

        assert (503, b"busy") == (reply.status_code, reply.content)
        assert 1 == fault_server.count("/down")  # not retried: buttress is disarmed
        assert ["theirs"] == calls
        assert [] == buttress.targets()
    finally:
        requests.Session.request = ORIGINAL  # type: ignore[method-assign]


def test_a_kept_patch_that_was_removed_since_is_installed_again(
    activate_buttress, fault_server: FaultServer
):
    """Wrapped over, disarmed, then the original put back by hand: activating again patches."""

    def theirs(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        return wrapped(*args, **kwargs)

    activate_buttress()
    wrapt.wrap_function_wrapper(requests.Session, "request", theirs)
    _activation.deactivate()  # cannot unwrap from under theirs: keeps its patch, disarmed
    requests.Session.request = ORIGINAL  # type: ignore[method-assign]

    activate_buttress()
    fault_server.script("/flaky", status(503), then=ok(b"done"))
    with requests.Session() as session:
        reply = session.get(f"{fault_server.url}/flaky")

    assert requests.Session.__dict__["request"] is not ORIGINAL
    assert (200, b"done") == (reply.status_code, reply.content)
    assert 2 == fault_server.count("/flaky")


def test_a_timeout_requests_refuses_fails_as_without_buttress(activated, fault_server: FaultServer):
    """timeout="soon": requests' own error and message, and no deadline left behind."""
    url = f"{fault_server.url}/x"
    with requests.Session() as session:
        with pytest.raises(Exception) as expected:
            ORIGINAL(session, "GET", url, timeout="soon")
        with pytest.raises(Exception) as got:
            session.get(url, timeout="soon")

    assert (type(expected.value), str(expected.value)) == (type(got.value), str(got.value))
    assert buttress.remaining() is None
    assert 0 == fault_server.count("/x")
