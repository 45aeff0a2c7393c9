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
