"""Prints the reliability figures as one table at the end of the run (see figures.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.reliability.figures import FIGURES, LONG, table


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The table of every figure recorded; also written to $BUTTRESS_RELIABILITY_TABLE if set."""
    if not FIGURES:
        return
    size = "long (make reliability)" if LONG else "short (CI; make reliability runs the long one)"
    text = table(FIGURES)
    terminalreporter.write_sep("=", f"reliability figures, {size}")
    terminalreporter.write_line(text)
    if target := os.environ.get("BUTTRESS_RELIABILITY_TABLE"):
        Path(target).write_text(text + "\n", encoding="utf-8")
