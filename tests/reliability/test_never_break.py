"""
Never break the host: a fault in buttress's own code costs protection, never the host's call.

Each test injects one fault into buttress itself (its telemetry listener, its configuration
lookup, a patch wrapper's routing, the OpenTelemetry exporter behind it) and sends real requests
through every patched HTTP client to a local server, and real statements to SQLite and
PostgreSQL. The host's calls must go through (unprotected), buttress must log the fault once,
not once per call, and the host's own exceptions must reach it unchanged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import requests
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from tests.integrations.conftest import DRIVERS, Driver, restore_patch_points, write_config
from tests.integrations.db.pg import DSN
from tests.reliability.figures import record, scale
from tests.support.fake_llm import FakeLLM
from tests.support.fault_server import FaultServer, ok, status
from tests.support.fixtures import fault_server  # noqa: F401

import buttress
from buttress import _activation, _faults, _settings, telemetry
from buttress.integrations import _http
from buttress.integrations import aiohttp as aiohttp_patch
from buttress.integrations import httpx as httpx_patch
from buttress.integrations import requests as requests_patch
from buttress.integrations import urllib3 as urllib3_patch
from buttress.telemetry import Event, _hooks, add_hook
from buttress.telemetry._otel import OTelTelemetry

PART = "never break the host"
CALLS = scale(20, 500)
"""Requests per client per fault."""


WRAPPERS = (aiohttp_patch, httpx_patch, requests_patch, urllib3_patch)
"""The HTTP patch modules, whose routing the wrapper-fault test breaks."""


class Injected(RuntimeError):
    """The fault put into buttress's own code."""


@pytest.fixture
def zero_code(tmp_path: Any) -> Iterator[None]:
    """buttress switched on as BUTTRESS_ENABLED=true does it (no global OTel providers)."""
    # A breaker that half the attempts failing (the retry tests) does not open.
    config = write_config(tmp_path / "buttress.toml", {"breaker.failure_rate_threshold": 1.0})
    environ = {"BUTTRESS_ENABLED": "true", "BUTTRESS_CONFIG": str(config)}
    sdk_checked = _activation._sdk_checked
    _faults.forget()
    assert _activation.activate(environ, owns_sdk=False)
    try:
        yield
    finally:
        _activation.deactivate()
        _activation._sdk_checked = sdk_checked
        _faults.forget()
        restore_patch_points()


@pytest.fixture
def drivers() -> Iterator[dict[str, Driver]]:
    made = {name: cls() for name, cls in DRIVERS.items()}
    yield made
    for driver in made.values():
        driver.close()


def buttress_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "buttress" and r.levelno >= logging.ERROR  # not the breaker's warnings
    ]


def send_all(
    drivers: dict[str, Driver], url: str, expected: int
) -> tuple[int, int, dict[str, str]]:
    """*CALLS* requests per client; (sent, failed, first failure per client)."""
    sent = failed = 0
    why: dict[str, str] = {}
    for name, driver in drivers.items():
        for _ in range(CALLS):
            sent += 1
            try:
                reply = driver.do("GET", url)
            except Exception as exc:  # noqa: BLE001 - counted: a call buttress broke
                failed += 1
                why.setdefault(name, f"{type(exc).__name__}: {exc}")
                continue
            if reply.status != expected:
                failed += 1
                why.setdefault(name, f"status {reply.status}")
    return sent, failed, why


TOTALS = {"faults": 0, "calls": 0, "failed": 0, "lines": 0, "sites": 0}
"""Summed over the faults injected; recorded as the part's headline figures at the end."""


def figures(fault: str, sent: int, failed: int, lines: int, sites: int = 1) -> None:
    """Record one fault's figures: *sites* places where buttress's code failed, each to log once."""
    TOTALS["faults"] += 1
    TOTALS["calls"] += sent
    TOTALS["failed"] += failed
    TOTALS["lines"] += lines
    TOTALS["sites"] += sites
    record(
        PART,
        f"{fault}: calls that failed because of buttress",
        f"{failed}/{sent}",
        "0",
        failed == 0,
    )
    record(
        PART,
        f"{fault}: buttress log lines",
        f"{lines} ({sites} fault sites)",
        "1 per site",
        lines == sites,
    )


@pytest.fixture(scope="module", autouse=True)
def _headline() -> Iterator[None]:
    yield
    if TOTALS["faults"]:
        record(PART, "faults injected into buttress's own code", TOTALS["faults"])
        record(
            PART,
            "host calls that failed because of buttress (all faults)",
            f"{TOTALS['failed']}/{TOTALS['calls']}",
            "0",
            TOTALS["failed"] == 0,
        )
        record(
            PART,
            "buttress log lines per fault site (all faults)",
            f"{TOTALS['lines']}/{TOTALS['sites']}",
            "1",
            TOTALS["lines"] == TOTALS["sites"],
        )


def test_config_lookup_fault_http(
    zero_code: None,
    drivers: dict[str, Driver],
    fault_server: FaultServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The settings lookup raises for every new target: every client's request still goes out."""

    def broken(*args: object) -> Any:
        raise Injected("config lookup")

    monkeypatch.setattr(_activation, "policies", broken)
    fault_server.script("/ok", ok(b"fine"))
    with caplog.at_level(logging.WARNING, logger="buttress"):
        sent, failed, why = send_all(drivers, f"{fault_server.url}/ok", 200)
    lines = buttress_errors(caplog)
    figures("configuration lookup raises (HTTP, 5 clients)", sent, failed, len(lines))
    assert failed == 0, why
    assert fault_server.count("/ok") == sent  # unprotected: each exactly once
    assert len(lines) == 1, lines
    assert "internal error in building the http pipeline" in lines[0]
    assert fault_server.authority not in buttress.targets()  # nothing half-built was kept


def test_http_options_lookup_fault(
    zero_code: None,
    drivers: dict[str, Driver],
    fault_server: FaultServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(*args: object) -> Any:
        raise Injected("http options")

    monkeypatch.setattr(_settings, "http_options_for", broken)
    fault_server.script("/ok", ok(b"fine"))
    with caplog.at_level(logging.WARNING, logger="buttress"):
        sent, failed, why = send_all(drivers, f"{fault_server.url}/ok", 200)
    lines = buttress_errors(caplog)
    figures("HTTP options lookup raises", sent, failed, len(lines))
    assert failed == 0, why
    assert len(lines) == 1, lines


def test_patch_wrapper_fault(
    zero_code: None,
    drivers: dict[str, Driver],
    fault_server: FaultServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Routing, inside every patched client, raises: the request goes out unprotected."""

    def broken(*args: object) -> Any:
        raise Injected("routing")

    for module in (_http, *WRAPPERS):
        for name in ("route", "route_of_url"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, broken)
    _http.forget_routes()
    fault_server.script("/ok", ok(b"fine"))
    with caplog.at_level(logging.WARNING, logger="buttress"):
        sent, failed, why = send_all(drivers, f"{fault_server.url}/ok", 200)
    lines = buttress_errors(caplog)
    # One site per patched library (httpx's sync and async clients share one).
    figures("patch wrapper raises (4 libraries)", sent, failed, len(lines), sites=4)
    assert failed == 0, why
    assert fault_server.count("/ok") == sent
    assert len(lines) == 4, lines
    assert all("the call goes on without it" in line for line in lines)


def test_telemetry_listener_fault(
    zero_code: None,
    drivers: dict[str, Driver],
    fault_server: FaultServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The OpenTelemetry listener raises on every event (retries emit them): calls go on."""
    installed = telemetry.instrument(tracer_provider=TracerProvider())
    try:

        def broken(self: OTelTelemetry, event: object) -> None:
            raise Injected("telemetry")

        monkeypatch.setattr(OTelTelemetry, "__call__", broken)
        # Every call's first attempt gets a 503 and its retry a 200: one event per call.
        fault_server.script("/flaky", *[status(503, b"busy"), ok(b"fine")] * CALLS * len(drivers))
        with caplog.at_level(logging.WARNING, logger="buttress"):
            sent, failed, why = send_all(drivers, f"{fault_server.url}/flaky", 200)
        lines = buttress_errors(caplog)
    finally:
        telemetry.uninstrument()
        _hooks._failed.discard(id(installed))
    figures("telemetry listener raises on every event", sent, failed, len(lines))
    assert failed == 0, why
    assert fault_server.count("/flaky") == 2 * sent  # still protected: each call retried once
    assert len(lines) == 1, lines


class BrokenExporter(SpanExporter):
    def __init__(self) -> None:
        self.calls = 0

    def export(self, spans: Any) -> SpanExportResult:
        self.calls += 1
        raise Injected("exporter")

    def shutdown(self) -> None:
        pass


def test_otel_exporter_fault(
    zero_code: None,
    drivers: dict[str, Driver],
    fault_server: FaultServer,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Spans are exported inline and every export raises: the host's calls are untouched."""
    exporter = BrokenExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.instrument(tracer_provider=provider)
    tracer = provider.get_tracer("host")
    fault_server.script("/busy", status(503, b"busy"))
    try:
        with caplog.at_level(logging.WARNING):
            with tracer.start_as_current_span("host request"):  # buttress adds its events here
                sent, failed, why = send_all(drivers, f"{fault_server.url}/busy", 503)
            for _ in range(3):
                with tracer.start_as_current_span("another"):
                    pass
    finally:
        telemetry.uninstrument()
    ours = buttress_errors(caplog)
    # No site of buttress's: the SDK reports its exporter's failures itself.
    figures("OTel exporter raises on every export", sent, failed, len(ours), sites=0)
    assert failed == 0, why
    assert exporter.calls >= 4
    assert ours == []


def test_user_exceptions_pass_unchanged_under_faults(
    zero_code: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With buttress's own code failing, the host's own errors still reach it as raised."""

    def broken(*args: object) -> Any:
        raise Injected("config lookup")

    monkeypatch.setattr(_activation, "policies", broken)
    telemetry.instrument(tracer_provider=TracerProvider())
    monkeypatch.setattr(
        OTelTelemetry, "__call__", lambda self, event: (_ for _ in ()).throw(Injected())
    )
    try:
        # A refused connection: the library's own error, same class, whatever buttress does.
        with pytest.raises(requests.ConnectionError) as refused:
            requests.get("http://127.0.0.1:9/", timeout=2)
        assert type(refused.value) is requests.ConnectionError

        mine = KeyError("the host's own")
        guard = buttress.protect(
            "user", retry=buttress.Retry(on=KeyError, attempts=2, backoff=buttress.constant(0))
        )

        def fails() -> None:
            raise mine

        with pytest.raises(KeyError) as raised:
            guard.call(fails)
        assert raised.value is mine
    finally:
        telemetry.uninstrument()
    record(PART, "host exceptions changed by a fault of buttress", 0, "0", True)


def test_config_lookup_fault_databases(
    zero_code: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Any,
) -> None:
    """The same fault under sqlite3 and psycopg: statements run, errors stay the driver's."""
    import sqlite3  # noqa: PLC0415

    def broken(*args: object) -> Any:
        raise Injected("config lookup")

    monkeypatch.setattr(_activation, "policies", broken)
    sent = failed = 0
    with caplog.at_level(logging.WARNING, logger="buttress"):
        lite = sqlite3.connect(str(tmp_path / "host.db"))
        for i in range(CALLS):
            sent += 1
            try:
                assert lite.execute("select ?", (i,)).fetchone() == (i,)
            except Exception:  # noqa: BLE001
                failed += 1
        with pytest.raises(sqlite3.OperationalError):
            lite.execute("select * from no_such_table_guard")
        lite.close()
        with psycopg.connect(DSN) as pg:
            for i in range(CALLS):
                sent += 1
                try:
                    assert pg.execute("select %s::int", (i,)).fetchone() == (i,)
                except Exception:  # noqa: BLE001
                    failed += 1
            with pytest.raises(psycopg.errors.UndefinedTable):
                pg.execute("select * from no_such_table_guard")
    lines = buttress_errors(caplog)
    figures("configuration lookup raises (sqlite3, psycopg)", sent, failed, len(lines))
    assert failed == 0
    assert len(lines) == 1, lines


def test_config_lookup_faults_llm_and_redis(
    zero_code: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Every settings lookup an LLM call or a Redis write makes raises: they still go through."""
    import openai  # noqa: PLC0415
    import redis  # noqa: PLC0415

    def broken(*args: object) -> Any:
        raise Injected("config lookup")

    lookups = ("policies_for", "llm_tokens_for", "llm_fallbacks_for", "db_options_for")
    for name in lookups:
        monkeypatch.setattr(_settings, name, broken)
    sent = failed = 0
    with caplog.at_level(logging.WARNING, logger="buttress"), FakeLLM() as server:
        client = openai.OpenAI(api_key="sk-test", base_url=server.openai_url)
        kv = redis.Redis(host="127.0.0.1", port=6379, db=14)
        for i in range(CALLS):
            sent += 2
            try:
                answer = client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
                )
                assert answer.choices[0].message.content
            except Exception:  # noqa: BLE001 - counted: a call buttress broke
                failed += 1
            try:
                kv.set(f"buttress-guard:{i}", i)
            except Exception:  # noqa: BLE001
                failed += 1
        kv.delete(*[f"buttress-guard:{i}" for i in range(CALLS)])
        kv.close()
        client.close()
    lines = buttress_errors(caplog)
    sites = {line.split(" (target")[0] for line in lines}
    figures("settings lookups raise (openai, redis)", sent, failed, len(lines), sites=len(sites))
    assert failed == 0
    assert len(lines) == len(sites), lines
    assert len(sites) >= 3, lines  # the llm and db pipelines, and the option lookups met


def test_a_slow_hook_delays_only_the_call_that_emitted(caplog: pytest.LogCaptureFixture) -> None:
    """Measured: hooks run inline; a slow one costs its caller its time, others nothing, once told."""
    pause = 0.2
    slow = buttress.protect("slow-hook", retry=None, breaker=buttress.CircuitBreaker())
    other = buttress.protect("other-target", retry=None)
    assert slow.breaker is not None
    slow.breaker.force_open()

    def sluggish(event: Event) -> None:
        if event.target == "slow-hook":
            time.sleep(pause)

    remove = add_hook(sluggish)
    stop = threading.Event()
    latencies: list[float] = []

    def meanwhile() -> None:
        while not stop.is_set():
            start = time.perf_counter()
            other.call(lambda: None)
            latencies.append(time.perf_counter() - start)
            time.sleep(0.001)

    worker = threading.Thread(target=meanwhile)
    rejected: list[float] = []
    try:
        with caplog.at_level(logging.WARNING, logger="buttress"):
            worker.start()
            for _ in range(3):
                start = time.perf_counter()
                with pytest.raises(buttress.CircuitOpenError):
                    slow.call(lambda: None)
                rejected.append(time.perf_counter() - start)
    finally:
        stop.set()
        worker.join()
        remove()
    warnings = [r.getMessage() for r in caplog.records if "took" in r.getMessage()]
    worst_other = max(latencies)
    record(
        PART,
        f"a {pause} s hook: the call that emitted took (min of 3)",
        f"{min(rejected):.3f} s",
        f">= {pause} s (inline)",
    )
    record(
        PART,
        f"a {pause} s hook: calls of another target meanwhile, slowest",
        f"{worst_other * 1000:.1f} ms ({len(latencies)} calls)",
        f"< {pause} s",
        worst_other < pause,
    )
    record(PART, f"a {pause} s hook: warnings naming it", len(warnings), "1", len(warnings) == 1)
    assert min(rejected) >= pause
    assert worst_other < pause, worst_other
    assert len(latencies) > 10
    assert len(warnings) == 1, warnings
    assert "sluggish" in warnings[0]
