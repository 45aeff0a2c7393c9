"""
Costs of zero-code activation, measured in one run on one machine.

1. Interpreter start-up with buttress installed and ``BUTTRESS_ENABLED`` unset, against the same
   interpreter with buttress's start-up hook (``buttress.pth``) moved aside: the hook must cost
   next to nothing. Runs alternate between the two, and medians are compared.
2. p50 latency of a ``requests`` GET against a local HTTP server with buttress enabled (the
   default HTTP pipeline: bulkhead, timeouts, retry, breaker, telemetry hook) and disabled,
   interleaved call by call so that machine noise hits both alike (see
   :func:`requests_latency`). Target: within 3 %.

Run by ``make bench`` after the per-call table, or alone:
``python benchmarks/bench_integration.py``.
"""

from __future__ import annotations

import itertools
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import requests

from buttress import _activation

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for the test server in tests/support


def startup(runs: int = 60) -> dict[str, Any]:
    """Median wall time of ``python -c pass`` with and without the start-up hook."""
    purelib = Path(sysconfig.get_paths()["purelib"])
    hook = purelib / "buttress.pth"
    aside = purelib / "buttress.pth.bench-aside"
    if not hook.exists():
        return {"error": f"{hook} not found (is buttress installed in this interpreter?)"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUTTRESS_")}
    with_hook: list[float] = []
    without_hook: list[float] = []

    def once() -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)  # noqa: S603
        return time.perf_counter() - start

    try:
        for _ in range(runs):
            with_hook.append(once())
            shutil.move(hook, aside)
            try:
                without_hook.append(once())
            finally:
                shutil.move(aside, hook)
    finally:
        if aside.exists() and not hook.exists():
            shutil.move(aside, hook)
    a, b = statistics.median(with_hook), statistics.median(without_hook)
    return {"with_hook_ms": a * 1e3, "without_hook_ms": b * 1e3, "ratio": a / b}


SERVER = """
import sys, threading
sys.path.insert(0, sys.argv[1])
from tests.support.fault_server import FaultServer
server = FaultServer().start()
print(server.url, flush=True)
sys.stdin.read()
server.stop()
"""


def requests_latency(rounds: int = 3000, blocks: int = 5) -> dict[str, Any]:
    """
    p50 of a ``requests`` GET on a keep-alive session, buttress enabled vs disabled.

    Interleaved call by call, in one process: this machine's speed swings by 10 % and more
    within a second, so batches of enabled calls and batches of disabled ones (what this
    measured before) see different machines. Switching buttress on and off between calls is
    not an option either: re-patching a class invalidates CPython's specialised bytecode for
    it, which would charge the enabled calls for the switching. Instead buttress stays
    active and each round makes three calls, in a rotating order:

    - **enabled**: ``session.request("GET", url)``, through the patched method (what
      ``session.get`` calls): wrapt, buttress's wrapper, the default HTTP pipeline;
    - **disabled**: the same call to the unpatched ``Session.request``, which wrapt keeps as
      ``__wrapped__``: exactly what runs without buttress;
    - **disabled, same timeout**: that call with ``timeout=10``, the timeout buttress passes
      when enabled (its attempt deadline). A socket with a timeout polls before each read,
      and urllib3 does more bookkeeping, so this isolates what buttress adds beyond giving
      the call a deadline.

    The server runs in its own process, as a real dependency would: in the same process its
    thread would compete with the client for the GIL and blur what is measured. The spread is
    the lowest and highest ratio over *blocks* consecutive slices of the run.
    """
    server = subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", SERVER, str(ROOT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    times: dict[str, list[float]] = {"enabled": [], "disabled": [], "disabled_timeout": []}
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip() + "/ping"
        if not _activation.activate({"BUTTRESS_ENABLED": "true"}):
            return {"error": "activation failed"}
        try:
            patched = requests.Session.request
            original = getattr(patched, "__wrapped__", None)
            if original is None:
                return {"error": "requests.Session.request is not patched"}
            session = requests.Session()
            calls = {
                "enabled": lambda: session.request("GET", url, allow_redirects=True),
                "disabled": lambda: original(session, "GET", url, allow_redirects=True),
                "disabled_timeout": lambda: original(
                    session, "GET", url, allow_redirects=True, timeout=10.0
                ),
            }
            for fn in calls.values():  # warm the connection and every code path
                for _ in range(50):
                    fn()
            orders = list(itertools.permutations(calls))
            clock = time.perf_counter
            for i in range(rounds):
                for name in orders[i % len(orders)]:
                    fn = calls[name]
                    start = clock()
                    fn()
                    times[name].append(clock() - start)
            session.close()
        finally:
            _activation.deactivate()
    finally:
        server.communicate(input="", timeout=10)

    def ratio(a: str, b: str, part: slice = slice(None)) -> float:
        return statistics.median(times[a][part]) / statistics.median(times[b][part])

    size = rounds // blocks
    parts = [slice(k * size, (k + 1) * size) for k in range(blocks)]
    spread = [ratio("enabled", "disabled", part) for part in parts]
    spread_timeout = [ratio("enabled", "disabled_timeout", part) for part in parts]
    return {
        "enabled_p50_us": statistics.median(times["enabled"]) * 1e6,
        "disabled_p50_us": statistics.median(times["disabled"]) * 1e6,
        "disabled_timeout_p50_us": statistics.median(times["disabled_timeout"]) * 1e6,
        "ratio": ratio("enabled", "disabled"),
        "ratio_timeout": ratio("enabled", "disabled_timeout"),
        "spread": (min(spread), max(spread)),
        "spread_timeout": (min(spread_timeout), max(spread_timeout)),
        "calls_each": rounds,
    }


def render(start: dict[str, Any], latency: dict[str, Any]) -> str:
    """A Markdown table."""
    lines = ["| measurement | buttress | without | ratio | target |", "|---|---:|---:|---:|---|"]
    if "error" in start:
        lines.append(f"| interpreter start-up | error: {start['error']} | | | |")
    else:
        ok = "PASS" if start["ratio"] <= 1.05 else "MISS"
        lines.append(
            f"| interpreter start-up (BUTTRESS_ENABLED unset), median ms | "
            f"{start['with_hook_ms']:.1f} | {start['without_hook_ms']:.1f} | "
            f"{start['ratio']:.3f} | within noise (<= 1.05) {ok} |"
        )
    if "error" in latency:
        lines.append(f"| requests GET p50 | error: {latency['error']} | | | |")
        return "\n".join(lines)
    for label, base, key in (
        ("disabled", "disabled_p50_us", "ratio"),
        ("disabled, same timeout=10 s", "disabled_timeout_p50_us", "ratio_timeout"),
    ):
        low, high = latency["spread" if key == "ratio" else "spread_timeout"]
        ok = "PASS" if latency[key] <= 1.03 else "MISS"
        lines.append(
            f"| requests GET p50 on 127.0.0.1 vs {label} ({latency['calls_each']} calls each, "
            f"interleaved; blocks {low:.3f}-{high:.3f}), us | {latency['enabled_p50_us']:.0f} | "
            f"{latency[base]:.0f} | {latency[key]:.3f} | <= 1.03 {ok} |"
        )
    return "\n".join(lines)


def main() -> int:
    """Run both measurements and print the table."""
    print(render(startup(), requests_latency()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
