"""The fault matrix's parts: a TCP fault proxy, the host app in a child process, the verdicts.

:class:`FaultProxy` sits in front of a real server (a :class:`FaultServer`, the fake LLM
provider, PostgreSQL) on a port of its own that stays the same across faults, so one target
(``host:port``, ``postgresql:host:port/db``) sees the fault come and go. It can refuse (nothing
listens), reset a reply part-way, delay or trickle a reply, answer with an error of its own
(PostgreSQL's ``ErrorResponse``), swallow the reply to a request it forwarded (the reply lost
after a COMMIT), and die in the middle of a call (every connection closed, the port refused).
A fault fires on the first client bytes that contain its trigger (any bytes without one).

:class:`Host` runs ``fault_app.py`` with ``BUTTRESS_ENABLED=true`` and a configuration file
only, as users meet buttress: the app never imports it. The test sends it one call at a time
and reads back what the call returned or raised.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

HOST = "127.0.0.1"
APP = Path(__file__).with_name("fault_app.py")
RESULT = "FAULT-RESULT "
READY = "FAULT-READY "

OPEN_DURATION = 0.8
"""Seconds each breaker stays open: long against a call through the child, short for the suite."""
TRIP_AFTER = 3
"""Failures in a row that open a breaker."""
ATTEMPTS = 2

CONFIG = f"""
[defaults.http]
retry.attempts = {ATTEMPTS}
retry.backoff = "constant"
retry.backoff_initial = 0.01
retry.budget = false
retry.max_retry_after = 1.0
breaker.window = "count"
breaker.window_size = 100
breaker.minimum_calls = 100
breaker.consecutive_failures = {TRIP_AFTER}
breaker.open_duration = {OPEN_DURATION}
breaker.open_duration_multiplier = 1.0
breaker.half_open_calls = 1

[defaults.db]
retry.attempts = {ATTEMPTS}
retry.backoff = "constant"
retry.backoff_initial = 0.01
retry.budget = false
breaker.window = "count"
breaker.window_size = 100
breaker.minimum_calls = 100
breaker.consecutive_failures = {TRIP_AFTER}
breaker.open_duration = {OPEN_DURATION}
breaker.open_duration_multiplier = 1.0
breaker.half_open_calls = 1

[defaults.llm]
retry.attempts = {ATTEMPTS}
retry.backoff = "constant"
retry.backoff_initial = 0.01
retry.budget = false
retry.max_retry_after = 1.0
breaker.window = "count"
breaker.window_size = 100
breaker.minimum_calls = 100
breaker.consecutive_failures = {TRIP_AFTER}
breaker.open_duration = {OPEN_DURATION}
breaker.open_duration_multiplier = 1.0
breaker.half_open_calls = 1
"""
"""Every kind: 2 attempts, tiny back-off, no budget; a breaker that opens on 3 failures in a row
for 0.8 s and closes after one good probe."""


# --------------------------------------------------------------------------- the proxy


@dataclass(frozen=True)
class Fault:
    """What the proxy does to a connection once its client sent *trigger* (None: any bytes).

    kinds: ``pass``; ``watch`` (pass, but note when the trigger goes by); ``reset`` (forward the request, then ``keep`` bytes of the reply, then a
    TCP reset); ``delay`` (the first reply bytes ``seconds`` late); ``trickle`` (the reply in
    pieces of ``keep`` bytes, ``seconds`` apart); ``answer`` (send ``reply`` instead of
    forwarding the request, then close); ``swallow`` (forward the request, drop the server's
    reply, reset the client).
    """

    kind: str = "pass"
    trigger: bytes | None = None
    keep: int = 0
    seconds: float = 0.0
    reply: bytes = b""


PASS = Fault()


def pg_error(code: str, message: str, severity: str = "FATAL") -> bytes:
    """A PostgreSQL ``ErrorResponse`` message, as a server sends it before closing a session."""
    body = b"".join(
        tag + value.encode() + b"\0"
        for tag, value in ((b"S", severity), (b"V", severity), (b"C", code), (b"M", message))
    )
    body += b"\0"
    return b"E" + struct.pack("!I", len(body) + 4) + body


def _abort(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


_RESERVED: set[int] = set()
"""The ports of the proxies alive in this process: a refusing proxy keeps its port."""
_RESERVED_LOCK = threading.Lock()


def _stable_port() -> int:
    """A free port below the ephemeral range: no outgoing connection takes it while we refuse.

    A refused proxy has no listener; had its port come from the ephemeral range, any client
    socket on the machine could be given it meanwhile, and listening again would fail. Ports
    of other proxies in this process, refusing or not, are never handed out.
    """
    with _RESERVED_LOCK:
        port = _free_port()
        _RESERVED.add(port)
        return port


def _free_port() -> int:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text(encoding="utf-8")
        low = int(text.split()[0])
    except (OSError, ValueError, IndexError):
        low = 0
    if low > 12000:
        for _ in range(200):
            port = random.randrange(low - 10000, low)  # noqa: S311 - not for security
            if port in _RESERVED:
                continue
            with socket.socket() as sock:
                try:
                    sock.bind((HOST, port))
                except OSError:
                    continue
                return port
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class FaultProxy:
    """A TCP proxy on 127.0.0.1 in front of *upstream*, with one fault at a time."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.fault: Fault = PASS
        self.accepted = 0
        self.fired = 0
        """Connections on which the fault fired."""
        self.forwarded: list[bytes] = []
        """Client bytes forwarded to the server that held the trigger of the fault."""
        self.fired_event = threading.Event()
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self.port = _stable_port()
        self.listen()

    # -- the listener: refused while it is closed

    def listen(self) -> None:
        """Listen again on the same port (a no-op when listening)."""
        if self._listener is not None:
            return
        deadline = time.monotonic() + 5
        while True:
            try:
                listener = socket.create_server((HOST, self.port), reuse_port=False)
                break
            except OSError:  # the port in TIME_WAIT or briefly taken: retry shortly
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._listener = listener
        self._acceptor = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._acceptor.start()

    def refuse(self) -> None:
        """Stop listening: new connections are refused; open ones go on."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        if self._acceptor is not None:
            self._acceptor.join(5)

    def kill(self) -> None:
        """The server dies: its port refuses and every open connection closes."""
        self.refuse()
        with self._lock:
            links = list(self._links)
        for link in links:
            link.end(abortive=False)

    def restore(self) -> None:
        """No fault, listening."""
        self.fault = PASS
        self.listen()

    def close(self) -> None:
        """Stop for good."""
        self._stopping.set()
        self.kill()
        with _RESERVED_LOCK:
            _RESERVED.discard(self.port)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set(self, fault: Fault) -> None:
        """Apply *fault* to the requests that come from now on."""
        self.fired_event.clear()
        self.fault = fault

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection((HOST, self.upstream), timeout=5)
            except OSError:
                _abort(client)
                continue
            upstream.settimeout(None)
            link = _Link(self, client, upstream)
            with self._lock:
                self.accepted += 1
                self._links.add(link)
            threading.Thread(target=link.run, daemon=True).start()

    def _done(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)

    def _fire(self, data: bytes) -> None:
        with self._lock:
            self.fired += 1
            self.forwarded.append(data)
        self.fired_event.set()


class _Link:
    """One proxied connection, served by one thread so the fault sees both directions."""

    def __init__(self, proxy: FaultProxy, client: socket.socket, upstream: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.armed: Fault | None = None
        self._ended = threading.Event()
        self._lock = threading.Lock()

    def end(self, *, abortive: bool) -> None:
        with self._lock:
            if self._ended.is_set():
                return
            self._ended.set()
            for sock in (self.client, self.upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            if abortive:
                _abort(self.client)
            else:
                self.client.close()
            self.upstream.close()

    def _client_bytes(self, data: bytes) -> bool:
        fault = self.proxy.fault
        if (
            self.armed is None
            and fault.kind != "pass"
            and (fault.trigger is None or fault.trigger.upper() in data.upper())
        ):
            self.armed = fault
            self.proxy._fire(data)
            if fault.kind == "answer":
                with contextlib.suppress(OSError):
                    self.client.sendall(fault.reply)
                self.end(abortive=False)
                return False
        self.upstream.sendall(data)
        return True

    def _server_bytes(self, data: bytes) -> bool:
        fault = self.armed
        if fault is None or fault.kind == "watch":
            self.client.sendall(data)
            return True
        if fault.kind == "reset":
            self.client.sendall(data[: fault.keep])
            self.end(abortive=True)
            return False
        if fault.kind == "swallow":
            self.end(abortive=True)
            return False
        if fault.kind == "delay":
            if self._ended.wait(fault.seconds):
                return False
            self.armed = None  # one late reply, then the connection is plain again
            self.client.sendall(data)
            return True
        if fault.kind == "trickle":
            step = max(1, fault.keep)
            for start in range(0, len(data), step):
                if self._ended.wait(fault.seconds):
                    return False
                self.client.sendall(data[start : start + step])
            return True
        self.client.sendall(data)
        return True

    def run(self) -> None:
        ends = {self.client: self._client_bytes, self.upstream: self._server_bytes}
        try:
            with selectors.DefaultSelector() as selector:
                for sock in ends:
                    selector.register(sock, selectors.EVENT_READ)
                while not self._ended.is_set():
                    for key, _ in selector.select(timeout=0.5):
                        sock = key.fileobj
                        assert isinstance(sock, socket.socket)
                        try:
                            data = sock.recv(65536)
                        except OSError:  # a reset from one side is passed on to the other
                            self.end(abortive=True)
                            return
                        if not data:
                            self.end(abortive=False)
                            return
                        if not ends[sock](data):
                            return
        except (OSError, ValueError):
            self.end(abortive=True)
        finally:
            self.proxy._done(self)


# --------------------------------------------------------------------------- the host app


@dataclass
class Outcome:
    """What one call of the app returned or raised, as the app saw it."""

    ok: bool
    status: int | None = None
    rejected: str | None = None
    """The ``x-buttress-rejected`` header of a response buttress made itself."""
    error: str | None = None
    """The exception's ``module.qualname``."""
    mro: list[str] = field(default_factory=list)
    library: bool = False
    """Whether the exception is one of the client library's own (its documented root)."""
    step: str = ""
    elapsed: float = 0.0
    chunks: int = 0
    retry_after: float | str | None = None
    """A rejection's ``retry_after``, or the ``Retry-After`` header of a response."""
    threads: int = 0
    fds: int = 0
    burst: list[dict[str, Any]] = field(default_factory=list)
    """The outcomes of a burst of concurrent calls."""

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Outcome:
        return cls(**data)

    @property
    def circuit_open(self) -> bool:
        """A rejection by an open breaker: the error, or the response buttress made."""
        return "buttress.CircuitOpenError" in self.mro or self.rejected == "circuit_open"

    @property
    def buttress_error(self) -> bool:
        return any(name.startswith("buttress.") for name in self.mro)

    def short(self) -> str:
        if self.error is not None:
            extra = " (circuit open)" if self.circuit_open else ""
            return f"{self.step}: {self.error.rsplit('.', 1)[-1]}{extra}"
        tail = f" rejected={self.rejected}" if self.rejected else ""
        return f"{self.status if self.status is not None else 'ok'}{tail}"


class Host:
    """``fault_app.py`` under zero-code buttress: one call at a time, read back as Outcomes."""

    def __init__(
        self,
        family: str,
        config: Path,
        *,
        extra: Mapping[str, str] | None = None,
        limit: float = 120.0,
    ) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BUTTRESS_", "OTEL_"))}
        env.update(
            BUTTRESS_ENABLED="true",
            BUTTRESS_CONFIG=str(config),
            OTEL_METRICS_EXPORTER="none",
            OTEL_TRACES_EXPORTER="none",
            OTEL_LOGS_EXPORTER="none",
        )
        env.update(extra or {})
        self.family = family
        self.limit = limit
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and app
            [sys.executable, str(APP), family],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self.calls = 0
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        ready = self._next(READY, 120.0)
        self.facts: dict[str, Any] = json.loads(ready)

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        self._stderr.extend(self.process.stderr)

    def _next(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"the host app gave no {prefix.strip()} in {timeout} s")
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self._lines.put(None)
                raise AssertionError(
                    f"the host app ended (exit {self.process.wait()}):\n{self.stderr[-3000:]}"
                )
            if line.startswith(prefix):
                return line[len(prefix) :]

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def alive(self) -> bool:
        return self.process.poll() is None

    def send(self, command: Mapping[str, Any]) -> None:
        """Start a call without waiting for it (see :meth:`result`)."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def result(self) -> Outcome:
        """The outcome of the call started last."""
        self.calls += 1
        return Outcome.of(json.loads(self._next(RESULT, self.limit)))

    def call(self, command: Mapping[str, Any]) -> Outcome:
        self.send(command)
        return self.result()

    def stats(self) -> tuple[int, int]:
        """The app's threads and open file descriptors now."""
        outcome = self.call({"op": "stats"})
        return outcome.threads, outcome.fds

    def finish(self) -> int:
        """Ask the app to exit; its exit code."""
        with contextlib.suppress(OSError, ValueError):
            self.send({"op": "quit"})
            assert self.process.stdin is not None
            self.process.stdin.close()
        try:
            code = self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._close_pipes()
        return code

    def _close_pipes(self) -> None:
        for reader in self._readers:
            reader.join(5)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError, ValueError):
                    stream.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._close_pipes()


@contextlib.contextmanager
def host(family: str, config: Path, extra: Mapping[str, str] | None = None) -> Iterator[Host]:
    """A started :class:`Host`, killed if the test fails before it finished it."""
    app = Host(family, config, extra=extra)
    try:
        yield app
    finally:
        app.kill()


# --------------------------------------------------------------------------- the tally


@dataclass
class Tally:
    """One family's figures, and every problem found, for one assertion at the end."""

    family: str
    tried: int = 0
    survived: int = 0
    outcomes: int = 0
    undocumented: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    breaker_checks: int = 0
    breaker_ok: int = 0
    problems: list[str] = field(default_factory=list)
    cell_problems: int = 0

    trails: list[str] = field(default_factory=list)

    def cell(self, name: str) -> Cell:
        self.tried += 1
        return Cell(self, name)


@dataclass
class Cell:
    """One (client, fault) cell: survived when nothing went wrong in it."""

    tally: Tally
    name: str = ""
    failed: bool = False
    trail: list[str] = field(default_factory=list)

    def problem(self, where: str, text: str) -> None:
        self.failed = True
        self.tally.problems.append(f"{where}: {text}")

    def documented(self, where: str, outcome: Outcome, *, allowed: bool) -> None:
        self.tally.outcomes += 1
        self.trail.append(outcome.short())
        if not allowed:
            self.tally.undocumented.append(f"{where}: {outcome.short()} {outcome.mro[:4]}")
            self.problem(where, f"undocumented outcome {outcome.short()} {outcome.mro[:6]}")

    def at_most_once(self, where: str, seen: int, allowed: int = 1) -> None:
        if seen > allowed:
            self.tally.duplicates.append(f"{where}: the server saw it {seen} times")
            self.problem(where, f"reached the server {seen} times (at most {allowed})")

    def breaker(self, where: str, ok: bool, text: str) -> None:
        self.tally.breaker_checks += 1
        if ok:
            self.tally.breaker_ok += 1
        else:
            self.problem(where, f"breaker: {text}")

    def close(self) -> None:
        self.tally.trails.append(f"{self.name}: {' | '.join(self.trail)}")
        if not self.failed:
            self.tally.survived += 1
