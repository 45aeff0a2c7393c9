"""A real HTTP/1.1 server on 127.0.0.1 for tests, with scriptable faults and request counting.

The server runs in background threads (one per connection), supports keep-alive so client
connection pools behave as in production, and reads request bodies fully (Content-Length and
chunked) so POST/PUT work on reused connections::

    with FaultServer() as server:
        server.script("/flaky", status(503), status(503), ok(b"done"))
        ...  # two 503s, then 200 "done" for every later request to /flaky
        assert server.count("/flaky") == 3

Each request to a scripted path consumes the next step; once the steps are used up the last
one repeats, or ``then=`` answers every later request.  Unscripted paths answer 200 ``ok``.

Steps (module functions returning small frozen dataclasses):

* ``ok(body=b"ok", status=200, headers=None)``
* ``status(code, body=b"", headers=None)``
* ``retry_after(code=429, seconds=None, http_date=None, ms=None, body=b"", headers=None)``
* ``delay(seconds, then=ok())`` - sleep before answering (a slow server)
* ``slow_body(chunks, interval, chunked=True, status=200, headers=None)`` - headers at once,
  then each chunk after ``interval`` seconds
* ``reset()`` - abortive close without a response (SO_LINGER 0: the client sees a reset)
* ``reset_mid_body(sent=b"partial", declared_length=100, abrupt=True)`` - headers promise
  ``declared_length`` bytes, ``sent`` is written, then the connection is reset (or closed
  cleanly with ``abrupt=False``)
* ``drop()`` - clean close without a response (the client sees "remote disconnected")

``refused_url()`` returns the URL of a loopback port on which nothing listens.

Requests are counted as soon as they are read (before the step runs), so a request answered
with ``reset()`` still counts.  Only 127.0.0.1 is ever bound.
"""

from __future__ import annotations

import atexit
import contextlib
import email.utils
import http
import itertools
import selectors
import socket
import struct
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

__all__ = [
    "HOST",
    "Delay",
    "Drop",
    "Exchange",
    "FaultServer",
    "Headers",
    "RequestRecord",
    "Reset",
    "ResetMidBody",
    "Respond",
    "SlowBody",
    "Step",
    "delay",
    "drop",
    "ok",
    "refused_url",
    "reset",
    "reset_mid_body",
    "retry_after",
    "slow_body",
    "status",
]

HOST = "127.0.0.1"
_MAX_LINE = 65536
_MAX_HEADERS = 256
_SERVER_NAME = "buttress-fault-server"
# Statuses whose responses never carry a body (RFC 9110 6.4.1).
_BODILESS = frozenset({204, 304})

HeaderInput = Mapping[str, str] | Iterable[tuple[str, str]] | None
HeaderPairs = tuple[tuple[str, str], ...]


def _pairs(headers: HeaderInput) -> HeaderPairs:
    if headers is None:
        return ()
    items = headers.items() if isinstance(headers, Mapping) else headers
    return tuple((str(name), str(value)) for name, value in items)


def _as_bytes(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else bytes(body)


# --------------------------------------------------------------------------- request records


class Headers(Mapping[str, str]):
    """Request headers with case-insensitive lookups; repeated fields are joined with ", "."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self.raw: tuple[tuple[str, str], ...] = tuple(items)
        self._map: dict[str, tuple[str, str]] = {}
        for name, value in self.raw:
            key = name.lower()
            if key in self._map:
                original, previous = self._map[key]
                self._map[key] = (original, f"{previous}, {value}")
            else:
                self._map[key] = (name, value)

    def __getitem__(self, name: str) -> str:
        return self._map[name.lower()][1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._map

    def __iter__(self) -> Iterator[str]:
        return (original for original, _ in self._map.values())

    def __len__(self) -> int:
        return len(self._map)

    def get_all(self, name: str) -> list[str]:
        """Every value of the field *name*, in the order received."""
        key = name.lower()
        return [value for field, value in self.raw if field.lower() == key]

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


@dataclass(frozen=True)
class RequestRecord:
    """One request the server read, recorded before its step ran."""

    method: str
    path: str
    """The path of the request target, without the query string (not percent-decoded)."""
    query: str
    headers: Headers
    body: bytes
    received_at: float
    """``time.monotonic()`` when the request had been read."""
    connection: int
    """Serial number of the TCP connection: equal numbers mean a reused (keep-alive) connection."""
    version: str = "HTTP/1.1"
    target: str = ""


# --------------------------------------------------------------------------- steps


class Exchange:
    """One request being answered: what a step uses to write (or not write) its response."""

    def __init__(
        self,
        sock: socket.socket,
        request: RequestRecord,
        stopping: threading.Event,
        close: Callable[[bool], None],
        *,
        client_wants_close: bool,
    ) -> None:
        self.sock = sock
        self.request = request
        self._stopping = stopping
        self._close = close
        self.client_wants_close = client_wants_close

    @property
    def is_head(self) -> bool:
        """Whether the request was HEAD, whose response has no body."""
        return self.request.method == "HEAD"

    def send(self, data: bytes) -> None:
        """Write *data* to the client."""
        if data:
            self.sock.sendall(data)

    def wait(self, seconds: float) -> bool:
        """Sleep *seconds*; False if the server began stopping meanwhile."""
        return not self._stopping.wait(max(0.0, seconds))

    def head(
        self,
        code: int,
        headers: HeaderPairs = (),
        *,
        length: int | None = None,
        chunked: bool = False,
    ) -> bytes:
        """The status line and header block; the step's *headers* win over the defaults."""
        names = {name.lower() for name, _ in headers}
        try:
            reason = http.HTTPStatus(code).phrase
        except ValueError:
            reason = "Unknown"
        lines = [f"HTTP/1.1 {code} {reason}"]
        if "date" not in names:
            lines.append(f"Date: {email.utils.formatdate(usegmt=True)}")
        if "server" not in names:
            lines.append(f"Server: {_SERVER_NAME}")
        has_body = code not in _BODILESS and code >= 200
        if has_body and "content-type" not in names:
            lines.append("Content-Type: text/plain; charset=utf-8")
        if has_body and chunked:
            if "transfer-encoding" not in names:
                lines.append("Transfer-Encoding: chunked")
        elif has_body and length is not None and "content-length" not in names:
            lines.append(f"Content-Length: {length}")
        if self.client_wants_close and "connection" not in names:
            lines.append("Connection: close")
        lines.extend(f"{name}: {value}" for name, value in headers)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def keep_alive(self, headers: HeaderPairs = ()) -> bool:
        """Whether the connection may serve another request after this response."""
        if self.client_wants_close:
            return False
        return not any(
            name.lower() == "connection" and "close" in value.lower() for name, value in headers
        )

    def respond(self, code: int, body: bytes, headers: HeaderPairs = ()) -> bool:
        """Write a complete response with a Content-Length; True to keep the connection."""
        self.send(self.head(code, headers, length=len(body)))
        if not self.is_head and code not in _BODILESS:
            self.send(body)
        return self.keep_alive(headers)

    def close(self) -> None:
        """Close the connection cleanly (FIN)."""
        self._close(False)

    def abort(self) -> None:
        """Close the connection abortively (SO_LINGER 0: the client gets a TCP reset)."""
        self._close(True)


class Step(ABC):
    """A scripted reaction to one request."""

    @abstractmethod
    def run(self, exchange: Exchange) -> bool:
        """Answer the request; return True to keep the connection open for the next one."""


@dataclass(frozen=True)
class Respond(Step):
    """A complete response with a Content-Length."""

    status: int = 200
    body: bytes = b"ok"
    headers: HeaderPairs = ()

    def run(self, exchange: Exchange) -> bool:
        return exchange.respond(self.status, self.body, self.headers)


@dataclass(frozen=True)
class Delay(Step):
    """Sleep, then run another step (stopping the server cuts the sleep short)."""

    seconds: float
    then: Step

    def run(self, exchange: Exchange) -> bool:
        if not exchange.wait(self.seconds):
            return False
        return self.then.run(exchange)


@dataclass(frozen=True)
class SlowBody(Step):
    """Headers at once, then each body chunk after a pause of ``interval`` seconds."""

    chunks: tuple[bytes, ...]
    interval: float
    chunked: bool = True
    status: int = 200
    headers: HeaderPairs = ()

    def run(self, exchange: Exchange) -> bool:
        length = None if self.chunked else sum(len(chunk) for chunk in self.chunks)
        exchange.send(exchange.head(self.status, self.headers, length=length, chunked=self.chunked))
        if exchange.is_head or self.status in _BODILESS:
            return exchange.keep_alive(self.headers)
        for chunk in self.chunks:
            if not exchange.wait(self.interval):
                return False
            if not chunk:
                continue  # an empty chunk would end a chunked body early
            if self.chunked:
                exchange.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            else:
                exchange.send(chunk)
        if self.chunked:
            exchange.send(b"0\r\n\r\n")
        return exchange.keep_alive(self.headers)


@dataclass(frozen=True)
class Reset(Step):
    """Close the connection abortively without writing anything: the client sees a reset."""

    def run(self, exchange: Exchange) -> bool:
        exchange.abort()
        return False


@dataclass(frozen=True)
class ResetMidBody(Step):
    """Promise ``declared_length`` body bytes, send ``sent``, then reset (or close) the socket."""

    sent: bytes = b"partial"
    declared_length: int = 100
    abrupt: bool = True
    status: int = 200
    headers: HeaderPairs = ()

    def run(self, exchange: Exchange) -> bool:
        headers = (*self.headers, ("Content-Length", str(self.declared_length)))
        exchange.send(exchange.head(self.status, headers))
        exchange.send(self.sent)
        if self.abrupt:
            exchange.abort()
        else:
            exchange.close()
        return False


@dataclass(frozen=True)
class Drop(Step):
    """Close the connection cleanly without a response: the client sees a remote disconnect."""

    def run(self, exchange: Exchange) -> bool:
        exchange.close()
        return False


def ok(body: bytes | str = b"ok", status: int = 200, headers: HeaderInput = None) -> Respond:
    """A successful response (200 ``ok`` by default)."""
    return Respond(status, _as_bytes(body), _pairs(headers))


def status(code: int, body: bytes | str = b"", headers: HeaderInput = None) -> Respond:
    """A response with status *code*, e.g. ``status(503)``."""
    return Respond(code, _as_bytes(body), _pairs(headers))


def retry_after(
    code: int = 429,
    seconds: float | None = None,
    http_date: datetime | str | None = None,
    ms: float | None = None,
    body: bytes | str = b"",
    headers: HeaderInput = None,
) -> Respond:
    """A *code* response with ``Retry-After`` (seconds or HTTP date) and/or ``retry-after-ms``.

    Integral *seconds* are written as an integer; fractional ones as written (non-standard but
    handy for fast tests).  *http_date* may be an aware datetime or a ready-made string.
    Giving both *seconds* and *http_date* is an error: there is one ``Retry-After`` field.
    """
    if seconds is not None and http_date is not None:
        raise ValueError("retry_after takes seconds or http_date, not both")
    extra: list[tuple[str, str]] = []
    if seconds is not None:
        value = int(seconds) if float(seconds).is_integer() else seconds
        extra.append(("Retry-After", str(value)))
    if http_date is not None:
        if isinstance(http_date, datetime):
            http_date = email.utils.format_datetime(http_date, usegmt=True)
        extra.append(("Retry-After", http_date))
    if ms is not None:
        extra.append(("retry-after-ms", str(int(ms) if float(ms).is_integer() else ms)))
    return Respond(code, _as_bytes(body), (*extra, *_pairs(headers)))


def delay(seconds: float, then: Step | None = None) -> Delay:
    """Sleep *seconds* before running *then* (``ok()`` by default): a slow server."""
    return Delay(seconds, then if then is not None else ok())


def slow_body(
    chunks: Iterable[bytes | str],
    interval: float,
    *,
    chunked: bool = True,
    status: int = 200,
    headers: HeaderInput = None,
) -> SlowBody:
    """Headers at once, then every chunk after *interval* seconds (chunked or Content-Length)."""
    return SlowBody(
        tuple(_as_bytes(chunk) for chunk in chunks), interval, chunked, status, _pairs(headers)
    )


def reset() -> Reset:
    """Reset the connection (SO_LINGER 0 and close) without a response."""
    return Reset()


def reset_mid_body(
    sent: bytes | str = b"partial",
    declared_length: int = 100,
    *,
    abrupt: bool = True,
    status: int = 200,
    headers: HeaderInput = None,
) -> ResetMidBody:
    """Headers with ``Content-Length: declared_length``, then *sent*, then a reset.

    With ``abrupt=False`` the connection is closed cleanly instead: a truncated body.
    """
    payload = _as_bytes(sent)
    if len(payload) >= declared_length:
        raise ValueError("reset_mid_body must send fewer bytes than it declares")
    return ResetMidBody(payload, declared_length, abrupt, status, _pairs(headers))


def drop() -> Drop:
    """Close the connection cleanly without a response."""
    return Drop()


# --------------------------------------------------------------------------- refused ports

_refused_lock = threading.Lock()
_refused_socket: socket.socket | None = None


def refused_url() -> str:
    """``http://127.0.0.1:<port>`` of a port on which nothing listens: connections are refused.

    The port stays bound (but never listening) for the life of the process, so no other server
    can take it between the call and the connection attempt.
    """
    global _refused_socket  # noqa: PLW0603 - one reserved port per process
    with _refused_lock:
        if _refused_socket is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            _refused_socket = sock
            atexit.register(sock.close)
        port = _refused_socket.getsockname()[1]
    return f"http://{HOST}:{port}"


# --------------------------------------------------------------------------- the server


class _ClientGoneError(Exception):
    """The client closed the connection in the middle of a request."""


class _BadRequestError(Exception):
    """The request could not be parsed."""


class _Reader:
    """Buffered reads from a socket, without ``makefile`` (which would keep the fd alive)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()

    def _fill(self) -> bool:
        data = self._sock.recv(65536)
        if not data:
            return False
        self._buffer += data
        return True

    def readline(self) -> bytes:
        """One line including its newline; what is left (maybe b"") at end of stream."""
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                return line
            if len(self._buffer) > _MAX_LINE:
                raise _BadRequestError("line too long")
            if not self._fill():
                line = bytes(self._buffer)
                self._buffer.clear()
                return line

    def read(self, size: int) -> bytes:
        """Exactly *size* bytes."""
        while len(self._buffer) < size:
            if not self._fill():
                raise _ClientGoneError
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data


@dataclass
class _Script:
    steps: tuple[Step, ...]
    then: Step | None
    used: int = 0

    def next_step(self) -> Step:
        if self.used < len(self.steps):
            self.used += 1
            return self.steps[self.used - 1]
        return self.then if self.then is not None else self.steps[-1]


class FaultServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 with an OS-assigned port and scripted faults."""

    def __init__(self, default: Step | None = None) -> None:
        self.default: Step = default if default is not None else ok()
        self.errors: list[BaseException] = []
        """Unexpected exceptions raised while serving (socket errors are expected and ignored)."""
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._scripts: dict[tuple[str | None, str], _Script] = {}
        self._records: list[RequestRecord] = []
        self._connections: dict[int, socket.socket] = {}
        self._threads: set[threading.Thread] = set()
        self._serial = itertools.count(1)
        self._accepted = 0
        self._listener: socket.socket | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._acceptor: threading.Thread | None = None
        self._port = 0

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> Self:
        """Bind 127.0.0.1 on a free port and serve in the background."""
        if self._listener is not None or self._stopping.is_set():
            raise RuntimeError("a FaultServer starts once")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.bind((HOST, 0))
            listener.listen(128)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        self._port = listener.getsockname()[1]
        self._wake = socket.socketpair()
        self._acceptor = threading.Thread(
            target=self._accept_loop, name=f"fault-server-{self._port}", daemon=True
        )
        self._acceptor.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop accepting, close every open connection and wait (up to *timeout*) for threads."""
        if self._listener is None or self._stopping.is_set():
            self._stopping.set()
            return
        deadline = time.monotonic() + timeout
        self._stopping.set()
        assert self._wake is not None
        assert self._acceptor is not None
        with contextlib.suppress(OSError):
            self._wake[1].send(b"x")
        self._acceptor.join(max(0.0, deadline - time.monotonic()))
        self._listener.close()
        with self._lock:
            for sock in self._connections.values():
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            # Threads that did not finish in time must not leak their sockets.
            for sock in self._connections.values():
                sock.close()
            self._connections.clear()
        for end in self._wake:
            end.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------- addresses

    @property
    def host(self) -> str:
        """Always ``127.0.0.1``."""
        return HOST

    @property
    def port(self) -> int:
        """The OS-assigned port (0 before ``start()``)."""
        return self._port

    @property
    def authority(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"{HOST}:{self._port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://{self.authority}"

    # ----------------------------------------------------------------- scripting

    def script(
        self, path: str, *steps: Step, method: str | None = None, then: Step | None = None
    ) -> None:
        """Answer requests to *path* (and *method*, if given) with *steps*, one per request.

        When the steps are used up, *then* answers every later request, or else the last step
        repeats.  Scripting a path again replaces its script and starts it from the beginning.
        A script for a specific method wins over one for any method.
        """
        if not steps and then is None:
            raise ValueError("script needs at least one step or then=")
        key = (method.upper() if method else None, path)
        with self._lock:
            self._scripts[key] = _Script(steps, then)

    def clear_scripts(self) -> None:
        """Forget every script: all paths answer with the default step again."""
        with self._lock:
            self._scripts.clear()

    def _next_step(self, method: str, path: str) -> Step:
        with self._lock:
            found = self._scripts.get((method, path)) or self._scripts.get((None, path))
            return found.next_step() if found is not None else self.default

    # ----------------------------------------------------------------- counting

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of every request received since start (or ``reset_counts()``)."""
        with self._lock:
            return list(self._records)

    @property
    def connections(self) -> int:
        """How many TCP connections have been accepted so far."""
        with self._lock:
            return self._accepted

    def count(self, path: str | None = None, method: str | None = None) -> int:
        """How many requests were received, optionally only to *path* and/or with *method*."""
        with self._lock:
            return sum(1 for record in self._records if self._matches(record, path, method))

    def reset_counts(self) -> None:
        """Forget the recorded requests (scripts keep their position)."""
        with self._lock:
            self._records.clear()

    def wait_for(
        self,
        n: int,
        path: str | None = None,
        method: str | None = None,
        timeout: float = 5.0,
    ) -> bool:
        """Block until at least *n* matching requests have arrived; False on timeout."""
        with self._arrived:
            return self._arrived.wait_for(
                lambda: sum(1 for r in self._records if self._matches(r, path, method)) >= n,
                timeout,
            )

    @staticmethod
    def _matches(record: RequestRecord, path: str | None, method: str | None) -> bool:
        return (path is None or record.path == path) and (
            method is None or record.method == method.upper()
        )

    # ----------------------------------------------------------------- serving

    def _accept_loop(self) -> None:
        assert self._listener is not None
        assert self._wake is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake[0], selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self._wake[0]:
                        return
                    try:
                        sock, _ = self._listener.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        return
                    self._adopt(sock)

    def _adopt(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            if self._stopping.is_set():
                sock.close()
                return
            serial = next(self._serial)
            self._accepted += 1
            self._connections[serial] = sock
            thread = threading.Thread(
                target=self._serve,
                args=(sock, serial),
                name=f"fault-server-{self._port}-conn-{serial}",
                daemon=True,
            )
            self._threads.add(thread)
        thread.start()

    def _close(self, serial: int, sock: socket.socket, abortive: bool) -> None:
        with self._lock:
            self._connections.pop(serial, None)
            if abortive:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()

    def _serve(self, sock: socket.socket, serial: int) -> None:
        reader = _Reader(sock)
        try:
            while not self._stopping.is_set():
                try:
                    parsed = self._read_request(reader, sock, serial)
                except _BadRequestError:
                    sock.sendall(
                        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                        b"Connection: close\r\n\r\n"
                    )
                    return
                if parsed is None:
                    return
                record, client_wants_close = parsed
                step = self._next_step(record.method, record.path)
                exchange = Exchange(
                    sock,
                    record,
                    self._stopping,
                    lambda abortive: self._close(serial, sock, abortive),
                    client_wants_close=client_wants_close,
                )
                if not step.run(exchange):
                    return
        except (OSError, _ClientGoneError):
            pass
        except Exception as exc:  # a bug in a step or in the server: report, never crash
            with self._lock:
                self.errors.append(exc)
        finally:
            self._close(serial, sock, False)
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _read_request(
        self, reader: _Reader, sock: socket.socket, serial: int
    ) -> tuple[RequestRecord, bool] | None:
        line = reader.readline()
        while line in {b"\r\n", b"\n"}:  # RFC 9112 2.2: ignore empty lines before a request
            line = reader.readline()
        if not line:
            return None
        if not line.endswith(b"\n"):
            raise _ClientGoneError
        parts = line.decode("latin-1").strip().split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            raise _BadRequestError(f"bad request line {line!r}")
        method, target, version = parts
        fields: list[tuple[str, str]] = []
        while True:
            line = reader.readline()
            if not line.endswith(b"\n"):
                raise _ClientGoneError
            if line in {b"\r\n", b"\n"}:
                break
            if len(fields) >= _MAX_HEADERS:
                raise _BadRequestError("too many headers")
            name, colon, value = line.decode("latin-1").partition(":")
            if not colon or not name.strip():
                raise _BadRequestError(f"bad header line {line!r}")
            fields.append((name.strip(), value.strip()))
        headers = Headers(fields)

        if headers.get("Expect", "").lower() == "100-continue" and version == "HTTP/1.1":
            sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = self._read_body(reader, headers)

        if target.startswith("/"):
            path, _, query = target.partition("?")
            path = path.partition("#")[0]
        else:  # absolute-form (a proxy request) or "*"
            split = urlsplit(target)
            path, query = split.path or target, split.query
        tokens = {token.strip().lower() for token in headers.get("Connection", "").split(",")}
        client_wants_close = "close" in tokens or (
            version == "HTTP/1.0" and "keep-alive" not in tokens
        )
        record = RequestRecord(
            method=method.upper(),
            path=path,
            query=query,
            headers=headers,
            body=body,
            received_at=time.monotonic(),
            connection=serial,
            version=version,
            target=target,
        )
        with self._arrived:
            self._records.append(record)
            self._arrived.notify_all()
        return record, client_wants_close

    @staticmethod
    def _read_body(reader: _Reader, headers: Headers) -> bytes:
        if "chunked" in headers.get("Transfer-Encoding", "").lower():
            body = bytearray()
            while True:
                size_line = reader.readline()
                if not size_line.endswith(b"\n"):
                    raise _ClientGoneError
                try:
                    size = int(size_line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise _BadRequestError(f"bad chunk size {size_line!r}") from None
                if size == 0:
                    break
                body += reader.read(size)
                reader.read(2)  # the CRLF after the chunk data
            while True:  # trailer fields, up to the empty line
                line = reader.readline()
                if not line.endswith(b"\n"):
                    raise _ClientGoneError
                if line in {b"\r\n", b"\n"}:
                    break
            return bytes(body)
        length = headers.get("Content-Length")
        if length is None:
            return b""
        try:
            size = int(length)
        except ValueError:
            raise _BadRequestError(f"bad Content-Length {length!r}") from None
        if size < 0:
            raise _BadRequestError(f"bad Content-Length {length!r}")
        return reader.read(size)
