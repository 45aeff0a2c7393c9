"""
An optional HTTP health endpoint, built on the standard library only.

Routes::

    GET  /health                 200 (healthy or degraded) or 503 (unhealthy); the report as JSON
    GET  /targets                200; the per-target entries as a JSON list
    POST /targets/{name}/reset   close a breaker; needs ``Authorization: Bearer <admin token>``

Target names hold ``:`` and ``/`` (``postgresql:127.0.0.1:5432/app``), so ``{name}`` is
everything between ``/targets/`` and the final ``/reset``, URL-decoded: both the encoded and
the raw form work. Reset is disabled (403) until an admin token is configured, so a forgotten
setting fails closed. The token is compared in constant time and never echoed or logged.

The server answers every request with JSON, logs requests to the ``buttress`` logger at DEBUG
(never to stderr), and turns an exception in a handler into a 500 without a traceback in the
body: a health endpoint must not be what takes the service down. It speaks plain HTTP: bind it
to loopback (the default) or put it behind something that terminates TLS.
"""

from __future__ import annotations

import errno
import hmac
import json
import logging
import os
import threading
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import unquote

from . import _health, _validate
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
_POLL_INTERVAL = 0.1


def _utf8(text: str) -> bytes:
    # Header values arrive decoded as latin-1 and tokens from the environment may hold
    # surrogate escapes: both encode losslessly this way, so compare_digest sees bytes.
    return text.encode("utf-8", "surrogateescape")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Rebinding a port in TIME_WAIT after a restart must work.
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], admin_token: str | None) -> None:
        super().__init__(address, _Handler)
        self.admin_token = _utf8(admin_token) if admin_token else None

    def handle_error(self, request: object, client_address: object) -> None:
        # The base prints a traceback to stderr; a client hanging up is no news.
        # Called from inside the base's `except` block, so exc_info is the current exception.
        logger.debug(
            "buttress health server: error serving %s",
            client_address,
            exc_info=True,  # noqa: LOG014
        )


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "buttress-health"
    sys_version = ""  # do not advertise the Python version

    # -- plumbing ---------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        # The request line holds the path, never the Authorization header.
        logger.debug("buttress health server: %s %s", self.address_string(), format % args)

    def _send(self, status: int, body: object, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self, method: str) -> None:
        try:
            self._route(method, self.path.split("?", 1)[0])
        except Exception as exc:
            # The type only: a message may hold anything, and the traceback goes to the log.
            logger.error(  # noqa: TRY400 - exc_info below; the message names the route
                "buttress health server: %s %s failed",
                method,
                self.path.split("?", 1)[0],
                exc_info=exc,
            )
            try:
                self._send(
                    HTTPStatus.INTERNAL_SERVER_ERROR,
                    {"error": "internal error", "type": type(exc).__name__},
                )
            except OSError:  # the client is gone (or the response had started): give up
                self.close_connection = True

    def do_GET(self) -> None:
        """Serve a GET."""
        self._dispatch("GET")

    def do_POST(self) -> None:
        """Serve a POST."""
        self._dispatch("POST")

    def do_PUT(self) -> None:
        """Answer a PUT (no route takes one)."""
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        """Answer a DELETE (no route takes one)."""
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        """Answer a PATCH (no route takes one)."""
        self._dispatch("PATCH")

    # -- routes -----------------------------------------------------------------------------

    def _route(self, method: str, path: str) -> None:
        if path == "/health":
            if method != "GET":
                self._method_not_allowed("GET")
                return
            report = _health.health()
            status = (
                HTTPStatus.SERVICE_UNAVAILABLE
                if report.status == _health.UNHEALTHY
                else HTTPStatus.OK
            )
            self._send(status, report.to_dict())
            return
        if path == "/targets":
            if method != "GET":
                self._method_not_allowed("GET")
                return
            self._send(HTTPStatus.OK, [t.to_dict() for t in _health.health().targets])
            return
        if (
            path.startswith(_TARGETS_PREFIX)
            and path.endswith(_RESET_SUFFIX)
            and len(path) > len(_TARGETS_PREFIX) + len(_RESET_SUFFIX)
        ):
            if method != "POST":
                self._method_not_allowed("POST")
                return
            self._reset(unquote(path[len(_TARGETS_PREFIX) : -len(_RESET_SUFFIX)]))
            return
        self._send(HTTPStatus.NOT_FOUND, {"error": f"no route for {method} {path}"})

    def _method_not_allowed(self, allowed: str) -> None:
        self._send(
            HTTPStatus.METHOD_NOT_ALLOWED,
            {"error": f"method not allowed; use {allowed}"},
            {"Allow": allowed},
        )

    def _reset(self, target: str) -> None:
        expected = self.server.admin_token
        if expected is None:
            self._send(
                HTTPStatus.FORBIDDEN,
                {"error": f"reset is disabled until {ENV_TOKEN} is set (or admin_token= is given)"},
            )
            return
        scheme, _, given = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(_utf8(given.strip()), expected):
            self._send(
                HTTPStatus.UNAUTHORIZED,
                {"error": "a valid 'Authorization: Bearer <admin token>' header is required"},
                {"WWW-Authenticate": 'Bearer realm="buttress"'},
            )
            return
        pipeline = REGISTRY.get(target)
        if pipeline is None:
            self._send(HTTPStatus.NOT_FOUND, {"error": f"no target named {target!r}"})
            return
        _health.reset(target)
        breaker = pipeline.breaker
        state = breaker.state.value if breaker is not None else None
        logger.info("buttress health server: breaker of target %r reset", target)
        self._send(HTTPStatus.OK, {"target": target, "state": state})


class HealthServer:
    """
    A running health endpoint; made by :func:`start_health_server`.

    Attributes:
        host: The address it listens on.
        port: The port it listens on (the one picked when 0 was asked).

    .. versionadded:: 0.1.0
    """

    def __init__(self, server: _Server, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.host: str = str(server.server_address[0])
        self.port: int = int(server.server_address[1])

    @property
    def url(self) -> str:
        """The base URL, such as ``http://127.0.0.1:8081``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        """
        Stop serving and close the socket; waits for the serving thread. Idempotent.

        .. versionadded:: 0.1.0
        """
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

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

    Args:
        port: The port to listen on, 0..65535; 0 picks a free one (read it from ``.port``).
        host: The address to bind. The default, loopback, keeps the endpoint off the network.
        admin_token: The bearer token that allows resetting a breaker. ``None`` or empty
            disables reset (every reset answers 403).

    Returns:
        The running server; call ``.stop()`` (or use it as a context manager) to stop it.

    Raises:
        ConfigurationError: *port* is out of range.
        OSError: The address cannot be bound (the port is taken, for instance).

    .. versionadded:: 0.1.0
    """
    _validate.integer("start_health_server", "port", port, low=0, high=65535)
    server = _Server((host, port), admin_token)
    thread = threading.Thread(
        # A short poll makes stop() quick; ten idle wake-ups a second cost nothing measurable.
        target=server.serve_forever,
        kwargs={"poll_interval": _POLL_INTERVAL},
        name=f"buttress-health:{server.server_address[1]}",
        daemon=True,
    )
    thread.start()
    running = HealthServer(server, thread)
    logger.debug("buttress health server: listening on %s", running.url)
    return running


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
