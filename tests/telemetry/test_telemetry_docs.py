"""docs/telemetry.md is generated from semconv; --check fails when it is stale."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from buttress.telemetry import docs
from buttress.telemetry import semconv as sc

ROOT = Path(__file__).resolve().parents[2]


def check(*extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "buttress.telemetry.docs", "--check", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_committed_telemetry_reference_is_current() -> None:
    """`python -m buttress.telemetry.docs --check` passes on the repository's docs/telemetry.md."""
    result = check()

    assert (0, "") == (result.returncode, result.stderr)


def test_check_fails_on_a_modified_copy(tmp_path: Path) -> None:
    """One edited line makes --check exit 1 and name the stale file."""
    stale = tmp_path / "telemetry.md"
    text = (ROOT / "docs" / "telemetry.md").read_text(encoding="utf-8")
    stale.write_text(
        text.replace(sc.CALLS.prometheus, "buttress_calls_renamed", 1), encoding="utf-8"
    )

    result = check("--path", str(stale))

    assert 1 == result.returncode
    assert str(stale) in result.stderr
    assert "--write" in result.stderr


def test_check_passes_on_an_exact_copy(tmp_path: Path) -> None:
    """The same bytes at another --path pass: the check compares content, not location."""
    copy = tmp_path / "telemetry.md"
    copy.write_text((ROOT / "docs" / "telemetry.md").read_text(encoding="utf-8"), encoding="utf-8")

    assert 0 == check("--path", str(copy)).returncode


def test_check_fails_when_the_file_is_missing(tmp_path: Path) -> None:
    """A missing file is stale, not an error."""
    assert 1 == check("--path", str(tmp_path / "absent.md")).returncode


def test_write_then_check_round_trips(tmp_path: Path) -> None:
    """--write produces exactly what --check expects."""
    target = tmp_path / "out.md"

    assert 0 == docs.main(["--write", "--path", str(target)])
    assert 0 == docs.main(["--check", "--path", str(target)])
    assert docs.render() == target.read_text(encoding="utf-8")


def test_the_reference_lists_every_metric_and_span_name() -> None:
    """Every Prometheus name, OTel name and span event name appears in the rendered document."""
    text = docs.render()
    names = (
        [m.prometheus for m in sc.METRICS]
        + [m.name for m in sc.METRICS]
        + [
            sc.SPAN_EVENT_RETRY,
            sc.SPAN_EVENT_RETRIES_EXHAUSTED,
            sc.SPAN_EVENT_REJECTED,
            sc.SPAN_EVENT_DEQUEUED,
            sc.SPAN_EVENT_TIMEOUT,
            sc.SPAN_EVENT_CIRCUIT,
            sc.SPAN_EVENT_FALLBACK,
            sc.SPAN_EVENT_RATE_LIMITED,
        ]
    )

    assert [] == [n for n in names if f"`{n}`" not in text]
