"""
A bad configuration at start-up: one clear line, never a traceback, and strict exits with 2.

Issue 14: ``retry.backoff = []`` disabled buttress with a traceback, and with
``BUTTRESS_STRICT=true`` the app still started unprotected (exit 0). Every configuration path
(variables, the file, the templates it layers on) must now end the same way.
"""

# ruff: noqa: SIM300 - house style asserts `expected == actual` (R15)

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from buttress import _activation
from buttress._exceptions import ConfigurationError

STRICT_PREFIX = "buttress: BUTTRESS_STRICT=true, exiting with code 2: "
BAD_FILE = "[defaults.http]\nretry.backoff = []\n"


def run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our interpreter, our code
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def bad_file(tmp_path: Path) -> str:
    path = tmp_path / "buttress.toml"
    path.write_text(BAD_FILE, encoding="utf-8")
    return str(path)


def test_strict_exits_2_on_a_bad_file_value(base_env: dict[str, str], bad_file: str) -> None:
    """The file path: exit 2 before the app runs, with one line naming the key."""
    env = {**base_env, "BUTTRESS_ENABLED": "true", "BUTTRESS_STRICT": "true"}

    result = run("print('app ran')", {**env, "BUTTRESS_CONFIG": bad_file})

    assert (2, "") == (result.returncode, result.stdout)
    expected = (
        f"{STRICT_PREFIX}BUTTRESS_CONFIG: {bad_file}: defaults.http.retry.backoff = [] is not "
        "accepted; expected one of 'exponential', 'constant', 'decorrelated'"
    )
    assert [expected] == result.stderr.splitlines()


def test_without_strict_the_app_runs_and_one_line_says_why(
    base_env: dict[str, str], bad_file: str
) -> None:
    env = {**base_env, "BUTTRESS_ENABLED": "true", "BUTTRESS_CONFIG": bad_file}

    result = run("print('app ran')", env)

    assert (0, "app ran\n") == (result.returncode, result.stdout)
    lines = result.stderr.splitlines()
    assert 1 == len(lines), result.stderr
    assert lines[0].startswith("buttress: configuration error, buttress is DISABLED")
    assert "retry.backoff = []" in lines[0]


def test_strict_exits_2_under_opentelemetry_instrument_too(
    base_env: dict[str, str], bad_file: str
) -> None:
    """The instrumentor path: the distro would log the error and carry on; strict stops."""
    # BUTTRESS_ENABLED is set only once the interpreter is up, so that the start-up hook stays
    # out of the way and the instrumentor is the one that activates.
    code = (
        "import os; os.environ['BUTTRESS_ENABLED'] = 'true'\n"
        "from buttress.integrations._otel_instrumentor import ButtressInstrumentor\n"
        "ButtressInstrumentor().instrument()\n"
        "print('app ran')\n"
    )
    env = {**base_env, "BUTTRESS_STRICT": "true", "BUTTRESS_CONFIG": bad_file}

    result = run(code, env)

    assert (2, "") == (result.returncode, result.stdout)
    assert 1 == len(result.stderr.splitlines()), result.stderr
    assert result.stderr.startswith(STRICT_PREFIX)


@pytest.fixture
def broken_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """load_settings failing in a way no validation foresaw (a bug of ours)."""

    def broken(_environ: object) -> None:
        raise TypeError("unhashable type: 'list'")

    monkeypatch.setattr("buttress._settings.load_settings", broken)


@pytest.mark.usefixtures("broken_settings")
def test_an_unexpected_failure_to_read_the_settings_is_a_configuration_error_under_strict() -> None:
    environ = {"BUTTRESS_ENABLED": "true", "BUTTRESS_STRICT": "true"}

    with pytest.raises(ConfigurationError) as info:
        _activation.activate(environ)

    assert (
        "buttress could not read its configuration (TypeError); please report this as a "
        "buttress bug"
    ) == str(info.value)
    assert not _activation.is_active()


@pytest.mark.usefixtures("broken_settings")
def test_an_unexpected_failure_without_strict_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="buttress"):
        assert not _activation.activate({"BUTTRESS_ENABLED": "true"})

    assert 1 == len(caplog.records)
    assert caplog.records[0].exc_info is None  # a message, no traceback
    assert "(TypeError)" in caplog.records[0].getMessage()
