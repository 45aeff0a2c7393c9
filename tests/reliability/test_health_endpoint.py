"""
The health endpoint under a flood, slowloris and early hang-ups, served from a child process.

The server runs in a child process as it would in a host app: its descriptors and threads are
counted from /proc without the test's own sockets, and its stderr is what a host would see. Each
test prints its figures (``pytest -s`` shows them). The request deadline is shortened so that the
run takes seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.reliability.figures import record

HOST = "127.0.0.1"
REQUEST = b"GET /health HTTP/1.1\r\nHost: buttress\r\n\r\n"
PARTIAL = b"GET /health HTTP/1.1\r\nHost: buttress\r\nX-Slow: "

# The server of the child: the default limits but the times given; it prints its port, serves
# until its stdin closes, then prints its counts.
CHILD = """
import json, sys
from buttress._health_server import _Limits, _start
server = _start(0, "127.0.0.1", None, _Limits(**json.loads(sys.argv[1])))
print(server.port, flush=True)
sys.stdin.read()
server.stop()
print(json.dumps(server._loop.counts), flush=True)
"""

# The goal is 1 s. The bound asserted leaves room for a loaded 2-core CI machine, where
# the 400 clients of the test share the cores with the server and other jobs; the figure
# measured is printed.
FLOOD_P99_BOUND = 2.0
# Slowloris: served within this long, behind the partial connections that came first.
SERVED_BOUND = 3.0


def entries(directory: str) -> int:
    """How many entries *directory* holds (descriptors or threads, under /proc)."""
    return sum(1 for _ in Path(directory).iterdir())


class Child:
    """A health server in a child process."""

    def __init__(self, limits: dict[str, Any], script: str = CHILD) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and script
            [sys.executable, "-c", script, json.dumps(limits)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())
        self.stderr = b""
        self.counts: dict[str, int] = {}

    def descriptors(self) -> int:
        """How many file descriptors the child holds."""
        return entries(f"/proc/{self.process.pid}/fd")

    def threads(self) -> int:
        """How many threads the child runs."""
        return entries(f"/proc/{self.process.pid}/task")

    def cpu_seconds(self) -> float:
        """The CPU time the child has used, user and system."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """Stop the server, the child, and keep its counts and stderr."""
        out, self.stderr = self.process.communicate(timeout=30)
        self.counts = json.loads(out.splitlines()[-1])


@contextlib.contextmanager
def child_server(script: str = CHILD, **limits: Any) -> Iterator[Child]:
    """A health server in a child process, stopped at the end."""
    child = Child(limits, script)
    try:
        yield child
    finally:
        if child.process.returncode is None:
            child.stop()


@contextlib.contextmanager
def sampled(child: Child) -> Iterator[dict[str, int]]:
    """The most descriptors and threads the child held while the block ran."""
    peak = {"descriptors": child.descriptors(), "threads": child.threads()}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak["descriptors"] = max(peak["descriptors"], child.descriptors())
            peak["threads"] = max(peak["threads"], child.threads())

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join()


@contextlib.contextmanager
def descriptors_for(n: int) -> Iterator[None]:
    """Raise this process's descriptor limit to hold *n* more sockets, if it is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = entries("/proc/self/fd") + n + 256
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.fail(f"the test needs {wanted} descriptors; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def get(port: int, timeout: float = 10.0) -> tuple[int, float]:
    """One GET /health on a fresh connection: the status and the seconds it took."""
    start = time.perf_counter()
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(REQUEST)
        answer = read_all(sock)
    return int(answer.split(b" ", 2)[1]), time.perf_counter() - start


def read_all(sock: socket.socket) -> bytes:
    """Everything *sock* receives until the server closes it."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def p99(seconds: list[float]) -> float:
    """The nearest-rank 99th percentile."""
    ordered = sorted(seconds)
    return ordered[max(0, -(-99 * len(ordered) // 100) - 1)]


async def timed_request(port: int) -> tuple[int, float]:
    """One GET /health from an asyncio client: the status and the seconds it took."""
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(REQUEST)
        answer = await reader.read()
    finally:
        writer.close()
    return int(answer.split(b" ", 2)[1]), time.perf_counter() - start


def flood(port: int, clients: int, timeout: float) -> list[tuple[int, float] | BaseException]:
    """*clients* requests at once; each one's status and seconds, or what it raised."""

    async def run() -> list[tuple[int, float] | BaseException]:
        return await asyncio.gather(
            *(asyncio.wait_for(timed_request(port), timeout) for _ in range(clients)),
            return_exceptions=True,
        )

    return asyncio.run(run())


def open_partial(port: int, n: int) -> list[socket.socket]:
    """*n* connections that each send the start of a request and never finish it."""
    socks: list[socket.socket] = []
    with selectors.DefaultSelector() as selector:
        for _ in range(n):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex((HOST, port))
            socks.append(sock)
            selector.register(sock, selectors.EVENT_WRITE)
        deadline = time.monotonic() + 5.0
        while selector.get_map() and time.monotonic() < deadline:
            for key, _ in selector.select(0.1):
                selector.unregister(key.fileobj)
                with contextlib.suppress(OSError):  # already evicted: still one attacker
                    key.fileobj.send(PARTIAL)  # type: ignore[union-attr]
    return socks


def wait_closed(socks: list[socket.socket], within: float) -> int:
    """How many of *socks* the server closed (EOF or reset) within *within* seconds."""
    closed = 0
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + within
        while selector.get_map() and time.monotonic() < deadline:
            for key, _ in selector.select(0.1):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(65536)  # a 408 answer, then EOF
                except OSError:
                    data = b""
                if not data:
                    selector.unregister(sock)
                    closed += 1
    return closed


def test_a_flood_of_400_clients_is_answered() -> None:
    """400 clients at once: every one gets its 200, the p99 within the bound, nothing evicted."""
    with child_server() as child:
        with sampled(child) as peak:
            results = flood(child.port, 400, timeout=30.0)
        child.stop()

    answered = [r for r in results if isinstance(r, tuple)]
    latencies = [seconds for _, seconds in answered]
    figure = p99(latencies) if latencies else float("inf")
    record(
        "health endpoint",
        "flood: 400 clients answered",
        f"{len(answered)}/400",
        "400/400",
        len(answered) == 400,
    )
    record(
        "health endpoint",
        "flood: p99 / max latency",
        f"{figure:.3f} s / {max(latencies):.3f} s",
        "p99 < 1 s",
        figure < 1.0,
    )
    record(
        "health endpoint",
        "flood: peak descriptors / threads",
        f"{peak['descriptors']} / {peak['threads']}",
    )

    assert [] == [r for r in results if not isinstance(r, tuple)]
    assert {200} == {status for status, _ in answered}
    assert figure < FLOOD_P99_BOUND
    assert 0 == child.counts.get("evicted", 0)
    assert b"" == child.stderr


def test_slowloris_holds_descriptors_and_threads_and_others_are_served() -> None:
    """1,000 partial requests: the child's descriptors and threads stay bounded, a GET is served."""
    cap, timeout, attackers = 128, 1.0, 1000
    with descriptors_for(attackers), child_server(request_timeout=timeout) as child:
        baseline = {"descriptors": child.descriptors(), "threads": child.threads()}
        with sampled(child) as peak:
            started = time.monotonic()
            socks = open_partial(child.port, attackers)
            try:
                status, served_in = get(child.port)
                closed = wait_closed(socks, within=30.0)
                all_closed_in = time.monotonic() - started
            finally:
                for sock in socks:
                    sock.close()
        child.stop()

    bound = baseline["descriptors"] + cap + 1
    record(
        "health endpoint",
        f"slowloris: peak descriptors under {attackers} partial requests",
        f"{peak['descriptors']} (at rest {baseline['descriptors']})",
        f"<= {bound}",
        peak["descriptors"] <= bound,
    )
    record(
        "health endpoint",
        "slowloris: threads at rest / peak",
        f"{baseline['threads']} / {peak['threads']}",
        "equal",
        baseline["threads"] == peak["threads"],
    )
    record(
        "health endpoint",
        "slowloris: another client served",
        f"{status} in {served_in:.3f} s",
        f"200 within {SERVED_BOUND:.0f} s",
        status == 200 and served_in < SERVED_BOUND,
    )
    record(
        "health endpoint",
        "slowloris: partial requests closed by the server",
        f"{closed}/{attackers} in {all_closed_in:.1f} s",
        f"{attackers}",
        closed == attackers,
    )

    # The connections and one more: the new one is accepted before the oldest is closed.
    assert peak["descriptors"] <= baseline["descriptors"] + cap + 1
    assert baseline["threads"] == peak["threads"]
    assert (200, True) == (status, served_in < SERVED_BOUND)
    assert attackers == closed
    assert b"" == child.stderr


def hang_up_early(port: int, how: str) -> None:
    """Connect and leave in one of the ways a client leaves before reading its answer."""
    sock = socket.create_connection((HOST, port), timeout=5.0)
    if how.startswith("reset"):
        # Closing with SO_LINGER 0 sends a reset rather than a FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    if how.endswith("after-request"):
        sock.sendall(REQUEST)
    elif how.endswith("mid-request"):
        sock.sendall(PARTIAL)
    sock.close()


@pytest.mark.parametrize(
    "how",
    [
        "close-at-once",
        "close-mid-request",
        "close-after-request",
        "reset-at-once",
        "reset-mid-request",
        "reset-after-request",
    ],
)
def test_early_hang_ups_leave_stderr_empty(how: str) -> None:
    """200 clients that leave before their answer: nothing on stderr, and the server serves on."""
    with child_server() as child:
        for _ in range(200):
            hang_up_early(child.port, how)
        status, _ = get(child.port)
        child.stop()

    assert (200, b"") == (status, child.stderr)
    # Linux hands over no connection that is reset before it sent a byte (TCP_DEFER_ACCEPT).
    assert (how == "reset-at-once") or 200 < child.counts["accepted"]


# A host that has used every descriptor it may: the server cannot accept, then it can again.
CHILD_OUT_OF_DESCRIPTORS = """
import json, os, resource, sys
from buttress._health_server import _Limits, _start
server = _start(0, "127.0.0.1", None, _Limits(**json.loads(sys.argv[1])))
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 16, hard))
hog = []
try:
    while True:
        hog.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
print(server.port, flush=True)
sys.stdin.readline()
for fd in hog:
    os.close(fd)
print("freed", flush=True)
sys.stdin.read()
server.stop()
print(json.dumps(server._loop.counts), flush=True)
"""


def test_a_host_out_of_descriptors_costs_no_cpu_and_is_served_after() -> None:
    """accept() failing with EMFILE does not spin the host's CPU; freed descriptors serve again."""
    with child_server(CHILD_OUT_OF_DESCRIPTORS) as child:
        assert child.process.stdin is not None
        assert child.process.stdout is not None
        with socket.create_connection((HOST, child.port), timeout=10) as sock:
            sock.sendall(REQUEST)
            cpu = child.cpu_seconds()
            time.sleep(1.0)
            cpu = child.cpu_seconds() - cpu
            child.process.stdin.write(b"go\n")
            child.process.stdin.flush()
            assert b"freed\n" == child.process.stdout.readline()
            start = time.monotonic()
            answer = read_all(sock)
            served_in = time.monotonic() - start
        child.stop()

    record(
        "health endpoint", "out of descriptors: CPU in 1 s", f"{cpu:.2f} s", "< 0.3 s", cpu < 0.3
    )

    assert cpu < 0.3
    assert (b"200", True) == (answer.split(b" ", 2)[1], served_in < 2)
    assert b"" == child.stderr
