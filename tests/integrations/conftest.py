"""Fixtures for the HTTP client integration tests: a real fault-injecting server on 127.0.0.1.

Under ``--import-mode=importlib`` pytest imports ``tests/conftest.py`` as ``tests.conftest``,
which makes ``tests`` importable as a namespace package; the fallback below covers runs where
that did not happen (e.g. a different import mode) by putting the repository root on sys.path.
"""

import asyncio
import gc
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import requests
import urllib3
import urllib3._request_methods
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from buttress import _activation, _stats, integrations, telemetry
from buttress.telemetry import semconv

try:
    from tests.support.fixtures import fault_server  # noqa: F401
except ModuleNotFoundError:  # pragma: no cover - depends on how pytest was started
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.support.fixtures import fault_server  # noqa: F401


# --- buttress activated from a TOML file ---------------------------------------------------------

PATCH_POINTS: tuple[tuple[Any, str], ...] = (
    (requests.Session, "request"),
    (httpx.Client, "send"),
    (httpx.AsyncClient, "send"),
    (aiohttp.ClientSession, "_request"),
    (urllib3._request_methods.RequestMethods, "request"),
)
"""Every function the HTTP integrations wrap, as ``(owner, attribute)``."""

ORIGINALS: dict[tuple[Any, str], Any] = {
    (owner, name): owner.__dict__[name] for owner, name in PATCH_POINTS
}
"""The unpatched functions, taken when this conftest is imported (before any activation)."""

BASE_CONFIG: dict[str, Any] = {
    "retry.attempts": 3,
    "retry.backoff": "constant",
    "retry.backoff_initial": 0.01,
    "retry.budget": False,
    "retry.max_retry_after": 5.0,
    "timeout.attempt": 5.0,
    "timeout.total": 20.0,
    "breaker.window": "count",
    "breaker.window_size": 100,
    "breaker.minimum_calls": 100,
    "breaker.open_duration": 0.2,
}
"""``[defaults.http]`` for these tests: tiny back-off, no retry budget, a breaker that never trips."""


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def write_config(path: Any, overrides: Mapping[str, Any] | None = None) -> Any:
    """Write ``[defaults.http]`` (BASE_CONFIG with *overrides*; None drops a key) to *path*."""
    values = {**BASE_CONFIG, **(overrides or {})}
    lines = ["[defaults.http]"]
    lines += [f"{key} = {_toml_value(v)}" for key, v in values.items() if v is not None]
    path.write_text("\n".join(lines) + "\n")
    return path


def patched_now() -> list[str]:
    """The names of the patch points that do not hold their original function now."""
    return [
        f"{owner.__name__}.{name}"
        for (owner, name), original in ORIGINALS.items()
        if owner.__dict__[name] is not original
    ]


def restore_patch_points() -> None:
    """Undo every buttress patch still installed, and check each patch point is original again."""
    integrations.uninstrument_all()
    leftover = patched_now()
    assert [] == leftover, f"still patched after deactivate(): {leftover}"


HTTP_INTEGRATIONS = ("requests", "httpx", "aiohttp", "urllib3")


@pytest.fixture
def activate_buttress(tmp_path: Any) -> Iterator[Callable[..., None]]:
    """
    A factory: ``activate_buttress(config={...}, mode="observe", **env)`` switches buttress on.

    *config* overrides keys of :data:`BASE_CONFIG`; *env* adds ``BUTTRESS_*`` variables. Everything
    is switched off again after the test, and every patched function is checked to be original.
    """
    sdk_checked = _activation._sdk_checked

    def activate(
        config: Mapping[str, Any] | None = None, *, mode: str = "enforce", **env: str
    ) -> None:
        _activation.deactivate()
        path = write_config(tmp_path / "buttress.toml", config)
        environ = {
            "BUTTRESS_ENABLED": "true",
            "BUTTRESS_MODE": mode,
            "BUTTRESS_CONFIG": str(path),
            "BUTTRESS_STRICT": "true",
            **env,
        }
        # owns_sdk=False: never set global OpenTelemetry providers (or a Prometheus port).
        assert True is _activation.activate(environ, owns_sdk=False)

    try:
        yield activate
    finally:
        _activation.deactivate()
        _activation._sdk_checked = sdk_checked
        restore_patch_points()


@pytest.fixture
def activated(activate_buttress: Callable[..., None]) -> None:
    """buttress switched on with :data:`BASE_CONFIG` (enforce mode), off again afterwards."""
    activate_buttress()


@pytest.fixture
def patch_points() -> Callable[[], list[str]]:
    """:func:`patched_now`: which patch points hold something else than their original."""
    return patched_now


# --- client drivers: one way to send a request through each patched library ---------------------


@dataclass(frozen=True)
class Reply:
    """What a driver hands back: the status, the body read after the call returned, the headers."""

    status: int
    body: bytes
    headers: Mapping[str, str]


class Driver:
    """Sends one request with one client library and reads the response (bodies read after return)."""

    name = ""
    connection_error: type[BaseException] = Exception
    """The library's connection error: what an open breaker must also be."""
    timeout_error: tuple[type[BaseException], ...] = ()
    """What the library raises when its own timeout fires."""
    sends_per_reset: int = 1
    """Requests one attempt makes to a server that resets the connection (the library's own)."""

    def do(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        timeout: float | None = None,
    ) -> Reply:
        """Send *method* *url*; raise the library's own exceptions unchanged."""
        raise NotImplementedError

    def stream_body(self, chunks: list[bytes]) -> Any:
        """A one-shot streaming body of *chunks* in the form this library takes."""

        def generate() -> Iterator[bytes]:
            yield from chunks

        return generate()

    def close(self) -> None:
        """Release the client's connections."""


def _request_kwargs(
    headers: Mapping[str, str] | None, body_key: str, body: Any, timeout: Any
) -> dict[str, Any]:
    # The keywords every client takes alike, the body under the library's own name.
    kwargs: dict[str, Any] = {"headers": headers, body_key: body}
    if timeout is not None:
        kwargs["timeout"] = timeout
    return kwargs


class _SessionDriver(Driver):
    """A client object with ``request(method, url, ...)`` returning ``status_code``/``content``."""

    body_key = "data"

    def __init__(self, client: Any) -> None:
        self.client = client

    def do(self, method, url, *, headers=None, body=None, timeout=None):
        kwargs = _request_kwargs(headers, self.body_key, body, timeout)
        response = self.client.request(method, url, **kwargs)
        return Reply(response.status_code, response.content, dict(response.headers))

    def close(self):
        self.client.close()


class _AsyncDriver(Driver):
    """A driver whose one-shot bodies are async generators."""

    def stream_body(self, chunks):
        async def generate() -> Any:
            for chunk in chunks:
                yield chunk

        return generate()


class RequestsDriver(_SessionDriver):
    """``requests.Session().request``."""

    name = "requests"
    connection_error = requests.ConnectionError
    timeout_error = (requests.Timeout,)

    def __init__(self) -> None:
        super().__init__(requests.Session())


class HttpxDriver(_SessionDriver):
    """``httpx.Client().request``."""

    name = "httpx"
    connection_error = httpx.TransportError
    timeout_error = (httpx.TimeoutException,)
    body_key = "content"

    def __init__(self) -> None:
        super().__init__(httpx.Client())


class AsyncHttpxDriver(_AsyncDriver):
    """``httpx.AsyncClient().request``, a fresh client in a fresh event loop per request."""

    name = "httpx-async"
    connection_error = httpx.TransportError
    timeout_error = (httpx.TimeoutException,)

    def do(self, method, url, *, headers=None, body=None, timeout=None):
        async def send() -> Reply:
            kwargs = _request_kwargs(headers, "content", body, timeout)
            async with httpx.AsyncClient() as client:
                response = await client.request(method, url, **kwargs)
                return Reply(response.status_code, response.content, dict(response.headers))

        return asyncio.run(send())


class AiohttpDriver(_AsyncDriver):
    """``aiohttp.ClientSession().request``, a fresh session in a fresh event loop per request."""

    name = "aiohttp"
    connection_error = aiohttp.ClientConnectionError
    timeout_error = (asyncio.TimeoutError, aiohttp.ServerTimeoutError)
    # aiohttp >= 3.11 resends an idempotent request once by itself when the connection is reset
    # or closed before the response (RFC 9112 9.3.1), whether or not buttress is active.
    sends_per_reset = 2

    def do(self, method, url, *, headers=None, body=None, timeout=None):
        async def send() -> Reply:
            total = aiohttp.ClientTimeout(total=timeout) if timeout is not None else None
            kwargs = _request_kwargs(headers, "data", body, total)
            async with aiohttp.ClientSession() as session:
                response = await session.request(method, url, **kwargs)
                async with response:
                    text = await response.text()
                    return Reply(response.status, text.encode(), dict(response.headers))

        return asyncio.run(send())


class Urllib3Driver(Driver):
    """``urllib3.PoolManager().request``."""

    name = "urllib3"
    connection_error = urllib3.exceptions.HTTPError
    timeout_error = (urllib3.exceptions.TimeoutError, urllib3.exceptions.MaxRetryError)

    def __init__(self) -> None:
        self.pool = urllib3.PoolManager()

    def do(self, method, url, *, headers=None, body=None, timeout=None):
        response = self.pool.request(method, url, **_request_kwargs(headers, "body", body, timeout))
        return Reply(response.status, response.data, dict(response.headers))

    def close(self):
        self.pool.clear()


DRIVERS: dict[str, type[Driver]] = {
    driver.name: driver
    for driver in (RequestsDriver, HttpxDriver, AsyncHttpxDriver, AiohttpDriver, Urllib3Driver)
}
"""Every client the tests run against, by name."""


@pytest.fixture
def make_client() -> Iterator[Callable[[str], Driver]]:
    """A factory of drivers by name (see :data:`DRIVERS`), all closed after the test."""
    made: list[Driver] = []

    def make(name: str) -> Driver:
        driver = DRIVERS[name]()
        made.append(driver)
        return driver

    yield make
    for driver in made:
        driver.close()


@pytest.fixture(params=list(DRIVERS))
def client(request: pytest.FixtureRequest, make_client: Callable[[str], Driver]) -> Driver:
    """Each client library in turn."""
    return make_client(request.param)


# --- metrics -------------------------------------------------------------------------------------


class Metrics:
    """buttress's metrics, collected from an in-memory reader on demand."""

    def __init__(self, reader: InMemoryMetricReader) -> None:
        self.reader = reader

    def points(self, name: str, target: str) -> dict[tuple[tuple[str, Any], ...], Any]:
        """Collect now: *target*'s points of metric *name*, by their other attributes."""
        found: dict[tuple[tuple[str, Any], ...], Any] = {}
        data = self.reader.get_metrics_data()
        for resource_metrics in data.resource_metrics if data is not None else ():
            for scope_metrics in resource_metrics.scope_metrics:
                if scope_metrics.scope.name != semconv.METER_NAME:
                    continue
                for metric in scope_metrics.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        attributes = dict(point.attributes or {})
                        if attributes.pop(semconv.ATTR_TARGET, None) != target:
                            continue
                        found[tuple(sorted(attributes.items()))] = point.value
        return found


@pytest.fixture
def install_metrics() -> Iterator[Callable[[], Metrics]]:
    """Call after activation: publish buttress's metrics into an in-memory reader from then on."""
    providers: list[MeterProvider] = []

    def install() -> Metrics:
        # Earlier tests' pipelines (same port, garbage not yet collected) must not count here.
        gc.collect()
        for stats in list(_stats.LIVE):
            _stats.LIVE.discard(stats)
        _stats.RETIRED.clear()
        reader = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[reader])
        providers.append(provider)
        telemetry.instrument(meter_provider=provider)
        return Metrics(reader)

    yield install
    if providers:
        telemetry.uninstrument()
    for provider in providers:
        provider.shutdown()
