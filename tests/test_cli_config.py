# House style writes assertions as `expected == actual`; ruff's SIM300 calls that Yoda style.
# ruff: noqa: SIM300

"""Tests for `buttress config check`: output, exit codes, and the command as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from buttress._cli import main

CONFIG = """
[defaults.http]
retry.attempts = 3
breaker = false

[defaults.db]
bulkhead.max_concurrent = 5

[targets."*.internal:*"]
timeout.attempt = "none"

[targets."api.example.com:443"]
retry.attempts = 5
http.retry_non_idempotent = true
"""


@pytest.fixture
def config(tmp_path: Path) -> str:
    """A valid configuration file with two defaults tables and two target tables."""
    path = tmp_path / "buttress.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return str(path)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the command in-process; return its exit code, stdout and stderr."""
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def block(out: str, header: str) -> list[str]:
    """The lines of the block whose header line is *header*, without the header."""
    lines = out.splitlines()
    start = lines.index(header) + 1
    end = next((i for i in range(start, len(lines)) if not lines[i]), len(lines))
    return lines[start:end]


def test_valid_file_exits_0_with_a_summary(config, capsys):
    """A valid file exits 0 and its first line says so, with the table counts."""
    code, out, err = run(["config", "check", config], capsys)

    assert (0, "", f"{config}: OK (2 defaults tables, 2 target tables)") == (
        code,
        err,
        out.splitlines()[0],
    )


def test_output_has_one_block_per_kind_default_and_target_table(config, capsys):
    """Without --kind, every kind gets a defaults block and a block per target table."""
    _, out, _ = run(["config", "check", config], capsys)

    headers = [line for line in out.splitlines() if line.startswith("kind ")]

    assert [
        "kind http: defaults ([defaults.http] over the built-in http template)",
        'kind http: target table [targets."*.internal:*"]',
        'kind http: target table [targets."api.example.com:443"]',
        "kind db: defaults ([defaults.db] over the built-in db template)",
        'kind db: target table [targets."*.internal:*"]',
        'kind db: target table [targets."api.example.com:443"]',
        "kind llm: defaults (no [defaults] table, the built-in llm template)",
        'kind llm: target table [targets."*.internal:*"]',
        'kind llm: target table [targets."api.example.com:443"]',
        "kind function: defaults (no [defaults] table, no template)",
        'kind function: target table [targets."*.internal:*"]',
        'kind function: target table [targets."api.example.com:443"]',
    ] == headers


def test_a_block_shows_each_policy_repr_and_the_http_options(config, capsys):
    """A block lists every policy's repr (or none), the retry budget and the HTTP options."""
    _, out, _ = run(["config", "check", config, "--kind", "http"], capsys)

    lines = block(out, 'kind http: target table [targets."api.example.com:443"]')

    assert [
        (
            "  retry      <Retry on=is_transient attempts=5 backoff=exponential(initial=0.5, "
            "max=8, multiplier=2, jitter='full')>"
        ),
        (
            "               max_retry_after=60 budget=RetryBudget(ratio=0.2, min_per_second=3.0, "
            "window=10, drop_floor_after=3) budget_exhausted='reraise'"
        ),
        "  breaker    none",
        "  timeout    <Timeout attempt=10.0 total=30.0>",
        "  bulkhead   <Bulkhead max_concurrent=1000 max_queue=0 max_wait=1s>",
        "  rate_limit none",
        "  cache      none",
        "  fallback   none",
        (
            "  http       <HttpOptions retry_methods=DELETE,GET,HEAD,OPTIONS,PUT,TRACE "
            "retry_statuses=408,429,500,502,503,504 retry_non_idempotent=True "
            "idempotency_header='Idempotency-Key'>"
        ),
    ] == lines


def test_kind_limits_the_output(config, capsys):
    """--kind db shows db blocks only, without HTTP options."""
    _, out, _ = run(["config", "check", config, "--kind", "db"], capsys)

    assert (
        {"db"},
        ["  bulkhead   <Bulkhead max_concurrent=5 max_queue=50 max_wait=2s>"],
        False,
    ) == (
        {line.split()[1].rstrip(":") for line in out.splitlines() if line.startswith("kind ")},
        [
            line
            for line in block(
                out, "kind db: defaults ([defaults.db] over the built-in db template)"
            )
            if "bulkhead" in line
        ],
        "HttpOptions" in out,
    )


def test_target_shows_which_table_matched(config, capsys):
    """Each --target gets a block saying which table matched it, or that none did."""
    _, out, _ = run(
        [
            "config",
            "check",
            config,
            "--kind",
            "http",
            "--target",
            "db.internal:5432",
            "--target",
            "other:80",
        ],
        capsys,
    )

    matched = block(
        out, "kind http: target 'db.internal:5432' (matches [targets.\"*.internal:*\"])"
    )
    unmatched = block(out, "kind http: target 'other:80' (no target table)")

    assert (
        "  timeout    <Timeout attempt=None total=30.0 respect_app_timeout=False>",
        "  timeout    <Timeout attempt=10.0 total=30.0>",
    ) == (
        next(line for line in matched if "timeout" in line),
        next(line for line in unmatched if "timeout" in line),
    )


def test_env_applies_quick_variables(config, capsys, monkeypatch):
    """--env applies this environment's quick variables on top and lists them."""
    monkeypatch.setenv("BUTTRESS_RETRY_ATTEMPTS", "1")

    _, out, _ = run(["config", "check", config, "--kind", "http", "--env"], capsys)

    assert ("quick variables: BUTTRESS_RETRY_ATTEMPTS=1", True) == (
        out.splitlines()[1],
        "<Retry on=is_transient attempts=1 " in out,
    )


def test_without_env_quick_variables_are_ignored(config, capsys, monkeypatch):
    """Without --env, the file alone is shown, whatever the environment says."""
    monkeypatch.setenv("BUTTRESS_RETRY_ATTEMPTS", "1")

    _, out, _ = run(["config", "check", config, "--kind", "http"], capsys)

    assert "attempts=1 " not in out


def test_invalid_file_exits_2_with_the_error_on_stderr(tmp_path, capsys):
    """An invalid file exits 2, prints nothing on stdout and the error on stderr."""
    path = tmp_path / "bad.toml"
    path.write_text('[targets."api.example.com:443"]\nretry.atempts = 5\n', encoding="utf-8")

    code, out, err = run(["config", "check", str(path)], capsys)

    assert (
        2,
        "",
        (
            f'buttress: config check: {path}: unknown key targets."api.example.com:443".retry.atempts;'
            ' accepted keys in targets."api.example.com:443".retry: attempts, backoff, '
            "backoff_initial, backoff_max, backoff_multiplier, budget, budget_exhausted, deadline, "
            "jitter, max_retry_after\n"
        ),
    ) == (code, out, err)


def test_missing_file_exits_2(tmp_path, capsys):
    """A missing file exits 2 with the reason."""
    path = tmp_path / "missing.toml"

    code, out, err = run(["config", "check", str(path)], capsys)

    assert (
        2,
        "",
        (
            f"buttress: config check: {path}: cannot read the configuration file: "
            "No such file or directory\n"
        ),
    ) == (code, out, err)


def test_invalid_toml_exits_2_with_line_and_column(tmp_path, capsys):
    """A TOML syntax error exits 2 and gives the line and column."""
    path = tmp_path / "bad.toml"
    path.write_text("[defaults.http\n", encoding="utf-8")

    code, _, err = run(["config", "check", str(path)], capsys)

    assert (2, True) == (code, "(at line 1, column 15)" in err)


def test_unknown_kind_is_a_usage_error(config, capsys):
    """--kind accepts only the known kinds (argparse exits 2)."""
    with pytest.raises(SystemExit) as info:
        main(["config", "check", config, "--kind", "grpc"])

    assert 2 == info.value.code
    assert "invalid choice: 'grpc'" in capsys.readouterr().err


def test_config_without_an_action_is_a_usage_error(capsys):
    """`buttress config` alone asks for an action (argparse exits 2)."""
    with pytest.raises(SystemExit) as info:
        main(["config"])

    assert 2 == info.value.code


def subprocess_env() -> dict[str, str]:
    """The environment for a child process, without BUTTRESS_* variables that could interfere."""
    return {k: v for k, v in os.environ.items() if not k.startswith("BUTTRESS_")}


def test_subprocess_valid_file(config):
    """`python -m buttress config check FILE` exits 0 and prints the report."""
    done = subprocess.run(
        [sys.executable, "-m", "buttress", "config", "check", config, "--kind", "llm"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=subprocess_env(),
    )

    assert (0, "", f"{config}: OK (2 defaults tables, 2 target tables)") == (
        done.returncode,
        done.stderr,
        done.stdout.splitlines()[0],
    )


def test_subprocess_invalid_file(tmp_path):
    """As a subprocess, an invalid file exits 2 with the message on stderr only."""
    path = tmp_path / "bad.toml"
    path.write_text("[defaults.http]\ntimeout.total = -1\n", encoding="utf-8")

    done = subprocess.run(
        [sys.executable, "-m", "buttress", "config", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=subprocess_env(),
    )

    assert (
        2,
        "",
        (
            f"buttress: config check: {path}: defaults.http.timeout.total: Timeout: total=-1 is out "
            "of range; expected a number > 0 or None\n"
        ),
    ) == (done.returncode, done.stdout, done.stderr)


@pytest.mark.parametrize(
    "text",
    [
        "[defaults.http]\nretry.backoff = []\n",
        "a = " + "[" * 3000 + "]" * 3000 + "\n",
        '[targets."a\\nb"]\nretry.attempts = 0\n',
    ],
)
def test_bad_files_exit_2_with_one_line(tmp_path, capsys, text):
    """retry.backoff = [] printed a traceback and exited 1 (issue 14)."""
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")

    code, out, err = run(["config", "check", str(path)], capsys)

    assert (2, "") == (code, out)
    assert 1 == len(err.splitlines())
    assert err.startswith(f"buttress: config check: {path}: ")


def test_an_unexpected_error_is_one_line_too(config, capsys, monkeypatch):
    """A bug of buttress's own still gives exit 2 and one line, never a traceback."""

    def broken(*_args, **_kwargs):
        raise TypeError("unhashable type: 'list'")

    monkeypatch.setattr("buttress._settings.check_report", broken)

    code, out, err = run(["config", "check", config], capsys)

    assert (2, "") == (code, out)
    assert (
        f"buttress: config check: {config}: internal error (TypeError) while checking the file; "
        "please report this as a buttress bug\n"
    ) == err
