"""The public API's annotations, checked by mypy --strict against tests/typing/api.py."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
API = ROOT / "tests" / "typing" / "api.py"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mypy") is None,
    reason="mypy is not installed (it is in the 'lint' dependency group)",
)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One mypy cache for this module, away from the working tree's."""
    return tmp_path_factory.mktemp("mypy-cache")


def run_mypy(path: Path, cache_dir: Path) -> subprocess.CompletedProcess[str]:
    """Run mypy --strict on *path* with the project's configuration."""
    return subprocess.run(  # noqa: S603 - our own interpreter, our own arguments
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--cache-dir",
            str(cache_dir),
            "--no-error-summary",
            "--hide-error-context",
            str(path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_every_public_call_shape_type_checks(cache_dir: Path) -> None:
    """tests/typing/api.py passes mypy --strict."""
    proc = run_mypy(API, cache_dir)

    assert 0 == proc.returncode, proc.stdout + proc.stderr


def test_wrong_types_are_reported(tmp_path: Path, cache_dir: Path) -> None:
    """Each mistyped use below is an error, so the check above can fail."""
    bad = tmp_path / "bad_api.py"
    bad.write_text(
        textwrap.dedent(
            """
        import buttress

        guard = buttress.protect("bad")


        def add(a: int, b: int) -> int:
            return a + b


        async def aadd(a: int, b: int) -> int:
            return a + b


        async def main() -> None:
            awaited: str = await guard.acall(aadd, 1, 2)  # line 16
            print(awaited)


        from_call: str = guard.call(lambda: 1)  # line 20
        from_decorator: str = guard(add)(1, 2)  # line 21
        guard.call(add, "1", 2)  # line 22
        from_options: str = guard.options(priority=3).call(add, 1, 2)  # line 23
        error_target: int = buttress.CircuitOpenError("x", target="t").target  # line 24
        """
        )
    )

    proc = run_mypy(bad, cache_dir)

    assert 1 == proc.returncode, proc.stdout + proc.stderr
    flagged = sorted(
        {
            int(line.split(":")[1])
            for line in proc.stdout.splitlines()
            if line.startswith(str(bad)) and ": error:" in line
        }
    )
    assert [16, 20, 21, 22, 23, 24] == flagged, proc.stdout
