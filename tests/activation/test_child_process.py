"""Zero-code activation in a real child interpreter: only environment variables change."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tests.activation.children import free_port, scrape
from tests.support.fault_server import FaultServer, ok, status

APP = textwrap.dedent(
    """
    import sys
    import requests

    url = sys.argv[1]
    statuses = [requests.get(url + "/flaky").status_code for _ in range(3)]
    post = requests.post(url + "/post", data=b"x").status_code
    print("statuses", statuses, "post", post, "buttress loaded:", "buttress" in sys.modules)
    print("ready", flush=True)
    sys.stdin.readline()  # stay up until the test has scraped /metrics
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
    """The unmodified application and a buttress config next to it."""
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "buttress.toml").write_text(CONFIG)
    return tmp_path


def test_enabled_by_environment_retries_and_exports_metrics(
    fault_server: FaultServer, app: Path, base_env: dict[str, str], start: object
) -> None:
    """BUTTRESS_ENABLED=true alone makes an unmodified app retry and serve buttress metrics."""
    fault_server.script("/flaky", status(503), ok(b"fine"))
    fault_server.script("/post", status(503))
    port = free_port()
    env = {
        **base_env,
        "BUTTRESS_ENABLED": "true",
        "BUTTRESS_CONFIG": str(app / "buttress.toml"),
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(port),
    }
    child = start([sys.executable, str(app / "app.py"), fault_server.url], env)  # type: ignore[operator]

    lines = child.wait_ready()
    metrics = scrape(port)
    code, err = child.stop()

    assert "statuses [200, 200, 200] post 503 buttress loaded: True" in lines[0], err
    assert 4 == fault_server.count("/flaky")  # 503 then 200 for the first call, then 200, 200
    assert 1 == fault_server.count("/post")  # never retried: POST without an idempotency key
    target = fault_server.authority
    assert f'target="{target}"' in metrics
    success = [
        line
        for line in metrics.splitlines()
        if line.startswith("buttress_calls_total")
        and f'target="{target}"' in line
        and 'outcome="success"' in line
    ]
    retries = [
        line
        for line in metrics.splitlines()
        if line.startswith("buttress_retries_total") and f'target="{target}"' in line
    ]
    assert [3.0] == [float(line.rsplit(" ", 1)[1]) for line in success]
    assert [1.0] == [float(line.rsplit(" ", 1)[1]) for line in retries]
    assert 0 == code


def test_unset_leaves_the_app_untouched(
    fault_server: FaultServer, app: Path, base_env: dict[str, str], start: object
) -> None:
    """Without BUTTRESS_ENABLED the start-up hook imports nothing and nothing is retried."""
    fault_server.script("/flaky", status(503), ok(b"fine"))
    fault_server.script("/post", status(503))
    child = start([sys.executable, str(app / "app.py"), fault_server.url], base_env)  # type: ignore[operator]

    lines = child.wait_ready()
    code, _err = child.stop()

    assert "statuses [503, 200, 200] post 503 buttress loaded: False" in lines[0]
    assert (3, 0) == (fault_server.count("/flaky"), code)


def test_a_bad_setting_disables_buttress_loudly_but_the_app_runs(
    fault_server: FaultServer, app: Path, base_env: dict[str, str], start: object
) -> None:
    """A bad value is logged with its variable name, and the app keeps running unprotected."""
    fault_server.script("/flaky", status(503), ok(b"fine"))
    env = {**base_env, "BUTTRESS_ENABLED": "true", "BUTTRESS_MODE": "bogus"}
    child = start([sys.executable, str(app / "app.py"), fault_server.url], env)  # type: ignore[operator]

    lines = child.wait_ready()
    code, err = child.stop()

    assert "statuses [503, 200, 200]" in lines[0]
    assert "BUTTRESS_MODE" in err
    assert "'bogus'" in err
    assert "DISABLED" in err
    assert 0 == code


def test_strict_mode_fails_fast_on_a_bad_setting(app: Path, base_env: dict[str, str]) -> None:
    """BUTTRESS_STRICT=true turns a configuration error into an exit before the app starts."""
    env = {
        **base_env,
        "BUTTRESS_ENABLED": "true",
        "BUTTRESS_MODE": "bogus",
        "BUTTRESS_STRICT": "true",
    }

    result = subprocess.run(  # noqa: S603
        [sys.executable, "-c", "print('app ran')"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert (2, "") == (result.returncode, result.stdout)
    assert "BUTTRESS_MODE" in result.stderr


@pytest.mark.skipif(
    shutil.which("opentelemetry-instrument", path=str(Path(sys.executable).parent)) is None,
    reason="opentelemetry-instrument (opentelemetry-instrumentation) is not installed",
)
def test_opentelemetry_instrument_loads_buttress_and_honours_disabling(
    fault_server: FaultServer, app: Path, base_env: dict[str, str], start: object
) -> None:
    """Under opentelemetry-instrument, buttress activates; OTEL_PYTHON_DISABLED_INSTRUMENTATIONS turns it off."""
    instrument = str(Path(sys.executable).parent / "opentelemetry-instrument")
    fault_server.script("/flaky", status(503), ok(b"fine"))
    fault_server.script("/post", status(503))
    env = {
        **base_env,
        "BUTTRESS_ENABLED": "true",
        "BUTTRESS_CONFIG": str(app / "buttress.toml"),
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    }
    child = start([instrument, sys.executable, str(app / "app.py"), fault_server.url], env)  # type: ignore[operator]
    enabled_lines = child.wait_ready()
    child.stop()
    enabled_count = fault_server.count("/flaky")
    fault_server.reset_counts()
    fault_server.script("/flaky", status(503), ok(b"fine"))
    off = {**env, "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "buttress"}
    child = start([instrument, sys.executable, str(app / "app.py"), fault_server.url], off)  # type: ignore[operator]
    disabled_lines = child.wait_ready()
    child.stop()

    assert "statuses [200, 200, 200]" in enabled_lines[0]
    assert 4 == enabled_count
    assert "statuses [503, 200, 200]" in disabled_lines[0]
    assert 3 == fault_server.count("/flaky")
