"""The reliability suite's scale switch and its table of figures.

Every reliability test runs in two sizes: the short one in every ``make test`` (CI), bounded to
seconds per test, and the long one under ``make reliability`` (``BUTTRESS_RELIABILITY=long``),
which is the issue's full size. A test states both sizes with :func:`scale` and records what it
measured with :func:`record`; the session prints every figure as one table at the end
(``tests/reliability/conftest.py``), so the figures reported are the ones the assertions saw.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

LONG = os.environ.get("BUTTRESS_RELIABILITY", "short").strip().lower() == "long"


def scale(short: T, long: T) -> T:
    """*short* in the CI run, *long* under ``make reliability``."""
    return long if LONG else short


@dataclass(frozen=True)
class Figure:
    """One measured figure: what part of the suite, what, the value, its goal and verdict."""

    part: str
    name: str
    value: str
    goal: str = ""
    met: bool | None = None


FIGURES: list[Figure] = []


def record(part: str, name: str, value: object, goal: str = "", met: bool | None = None) -> None:
    """Add one row to the table; *met* is the goal's verdict, None when there is no goal."""
    FIGURES.append(Figure(part, name, str(value), goal, met))


def table(figures: list[Figure]) -> str:
    """The figures as a Markdown table, grouped by part in the order they were first recorded."""
    parts: dict[str, list[Figure]] = {}
    for figure in figures:
        parts.setdefault(figure.part, []).append(figure)
    lines = ["| part | figure | measured | goal | |", "|---|---|---|---|---|"]
    for part, rows in parts.items():
        for row in rows:
            verdict = {True: "met", False: "MISSED", None: ""}[row.met]
            lines.append(f"| {part} | {row.name} | {row.value} | {row.goal} | {verdict} |")
    return "\n".join(lines)
