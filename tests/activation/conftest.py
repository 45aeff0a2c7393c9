"""The fault server fixture for the activation tests."""

from tests.support.fixtures import fault_server  # noqa: F401
