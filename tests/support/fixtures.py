"""Pytest fixtures around :class:`~tests.support.fault_server.FaultServer`.

Load them with ``pytest_plugins = ["tests.support.fixtures"]`` in the root ``conftest.py``, or
import the fixture into a directory's ``conftest.py``::

    from tests.support.fixtures import fault_server  # noqa: F401
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.support.fault_server import FaultServer


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    """A started :class:`FaultServer`, stopped after the test; server-side bugs fail the test."""
    with FaultServer() as server:
        yield server
    if server.errors:
        raise AssertionError(f"the fault server failed while serving: {server.errors!r}")
