"""``RequestMethods.request`` replaced by a plain function (``integrations._base.Direct``).

What the shared client tests (a ``PoolManager``) do not reach: a connection pool's relative
URLs, parameters after ``url`` by position, and the caller's timeouts.
"""

from __future__ import annotations

from typing import Any

import pytest
import urllib3
from tests.support.fault_server import FaultServer, ok, status

import buttress


def test_a_pool_request_runs_through_the_pools_target(activated, fault_server: FaultServer):
    """A path on an HTTPConnectionPool: the target is the pool's host:port, even with a URL in
    the query string."""
    fault_server.script("/flaky", status(503), then=ok(b"done"))

    with urllib3.HTTPConnectionPool(fault_server.host, fault_server.port) as pool:
        reply = pool.request("GET", "/flaky?next=http://elsewhere.example:81/")

    assert (200, b"done") == (reply.status, reply.data)
    assert 2 == fault_server.count("/flaky")
    assert [fault_server.authority] == buttress.targets()


def test_parameters_after_url_by_position_are_read(activated, fault_server: FaultServer):
    """(method, url, body, fields, headers): an Idempotency-Key header by position makes a POST
    retryable, and the body is sent on each attempt."""
    fault_server.script("/pay", status(503), then=ok(b"paid"))

    with urllib3.PoolManager() as manager:
        reply = manager.request(
            "POST", f"{fault_server.url}/pay", b"amount=1", None, {"Idempotency-Key": "k1"}
        )

    assert (200, b"paid") == (reply.status, reply.data)
    assert [b"amount=1", b"amount=1"] == [r.body for r in fault_server.requests]


def test_a_post_without_a_key_is_sent_once(activated, fault_server: FaultServer):
    """The same POST by position without the header is not retried."""
    fault_server.script("/pay", status(503, b"busy"))

    with urllib3.PoolManager() as manager:
        reply = manager.request("POST", f"{fault_server.url}/pay", b"amount=1")

    assert (503, b"busy") == (reply.status, reply.data)
    assert 1 == fault_server.count("/pay")


@pytest.fixture
def timeouts_sent(monkeypatch) -> list[Any]:
    """The ``timeout`` each ``HTTPConnectionPool.urlopen`` call received."""
    seen: list[Any] = []
    urlopen = urllib3.HTTPConnectionPool.urlopen

    def spy(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("timeout"))
        return urlopen(self, method, url, *args, **kwargs)

    monkeypatch.setattr(urllib3.HTTPConnectionPool, "urlopen", spy)
    return seen


@pytest.mark.parametrize("given", [None, 30.0], ids=["no-timeout", "longer-timeout"])
def test_the_attempt_deadline_reaches_urllib3_as_its_timeout(
    activate_buttress, fault_server: FaultServer, timeouts_sent: list[Any], given: Any
):
    """No timeout, or a longer one: each attempt gets what is left of its 0.5 s deadline."""
    activate_buttress({"timeout.attempt": 0.5})
    kwargs = {} if given is None else {"timeout": given}

    with urllib3.PoolManager() as manager:
        assert 200 == manager.request("GET", f"{fault_server.url}/x", **kwargs).status

    assert 1 == len(timeouts_sent)
    assert 0 < timeouts_sent[0] <= 0.5


def test_a_urllib3_timeout_object_is_left_as_the_caller_made_it(
    activate_buttress, fault_server: FaultServer, timeouts_sent: list[Any]
):
    """Separate connect and read budgets are the caller's decision."""
    activate_buttress({"timeout.attempt": 0.5})
    timeout = urllib3.Timeout(connect=7.0, read=9.0)

    with urllib3.PoolManager() as manager:
        assert 200 == manager.request("GET", f"{fault_server.url}/x", timeout=timeout).status

    assert [timeout] == timeouts_sent
