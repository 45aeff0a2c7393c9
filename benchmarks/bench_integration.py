"""
Costs of zero-code activation, measured in one run on one machine.

1. Interpreter start-up with buttress installed and ``BUTTRESS_ENABLED`` unset, against the same
   interpreter with buttress's start-up hook (``buttress.pth``) moved aside: the hook must cost
   next to nothing. Runs alternate between the two, and medians are compared.
2. p50 latency of ``requests`` GETs against a local HTTP server with buttress enabled (the
   default HTTP pipeline: bulkhead, timeouts, retry, breaker, telemetry hook) and disabled,
   interleaved call by call so that machine noise hits both alike: ``requests.get(url)`` (the
   issue's target: within 3 %) and ``session.get(url)`` on a keep-alive session (see
   :func:`requests_latency`).

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
from collections.abc import Callable
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


def requests_latency(rounds: int = 3000, blocks: int = 5) -> list[dict[str, Any]]:
    """
    p50 of ``requests`` GETs, buttress enabled vs disabled, in two shapes.

    - ``requests.get(url)``: what the issue names, and the most common call. It opens a session
      and a connection per call, as ``requests.api.request`` does.
    - ``session.get(url)`` on a keep-alive session: the cheapest GET there is, so the
      hardest ratio for buttress (its cost in microseconds is the same, the call is shorter).

    Each shape is interleaved call by call, in one process: this machine's speed swings by 10 %
    and more within a second, so batches of enabled calls and batches of disabled ones (what
    this measured before) see different machines. Switching buttress on and off between calls
    is not an option either: re-patching a class invalidates CPython's specialised bytecode for
    it, which would charge the enabled calls for the switching. Instead buttress stays active
    and each round makes three calls, in a rotating order:

    - **enabled**: through the patched ``Session.request`` (wrapt, buttress's wrapper, the
      default HTTP pipeline), called exactly as ``requests.get``/``Session.get`` call it;
    - **disabled**: the same call to the unpatched ``Session.request``, which the patch keeps
      as ``__wrapped__``: exactly what runs without buttress (for ``requests.get``, through
      copies of ``requests.api.get`` and ``requests.api.request``, so both sides run the same
      frames);
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
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip() + "/ping"
        if not _activation.activate({"BUTTRESS_ENABLED": "true"}):
            return [{"error": "activation failed"}]
        try:
            original = getattr(requests.Session.request, "__wrapped__", None)
            if original is None:
                return [{"error": "requests.Session.request is not patched"}]

            def unpatched_request(method: str, url: str, **kwargs: Any) -> Any:
                # requests.api.request, calling the unpatched method.
                with requests.Session() as session:
                    return original(session, method=method, url=url, **kwargs)

            def unpatched_get(url: str, params: Any = None, **kwargs: Any) -> Any:
                # requests.api.get: the same frames as requests.get, so that the two calls
                # differ only in buttress.
                return unpatched_request("get", url, params=params, **kwargs)

            session = requests.Session()
            results = [
                _interleaved(
                    "requests.get(url), new session per call",
                    {
                        "enabled": lambda: requests.get(url),
                        "disabled": lambda: unpatched_get(url),
                        "disabled_timeout": lambda: unpatched_get(url, timeout=10.0),
                    },
                    rounds // 2,  # a new connection per call: each round takes longer
                    blocks,
                ),
                _interleaved(
                    "session.get(url), keep-alive",
                    {
                        "enabled": lambda: session.request("GET", url, allow_redirects=True),
                        "disabled": lambda: original(session, "GET", url, allow_redirects=True),
                        "disabled_timeout": lambda: original(
                            session, "GET", url, allow_redirects=True, timeout=10.0
                        ),
                    },
                    rounds,
                    blocks,
                ),
            ]
            session.close()
            return results
        finally:
            _activation.deactivate()
    finally:
        server.communicate(input="", timeout=10)


def _interleaved(
    label: str, calls: dict[str, Callable[[], Any]], rounds: int, blocks: int
) -> dict[str, Any]:
    """Time *calls* in rotating order, *rounds* times each; p50s, ratios and their spread."""
    times: dict[str, list[float]] = {name: [] for name in calls}
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

    def ratio(a: str, b: str, part: slice = slice(None)) -> float:
        return statistics.median(times[a][part]) / statistics.median(times[b][part])

    size = rounds // blocks
    parts = [slice(k * size, (k + 1) * size) for k in range(blocks)]
    spread = [ratio("enabled", "disabled", part) for part in parts]
    spread_timeout = [ratio("enabled", "disabled_timeout", part) for part in parts]
    return {
        "label": label,
        "enabled_p50_us": statistics.median(times["enabled"]) * 1e6,
        "disabled_p50_us": statistics.median(times["disabled"]) * 1e6,
        "disabled_timeout_p50_us": statistics.median(times["disabled_timeout"]) * 1e6,
        "ratio": ratio("enabled", "disabled"),
        "ratio_timeout": ratio("enabled", "disabled_timeout"),
        "spread": (min(spread), max(spread)),
        "spread_timeout": (min(spread_timeout), max(spread_timeout)),
        "calls_each": rounds,
    }


def render(start: dict[str, Any], latencies: list[dict[str, Any]]) -> str:
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
    for latency in latencies:
        if "error" in latency:
            lines.append(f"| requests GET p50 | error: {latency['error']} | | | |")
            continue
        for label, base, key in (
            ("disabled", "disabled_p50_us", "ratio"),
            ("disabled, same timeout=10 s", "disabled_timeout_p50_us", "ratio_timeout"),
        ):
            low, high = latency["spread" if key == "ratio" else "spread_timeout"]
            ok = "PASS" if latency[key] <= 1.03 else "MISS"
            lines.append(
                f"| {latency['label']}: p50 on 127.0.0.1 vs {label} ({latency['calls_each']} "
                f"calls each, interleaved; blocks {low:.3f}-{high:.3f}), us | "
                f"{latency['enabled_p50_us']:.0f} | {latency[base]:.0f} | {latency[key]:.3f} | "
                f"<= 1.03 {ok} |"
            )
    return "\n".join(lines)


def main() -> int:
    """Run both measurements and print the table."""
    print(render(startup(), requests_latency()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
