"""Fixtures for the HTTP client integration tests: a real fault-injecting server on 127.0.0.1.

Under ``--import-mode=importlib`` pytest imports ``tests/conftest.py`` as ``tests.conftest``,
which makes ``tests`` importable as a namespace package; the fallback below covers runs where
that did not happen (e.g. a different import mode) by putting the repository root on sys.path.
"""

import sys
from pathlib import Path

try:
    from tests.support.fixtures import fault_server  # noqa: F401
except ModuleNotFoundError:  # pragma: no cover - depends on how pytest was started
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.support.fixtures import fault_server  # noqa: F401
