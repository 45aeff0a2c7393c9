"""The matrix's own rules, on made-up cells: what it calls harm, broken or OK."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tests.harm.matrix import Row, judge, render
from tests.harm.runner import APPS, MODES, Run
from tests.harm.scenarios import Cell, Judge, Scenario, outcomes_text

TRACEBACK = """buttress: activation failed
Traceback (most recent call last):
  File "/x/buttress/_activation.py", line 154, in activate
OSError: [Errno 98] Address already in use
"""


class Fixed(Scenario):
    """A row whose cells are given; enabled must answer 200."""

    name = "fixed"
    title = "made-up row"

    def measure(self, mode: str, run_id: str) -> Cell:
        raise NotImplementedError

    def expect(self, cells: Mapping[str, Cell], judge: Judge) -> None:
        judge.baseline(cells["disabled"].facts["outcomes"] == ["503"], "disabled not 503")
        judge.require(cells["enabled"].facts["outcomes"] == ["200"], "enabled not 200")


def cell(mode: str, outcomes: list[str], requests: int, **run: Any) -> Cell:
    loaded = mode != "disabled"
    fields: dict[str, Any] = {
        "result": {"outcomes": outcomes, "elapsed": 0.1, "buttress_loaded": loaded},
        "returncode": 0,
        "stdout": "",
        "stderr": "",
        "wall": 0.5,
        "killed": False,
    }
    fields.update(run)
    facts = {"outcomes": outcomes, "requests": requests}
    return Cell(mode, [Run(mode=mode, **fields)], facts, 0.1, f"{outcomes_text(outcomes)}")


def row(**cells: Cell) -> Row:
    base = {
        "disabled": cell("disabled", ["503"], 1),
        "enabled": cell("enabled", ["200"], 3),
        "observe": cell("observe", ["503"], 1),
    }
    return judge(Fixed(), {**base, **cells})


def test_equal_observe_and_better_enabled_is_ok() -> None:
    assert (row().verdict, row().harms, row().broken) == ("OK", [], [])


def test_observe_sending_fewer_requests_is_harm() -> None:
    found = row(observe=cell("observe", ["503"], 3))
    assert found.verdict == "HARM"
    assert found.harms == ["observe ≠ disabled: requests 3 vs 1"]


def test_an_other_exception_in_observe_is_harm() -> None:
    found = row(observe=cell("observe", ["openai.RateLimitError"], 1))
    assert found.harms == ["observe ≠ disabled: outcomes ['openai.RateLimitError'] vs ['503']"]


def test_a_traceback_from_buttress_is_harm_even_when_the_answers_are_right() -> None:
    found = row(enabled=cell("enabled", ["200"], 3, stderr=TRACEBACK))
    assert found.harms == ["enabled: traceback from buttress on stderr"]


def test_a_killed_enabled_child_is_harm_and_its_facts_are_not_compared() -> None:
    killed = cell("enabled", ["200"], 40, killed=True, returncode=-9, wall=30.2, result=None)
    found = row(enabled=killed)
    assert found.harms == ["enabled: killed after 30 s"]


def test_a_failing_disabled_run_is_a_broken_harness_not_harm() -> None:
    found = row(disabled=cell("disabled", ["200"], 1))
    assert found.verdict == "BROKEN"
    assert found.broken == ["baseline: disabled not 503"]


def test_buttress_missing_from_an_enabled_child_is_a_broken_harness() -> None:
    inactive = cell("enabled", ["200"], 3)
    inactive.runs[0].result = {**inactive.runs[0].result, "buttress_loaded": False}  # type: ignore[dict-item]
    assert row(enabled=inactive).broken == ["baseline: enabled: buttress loaded = False"]


def test_the_table_has_a_column_per_mode_and_a_verdict() -> None:
    table = render([row(), row(observe=cell("observe", ["503"], 3))])
    header, rule, ok, harm = table.splitlines()
    assert [c.strip() for c in header.split("|")] == ["scenario", *MODES, "verdict"]
    assert set(rule) <= {"-", "+"}
    assert ok.rstrip().endswith("| OK")
    assert harm.rstrip().endswith("| HARM: observe ≠ disabled: requests 3 vs 1")


def test_outcomes_are_counted_in_order_of_appearance() -> None:
    assert outcomes_text(["503", "503", "requests.exceptions.ConnectionError", "503"]) == (
        "503×3 ConnectionError"
    )


def test_the_apps_never_import_buttress() -> None:
    """The apps are unmodified applications: only the environment turns buttress on."""
    sources = {path.name: path.read_text() for path in APPS.glob("*.py")}
    assert sorted(sources) == [
        "app_commit.py",
        "app_http.py",
        "app_openai.py",
        "app_pg_sleep.py",
        "app_redis.py",
    ]
    for name, source in sources.items():
        assert not re.search(r"^\s*(import|from)\s+buttress", source, re.MULTILINE), name
        assert 'import_module("buttress' not in source, name
