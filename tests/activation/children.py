"""Child interpreters for the activation tests: start them, read them, scrape them, stop them."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HOOK = (ROOT / "src" / "buttress.pth").read_text(encoding="utf-8").strip()
"""This checkout's start-up hook line. The copy site runs is the one installed in the venv,
which may be older: a child that must follow this checkout's hook runs the line itself (see
:func:`hooked`). Importing buttress._bootstrap twice runs it once, so with an up-to-date copy
installed the line is a no-op there."""


def hooked(script: str, *args: str) -> list[str]:
    """The argv of ``python script args...`` that runs this checkout's hook line first."""
    run = "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    return ["-c", f"{HOOK}\n{run}", script, *args]


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> int:
    """The first of *n* consecutive ports nothing listens on right now."""
    for _ in range(50):
        first = free_port()
        if first + n > 65535:
            continue
        probes: list[socket.socket] = []
        try:
            for port in range(first, first + n):
                probe = socket.socket()
                probes.append(probe)
                probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
        return first
    raise AssertionError(f"no {n} consecutive free ports found")


def listening(port: int) -> socket.socket:
    """A socket of the test's own listening on *port*: the port is busy until it is closed."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", port))
    busy.listen()
    return busy


class Child:
    """A running app: read its output, scrape it, stop it."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(  # noqa: S603
            argv,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.rest = ""
        """What it printed after "ready", read by stop() (exporters flush at exit)."""

    def wait_ready(self) -> list[str]:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip())
            if line.startswith("ready"):
                return self.lines
        self.process.wait(10)
        raise AssertionError(f"child exited early: {self.stop()}")

    def stop(self) -> tuple[int, str]:
        running = self.process.poll() is None
        out, err = self.process.communicate(input="\n" if running else None, timeout=30)
        self.rest = out
        return self.process.returncode, err


def get(port: int, path: str) -> tuple[int, Any]:
    """GET ``http://127.0.0.1:port/path``: the status and the JSON body."""
    url = f"http://127.0.0.1:{port}{path}"
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310
        return response.status, json.loads(response.read())


def scrape(port: int) -> str:
    """GET the child's Prometheus endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:  # noqa: S310
        return response.read().decode()
