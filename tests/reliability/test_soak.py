"""
Soak: a steady protected load while the servers' faults switch on and off; the process stays
flat after warm-up (issue 14).

The load runs in a child process (``soak_child.py``) so that nothing of the test harness is in
its figures; the servers run here, and this process switches their faults on and off every
PERIOD seconds, a flaky period and an outage by turns (503s, slow answers, resets; retries
give up, fallbacks answer, breakers open and close again). The
child samples its resident memory, file descriptors, threads and the metric series buttress
exports (OpenTelemetry SDK, in-memory reader), and stamps each sample with the host's monotonic
clock, which this process shares, so each sample is known to fall in a period with faults or
without. Descriptors swing with the faults (an open breaker holds no connection; a reset one
is replaced), so figures are compared where they are steady: the median of the samples taken
without faults (from a second after the switch) in the last two periods of the warm-up, against
the same in the last two periods of the run. Growth stays under 5 %. Every call was counted once
as its caller saw it, and every bulkhead slot is back. CI runs one minute, ``make reliability``
ten.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.reliability._servers import SOAK_MIXES, AsyncServer, Faults, steps
from tests.reliability.figures import record, scale
from tests.support.fault_server import FaultServer

PART = "soak"
SECONDS = scale(60.0, 600.0)
PERIOD = scale(5.0, 30.0)
"""Seconds the faults stay on, then off."""
WARM_UP = 5 * PERIOD
"""Off, flaky, off, outage, and off again: every kind of decision (and so every metric series)
has happened by then."""
INTERVAL = scale(0.5, 2.0)
"""Seconds between the child's samples."""
SETTLE = 1.0
"""Seconds after switching the faults off before a sample counts as steady."""
GROWTH = 0.05
CHILD = Path(__file__).with_name("soak_child.py")
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def servers() -> Iterator[tuple[FaultServer, AsyncServer]]:
    """The sync and async servers, faults off at first."""
    with (
        FaultServer(default=Faults(on=False)) as sync_server,
        AsyncServer() as async_server,
    ):
        yield sync_server, async_server


def switch_faults(
    sync_server: FaultServer, async_server: AsyncServer, done: threading.Event
) -> list[tuple[float, bool]]:
    """Every PERIOD seconds until *done*, switch both servers' faults; returns each switch as
    (monotonic time, faults on)."""
    faults = sync_server.default
    assert isinstance(faults, Faults)
    switches = [(time.monotonic(), False)]
    turns = 0
    while not done.wait(PERIOD):
        if not faults.on:  # the next fault period: flaky and outage take turns
            sync_mix, async_mix = SOAK_MIXES[turns % len(SOAK_MIXES)]
            faults.mix, async_server.mix = steps(sync_mix), async_mix
            turns += 1
        faults.on = async_server.faulty = not faults.on
        switches.append((time.monotonic(), faults.on))
        sync_server.reset_counts()  # the server's request log must not grow for ten minutes
    faults.on = async_server.faulty = False
    return switches


def steady(sample: dict[str, Any], switches: list[tuple[float, bool]]) -> bool:
    """Whether *sample* was taken without faults, at least SETTLE seconds after they stopped."""
    at = sample["clock"]
    before = [(when, on) for when, on in switches if when <= at]
    if not before:
        return False
    when, on = before[-1]
    return not on and at - when >= SETTLE


def steady_median(
    samples: list[dict[str, Any]], switches: list[tuple[float, bool]], key: str, start: float
) -> float:
    """The median of *key* over the steady samples taken in the two periods ending at *start*
    + 2 PERIOD (seconds since the child started)."""
    window = [
        s[key] for s in samples if start < s["t"] <= start + 2 * PERIOD and steady(s, switches)
    ]
    assert window, f"no steady sample between {start:g} s and {start + 2 * PERIOD:g} s"
    return float(statistics.median(window))


@pytest.mark.timeout(SECONDS + 120)
def test_a_steady_load_with_faults_switching_stays_flat_after_warm_up(
    servers: tuple[FaultServer, AsyncServer],
) -> None:
    """Resident memory, descriptors, threads and series grow less than 5 % from the end of the
    warm-up to the end of the run, and the invariants hold in the child."""
    sync_server, async_server = servers
    done = threading.Event()
    switches: list[tuple[float, bool]] = []
    switcher = threading.Thread(
        target=lambda: switches.extend(switch_faults(sync_server, async_server, done)),
        daemon=True,
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("BUTTRESS_ENABLED", None)
    switcher.start()
    try:
        child = subprocess.run(  # noqa: S603
            [
                sys.executable,
                str(CHILD),
                sync_server.url,
                async_server.url,
                str(SECONDS),
                str(INTERVAL),
                str(WARM_UP),
            ],
            capture_output=True,
            text=True,
            timeout=SECONDS + 90,
            env=env,
            check=False,
        )
    finally:
        done.set()
        switcher.join(PERIOD + 5)
    samples: list[dict[str, Any]] = []
    result: dict[str, Any] | None = None
    for line in child.stdout.splitlines():
        who, _, payload = line.partition(": ")
        if who == "sample":
            samples.append(json.loads(payload))
        elif who == "result":
            result = json.loads(payload)
    assert child.returncode == 0, (
        f"the child failed:\n{child.stdout[-2000:]}\n{child.stderr[-4000:]}"
    )
    assert result is not None, f"the child did not report:\n{child.stderr[-4000:]}"

    end = samples[-1]["t"]
    growth: dict[str, float] = {}
    for key, unit in (("rss", "MiB"), ("fds", ""), ("threads", ""), ("series", "")):
        before = steady_median(samples, switches, key, WARM_UP - 2 * PERIOD)
        after = steady_median(samples, switches, key, end - 2 * PERIOD)
        growth[key] = (after - before) / before
        shown = (
            f"{before / 2**20:.1f} -> {after / 2**20:.1f} {unit}"
            if unit
            else f"{before:g} -> {after:g}"
        )
        record(
            PART,
            f"{key}, after warm-up -> at the end (steady median)",
            f"{shown} ({growth[key]:+.1%})",
            "growth < 5 %",
            growth[key] < GROWTH,
        )
    calls = result["calls"]
    record(PART, "seconds, fault switches", f"{end:.0f} s, {len(switches) - 1} switches")
    record(PART, "calls (cancelled)", f"{calls} ({result['cancelled']})")
    record(PART, "outcomes", result["outcomes"])
    record(PART, "invariants checked", result["checked"], "all hold", not result["problems"])
    record(PART, "series first seen after warm-up", "; ".join(result["late_series"]) or "none")
    assert [] == result["problems"]
    assert len(switches) - 1 >= SECONDS // PERIOD - 2, "the faults did not switch"
    assert all(samples[i]["calls"] < samples[i + 1]["calls"] for i in range(len(samples) - 1)), (
        "the load stalled"
    )
    assert {} == {key: f"{value:+.1%}" for key, value in growth.items() if value >= GROWTH}
