"""
An optional HTTP health endpoint, built on the standard library only.

Routes::

    GET  /health                 200 (healthy or degraded) or 503 (unhealthy); the report as JSON
    GET  /targets                200; the per-target entries as a JSON list
    POST /targets/{name}/reset   close a breaker; needs ``Authorization: Bearer <admin token>``

HEAD on the two GET routes answers as GET does, without the body. Any other method on a known
route answers 405 with ``Allow``; an unknown path 404; a malformed request 400.

Target names hold ``:`` and ``/`` (``postgresql:127.0.0.1:5432/app``), so ``{name}`` is
everything between ``/targets/`` and the final ``/reset``, URL-decoded: both the encoded and
the raw form work. Reset is disabled (403) until an admin token is configured, so a forgotten
setting fails closed. The token is compared in constant time and never echoed or logged.

The endpoint lives inside someone else's process, so what a client can take from it is bounded.
One thread serves every connection from a :mod:`selectors` loop:

- at most ``max_connections`` sockets are open at once. When all are taken, a new connection
  takes the slot of the oldest one (503), once that one has had ``evict_after`` seconds to send
  its request, so clients that hold connections without finishing a request lock nobody out.
  Waiting connections queue in the kernel (a ``backlog`` sized for floods), costing the host no
  descriptor; on Linux one is handed over only once its first bytes arrive (TCP_DEFER_ACCEPT);
- a request (line, headers and body) must arrive whole within ``request_timeout`` of the
  connection being accepted (else 408 and the connection is closed), and the answer must be read
  within the same time;
- the request line, the headers and the body are capped (414, 431, 413);
- every answer closes the connection (``Connection: close``): a probe sends one request, and an
  idle keep-alive connection would hold a slot for nothing;
- a process out of descriptors (EMFILE) pauses accepting rather than spinning on the listener.

A selector loop rather than an asyncio one: the cap and the eviction need a hand on every
``accept()``, which ``asyncio.start_server`` does not give, and a private event loop in a host's
thread would meet the host's loop policy (uvloop, debug mode). One request per connection keeps
the state machine small.

Every answer is JSON. Requests, hang-ups, resets and timeouts are logged to the ``buttress``
logger at DEBUG, never to stderr. An exception in a handler becomes a 500 without a traceback in
the body: a health endpoint must not be what takes the service down. It speaks plain HTTP: bind
it to loopback (the default) or put it behind something that terminates TLS.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import json
import logging
import math
import os
import re
import selectors
import socket
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formatdate
from enum import Enum
from http import HTTPStatus
from typing import NamedTuple, Self
from urllib.parse import unquote_to_bytes, urlsplit

from . import _fork, _health, _validate
from ._exceptions import ConfigurationError
from ._registry import REGISTRY
from ._settings_env import ENV_HEALTH_PORT, _plain, read_health_port

__all__ = [
    "HealthPortError",
    "HealthServer",
    "start_from_environment",
    "start_health_server",
]

logger = logging.getLogger("buttress")

ENV_PORT = ENV_HEALTH_PORT
ENV_HOST = "BUTTRESS_HEALTH_HOST"
ENV_TOKEN = "BUTTRESS_ADMIN_TOKEN"  # noqa: S105 - the variable's name, not a secret
DEFAULT_HOST = "127.0.0.1"

_TARGETS_PREFIX = "/targets/"
_RESET_SUFFIX = "/reset"
_GET_ROUTE = "GET, HEAD"
_POST_ROUTE = "POST"


@dataclass(frozen=True, slots=True)
class _Limits:
    """What one server lets its clients take; tests shorten the times."""

    max_connections: int = 128
    # The kernel caps it at net.core.somaxconn (4096 on current Linux).
    backlog: int = 1024
    request_timeout: float = 5.0
    evict_after: float = 0.1
    max_request_line: int = 8 * 1024
    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    # No route reads a body; a small one is drained so that the client reads the answer.
    max_body: int = 16 * 1024


# Accepting at most this many per turn lets the requests of accepted clients be read in between.
_ACCEPT_BATCH = 64
# Out of descriptors (EMFILE): the listener stays readable, so pause instead of spinning.
_ACCEPT_PAUSE = 0.1
_RECV_SIZE = 64 * 1024
# After an answer that left request bytes unread: how long, and how much, to drain before closing.
_LINGER = 1.0
_LINGER_BYTES = 64 * 1024

_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(rb"HTTP/([0-9])\.[0-9]")
_LINE_END = re.compile(rb"\r?\n")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_NOT_IN_TARGET = re.compile(rb"[\x00-\x20\x7f]")
_NOT_IN_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def _utf8(text: str) -> bytes:
    # Tokens from the environment may hold surrogate escapes: this gives back the bytes that were
    # set, which is what a client sends.
    return text.encode("utf-8", "surrogateescape")


def _shown(path: str) -> str:
    # A decoded path may hold anything (%0A): escaped and shortened for a log line.
    return path.encode("unicode_escape").decode("ascii")[:200]


# -- HTTP ---------------------------------------------------------------------------------------


class _Request(NamedTuple):
    method: str
    path: str  # URL-decoded, without the query string
    authorization: bytes | None


class _Head(NamedTuple):
    request: _Request
    content_length: int
    expect_continue: bool


class _Answer(NamedTuple):
    status: int
    body: object
    headers: tuple[tuple[str, str], ...] = ()


class _Refusal(Exception):  # noqa: N818 - a request refused, not an error of the server
    """A request that is not served; the message is ours and echoes nothing the client sent."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def _parse_head(head: bytes, limits: _Limits) -> _Head:
    """The request line and header fields (*head*, without the blank line) of one request."""
    lines = _LINE_END.split(head)
    if len(lines) - 1 > limits.max_headers:
        raise _Refusal(
            HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
            f"more than {limits.max_headers} header fields",
        )
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]):
        raise _Refusal(HTTPStatus.BAD_REQUEST, "malformed request line")
    method, target, version = parts
    match = _VERSION.fullmatch(version)
    if match is None:
        raise _Refusal(HTTPStatus.BAD_REQUEST, "malformed HTTP version")
    if match[1] != b"1":
        raise _Refusal(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, "only HTTP/1.0 and 1.1 are served")
    path = _path(target)
    fields: dict[bytes, list[bytes]] = {}
    for line in lines[1:]:
        # A field folded onto a second line, or a space before the colon, fails the token test.
        name, colon, value = line.partition(b":")
        value = value.strip(b" \t")
        if not colon or not _TOKEN.fullmatch(name) or _NOT_IN_VALUE.search(value):
            raise _Refusal(HTTPStatus.BAD_REQUEST, "malformed header field")
        fields.setdefault(name.lower(), []).append(value)
    if b"transfer-encoding" in fields:
        raise _Refusal(HTTPStatus.LENGTH_REQUIRED, "a request body needs a Content-Length")
    authorization = fields.get(b"authorization", [])
    if len(authorization) > 1:
        # Which one counts would be a guess, and guesses about credentials go wrong.
        raise _Refusal(HTTPStatus.BAD_REQUEST, "more than one Authorization header")
    expect = [value.lower() for value in fields.get(b"expect", [])]
    return _Head(
        _Request(method.decode("ascii"), path, authorization[0] if authorization else None),
        _content_length(fields.get(b"content-length", [])),
        b"100-continue" in expect,
    )


def _path(target: bytes) -> str:
    if not target or _NOT_IN_TARGET.search(target):
        raise _Refusal(HTTPStatus.BAD_REQUEST, "malformed request target")
    if target.startswith(b"/"):
        raw = target.partition(b"?")[0]
    elif target.lower().startswith((b"http://", b"https://")):
        raw = urlsplit(target).path or b"/"  # the absolute form, which servers must accept
    elif target == b"*":
        return "*"
    else:
        raise _Refusal(HTTPStatus.BAD_REQUEST, "malformed request target")
    # Raw UTF-8 and percent-encoded UTF-8 give the same name.
    return unquote_to_bytes(raw).decode("utf-8", "replace")


def _content_length(values: list[bytes]) -> int:
    lengths = {item.strip(b" \t") for value in values for item in value.split(b",")}
    if not lengths:
        return 0
    (length, *others) = lengths
    if others or not length.isdigit() or len(length) > 18:  # an int64 holds 18 digits
        raise _Refusal(HTTPStatus.BAD_REQUEST, "malformed Content-Length")
    return int(length)


def _encode(answer: _Answer, *, head_only: bool) -> bytes:
    body = json.dumps(answer.body).encode()
    status = HTTPStatus(answer.status)
    lines = [
        f"HTTP/1.1 {status.value} {status.phrase}",
        "Server: buttress-health",  # not the Python version
        f"Date: {formatdate(usegmt=True)}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "Connection: close",
        *(f"{name}: {value}" for name, value in answer.headers),
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + body


# -- routes -------------------------------------------------------------------------------------


def _route(request: _Request, admin_token: bytes | None) -> _Answer:
    method, path = request.method, request.path
    if path in {"/health", "/targets"}:
        if method not in {"GET", "HEAD"}:
            return _not_allowed(_GET_ROUTE)
        report = _health.health()
        if path == "/targets":
            return _Answer(HTTPStatus.OK, [t.to_dict() for t in report.targets])
        unhealthy = report.status == _health.UNHEALTHY
        status = HTTPStatus.SERVICE_UNAVAILABLE if unhealthy else HTTPStatus.OK
        return _Answer(status, report.to_dict())
    if (
        path.startswith(_TARGETS_PREFIX)
        and path.endswith(_RESET_SUFFIX)
        and len(path) > len(_TARGETS_PREFIX) + len(_RESET_SUFFIX)
    ):
        if method != "POST":
            return _not_allowed(_POST_ROUTE)
        target = path[len(_TARGETS_PREFIX) : -len(_RESET_SUFFIX)]
        return _reset(target, request.authorization, admin_token)
    return _Answer(HTTPStatus.NOT_FOUND, {"error": f"no route for {method} {path}"})


def _not_allowed(allowed: str) -> _Answer:
    return _Answer(
        HTTPStatus.METHOD_NOT_ALLOWED,
        {"error": f"method not allowed; use {allowed}"},
        (("Allow", allowed),),
    )


def _reset(target: str, authorization: bytes | None, expected: bytes | None) -> _Answer:
    if expected is None:
        return _Answer(
            HTTPStatus.FORBIDDEN,
            {"error": f"reset is disabled until {ENV_TOKEN} is set (or admin_token= is given)"},
        )
    scheme, _, given = (authorization or b"").partition(b" ")
    if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(b" \t"), expected):
        return _Answer(
            HTTPStatus.UNAUTHORIZED,
            {"error": "a valid 'Authorization: Bearer <admin token>' header is required"},
            (("WWW-Authenticate", 'Bearer realm="buttress"'),),
        )
    pipeline = REGISTRY.get(target)
    if pipeline is None:
        return _Answer(HTTPStatus.NOT_FOUND, {"error": f"no target named {target!r}"})
    _health.reset(target)
    breaker = pipeline.breaker
    state = breaker.state.value if breaker is not None else None
    logger.info("buttress health server: breaker of target %r reset", target)
    return _Answer(HTTPStatus.OK, {"target": target, "state": state})


# -- connections --------------------------------------------------------------------------------


class _State(Enum):
    READING = "reading"  # the request, head then body
    WRITING = "writing"  # the answer
    DRAINING = "draining"  # answered; discarding what the client still sends, then closing


class _Connection:
    __slots__ = (
        "body_left",
        "buffer",
        "closed",
        "deadline",
        "events",
        "head",
        "linger",
        "opened",
        "out",
        "peer",
        "scanned",
        "sock",
        "state",
    )

    def __init__(self, sock: socket.socket, peer: str, now: float, limits: _Limits) -> None:
        self.sock = sock
        self.peer = peer
        self.opened = now
        self.deadline = now + limits.request_timeout
        self.state = _State.READING
        self.events = selectors.EVENT_READ
        self.buffer = bytearray()
        self.scanned = 0  # how much of the buffer holds no blank line
        self.head: _Head | None = None
        self.body_left = 0
        self.out = memoryview(b"")
        self.linger = False
        self.closed = False


class _Loop:
    """The server: a listening socket, its connections, and the loop that serves them."""

    def __init__(self, listener: socket.socket, admin_token: bytes | None, limits: _Limits) -> None:
        self.listener = listener
        self.admin_token = admin_token
        self.limits = limits
        self.connections: dict[int, _Connection] = {}  # by file descriptor, oldest first
        self.counts: Counter[str] = Counter()
        self._selector = selectors.DefaultSelector()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        self._selector.register(self._wake_reader, selectors.EVENT_READ)
        self._accepting = False
        self._paused_until = 0.0
        self._stopping = False
        self._closed = False
        self._lock = threading.Lock()

    # -- life -------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            while not self._stopping:
                self._turn()
        except Exception:
            logger.exception("buttress health server: stopped by an internal error")
        finally:
            self.close()

    def request_stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):  # full (a wake-up is pending) or already closed
            self._wake_writer.send(b"\0")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for connection in list(self.connections.values()):
            self._close(connection)
        self._selector.close()
        for sock in (self.listener, self._wake_reader, self._wake_writer):
            sock.close()

    # -- the loop ---------------------------------------------------------------------------

    def _turn(self) -> None:
        now = time.monotonic()
        for connection in [c for c in self.connections.values() if c.deadline <= now]:
            self._expire(connection)
        wake_at = min((c.deadline for c in self.connections.values()), default=None)
        accepting = self._may_accept(now)
        if accepting != self._accepting:
            if accepting:
                self._selector.register(self.listener, selectors.EVENT_READ)
            else:
                self._selector.unregister(self.listener)
            self._accepting = accepting
        if not accepting:
            resume = self._paused_until
            if now >= resume:  # full: until the oldest connection may be evicted
                resume = self._oldest().opened + self.limits.evict_after
            wake_at = resume if wake_at is None else min(wake_at, resume)
        timeout = None if wake_at is None else max(0.0, wake_at - now)
        for key, _ in self._selector.select(timeout):
            if isinstance(key.data, _Connection):
                if not key.data.closed:  # evicted by an accept earlier in this turn
                    self._serve(key.data)
            elif key.fileobj is self.listener:
                self._accept()
            else:
                with contextlib.suppress(OSError):
                    self._wake_reader.recv(64)

    def _oldest(self) -> _Connection:
        return next(iter(self.connections.values()))

    def _may_accept(self, now: float) -> bool:
        if now < self._paused_until:
            return False
        if len(self.connections) < self.limits.max_connections:
            return True
        return now - self._oldest().opened >= self.limits.evict_after

    def _accept(self) -> None:
        for _ in range(_ACCEPT_BATCH):
            now = time.monotonic()
            if not self._may_accept(now):
                return
            try:
                sock, address = self.listener.accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:
                continue  # gone before it was accepted
            except OSError as error:
                if error.errno in {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}:
                    self._paused_until = now + _ACCEPT_PAUSE
                logger.debug(
                    "buttress health server: accept failed (%s)",
                    errno.errorcode.get(error.errno or 0),
                )
                return
            if len(self.connections) >= self.limits.max_connections:
                oldest = self._oldest()
                self.counts["evicted"] += 1
                logger.debug(
                    "buttress health server: all %d connections are taken; closed the oldest "
                    "(%s, open for %.2fs)",
                    self.limits.max_connections,
                    oldest.peer,
                    now - oldest.opened,
                )
                message = f"all {self.limits.max_connections} connections are taken"
                self._drop(oldest, _Answer(HTTPStatus.SERVICE_UNAVAILABLE, {"error": message}))
            self._adopt(sock, str(address[0]), now)

    def _adopt(self, sock: socket.socket, peer: str, now: float) -> None:
        connection = _Connection(sock, peer, now, self.limits)
        try:
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ, connection)
        except OSError:
            sock.close()
            logger.debug("buttress health server: could not watch a connection", exc_info=True)
            return
        self.connections[sock.fileno()] = connection
        self.counts["accepted"] += 1
        # A client sends its request as soon as it is connected: it is often here already.
        self._serve(connection)

    def _expire(self, connection: _Connection) -> None:
        timeout = self.limits.request_timeout
        if connection.state is _State.READING:
            self.counts["timed_out"] += 1
            logger.debug(
                "buttress health server: %s sent no whole request within %gs; closed",
                connection.peer,
                timeout,
            )
            message = f"the request did not arrive whole within {timeout:g} s"
            self._drop(connection, _Answer(HTTPStatus.REQUEST_TIMEOUT, {"error": message}))
            return
        if connection.state is _State.WRITING:
            logger.debug(
                "buttress health server: %s did not read its answer within %gs; closed",
                connection.peer,
                timeout,
            )
        self._close(connection)

    def _drop(self, connection: _Connection, answer: _Answer) -> None:
        """Close *connection* now; a request still being read gets *answer* if one try sends it."""
        if connection.state is _State.READING:
            # Read what has arrived first: closing on unread bytes sends a reset, which can
            # destroy the answer before the client reads it.
            with contextlib.suppress(OSError):
                for _ in range(4):
                    if not connection.sock.recv(_RECV_SIZE):
                        break
            with contextlib.suppress(OSError):  # one try, never a wait
                connection.sock.send(_encode(answer, head_only=False))
        self._close(connection)

    def _close(self, connection: _Connection) -> None:
        if connection.closed:
            return
        connection.closed = True
        fd = connection.sock.fileno()
        if self.connections.get(fd) is connection:
            del self.connections[fd]
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(connection.sock)
        connection.sock.close()

    def _watch(self, connection: _Connection, events: int) -> None:
        if connection.events != events:
            self._selector.modify(connection.sock, events, connection)
            connection.events = events

    # -- one connection -----------------------------------------------------------------------

    def _serve(self, connection: _Connection) -> None:
        try:
            if connection.state is _State.WRITING:
                self._write(connection)
            else:
                self._read(connection)
        except OSError as error:
            # A reset or a broken pipe: the client went away, which is its right.
            self.counts["hung_up"] += 1
            logger.debug(
                "buttress health server: %s went away (%s)",
                connection.peer,
                type(error).__name__,
            )
            self._close(connection)
        except Exception:
            logger.exception("buttress health server: serving %s failed", connection.peer)
            self._close(connection)

    def _read(self, connection: _Connection) -> None:
        try:
            data = connection.sock.recv(_RECV_SIZE)
        except BlockingIOError:
            return
        if connection.state is _State.DRAINING:
            connection.body_left -= len(data)
            if not data or connection.body_left < -_LINGER_BYTES:
                self._close(connection)
            return
        if not data:
            self.counts["hung_up"] += 1
            logger.debug(
                "buttress health server: %s hung up before sending a whole request",
                connection.peer,
            )
            self._close(connection)
            return
        try:
            if connection.head is None:
                connection.buffer += data
                self._read_head(connection)
            else:
                connection.body_left -= len(data)
                if connection.body_left <= 0:
                    self._answer(connection)
        except _Refusal as refusal:
            self.counts["refused"] += 1
            logger.debug(
                "buttress health server: %s refused: %s %s",
                connection.peer,
                refusal.status.value,
                refusal,
            )
            self._respond(connection, _Answer(refusal.status, {"error": str(refusal)}), linger=True)

    def _read_head(self, connection: _Connection) -> None:
        limits, buffer = self.limits, connection.buffer
        if not connection.scanned:
            # Empty lines before a request line are to be ignored (RFC 9112, 2.2).
            del buffer[: len(buffer) - len(buffer.lstrip(b"\r\n"))]
        end = _HEAD_END.search(buffer, max(0, connection.scanned - 3))
        # The request line, and its CR, end within the cap.
        line_end = buffer.find(b"\n", 0, limits.max_request_line + 2)
        if line_end < 0 and len(buffer) > limits.max_request_line + 1:
            raise _Refusal(
                HTTPStatus.REQUEST_URI_TOO_LONG,
                f"the request line is longer than {limits.max_request_line} bytes",
            )
        head_size = len(buffer) if end is None else end.start()
        if head_size > limits.max_header_bytes:
            raise _Refusal(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                f"the request head is longer than {limits.max_header_bytes} bytes",
            )
        if end is None:
            connection.scanned = len(buffer)
            return
        head = _parse_head(bytes(buffer[:head_size]), limits)
        if head.content_length > limits.max_body:
            raise _Refusal(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the body is longer than {limits.max_body} bytes",
            )
        connection.head = head
        connection.body_left = head.content_length - (len(buffer) - end.end())
        connection.buffer = bytearray()  # no route reads a body
        if connection.body_left <= 0:
            self._answer(connection)
        elif head.expect_continue:
            with contextlib.suppress(BlockingIOError):  # else the client sends it after a while
                connection.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _answer(self, connection: _Connection) -> None:
        assert connection.head is not None  # noqa: S101 - set before the body is read
        request = connection.head.request
        try:
            answer = _route(request, self.admin_token)
        except Exception as exc:
            # The type only: a message may hold anything, and the traceback goes to the log.
            logger.error(  # noqa: TRY400 - exc_info below; the message names the route
                "buttress health server: %s %s failed",
                request.method,
                _shown(request.path),
                exc_info=exc,
            )
            answer = _Answer(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                {"error": "internal error", "type": type(exc).__name__},
            )
        logger.debug(
            "buttress health server: %s %s %s -> %d",
            connection.peer,
            request.method,
            _shown(request.path),
            answer.status,
        )
        # Bytes past the request (a pipelined one) are drained, not answered.
        linger = connection.body_left < 0
        self._respond(connection, answer, head_only=request.method == "HEAD", linger=linger)

    def _respond(
        self, connection: _Connection, answer: _Answer, *, head_only: bool = False, linger: bool
    ) -> None:
        self.counts["answered"] += 1
        connection.out = memoryview(_encode(answer, head_only=head_only))
        connection.state = _State.WRITING
        connection.linger = linger
        connection.deadline = time.monotonic() + self.limits.request_timeout
        self._write(connection)

    def _write(self, connection: _Connection) -> None:
        try:
            sent = connection.sock.send(connection.out)
        except BlockingIOError:
            sent = 0
        connection.out = connection.out[sent:]
        if connection.out:
            self._watch(connection, selectors.EVENT_WRITE)
            return
        if not connection.linger:
            self._close(connection)
            return
        # Closing with unread bytes in the socket answers them with a reset, which can destroy
        # the answer before the client reads it: say we are done, and drain for a moment.
        connection.sock.shutdown(socket.SHUT_WR)
        connection.state = _State.DRAINING
        connection.body_left = 0
        connection.deadline = time.monotonic() + min(_LINGER, self.limits.request_timeout)
        self._watch(connection, selectors.EVENT_READ)


# -- the public face ----------------------------------------------------------------------------


class HealthServer:
    """
    A running health endpoint; made by :func:`start_health_server`.

    Attributes:
        host: The address it listens on.
        port: The port it listens on (the one picked when 0 was asked).

    .. versionadded:: 0.1.0
    """

    def __init__(self, loop: _Loop, thread: threading.Thread) -> None:
        self._loop = loop
        self._thread = thread
        address = loop.listener.getsockname()
        self.host: str = str(address[0])
        self.port: int = int(address[1])
        _fork.track(self)

    def _after_fork_in_child(self) -> None:
        # The serving thread stays in the parent, which keeps the port: a forked child lets go
        # of its copies of the sockets (closed, never shut down, which would end the parent's).
        _fork.reinit(self._loop._lock)
        self._loop.close()

    @property
    def url(self) -> str:
        """The base URL, such as ``http://127.0.0.1:8081``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        """
        Stop serving: close the listening socket and every connection, and wait for the thread.

        Idempotent.

        .. versionadded:: 0.1.0
        """
        self._loop.request_stop()
        if self._thread.is_alive():
            self._thread.join()
        self._loop.close()  # done by the thread, unless it never ran (in a forked child)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        running = "running" if self._thread.is_alive() else "stopped"
        return f"<HealthServer {self.url} {running}>"


def start_health_server(
    port: int, host: str = DEFAULT_HOST, admin_token: str | None = None
) -> HealthServer:
    """
    Serve ``/health``, ``/targets`` and ``/targets/{name}/reset`` from a daemon thread.

    One thread serves every connection, with bounded connections, a deadline for each request
    and capped request sizes (see ``docs/health.md``).

    Args:
        port: The port to listen on, 0..65535; 0 picks a free one (read it from ``.port``).
        host: The address to bind. The default, loopback, keeps the endpoint off the network.
            An address with ``:`` is IPv6.
        admin_token: The bearer token that allows resetting a breaker. ``None`` or empty
            disables reset (every reset answers 403).

    Returns:
        The running server; call ``.stop()`` (or use it as a context manager) to stop it.

    Raises:
        ConfigurationError: *port* is out of range, or *host* or *admin_token* is no str.
        OSError: The address cannot be bound (the port is taken, for instance).

    .. versionadded:: 0.1.0
    """
    _validate.integer("start_health_server", "port", port, low=0, high=65535)
    if not isinstance(host, str):
        raise ConfigurationError(
            f"start_health_server: host={_validate.shown(host)} is not accepted; expected an "
            "address or host name as a str, such as '127.0.0.1'"
        )
    if admin_token is not None and not isinstance(admin_token, str):
        # The token itself is never shown, whatever it is.
        raise ConfigurationError(
            f"start_health_server: admin_token (a {type(admin_token).__name__}) is not "
            "accepted; expected a str or None"
        )
    return _start(port, host, admin_token, _Limits())


def _start(port: int, host: str, admin_token: str | None, limits: _Limits) -> HealthServer:
    listener = _listen(host, port, limits)
    try:
        loop = _Loop(listener, _utf8(admin_token) if admin_token else None, limits)
    except BaseException:
        listener.close()
        raise
    thread = threading.Thread(
        target=loop.run,
        name=f"buttress-health:{listener.getsockname()[1]}",
        daemon=True,
    )
    server = HealthServer(loop, thread)
    try:
        thread.start()
    except BaseException:
        loop.close()
        raise
    logger.debug("buttress health server: listening on %s", server.url)
    return server


def _listen(host: str, port: int, limits: _Limits) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # An empty host binds every address, as bind(("", port)) does.
    address = socket.getaddrinfo(
        host or None, port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
    )[0][4]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Rebinding a port in TIME_WAIT after a restart must work.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "TCP_DEFER_ACCEPT"):
            # Linux hands over a connection once its first bytes arrive, so one that sends
            # nothing waits in the kernel, costing no descriptor, and a slow client's request is
            # there when it is accepted.
            seconds = max(1, math.ceil(limits.request_timeout))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, seconds)
        sock.bind(address)
        sock.listen(limits.backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class HealthPortError(OSError):
    """
    ``BUTTRESS_HEALTH_PORT`` could not be served; the message says which port, why, what to do.

    Raised by :func:`start_from_environment`; activation turns it into a WARNING (buttress stays
    on) or, under ``BUTTRESS_STRICT=true``, into exit code 2.
    """


def start_from_environment(environ: Mapping[str, str] = os.environ) -> HealthServer | None:
    """
    Start the health server as the environment says, if it says so.

    Reads ``BUTTRESS_HEALTH_PORT`` (unset or empty: no server), ``BUTTRESS_HEALTH_HOST``
    (default ``127.0.0.1``) and ``BUTTRESS_ADMIN_TOKEN`` (unset: reset disabled). The port may
    be a range ``FIRST-LAST``: each process takes the first free port of it, so that every
    worker of a multi-process server serves its own endpoint.

    Returns:
        The running server, or ``None`` when no port is set.

    Raises:
        ConfigurationError: ``BUTTRESS_HEALTH_PORT`` is neither an integer in 0..65535 nor a
            range of ports.
        HealthPortError: the port is in use (most likely served by another worker of the
            same service), no port of the range is free, or the address cannot be bound.

    .. versionadded:: 0.1.0
    """
    ports = read_health_port(environ)
    if ports is None:
        return None
    host = environ.get(ENV_HOST, "").strip() or DEFAULT_HOST
    token = environ.get(ENV_TOKEN) or None
    raw = environ.get(ENV_PORT, "").strip()
    setting = f"{ENV_PORT}={raw}"
    pid = os.getpid()
    if isinstance(ports, int):
        try:
            server = start_health_server(ports, host, token)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise HealthPortError(
                    f"{setting}: {_address(host, ports)} is in use by another process, which "
                    "serves the health endpoint there (with several workers: the first one to "
                    f"start), so the targets of this process (pid {pid}) are not reported on "
                    "it. For an endpoint per worker, give a range with a port per worker, such "
                    "as 8081-8084"
                ) from None
            raise _cannot_listen(setting, host, ports, error) from None
        if ports == 0:
            logger.info("buttress: health endpoint of pid %s on %s (%s)", pid, server.url, setting)
        return server
    for port in ports:
        try:
            server = start_health_server(port, host, token)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                continue  # another worker took it: try the next one
            raise _cannot_listen(setting, host, port, error) from None
        logger.info("buttress: health endpoint of pid %s on %s (%s)", pid, server.url, setting)
        return server
    raise HealthPortError(
        f"{setting}: every port of the range is in use on {_plain(host)}, so this process "
        f"(pid {pid}) serves no health endpoint. Widen the range to a port per worker"
    )


def _address(host: str, port: int) -> str:
    return f"{_plain(host)}:{port}"


def _cannot_listen(setting: str, host: str, port: int, error: OSError) -> HealthPortError:
    # strerror only: it never holds anything but the system's text.
    reason = error.strerror or type(error).__name__
    return HealthPortError(
        f"{setting}: cannot listen on {_address(host, port)} ({reason}), so this process "
        f"(pid {os.getpid()}) serves no health endpoint. Choose another port, or check "
        f"{ENV_HOST}"
    )
