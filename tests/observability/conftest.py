"""Shared fixtures for the dashboards and alerts tests: paths, generated files, tools."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT.parent / "shared" / "grafana-schema"


@pytest.fixture(scope="session")
def root() -> Path:
    """The repository root."""
    return ROOT


@pytest.fixture(scope="session")
def boards() -> dict[str, dict[str, Any]]:
    """The committed dashboards, by file name."""
    return {p.name: json.loads(p.read_text()) for p in sorted((ROOT / "dashboards").glob("*.json"))}


@pytest.fixture(scope="session")
def schemas() -> Path:
    """The Grafana JSON schema folder beside the checkout, or skip."""
    if not (SCHEMAS / "dashboard.jsonschema.json").is_file():
        pytest.skip(f"Grafana JSON schemas not found at {SCHEMAS} (../shared/grafana-schema)")
    return SCHEMAS


def _tool(name: str) -> Callable[[], str]:
    def fixture() -> str:
        path = shutil.which(name)
        if path is None:
            pytest.skip(f"{name} not installed: run scripts/install-prometheus.sh")
        return path

    fixture.__doc__ = f"The path of {name}, or skip."
    return fixture


promtool = pytest.fixture(scope="session")(_tool("promtool"))
amtool = pytest.fixture(scope="session")(_tool("amtool"))
prometheus_bin = pytest.fixture(scope="session")(_tool("prometheus"))


def panel_queries(board: dict[str, Any]) -> list[tuple[int, str, str]]:
    """(panel id, panel title, expr) of every query of *board*."""
    return [
        (panel["id"], panel["title"], target["expr"])
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]


def concrete(expr: str, *, target: str = "api.example.com", window: str = "1m") -> str:
    """*expr* with Grafana's variables replaced, so Prometheus can run it."""
    expr = expr.replace("$__rate_interval", window)
    expr = re.sub(r'(target|kind)=~"\$(target|kind)"', r'\1=~".*"', expr)
    return expr.replace("$target", target)


@pytest.fixture(scope="session")
def queries(boards: dict[str, dict[str, Any]]) -> list[tuple[str, int, str, str]]:
    """(dashboard, panel id, title, expr) of every dashboard query."""
    return [(name, *q) for name, board in boards.items() for q in panel_queries(board)]


@pytest.fixture(scope="session")
def substitute() -> Callable[..., str]:
    """:func:`concrete`: Grafana variables replaced by values Prometheus can run."""
    return concrete
