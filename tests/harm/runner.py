"""Child processes of the harm matrix: one unmodified app, one mode, only the environment differs.

An app (``tests/harm/apps/*.py``) never imports buttress. It prints ``HARM-READY`` once its
imports are done, reports what it saw on stdout as ``HARM-RESULT {json}`` lines and may pause at ``HARM-CHECKPOINT {json}`` lines until the test
writes a line to its stdin (so the test can look at the servers while the app holds its
connections). Everything else on stdout and all of stderr is kept for the failure message.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["APPS", "MODES", "Child", "Run", "mode_env"]

MODES = ("disabled", "enabled", "observe")
"""The three ways every scenario runs: no BUTTRESS_ variable, enforce mode, observe mode."""

_MODE_ENV: dict[str, dict[str, str]] = {
    "disabled": {},
    "enabled": {"BUTTRESS_ENABLED": "true"},
    "observe": {"BUTTRESS_ENABLED": "true", "BUTTRESS_MODE": "observe"},
}

APPS = Path(__file__).resolve().parent / "apps"

READY = "HARM-READY"
RESULT = "HARM-RESULT "
CHECKPOINT = "HARM-CHECKPOINT "

STARTING_AT_ONCE = 2
"""Children importing their libraries at the same time (the machine has two cores)."""
START_LIMIT = 120.0
"""Seconds a child may take to print ``HARM-READY`` (imports only, on a loaded machine)."""
_STARTING = threading.BoundedSemaphore(STARTING_AT_ONCE)
_TRACEBACK = re.compile(r"^Traceback \(most recent call last\):$", re.MULTILINE)


def mode_env(mode: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The parent's environment without BUTTRESS_/OTEL_ variables, plus the mode's variables.

    *extra* (a config file, a health port) is given to the enabled and observe modes only: the
    disabled mode has no BUTTRESS_ variable at all.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUTTRESS_", "OTEL_"))}
    env.update(_MODE_ENV[mode])
    if mode != "disabled" and extra:
        env.update(extra)
    return env


@dataclass
class Run:
    """What one child process did."""

    mode: str
    result: dict[str, Any] | None
    """The last ``HARM-RESULT`` the app printed (None: it printed none)."""
    returncode: int | None
    stdout: str
    stderr: str
    wall: float
    """Seconds from ``HARM-READY`` (or the start, without it) to the exit or the kill."""
    killed: bool
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    label: str = ""
    """Which of a cell's children this is, when it has several (``worker 2``)."""

    @property
    def tracebacks(self) -> list[str]:
        """Every traceback block on stderr."""
        starts = [m.start() for m in _TRACEBACK.finditer(self.stderr)]
        ends = [*starts[1:], len(self.stderr)]
        return [self.stderr[a:b] for a, b in zip(starts, ends, strict=False)]

    @property
    def buttress_tracebacks(self) -> list[str]:
        """The tracebacks that went through buttress's code, or that buttress logged."""
        return [tb for tb in self.tracebacks if "buttress" in tb]

    def problems(self) -> list[str]:
        """Why this run cannot be trusted as an answer: killed, crashed, silent, noisy."""
        found = []
        if self.killed:
            found.append(f"killed after {self.wall:.0f} s")
        elif self.returncode != 0:
            found.append(f"exit code {self.returncode}")
        if self.result is None and not self.killed:
            found.append("printed no result")
        if self.buttress_tracebacks:
            found.append("traceback from buttress on stderr")
        elif self.tracebacks:
            found.append("traceback on stderr")
        return found

    def report(self) -> str:
        """The run in full, for a failure message."""
        return (
            f"--- {self.mode}{' ' + self.label if self.label else ''}: exit {self.returncode}, killed={self.killed}, "
            f"{self.wall:.1f} s\nstdout:\n{self.stdout.rstrip()}\nstderr:\n{self.stderr.rstrip()}"
        )


class Child:
    """One app, started with ``sys.executable`` once a start-up slot is free.

    At most :data:`STARTING_AT_ONCE` children import their libraries at the same time: imports
    are most of a child's CPU, and a burst of them on two cores would slow every measured call
    of the rows already running. A child holds its slot until it prints ``HARM-READY`` (its
    imports are done) or exits. It is killed *limit* seconds after that line (a hang is a
    finding, not a stuck suite), or :data:`START_LIMIT` seconds after its start without it.
    """

    def __init__(
        self,
        mode: str,
        app: str,
        args: Sequence[str],
        env: Mapping[str, str],
        limit: float,
        label: str = "",
    ) -> None:
        self.mode = mode
        self.label = label
        self.limit = limit
        self._lock = threading.Lock()
        # Without a slot after START_LIMIT (children stuck in their imports), start anyway.
        self._holding = _STARTING.acquire(timeout=START_LIMIT)
        self.start = time.monotonic()
        self.ready_at: float | None = None
        self.deadline = self.start + START_LIMIT
        try:
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and app
                [sys.executable, str(APPS / app), *args],
                env=dict(env),
                cwd=str(APPS),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        except BaseException:
            self._free_slot()
            raise
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._checkpoints: list[dict[str, Any]] = []
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _free_slot(self) -> None:
        with self._lock:
            if self._holding:
                self._holding = False
                _STARTING.release()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(READY) and self.ready_at is None:
                self.ready_at = time.monotonic()
                self.deadline = self.ready_at + self.limit
                self._free_slot()
            self._stdout.append(line)
            self._lines.put(line)
        self._free_slot()
        self._lines.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        self._stderr.extend(self.process.stderr)

    def checkpoint(self) -> dict[str, Any] | None:
        """Wait for the app's next checkpoint; None if it exited or ran out of time first."""
        while True:
            left = self.deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                line = self._lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue  # the deadline moves once the app is ready
            if line is None:
                self._lines.put(None)  # later calls see the end too
                return None
            if line.startswith(CHECKPOINT):
                point: dict[str, Any] = json.loads(line[len(CHECKPOINT) :])
                self._checkpoints.append(point)
                return point

    def release(self) -> None:
        """Let the app go on from a checkpoint."""
        with contextlib.suppress(OSError, ValueError):
            assert self.process.stdin is not None
            self.process.stdin.write("\n")
            self.process.stdin.flush()

    def finish(self) -> Run:
        """Close the app's stdin, wait for it until its deadline (then kill it), collect."""
        with contextlib.suppress(OSError, ValueError):
            assert self.process.stdin is not None
            self.process.stdin.close()
        killed = False
        while self.process.poll() is None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                killed = True
                self.process.kill()
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(min(left, 0.5))
        self.process.wait()
        ended = time.monotonic()
        for reader in self._readers:
            reader.join(10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        self._free_slot()
        stdout = "".join(self._stdout)
        result = None
        for line in self._stdout:
            if line.startswith(RESULT):
                result = json.loads(line[len(RESULT) :])
        return Run(
            mode=self.mode,
            result=result,
            returncode=self.process.returncode,
            stdout=stdout,
            stderr="".join(self._stderr),
            wall=ended - (self.ready_at if self.ready_at is not None else self.start),
            killed=killed,
            checkpoints=self._checkpoints,
            label=self.label,
        )

    def kill(self) -> None:
        """Make sure the process is gone (used when the test itself fails)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._free_slot()
