"""
The host of the cardinality test: one process meets N distinct targets of one family.

Run by ``test_cardinality.py`` as ``python cardinality_child.py FAMILY N PORT CONFIG``, with
buttress activated as ``BUTTRESS_ENABLED=true`` does it and its metrics read by an in-memory
reader. FAMILY is ``http`` (requests to N distinct loopback hosts, 127.x.y.z, on a port where
nothing listens: a crawler among dead hosts), ``db`` (psycopg connections to N such hosts) or
``protect`` (N explicit ``protect()`` names, each called once and dropped). Prints one JSON line:
the series per metric and the distinct ``target`` values, what buttress holds (pipelines, routes,
cached options) and memory (tracemalloc and RSS) after the warm-up and at the end.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import buttress
from buttress import _activation, _stats, telemetry
from buttress._registry import REGISTRY
from buttress.integrations import _http

FAMILY, N, PORT, CONFIG = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
WARM_UP = N // 2
"""Targets met before the second reading; the growth after it is what more targets cost."""
SAMPLE = 200
"""The first targets, all under the bound: what one target's pipeline costs, measured."""


def host(i: int) -> str:
    """The i-th distinct loopback address (127.0.0.0/8, skipping 127.0.0.1's neighbourhood)."""
    i += 1 << 16
    return f"127.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def rss() -> int:
    resident = Path("/proc/self/statm").read_text().split()[1]
    return int(resident) * os.sysconf("SC_PAGE_SIZE")


def held() -> dict[str, int]:
    return {
        "registered": len(REGISTRY._pipelines),
        "overflow": len(REGISTRY._overflow),
        "routes": len(_http._routes),
        "url_routes": len(_http._url_routes),
        "http_options": len(_activation._http_options),
        "db_options": len(_activation._db_options),
        "live_stats": len(_stats.LIVE),
        "retired_stats": len(_stats.RETIRED),
    }


def series(reader: InMemoryMetricReader) -> tuple[dict[str, int], list[str]]:
    data = reader.get_metrics_data()
    per_metric: dict[str, int] = {}
    targets: set[str] = set()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points = list(metric.data.data_points)
                per_metric[metric.name] = per_metric.get(metric.name, 0) + len(points)
                targets.update(str(p.attributes.get("target")) for p in points if p.attributes)
    return per_metric, sorted(targets)


def maker() -> Callable[[int], Any]:
    if FAMILY == "http":
        import urllib3  # noqa: PLC0415

        pool = urllib3.PoolManager(retries=False, timeout=2)

        def call(i: int) -> Any:
            try:
                pool.request("GET", f"http://{host(i)}:{PORT}/item?id={i}")
            except urllib3.exceptions.HTTPError:
                return "refused"
            return "answered"

        return call
    if FAMILY == "db":
        import psycopg  # noqa: PLC0415

        def connect(i: int) -> Any:
            try:
                psycopg.connect(f"postgresql://root@{host(i)}:{PORT}/test", connect_timeout=2)
            except psycopg.OperationalError:
                return "refused"
            return "connected"

        return connect

    def protected(i: int) -> Any:
        guard = buttress.protect(f"name-{i}", retry=None)
        return guard.call(lambda: "ok")

    return protected


def main() -> None:
    environ = {"BUTTRESS_ENABLED": "true", "BUTTRESS_CONFIG": CONFIG}
    assert _activation.activate(environ, owns_sdk=False)
    reader = InMemoryMetricReader()
    telemetry.instrument(meter_provider=MeterProvider(metric_readers=[reader]))
    call = maker()
    outcomes: dict[str, int] = {}
    call(N)  # imports and first-use set-up: not per target
    outcomes = {}
    gc.collect()
    tracemalloc.start()
    readings = [{"traced": tracemalloc.get_traced_memory()[0], "rss": rss()}]
    for i in range(N):
        outcome = call(i)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if i + 1 in (SAMPLE, WARM_UP, N):
            series(reader)  # a collection, as an exporter makes: its own state is counted too
            gc.collect()
            readings.append({"traced": tracemalloc.get_traced_memory()[0], "rss": rss()})
    per_metric, targets = series(reader)
    print(
        json.dumps(
            {
                "outcomes": outcomes,
                "sample": SAMPLE,
                "warm_up": WARM_UP,
                "max_routes": _http._MAX_ROUTES,
                "max_cached": _activation._MAX_CACHED,
                "readings": readings,
                "held": held(),
                "max_targets": REGISTRY.max_targets,
                "max_overflow": REGISTRY.MAX_OVERFLOW,
                "series": per_metric,
                "targets": targets,
            }
        )
    )


main()
