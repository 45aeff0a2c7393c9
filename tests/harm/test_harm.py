"""The harm matrix as tests: one test per row, all rows measured once, a few at a time.

Each test fails with the row, the reasons and the full output of every child. A row is not
marked xfail while buttress still harms the app: the failure is the finding.
"""

from __future__ import annotations

import pytest
from tests.harm.matrix import Row, run_matrix
from tests.harm.scenarios import SCENARIOS

# Rows run a few at a time; a child is killed at its row's limit (45 s at most), so a whole
# matrix stays well under this even when buttress hangs every row.
pytestmark = pytest.mark.timeout(400)

NAMES = [scenario.name for scenario in SCENARIOS]


@pytest.fixture(scope="module")
def matrix(request: pytest.FixtureRequest) -> dict[str, Row]:
    """The rows of the tests pytest selected, measured together."""
    selected = {
        item.callspec.params["name"]
        for item in request.session.items
        if item.path == request.path
        and hasattr(item, "callspec")
        and "name" in item.callspec.params
    }
    rows = run_matrix(s for s in SCENARIOS if s.name in selected)
    return {row.scenario.name: row for row in rows}


@pytest.mark.parametrize("name", NAMES)
def test_no_harm(name: str, matrix: dict[str, Row]) -> None:
    """Observe equals disabled, enabled is equal or better, nobody crashes."""
    row = matrix[name]
    assert row.verdict == "OK", row.explain()
