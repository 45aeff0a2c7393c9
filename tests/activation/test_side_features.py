"""
Activation is all-or-nothing only for the core: side features never switch the policies off.

Real child interpreters, real ports on 127.0.0.1. A side feature that cannot start (the health
endpoint, a Prometheus port, an exporter) logs one line and the app stays protected; under
``BUTTRESS_STRICT=true`` the same problems stop the process at start-up with exit code 2.
"""

from __future__ import annotations

import ast
import logging
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.activation.children import (
    HOOK,
    Child,
    free_port,
    free_ports,
    get,
    hooked,
    listening,
    scrape,
)
from tests.support.fault_server import FaultServer, ok, status

from buttress import _activation
from buttress._exceptions import ConfigurationError
from buttress._settings_env import _FALSE

Start = Callable[[list[str], dict[str, str]], Child]

APP = textwrap.dedent(
    """
    import sys
    import requests

    url, path, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
    statuses = [requests.get(url + path).status_code for _ in range(calls)]
    print("statuses", statuses, "buttress loaded:", "buttress" in sys.modules, flush=True)
    print("ready", flush=True)
    sys.stdin.readline()  # stay up until the test has looked at the endpoints
    """
)

CONFIG = textwrap.dedent(
    """
    [defaults.http]
    retry.attempts = 3
    retry.backoff = "constant"
    retry.backoff_initial = 0.01
    """
)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """The unmodified application, its buttress config next to it."""
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "buttress.toml").write_text(CONFIG)
    return tmp_path


@pytest.fixture
def env(app: Path, base_env: dict[str, str]) -> dict[str, str]:
    """Enabled, with the quick config, and no exporter unless a test asks for one."""
    return {
        **base_env,
        "BUTTRESS_ENABLED": "true",
        "BUTTRESS_CONFIG": str(app / "buttress.toml"),
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_TRACES_EXPORTER": "none",
    }


def run_app(app: Path, server: FaultServer, path: str, calls: int) -> list[str]:
    """The argv of the app making *calls* GETs to *path*; the first answer is a 503."""
    server.script(path, status(503), ok(b"fine"))
    return [sys.executable, str(app / "app.py"), server.url, path, str(calls)]


def protected(lines: list[str], calls: int) -> bool:
    """Whether the app saw only 200s: its first call's 503 was retried."""
    return f"statuses {[200] * calls} buttress loaded: True" in lines[0]


def successes(port: int, target: str) -> int:
    """The successful calls to *target* that the health endpoint on *port* reports."""
    code, targets = get(port, "/targets")
    assert 200 == code
    [entry] = [t for t in targets if t["target"] == target]
    return int(entry["calls_by_outcome"]["success"])


# --- the health endpoint ----------------------------------------------------------------------


def test_a_busy_health_port_warns_once_and_the_policies_stay_on(
    fault_server: FaultServer, app: Path, env: dict[str, str], start: Start
) -> None:
    """A port someone else holds costs the endpoint only: the 503 is still retried."""
    port = free_port()
    with listening(port):
        child = start(
            run_app(app, fault_server, "/flaky", 3), {**env, "BUTTRESS_HEALTH_PORT": str(port)}
        )
        lines = child.wait_ready()
        code, err = child.stop()

    assert protected(lines, 3), (lines, err)
    assert 4 == fault_server.count("/flaky")
    [warning] = err.splitlines()
    assert f"BUTTRESS_HEALTH_PORT={port}" in warning
    assert "in use by another process" in warning
    assert "not reported" in warning
    assert "8081-8084" in warning  # what to do
    assert "The policies are on" in warning
    assert "Traceback" not in err
    assert 0 == code


def test_a_bad_health_port_warns_once_and_the_policies_stay_on(
    fault_server: FaultServer, app: Path, env: dict[str, str], start: Start
) -> None:
    """A value that is no port (nor range) is reported; buttress stays on."""
    child = start(run_app(app, fault_server, "/flaky", 2), {**env, "BUTTRESS_HEALTH_PORT": "80a"})
    lines = child.wait_ready()
    code, err = child.stop()

    assert protected(lines, 2), (lines, err)
    [warning] = err.splitlines()
    assert "BUTTRESS_HEALTH_PORT='80a' is not accepted" in warning
    assert "FIRST-LAST" in warning
    assert "The policies are on" in warning
    assert 0 == code


def test_two_workers_sharing_a_health_port_are_both_protected_and_one_serves_it(
    fault_server: FaultServer, app: Path, env: dict[str, str], start: Start
) -> None:
    """Started together on one port: the first to bind serves /health, the other says so."""
    port = free_port()
    shared = {**env, "BUTTRESS_HEALTH_PORT": str(port)}
    three = start(run_app(app, fault_server, "/three", 3), shared)
    five = start(run_app(app, fault_server, "/five", 5), shared)
    lines = {3: three.wait_ready(), 5: five.wait_ready()}
    health, report = get(port, "/health")
    served = successes(port, fault_server.authority)
    errs = {3: three.stop()[1], 5: five.stop()[1]}

    assert protected(lines[3], 3), (lines, errs)
    assert protected(lines[5], 5), (lines, errs)
    assert (4, 6) == (fault_server.count("/three"), fault_server.count("/five"))
    assert (200, "healthy") == (health, report["status"])
    warned = [calls for calls, err in errs.items() if "in use by another process" in err]
    assert [1] == [len(errs[calls].splitlines()) for calls in warned], errs
    # The process that did not warn is the one whose calls /targets reports.
    assert [served] == [calls for calls in errs if calls not in warned]
    assert "Traceback" not in errs[3] + errs[5]


def test_a_health_port_range_gives_each_worker_its_own_port(
    fault_server: FaultServer, app: Path, env: dict[str, str], start: Start
) -> None:
    """BUTTRESS_HEALTH_PORT=FIRST-LAST: each process takes the first free port of it."""
    first = free_ports(4)
    ranged = {**env, "BUTTRESS_HEALTH_PORT": f"{first}-{first + 3}"}
    three = start(run_app(app, fault_server, "/three", 3), ranged)
    five = start(run_app(app, fault_server, "/five", 5), ranged)
    lines = [three.wait_ready(), five.wait_ready()]
    served = {
        successes(first, fault_server.authority),
        successes(first + 1, fault_server.authority),
    }
    errs = [three.stop()[1], five.stop()[1]]

    assert protected(lines[0], 3), (lines, errs)
    assert protected(lines[1], 5), (lines, errs)
    assert {3, 5} == served  # two ports, one process each
    assert ["", ""] == errs  # the port taken is logged at INFO, not shown by default


# --- exporters --------------------------------------------------------------------------------


def test_a_busy_prometheus_port_warns_and_the_rest_of_telemetry_carries_on(
    fault_server: FaultServer, app: Path, env: dict[str, str], start: Start
) -> None:
    """The Prometheus reader is skipped; the console reader and the spans still export."""
    port = free_port()
    otel = {
        **env,
        "OTEL_METRICS_EXPORTER": "prometheus,console",
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(port),
    }
    with listening(port):
        child = start(run_app(app, fault_server, "/flaky", 3), otel)
        lines = child.wait_ready()
        code, err = child.stop()

    assert protected(lines, 3), (lines, err)
    [warning] = err.splitlines()
    assert f"OTEL_EXPORTER_PROMETHEUS_PORT={port}: cannot serve Prometheus metrics" in warning
    assert "Address already in use" in warning
    assert "Traceback" not in err
    assert '"buttress.retry"' in child.rest  # the retry's span, by the console span exporter
    assert '"buttress.calls"' in child.rest  # the calls counter, by the console metric reader
    assert 0 == code


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"OTEL_EXPORTER_PROMETHEUS_PORT": "http"}, "OTEL_EXPORTER_PROMETHEUS_PORT='http'"),
        ({"OTEL_EXPORTER_PROMETHEUS_PORT": "70000"}, "OTEL_EXPORTER_PROMETHEUS_PORT='70000'"),
        ({"OTEL_METRICS_EXPORTER": "statsd"}, "OTEL_METRICS_EXPORTER='statsd'"),
    ],
)
def test_a_bad_exporter_setting_warns_once_and_the_policies_stay_on(
    fault_server: FaultServer,
    app: Path,
    env: dict[str, str],
    start: Start,
    variables: dict[str, str],
    named: str,
) -> None:
    """Reported at the first call, where the SDK is set up, in one line naming the value."""
    otel = {**env, "OTEL_METRICS_EXPORTER": "prometheus", **variables}
    child = start(run_app(app, fault_server, "/flaky", 3), otel)
    lines = child.wait_ready()
    code, err = child.stop()

    assert protected(lines, 3), (lines, err)
    [warning] = err.splitlines()
    assert named in warning
    assert "This exporter is skipped" in warning
    assert "Traceback" not in err
    assert 0 == code


# --- strict -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"BUTTRESS_HEALTH_PORT": "{busy}"}, "BUTTRESS_HEALTH_PORT={busy}: "),
        ({"BUTTRESS_HEALTH_PORT": "{busy}-{busy}"}, "BUTTRESS_HEALTH_PORT={busy}-{busy}: "),
        ({"BUTTRESS_HEALTH_PORT": "9-8"}, "BUTTRESS_HEALTH_PORT='9-8' is not accepted"),
        ({"BUTTRESS_HEALTH_PORT": "http"}, "BUTTRESS_HEALTH_PORT='http' is not accepted"),
        (
            {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_PORT": "{busy}"},
            "OTEL_EXPORTER_PROMETHEUS_PORT={busy}: cannot serve Prometheus metrics",
        ),
        (
            {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_PORT": "x"},
            "OTEL_EXPORTER_PROMETHEUS_PORT='x' is not accepted",
        ),
        ({"OTEL_METRICS_EXPORTER": "statsd"}, "OTEL_METRICS_EXPORTER='statsd' is not supported"),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER='zipkin' is not supported"),
    ],
    ids=[
        "busy-health-port",
        "full-health-range",
        "reversed-health-range",
        "bad-health-port",
        "busy-prometheus-port",
        "bad-prometheus-port",
        "unknown-metrics-exporter",
        "unknown-traces-exporter",
    ],
)
def test_strict_exits_2_at_start_up_when_a_side_feature_cannot_start(
    fault_server: FaultServer,
    app: Path,
    env: dict[str, str],
    variables: dict[str, str],
    named: str,
) -> None:
    """One line on stderr names the variable and the value; the app never runs."""
    busy = free_port()
    given = {k: v.format(busy=busy) for k, v in variables.items()}
    strict = {
        **env,
        "BUTTRESS_STRICT": "true",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        **given,
    }
    with listening(busy):
        result = subprocess.run(  # noqa: S603
            run_app(app, fault_server, "/flaky", 1),
            env=strict,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert (2, "") == (result.returncode, result.stdout)
    [line] = result.stderr.splitlines()
    assert line.startswith("buttress: BUTTRESS_STRICT=true, exiting with code 2: ")
    assert named.format(busy=busy) in line
    assert 0 == fault_server.count()


def test_strict_fails_on_a_health_port_the_prometheus_endpoint_also_wants(
    fault_server: FaultServer, app: Path, env: dict[str, str]
) -> None:
    """The Prometheus port is probed after the health endpoint started: a shared port fails."""
    port = free_port()
    strict = {
        **env,
        "BUTTRESS_STRICT": "true",
        "BUTTRESS_HEALTH_PORT": str(port),
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(port),
    }
    result = subprocess.run(  # noqa: S603
        run_app(app, fault_server, "/flaky", 1),
        env=strict,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert (2, "") == (result.returncode, result.stdout)
    assert f"OTEL_EXPORTER_PROMETHEUS_PORT={port}: cannot serve" in result.stderr


def test_strict_starts_normally_when_every_side_feature_can(
    fault_server: FaultServer, app: Path, env: dict[str, str], start: Start
) -> None:
    """The strict checks release the Prometheus port they probed: the SDK binds it later."""
    health, metrics = free_port(), free_port()
    strict = {
        **env,
        "BUTTRESS_STRICT": "true",
        "BUTTRESS_HEALTH_PORT": str(health),
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(metrics),
    }
    child = start(run_app(app, fault_server, "/flaky", 2), strict)
    lines = child.wait_ready()
    health_status, _ = get(health, "/health")
    exported = scrape(metrics)
    code, err = child.stop()

    assert protected(lines, 2), (lines, err)
    assert 200 == health_status
    assert "buttress_calls_total" in exported
    assert ("", 0) == (err, code)


@pytest.mark.skipif(
    shutil.which("opentelemetry-instrument", path=str(Path(sys.executable).parent)) is None,
    reason="opentelemetry-instrument (opentelemetry-instrumentation) is not installed",
)
def test_strict_leaves_the_exporters_to_opentelemetry_instrument(
    fault_server: FaultServer, app: Path, env: dict[str, str], start: Start
) -> None:
    """Under the launcher the distro owns the OTEL_* exporters: names only it knows pass strict."""
    instrument = str(Path(sys.executable).parent / "opentelemetry-instrument")
    distro = {
        **env,
        "BUTTRESS_STRICT": "true",
        "OTEL_TRACES_EXPORTER": "otlp_proto_grpc",  # a distro name; its package is absent here
        "OTEL_LOGS_EXPORTER": "none",
    }
    child = start([instrument, *run_app(app, fault_server, "/flaky", 2)], distro)
    lines = child.wait_ready()
    code, err = child.stop()

    assert protected(lines, 2), (lines, err)
    assert "exiting with code 2" not in err
    assert 0 == code


# --- BUTTRESS_ENABLED -------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["ture", "enabled"])
def test_a_typo_in_buttress_enabled_is_an_error_and_the_app_runs_unprotected(
    fault_server: FaultServer, app: Path, env: dict[str, str], start: Start, value: str
) -> None:
    """Not a documented value: logged at ERROR naming the variable; buttress stays off."""
    argv = run_app(app, fault_server, "/flaky", 3)
    child = start([sys.executable, *hooked(*argv[1:])], {**env, "BUTTRESS_ENABLED": value})
    lines = child.wait_ready()
    code, err = child.stop()

    assert "statuses [503, 200, 200]" in lines[0]
    assert 3 == fault_server.count("/flaky")
    [error] = err.splitlines()
    assert "buttress is DISABLED" in error
    assert f"BUTTRESS_ENABLED={value!r} is not accepted" in error
    assert 0 == code


def test_strict_exits_2_on_a_typo_in_buttress_enabled(
    fault_server: FaultServer, app: Path, env: dict[str, str]
) -> None:
    """Under strict the typo stops the process before the app runs."""
    argv = run_app(app, fault_server, "/flaky", 1)
    result = subprocess.run(  # noqa: S603
        [sys.executable, *hooked(*argv[1:])],
        env={**env, "BUTTRESS_ENABLED": "ture", "BUTTRESS_STRICT": "true"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert (2, "") == (result.returncode, result.stdout)
    [line] = result.stderr.splitlines()
    assert "BUTTRESS_ENABLED='ture' is not accepted" in line


@pytest.mark.parametrize(
    ("value", "imported"),
    [
        (None, False),
        ("", False),
        ("  ", False),
        ("false", False),
        ("OFF", False),
        ("0", False),
        (" No ", False),
        ("true", True),
        ("1", True),
        ("ture", True),
        ("enabled", True),
    ],
)
def test_the_hook_imports_the_bootstrap_unless_unset_or_false(
    base_env: dict[str, str], value: str | None, imported: bool
) -> None:
    """Unset, empty and the false values import nothing; any other value reaches load_settings."""
    environ = dict(base_env) if value is None else {**base_env, "BUTTRESS_ENABLED": value}
    environ["OTEL_METRICS_EXPORTER"] = environ["OTEL_TRACES_EXPORTER"] = "none"
    check = "import sys; print(sorted(m for m in sys.modules if m.startswith('buttress')))"
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-c", f"{HOOK}\n{check}"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    loaded = eval(result.stdout)  # noqa: S307 - a list literal printed by the child
    assert imported == ("buttress._bootstrap" in loaded), result.stderr
    if not imported:
        assert [] == loaded


def test_the_hook_skips_exactly_unset_and_the_false_values_of_load_settings() -> None:
    """The hook's list of off values and the reader's false spellings cannot drift apart."""
    [skipped] = [
        ast.literal_eval(node) for node in ast.walk(ast.parse(HOOK)) if isinstance(node, ast.Tuple)
    ]

    assert {"", *_FALSE} == set(skipped)


def test_the_hook_is_one_import_line() -> None:
    """site runs a .pth line that starts with `import`; one line keeps the unset cost a lookup."""
    text = (Path(__file__).resolve().parents[2] / "src" / "buttress.pth").read_text()

    assert 1 == len(text.splitlines())
    assert text.startswith('import os; os.environ.get("BUTTRESS_ENABLED", "")')
    assert "buttress._bootstrap" in text


# --- in-process: what activate() leaves behind ------------------------------------------------


def test_strict_activation_leaves_buttress_off_when_the_health_port_is_busy() -> None:
    """activate() raises and undoes the core it had applied: nothing stays half on."""
    port = free_port()
    environ = {
        "BUTTRESS_ENABLED": "true",
        "BUTTRESS_STRICT": "true",
        "BUTTRESS_HEALTH_PORT": str(port),
    }
    _activation.deactivate()
    try:
        with (
            listening(port),
            pytest.raises(ConfigurationError, match=f"BUTTRESS_HEALTH_PORT={port}"),
        ):
            _activation.activate(environ, owns_sdk=False)
        assert False is _activation.is_active()
    finally:
        _activation.deactivate()


def test_activation_without_strict_stays_on_when_the_health_port_is_busy(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One WARNING record, without exc_info, and buttress active."""
    port = free_port()
    environ = {"BUTTRESS_ENABLED": "true", "BUTTRESS_HEALTH_PORT": str(port)}
    _activation.deactivate()
    try:
        with listening(port), caplog.at_level(logging.INFO, logger="buttress"):
            assert True is _activation.activate(environ, owns_sdk=False)
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert [(logging.WARNING, None)] == [(r.levelno, r.exc_info) for r in warnings]
        assert f"BUTTRESS_HEALTH_PORT={port}" in warnings[0].getMessage()
        assert True is _activation.is_active()
    finally:
        _activation.deactivate()
