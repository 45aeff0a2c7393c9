"""``ClientSession._request`` replaced by a plain coroutine function (``_base.Direct``).

What the shared client tests do not reach: a session's ``base_url``, a ``yarl.URL``, parameters
after the URL by position, and how the deadline is merged into a session's ``ClientTimeout``.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
import yarl
from tests.support.fault_server import FaultServer, delay, ok, status

import buttress
from buttress.integrations.aiohttp import _tighter


def test_a_relative_url_on_a_session_with_a_base_url(activated, fault_server: FaultServer):
    """The target is the base URL's authority; the request is retried like any other."""
    fault_server.script("/flaky", status(503), then=ok(b"done"))

    async def send() -> tuple[aiohttp.ClientResponse, bytes]:
        async with aiohttp.ClientSession(base_url=fault_server.url) as session:
            async with session.get("/flaky") as reply:
                return reply, await reply.read()

    reply, body = asyncio.run(send())

    assert (200, b"done") == (reply.status, body)
    assert 2 == fault_server.count("/flaky")
    assert [fault_server.authority] == buttress.targets()


def test_a_yarl_url(activated, fault_server: FaultServer):
    """A ``yarl.URL`` instead of a string: same target, same retry."""
    fault_server.script("/flaky", status(503), then=ok(b"done"))

    async def send() -> tuple[aiohttp.ClientResponse, bytes]:
        async with aiohttp.ClientSession() as session:
            url = yarl.URL(f"{fault_server.url}/flaky?q=1")
            async with session.get(url) as reply:
                return reply, await reply.read()

    reply, body = asyncio.run(send())

    assert (200, b"done") == (reply.status, body)
    assert ["q=1", "q=1"] == [r.query for r in fault_server.requests]
    assert [fault_server.authority] == buttress.targets()


def test_parameters_by_position_fail_as_aiohttp_makes_them_fail(
    activated, fault_server: FaultServer
):
    """aiohttp takes everything after the URL by keyword: the same TypeError, nothing sent."""
    original = aiohttp.ClientSession.__dict__["_request"].__wrapped__

    async def send(request: object) -> str:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(TypeError) as error:
                await request(session, "GET", f"{fault_server.url}/x", {"q": "1"})  # type: ignore[operator]
            return str(error.value)

    assert asyncio.run(send(original)) == asyncio.run(send(aiohttp.ClientSession._request))
    assert 0 == fault_server.count("/x")


def test_the_deadline_shortens_the_total_and_keeps_the_other_budgets():
    """_tighter: total is the shorter of the two; connect, sock_read, sock_connect and
    ceil_threshold are the caller's."""
    given = aiohttp.ClientTimeout(
        total=30, connect=4, sock_read=3, sock_connect=2, ceil_threshold=1
    )

    shortened = _tighter(given, 0.5)
    unlimited = _tighter(aiohttp.ClientTimeout(total=None, sock_read=3), 0.5)

    assert (
        aiohttp.ClientTimeout(total=0.5, connect=4, sock_read=3, sock_connect=2, ceil_threshold=1)
        == shortened
    )
    assert (0.5, 3) == (unlimited.total, unlimited.sock_read)
    assert 30 == _tighter(given, 60).total
    assert 0.5 == _tighter(2.0, 0.5)


def test_the_last_shortened_timeout_is_reused_only_for_the_same_timeout_and_time_left():
    """_tighter keeps its last result: the same (frozen) ClientTimeout and time left give the
    same object; another time left or another timeout object, a new and correct one."""
    session = aiohttp.ClientTimeout(total=300, sock_connect=30)
    other = aiohttp.ClientTimeout(total=300, sock_connect=30)

    first = _tighter(session, 10.0)
    again = _tighter(session, 10.0)
    less = _tighter(session, 4.0)
    from_other = _tighter(other, 4.0)
    back = _tighter(session, 10.0)

    assert first is again
    assert (10.0, 30) == (first.total, first.sock_connect)
    assert (4.0, 30) == (less.total, less.sock_connect)
    assert from_other is not less
    assert from_other == less
    assert back == first


@pytest.mark.parametrize("where", ["session", "request"])
def test_a_sock_read_budget_still_applies_under_a_longer_deadline(
    activate_buttress, fault_server: FaultServer, where: str
):
    """A session's (or request's) 0.2 s sock_read fails a 2 s wait though the attempt may take
    5 s: buttress shortens only the total."""
    activate_buttress({"timeout.attempt": 5.0, "retry.attempts": 1})
    fault_server.script("/slow", delay(2.0))
    budget = aiohttp.ClientTimeout(total=None, sock_read=0.2)
    session_timeout = budget if where == "session" else aiohttp.ClientTimeout()
    kwargs = {"timeout": budget} if where == "request" else {}

    async def send() -> None:
        async with aiohttp.ClientSession(timeout=session_timeout) as session:
            async with session.get(f"{fault_server.url}/slow", **kwargs) as reply:
                await reply.read()

    start = time.monotonic()
    with pytest.raises(aiohttp.ServerTimeoutError):
        asyncio.run(send())

    assert time.monotonic() - start < 1.5
