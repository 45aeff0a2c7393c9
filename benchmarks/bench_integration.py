"""
Costs of zero-code activation, measured in one run on one machine.

1. Interpreter start-up with buttress installed and ``BUTTRESS_ENABLED`` unset, against the same
   interpreter with buttress's start-up hook (``buttress.pth``) moved aside: the hook must cost
   next to nothing. Runs alternate between the two, and medians are compared.
2. p50 latency of ``requests.get`` against a local HTTP server with buttress enabled (the
   default HTTP pipeline: bulkhead, timeouts, retry, breaker, telemetry hook) and disabled,
   in alternating batches so machine noise hits both alike. Target: within 3 %.

Run by ``make bench`` after the per-call table, or alone:
``python benchmarks/bench_integration.py``.
"""

from __future__ import annotations

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


def startup(runs: int = 30) -> dict[str, Any]:
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


def requests_latency(batches: int = 10, per_batch: int = 200) -> dict[str, Any]:
    """
    p50 of requests.get on a keep-alive session, buttress enabled vs disabled.

    The server runs in its own process, as a real dependency would: in the same process its
    thread would compete with the client for the GIL and blur what is measured.
    """
    server = subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", SERVER, str(ROOT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    enabled: list[float] = []
    disabled: list[float] = []
    disabled_timeout: list[float] = []
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip() + "/ping"
        session = requests.Session()
        session.get(url)  # warm the connection
        env = {"BUTTRESS_ENABLED": "true"}
        # Disabled twice: as called (no timeout), and with the timeout buttress passes when
        # enabled (its attempt deadline). A socket with a timeout polls before each read, which
        # costs by itself; the second baseline isolates what buttress adds beyond that.
        for _ in range(batches):
            for on, kwargs, sink in (
                (True, {}, enabled),
                (False, {}, disabled),
                (False, {"timeout": 10.0}, disabled_timeout),
            ):
                if on and not _activation.activate(env):
                    return {"error": "activation failed"}
                for _ in range(per_batch):
                    start = time.perf_counter()
                    session.get(url, **kwargs)
                    sink.append(time.perf_counter() - start)
                if on:
                    _activation.deactivate()
        session.close()
    finally:
        server.communicate(input="", timeout=10)
    a, b = statistics.median(enabled), statistics.median(disabled)
    c = statistics.median(disabled_timeout)
    return {
        "enabled_p50_us": a * 1e6,
        "disabled_p50_us": b * 1e6,
        "ratio": a / b,
        "disabled_timeout_p50_us": c * 1e6,
        "ratio_timeout": a / c,
        "calls_each": len(enabled),
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
        lines.append(f"| requests.get p50 | error: {latency['error']} | | | |")
    else:
        ok = "PASS" if latency["ratio"] <= 1.03 else "MISS"
        lines.append(
            f"| requests.get p50 on 127.0.0.1 ({latency['calls_each']} calls each), us | "
            f"{latency['enabled_p50_us']:.0f} | {latency['disabled_p50_us']:.0f} | "
            f"{latency['ratio']:.3f} | <= 1.03 {ok} |"
        )
        ok = "PASS" if latency["ratio_timeout"] <= 1.03 else "MISS"
        lines.append(
            "| same, baseline passing the same timeout=10 s buttress passes, us | "
            f"{latency['enabled_p50_us']:.0f} | {latency['disabled_timeout_p50_us']:.0f} | "
            f"{latency['ratio_timeout']:.3f} | <= 1.03 {ok} |"
        )
    return "\n".join(lines)


def main() -> int:
    """Run both measurements and print the table."""
    print(render(startup(), requests_latency()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
