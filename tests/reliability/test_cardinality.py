"""
Cardinality and memory: a process that meets 100,000 distinct targets stays within its caps.

Each family runs in a child process (``cardinality_child.py``) with buttress activated as
``BUTTRESS_ENABLED=true`` does it and its metrics collected: HTTP requests to distinct loopback
hosts (127.x.y.z, where nothing listens: a crawler among dead hosts), PostgreSQL connections to
distinct hosts, and distinct explicit ``protect()`` names. The caps checked are the documented
ones: ``max_targets`` names with a ``target`` label of their own (256 by default; the rest report
as ``other``), the integrations' cache of pipelines past the bound (``Registry.MAX_OVERFLOW``),
the HTTP route caches (``_http._MAX_ROUTES`` each) and the per-target option caches
(``_activation._MAX_CACHED``). Memory is bounded by what those caps can hold: at most
``max_targets + MAX_OVERFLOW + 2 * _MAX_ROUTES`` pipelines alive, each costing what the first
targets cost (measured in the same run), plus the option caches.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.reliability.figures import record, scale

CHILD = Path(__file__).with_name("cardinality_child.py")
ROOT = Path(__file__).resolve().parents[2]
PART = "cardinality and memory"
MB = 1 << 20
OPTION_BYTES = 2048
"""A generous size for one cached entry of per-target options (a small frozen dataclass)."""
SLACK = 16 * MB
"""What the allocator, the OpenTelemetry SDK's own state and the interpreter may add."""

CONFIG = """
[defaults.http]
retry.attempts = 1
[defaults.db]
retry.attempts = 1
"""

SIZES = {
    "http": scale(1_300, 100_000),
    "db": scale(1_300, 100_000),
    "protect": scale(3_000, 100_000),
}


def refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(family: str, n: int, tmp_path: Path) -> dict[str, Any]:
    config = tmp_path / "buttress.toml"
    config.write_text(CONFIG)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    env.pop("BUTTRESS_ENABLED", None)
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, str(CHILD), family, str(n), str(refused_port()), str(config)],
        capture_output=True,
        text=True,
        timeout=scale(120, 1700),
        env=env,
        check=False,
    )
    assert done.returncode == 0, f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.timeout(scale(150, 1800))
@pytest.mark.parametrize("family", list(SIZES))
def test_distinct_targets_stay_within_the_caps(family: str, tmp_path: Path) -> None:
    n = SIZES[family]
    facts = run(family, n, tmp_path)
    held, cap = facts["held"], facts["max_targets"]
    alive_cap = cap + facts["max_overflow"] + 2 * facts["max_routes"]
    labels = len(facts["targets"])
    series = sum(facts["series"].values())
    series_cap = (cap + 1) * 5 * len(facts["series"])  # 5: outcomes, or breaker states
    base, sample, warm, end = facts["readings"]
    per_target = (sample["traced"] - base["traced"]) / facts["sample"]
    bound = alive_cap * per_target + facts["max_cached"] * OPTION_BYTES + SLACK
    traced = end["traced"] - base["traced"]
    after_warm = (end["traced"] - warm["traced"]) / (n - facts["warm_up"])
    rss = end["rss"] - base["rss"]

    name = f"{n:,} distinct {family} targets"
    record(PART, f"{name}: target label values", labels, f"<= {cap + 1}", labels <= cap + 1)
    record(PART, f"{name}: metric series", series, f"<= {series_cap:,}", series <= series_cap)
    record(
        PART,
        f"{name}: pipelines held (listed + past the bound + routes)",
        f"{held['registered']} + {held['overflow']} + {held['routes']}",
        f"<= {cap} + {facts['max_overflow']} + {facts['max_routes']}",
    )
    record(
        PART,
        f"{name}: pipelines alive",
        held["live_stats"],
        f"<= {alive_cap:,}",
        held["live_stats"] <= alive_cap,
    )
    record(
        PART,
        f"{name}: one target's pipeline (first {facts['sample']})",
        f"{per_target / 1024:.1f} KiB",
    )
    record(
        PART,
        f"{name}: traced memory growth",
        f"{traced / MB:.1f} MiB",
        f"<= {bound / MB:.0f} MiB (the caps' worth)",
        traced <= bound,
    )
    record(
        PART,
        f"{name}: traced growth per target after the first {facts['warm_up']:,}",
        f"{after_warm:.0f} B",
    )
    record(
        PART,
        f"{name}: RSS growth",
        f"{rss / MB:.1f} MiB",
        f"<= {2 * bound / MB:.0f} MiB",
        rss <= 2 * bound,
    )

    # Every call ended as it would without buttress: refused by the dead host, or done.
    assert facts["outcomes"] == {"ok" if family == "protect" else "refused": n}
    assert labels <= cap + 1, facts["targets"][:20]
    if n > cap:
        assert "other" in facts["targets"]
    assert series <= series_cap, facts["series"]
    assert held["registered"] <= cap
    assert held["overflow"] <= facts["max_overflow"]
    assert held["routes"] <= facts["max_routes"]
    assert held["url_routes"] <= facts["max_routes"]
    assert held["http_options"] <= facts["max_cached"]
    assert held["db_options"] <= facts["max_cached"]
    assert held["live_stats"] <= alive_cap
    assert held["retired_stats"] <= cap + 1  # counts of dropped pipelines, per label
    assert traced <= bound, (traced, bound)
    assert rss <= 2 * bound, (rss, bound)
