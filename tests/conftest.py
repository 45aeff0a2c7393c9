"""Shared fixtures: every test starts with no targets, default switches and a fake clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import buttress
from buttress import _stats
from buttress._config import CONFIG
from buttress.testing import FakeClock


@pytest.fixture(autouse=True)
def _clean_global_state() -> Iterator[None]:
    """Forget targets and restore process-wide switches around every test."""
    saved = (CONFIG.active, CONFIG.testing, CONFIG.testing_attempts, CONFIG.propagate_deadlines)
    buttress.reset_targets()
    # Pipelines dropped by earlier tests leave their counts behind (counters never go back);
    # each test starts from zero.
    _stats.RETIRED.clear()
    yield
    buttress.reset_targets()
    CONFIG.active, CONFIG.testing, CONFIG.testing_attempts, CONFIG.propagate_deadlines = saved


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock whose sleeps return at once."""
    return FakeClock()
