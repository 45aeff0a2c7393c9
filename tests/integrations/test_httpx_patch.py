"""``Client.send`` and ``AsyncClient.send`` replaced by plain functions (``_base.Direct``)."""

from __future__ import annotations

import asyncio
import inspect

import httpx
import pytest
from tests.integrations.conftest import ORIGINALS
from tests.support.fault_server import FaultServer


@pytest.mark.parametrize("owner", [httpx.Client, httpx.AsyncClient])
def test_the_replacements_keep_httpx_signature_and_name(activated, owner):
    """Introspection sees httpx's own ``send``."""
    original = ORIGINALS[(owner, "send")]
    patched = owner.__dict__["send"]

    assert patched is not original
    assert original is patched.__wrapped__
    assert inspect.signature(original) == inspect.signature(patched)
    assert f"{owner.__name__}.send" == patched.__qualname__


def test_arguments_by_position_fail_as_httpx_makes_them_fail(activated, fault_server: FaultServer):
    """Everything after the request is keyword-only: the same TypeError, nothing sent."""
    original = ORIGINALS[(httpx.Client, "send")]
    aoriginal = ORIGINALS[(httpx.AsyncClient, "send")]

    def sync_error(send: object) -> str:
        with httpx.Client() as client:
            request = client.build_request("GET", f"{fault_server.url}/x")
            with pytest.raises(TypeError) as error:
                send(client, request, True)  # type: ignore[operator]
        return str(error.value)

    async def async_error(send: object) -> str:
        async with httpx.AsyncClient() as client:
            request = client.build_request("GET", f"{fault_server.url}/x")
            with pytest.raises(TypeError) as error:
                await send(client, request, True)  # type: ignore[operator]
        return str(error.value)

    assert sync_error(original) == sync_error(httpx.Client.send)
    assert asyncio.run(async_error(aoriginal)) == asyncio.run(async_error(httpx.AsyncClient.send))
    assert 0 == fault_server.count("/x")


@pytest.mark.parametrize(
    ("given", "shortened"),
    [
        ({"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}, None),  # all end in time
        (
            {"connect": 5.0, "read": 60.0, "write": 5.0, "pool": None},
            {"connect": 5.0, "read": 8.0, "write": 5.0, "pool": 8.0},
        ),
        (None, {"connect": 8.0, "read": 8.0, "write": 8.0, "pool": 8.0}),
    ],
    ids=["within-the-deadline", "one-longer-one-unset", "none-given"],
)
def test_each_attempt_gets_httpx_timeouts_no_longer_than_its_deadline(given, shortened):
    """_shorten: each of the four budgets becomes the shorter of itself and what is left; a
    request whose budgets all end in time keeps its own extensions, untouched."""
    from buttress._clock import SystemClock  # noqa: PLC0415
    from buttress.integrations.httpx import _shorten  # noqa: PLC0415
    from buttress.policies._timeout import deadline_var  # noqa: PLC0415

    clock = SystemClock()
    extensions = {} if given is None else {"timeout": given}
    request = httpx.Request("GET", "http://127.0.0.1:1/x", extensions=extensions)
    before = request.extensions
    token = deadline_var.set((clock.monotonic() + 8.0, clock))
    try:
        _shorten(request)
    finally:
        deadline_var.reset(token)

    if shortened is None:
        assert request.extensions is before
    else:
        timeouts = request.extensions["timeout"]
        assert timeouts == pytest.approx(shortened, abs=0.05)
        assert before == ({} if given is None else {"timeout": given})  # not mutated
