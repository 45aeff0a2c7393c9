"""The harm matrix: every scenario in three modes, judged, as one table.

Used by the pytest tests (``tests/harm/test_harm.py``) and by ``python -m tests.harm``
(``make harm``). The rules every row shares, on top of each scenario's own
(:meth:`~tests.harm.scenarios.Scenario.expect`):

- every child exits 0 on its own, prints its result, and leaves no traceback on stderr (one
  that mentions buttress is reported as such); the disabled run failing is a broken harness;
- buttress is loaded in the enabled and observe runs and not in the disabled one (otherwise
  the row compares nothing);
- **observe equals disabled exactly**: every fact (statuses, exception types, request counts
  at the server, rows, session settings) is equal, and observe is not slower beyond a
  generous bound.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.harm.runner import MODES
from tests.harm.scenarios import SCENARIOS, Cell, Judge, Scenario, new_run_id, not_slower

__all__ = ["Row", "judge", "main", "measure_row", "render", "run_matrix"]

ROWS_AT_ONCE = 6
"""Rows measured at the same time (three children each): about a minute on two cores."""


@dataclass
class Row:
    """One scenario, measured in the three modes, with its verdict."""

    scenario: Scenario
    cells: dict[str, Cell]
    harms: list[str]
    broken: list[str]

    @property
    def verdict(self) -> str:
        """``OK``, ``HARM`` (buttress made something worse) or ``BROKEN`` (the harness)."""
        if self.broken:
            return "BROKEN"
        return "HARM" if self.harms else "OK"

    def explain(self) -> str:
        """The row, its reasons and every child's output: a failure message."""
        lines = [f"{self.scenario.title}: {self.verdict}"]
        lines += [f"  {mode}: {self.cells[mode].summary}" for mode in MODES]
        lines += [f"  BROKEN {reason}" for reason in self.broken]
        lines += [f"  HARM {reason}" for reason in self.harms]
        for mode in MODES:
            lines += [run.report() for run in self.cells[mode].runs]
        return "\n".join(lines)


def judge(scenario: Scenario, cells: dict[str, Cell]) -> Row:
    """Apply the shared rules, then the scenario's own."""
    verdict = Judge()
    for mode in MODES:
        for run in cells[mode].runs:
            for problem in run.problems():
                if mode == "disabled":
                    verdict.baseline(False, f"disabled: {problem}")
                else:
                    verdict.harm(f"{mode}: {problem}")
            if run.result is not None and run.result.get("buttress_loaded") != (mode != "disabled"):
                verdict.baseline(
                    False, f"{mode}: buttress loaded = {run.result['buttress_loaded']}"
                )
    off, observe = cells["disabled"], cells["observe"]
    if off.complete and observe.complete:
        for key, value in off.facts.items():
            if observe.facts.get(key) != value:
                verdict.harm(f"observe ≠ disabled: {key} {observe.facts.get(key)} vs {value}")
        if observe.elapsed is not None and off.elapsed is not None:
            verdict.require(
                not_slower(observe.elapsed, off.elapsed),
                f"observe: {observe.elapsed:.1f} s vs disabled {off.elapsed:.1f} s",
            )
    if all(cell.complete for cell in cells.values()):
        scenario.expect(cells, verdict)
    return Row(scenario, cells, verdict.harms, verdict.broken)


def measure_row(scenario: Scenario, workdir: Path, run_id: str) -> Row:
    """The three modes of one scenario at once (each has its own servers), judged."""
    scenario.setup(workdir)
    with ThreadPoolExecutor(len(MODES), thread_name_prefix=f"harm-{scenario.name}") as pool:
        futures = {mode: pool.submit(scenario.measure, mode, run_id) for mode in MODES}
        cells = {mode: future.result() for mode, future in futures.items()}
    return judge(scenario, cells)


def run_matrix(scenarios: Iterable[Scenario] = SCENARIOS) -> list[Row]:
    """Measure *scenarios*, the longest first, a few rows at a time; rows in the given order."""
    chosen = list(scenarios)
    run_id = new_run_id()
    rows: dict[str, Row] = {}
    lock = threading.Lock()
    with tempfile.TemporaryDirectory(prefix="harm-") as tmp:

        def one(scenario: Scenario) -> None:
            workdir = Path(tmp) / scenario.name
            workdir.mkdir()
            row = measure_row(scenario, workdir, run_id)
            with lock:
                rows[scenario.name] = row

        longest_first = sorted(chosen, key=lambda s: -s.expected)
        with ThreadPoolExecutor(ROWS_AT_ONCE, thread_name_prefix="harm-row") as pool:
            for future in [pool.submit(one, scenario) for scenario in longest_first]:
                future.result()
    return [rows[scenario.name] for scenario in chosen]


def render(rows: Sequence[Row]) -> str:
    """The summary table: scenarios as rows, the three modes as columns, then the verdict."""
    header = ["scenario", *MODES, "verdict"]
    body = []
    for row in rows:
        reasons = [*row.broken, *row.harms]
        verdict = row.verdict + (": " + "; ".join(reasons) if reasons else "")
        body.append([row.scenario.title, *(row.cells[m].summary for m in MODES), verdict])
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header) - 1)]

    def line(cells: list[str]) -> str:
        return (
            " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)) + " | " + cells[-1]
        )

    rule = "-+-".join("-" * w for w in widths) + "-+-" + "-" * len("verdict")
    return "\n".join([line(header), rule, *(line(cells) for cells in body)])


def main(argv: Sequence[str] = ()) -> int:
    """Print the table (of the scenarios named in *argv*, or all); 1 if any row is not OK."""
    wanted = set(argv)
    unknown = wanted - {s.name for s in SCENARIOS}
    if unknown:
        names = ", ".join(s.name for s in SCENARIOS)
        print(f"unknown scenario(s): {', '.join(sorted(unknown))}; known: {names}")
        return 2
    chosen = [s for s in SCENARIOS if not wanted or s.name in wanted]
    rows = run_matrix(chosen)
    print(render(rows))
    shown: set[str] = set()
    for row in rows:
        for mode in MODES:
            for run in row.cells[mode].runs:
                for trace in run.buttress_tracebacks:
                    if trace not in shown:
                        shown.add(trace)
                        print(f"\n{row.scenario.title}, {mode}: traceback from buttress\n{trace}")
    return 0 if all(row.verdict == "OK" for row in rows) else 1
