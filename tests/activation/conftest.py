"""Fixtures of the activation tests: the fault server, a clean environment, child processes."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from tests.activation.children import Child
from tests.support.fixtures import fault_server  # noqa: F401


@pytest.fixture
def base_env() -> dict[str, str]:
    """The parent's environment without any BUTTRESS_ or OTEL_ variable."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("BUTTRESS_", "OTEL_"))}


@pytest.fixture
def start() -> Iterator[Callable[[list[str], dict[str, str]], Child]]:
    """Start children and make sure none outlives the test."""
    children: list[Child] = []

    def run(argv: list[str], env: dict[str, str]) -> Child:
        child = Child(argv, env)
        children.append(child)
        return child

    yield run
    for child in children:
        if child.process.poll() is None:
            child.process.kill()
            child.process.communicate()
