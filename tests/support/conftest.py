"""Makes the ``fault_server`` fixture available to the fault server's own tests."""

import sys
from pathlib import Path

try:
    from tests.support.fixtures import fault_server  # noqa: F401
except ModuleNotFoundError:  # pragma: no cover - depends on how pytest was started
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.support.fixtures import fault_server  # noqa: F401
