"""Targets past the registry's bound keep a breaker each (they only share the label ``other``).

A webhook sender or a crawler reaches the bound (``max_targets``) and keeps calling new hosts,
some of them down for good. Their breakers must not be one breaker: a dead host past the bound
must not shut out every other host past it.
"""

from __future__ import annotations

import json

import pytest
from tests.integrations.test_http_clients import BREAKER
from tests.support.fault_server import FaultServer, ok, status

import buttress
from buttress._registry import OVERFLOW_TARGET, REGISTRY
from buttress.integrations._http import REJECTED_HEADER


@pytest.fixture
def bound_of_one():
    """One target name only; the bound is put back afterwards."""
    saved = REGISTRY.max_targets
    buttress.configure(max_targets=1)
    try:
        yield
    finally:
        REGISTRY.set_max_targets(saved)


def test_a_dead_host_past_the_bound_opens_only_its_own_breaker(
    activate_buttress, bound_of_one, client, fault_server: FaultServer
):
    """Past the bound, host A's breaker opens; host B, also past it, is still called."""
    activate_buttress(BREAKER)
    buttress.protect("takes-the-only-name")
    fault_server.script("/down", status(503))
    with FaultServer() as other:
        other.script("/up", ok(b"fine"))
        statuses = [client.do("GET", f"{fault_server.url}/down").status for _ in range(4)]

        rejected = client.do("GET", f"{fault_server.url}/down")  # answered by the open breaker
        reply = client.do("GET", f"{other.url}/up")

    assert [503] * 4 == statuses
    assert "circuit_open" == {k.lower(): v for k, v in rejected.headers.items()}[REJECTED_HEADER]
    assert OVERFLOW_TARGET == json.loads(rejected.body)["target"]
    assert (200, b"fine") == (reply.status, reply.body)
    assert (4, 1) == (fault_server.count("/down"), other.count("/up"))
    assert ["takes-the-only-name"] == buttress.targets()
