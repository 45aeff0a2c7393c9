"""urllib3's own retries in observe mode: exactly what urllib3 does without buttress.

In enforce mode buttress sets urllib3's connect, read and status retries to zero while it retries
a call itself. Observe mode retries nothing, so it must leave urllib3's retries as the pool (or
the call) chose them: the same requests reach the server and the caller gets the same answer.
Each scenario runs without buttress, then in observe mode, against the real fault server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import urllib3
from tests.support.fault_server import FaultServer, Step, ok, reset, status

from .conftest import patched_now


def seen(call: Callable[[], Any]) -> tuple[int, bytes] | str:
    """What the caller saw: (status, body), or the class name of the exception it got."""
    try:
        response = call()
    except Exception as exc:
        return type(exc).__name__
    return response.status, response.data


def both_ways(
    activate_buttress: Callable[..., None],
    server: FaultServer,
    steps: tuple[Step, ...],
    call: Callable[[], Any],
) -> tuple[tuple[tuple[int, bytes] | str, int], tuple[tuple[int, bytes] | str, int]]:
    """(outcome, requests at the server) without buttress, then in observe mode."""
    results = []
    for mode in (None, "observe"):
        if mode is not None:
            activate_buttress(mode=mode)
        else:
            assert [] == patched_now()
        server.clear_scripts()
        server.reset_counts()
        server.script("/flaky", *steps)
        results.append((seen(call), server.count("/flaky")))
    return results[0], results[1]


def test_status_retries_of_a_pool_with_a_retry_policy(activate_buttress, fault_server):
    """A PoolManager retrying 503 (Retry(status_forcelist=[503])): 503, 503, 200 is 3 requests
    and a 200, with or without buttress observing."""
    retries = urllib3.Retry(total=3, status_forcelist=[503], backoff_factor=0)
    url = f"{fault_server.url}/flaky"

    with urllib3.PoolManager(retries=retries) as manager:
        disabled, observed = both_ways(
            activate_buttress,
            fault_server,
            (status(503), status(503), ok(b"done")),
            lambda: manager.request("GET", url),
        )

    assert disabled == observed
    assert ((200, b"done"), 3) == observed


def test_status_retries_chosen_for_one_call(activate_buttress, fault_server):
    """``retries=`` on the call: the same in observe mode (it was always left alone)."""
    retries = urllib3.Retry(total=3, status_forcelist=[503], backoff_factor=0)
    url = f"{fault_server.url}/flaky"

    with urllib3.PoolManager() as manager:
        disabled, observed = both_ways(
            activate_buttress,
            fault_server,
            (status(503), status(503), ok(b"done")),
            lambda: manager.request("GET", url, retries=retries),
        )

    assert disabled == observed
    assert ((200, b"done"), 3) == observed


@pytest.mark.parametrize("pool", ["manager", "connection-pool"])
def test_default_retries_of_a_reset_connection(activate_buttress, fault_server, pool):
    """urllib3's default Retry(3) re-sends a GET whose connection was reset: reset, reset, 200
    is 3 requests and a 200 without buttress, and in observe mode."""
    if pool == "manager":
        client: Any = urllib3.PoolManager()
        target = f"{fault_server.url}/flaky"
    else:
        client = urllib3.HTTPConnectionPool(fault_server.host, fault_server.port)
        target = "/flaky"

    with client:
        disabled, observed = both_ways(
            activate_buttress,
            fault_server,
            (reset(), reset(), ok(b"done")),
            lambda: client.request("GET", target),
        )

    assert disabled == observed
    assert ((200, b"done"), 3) == observed


def test_status_retries_exhausted_fail_the_same_way(activate_buttress, fault_server):
    """Always 503 with Retry(total=2, status_forcelist=[503]): urllib3's own MaxRetryError after
    3 requests, with or without buttress observing."""
    retries = urllib3.Retry(total=2, status_forcelist=[503], backoff_factor=0)
    url = f"{fault_server.url}/flaky"

    with urllib3.PoolManager(retries=retries) as manager:
        disabled, observed = both_ways(
            activate_buttress,
            fault_server,
            (status(503),),
            lambda: manager.request("GET", url),
        )

    assert disabled == observed
    assert ("MaxRetryError", 3) == observed
