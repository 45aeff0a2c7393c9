"""
Set up an OpenTelemetry SDK from the standard ``OTEL_*`` variables, as opentelemetry-distro would.

For applications activated with ``BUTTRESS_ENABLED=true`` that configured none.

Only when the application has not installed a provider itself: buttress never replaces one.
Supported: ``OTEL_METRICS_EXPORTER`` = ``prometheus`` (served on
``OTEL_EXPORTER_PROMETHEUS_HOST``:``OTEL_EXPORTER_PROMETHEUS_PORT``, default localhost:9464),
``otlp`` (needs opentelemetry-exporter-otlp), ``console`` or ``none``; ``OTEL_TRACES_EXPORTER`` =
``otlp``, ``console`` or ``none``. Both default to ``otlp``, as in the OpenTelemetry
specification; without the OTLP exporter package installed that is logged and skipped.
``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` are read by the SDK itself. Whatever
SDK tracer provider is in place also gets the processor that marks resent HTTP requests with
``http.request.resend_count``.

Telemetry is a side feature: an exporter that cannot be set up (a bad or busy Prometheus port,
a missing package, an unknown name) is skipped with one WARNING, and the other exporters, the
spans and the policies carry on. :func:`check_environment` finds the same problems at start-up,
for ``BUTTRESS_STRICT=true``.
"""

from __future__ import annotations

import importlib.util
import logging
import socket
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from opentelemetry import metrics, trace

from ._exceptions import ConfigurationError
from ._settings_env import ENV_PROMETHEUS_PORT, _plain, _shown, read_port, read_raw

logger = logging.getLogger("buttress")

ENV_METRICS = "OTEL_METRICS_EXPORTER"
ENV_TRACES = "OTEL_TRACES_EXPORTER"
ENV_PROMETHEUS_HOST = "OTEL_EXPORTER_PROMETHEUS_HOST"
DEFAULT_PROMETHEUS_HOST = "localhost"
DEFAULT_PROMETHEUS_PORT = 9464

_ACCEPTED = {
    ENV_METRICS: ("prometheus", "otlp", "console", "none"),
    ENV_TRACES: ("otlp", "console", "none"),
}
# What each exporter imports, and the distribution that provides it, for a message that says
# what to install.
_SDK = (("opentelemetry.sdk", "opentelemetry-sdk"),)
_NEEDS = {
    (ENV_METRICS, "prometheus"): (
        *_SDK,
        ("opentelemetry.exporter.prometheus", "opentelemetry-exporter-prometheus"),
        ("prometheus_client", "prometheus-client"),
    ),
    (ENV_METRICS, "otlp"): (
        *_SDK,
        ("opentelemetry.exporter.otlp.proto.http.metric_exporter", "opentelemetry-exporter-otlp"),
    ),
    (ENV_METRICS, "console"): _SDK,
    (ENV_TRACES, "otlp"): (
        *_SDK,
        ("opentelemetry.exporter.otlp.proto.http.trace_exporter", "opentelemetry-exporter-otlp"),
    ),
    (ENV_TRACES, "console"): _SDK,
}
_CARRY_ON = "the rest of telemetry and the policies carry on"


class _ExporterError(Exception):
    """An exporter that cannot be set up; the message names the variable, value and remedy."""


def _names(value: str | None, default: str) -> list[str]:
    return [n.strip().lower() for n in ((value or "").strip() or default).split(",") if n.strip()]


def _unsupported(variable: str, name: str) -> str:
    *others, last = _ACCEPTED[variable]
    return (
        f"{variable}={_shown(name)} is not supported; expected {', '.join(others)} or {last} "
        "(comma-separated)"
    )


def _missing(variable: str, name: str) -> str | None:
    """What exporter *name* of *variable* needs and is not installed, as a message."""
    for module, distribution in _NEEDS.get((variable, name), ()):
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:  # a parent package is missing
            found = False
        if not found:
            return f"{variable}={name} needs {distribution}, which is not installed"
    return None


def _prometheus_address(environ: Mapping[str, str]) -> tuple[str, int]:
    """The Prometheus host and port; raises ConfigurationError for a bad port."""
    host = read_raw(environ, ENV_PROMETHEUS_HOST) or DEFAULT_PROMETHEUS_HOST
    return host, read_port(environ, ENV_PROMETHEUS_PORT, DEFAULT_PROMETHEUS_PORT)


def _cannot_serve(environ: Mapping[str, str], host: str, port: int, error: OSError) -> str:
    # strerror only: the system's text, never anything from the environment.
    reason = error.strerror or type(error).__name__
    given = environ.get(ENV_PROMETHEUS_PORT, "").strip()
    setting = f"{ENV_PROMETHEUS_PORT}={given}" if given else f"{ENV_PROMETHEUS_PORT} (default)"
    if isinstance(error, socket.gaierror):  # the host, not the port
        setting, remedy = f"{ENV_PROMETHEUS_HOST}={_plain(host)}", f"check {ENV_PROMETHEUS_HOST}"
    else:
        remedy = "choose a free port, one per process that serves metrics"
    return (
        f"{setting}: cannot serve Prometheus metrics on {_plain(host)}:{port} ({reason}); " + remedy
    )


def _probe(host: str, port: int) -> None:
    """Bind and listen on *host*:*port* as prometheus_client would, then release it at once."""
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as its HTTP server does
        probe.bind(address)
        probe.listen()


def check_environment(environ: Mapping[str, str]) -> str | None:
    """
    The first problem :func:`setup_sdk` would meet with these variables; ``None`` if none.

    For ``BUTTRESS_STRICT=true`` at activation, while the SDK itself is still set up lazily:
    checks every exporter name, that each exporter asked for by name is installed, the
    Prometheus port's value, and that the port can be bound (bound and released at once).
    """
    for variable in (ENV_METRICS, ENV_TRACES):
        explicit = read_raw(environ, variable) is not None
        for name in _names(environ.get(variable), "otlp"):
            if name not in _ACCEPTED[variable]:
                return _unsupported(variable, name)
            missing = _missing(variable, name)
            if missing is not None and explicit:
                return missing
    if "prometheus" in _names(environ.get(ENV_METRICS), "otlp"):
        try:
            host, port = _prometheus_address(environ)
            _probe(host, port)
        except ConfigurationError as error:
            return str(error)
        except OSError as error:
            return _cannot_serve(environ, host, port, error)
    return None


def setup_sdk(environ: Mapping[str, str], *, owns_sdk: bool) -> dict[str, Any]:
    """Install the providers that are missing (when *owns_sdk*); returns what was done."""
    done: dict[str, Any] = {}
    try:
        from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
        from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    except ImportError:
        logger.info("buttress: opentelemetry-sdk is not installed; telemetry goes nowhere")
        return done
    resource = Resource.create()
    if owns_sdk and not isinstance(metrics.get_meter_provider(), MeterProvider):
        explicit = read_raw(environ, ENV_METRICS) is not None
        readers = [
            r
            for r in (
                _safely(ENV_METRICS, n, partial(_reader, n, environ, explicit=explicit))
                for n in _names(environ.get(ENV_METRICS), "otlp")
            )
            if r is not None
        ]
        if readers:
            metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
            done["metrics"] = [type(r).__name__ for r in readers]
    provider = trace.get_tracer_provider()
    if owns_sdk and not isinstance(provider, TracerProvider):
        explicit = read_raw(environ, ENV_TRACES) is not None
        exporters = [
            e
            for e in (
                _safely(ENV_TRACES, n, partial(_span_exporter, n, explicit=explicit))
                for n in _names(environ.get(ENV_TRACES), "otlp")
            )
            if e is not None
        ]
        if exporters:
            from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

            provider = TracerProvider(resource=resource)
            for exporter in exporters:
                provider.add_span_processor(BatchSpanProcessor(exporter))
            trace.set_tracer_provider(provider)
            done["traces"] = [type(e).__name__ for e in exporters]
    if isinstance(provider, TracerProvider):
        from .integrations._resend import ResendCountProcessor  # noqa: PLC0415

        provider.add_span_processor(ResendCountProcessor())
        done["resend_count"] = True
    return done


def _safely(variable: str, name: str, build: Callable[[], Any]) -> Any:
    """*build()*, or ``None`` after one WARNING (no traceback) when it fails."""
    try:
        return build()
    except (_ExporterError, ConfigurationError) as error:
        logger.warning("buttress: %s. This exporter is skipped; %s.", error, _CARRY_ON)
    except Exception as error:
        # The type only: an exporter's message may hold an endpoint with credentials.
        logger.warning(
            "buttress: %s=%s: setting up this exporter failed (%s). It is skipped; %s.",
            variable,
            name,
            type(error).__name__,
            _CARRY_ON,
        )
        logger.debug("buttress: %s=%s set-up failure", variable, name, exc_info=True)
    return None


def _optional(variable: str, name: str, explicit: bool) -> bool:
    """Whether exporter *name* is installed; if not, say so (loudly when asked for by name)."""
    missing = _missing(variable, name)
    if missing is None:
        return True
    # Asked for by name: say so loudly. The specification's default with nothing set: quietly.
    if explicit:
        raise _ExporterError(missing)
    logger.info("buttress: %s; skipped", missing)
    return False


def _reader(name: str, environ: Mapping[str, str], *, explicit: bool = True) -> Any:
    if name == "none":
        return None
    if name not in _ACCEPTED[ENV_METRICS]:
        raise _ExporterError(_unsupported(ENV_METRICS, name))
    if not _optional(ENV_METRICS, name, explicit):
        return None
    if name == "prometheus":
        from opentelemetry.exporter.prometheus import PrometheusMetricReader  # noqa: PLC0415
        from prometheus_client import start_http_server  # noqa: PLC0415

        host, port = _prometheus_address(environ)
        try:
            start_http_server(port=port, addr=host)
        except OSError as error:
            raise _ExporterError(_cannot_serve(environ, host, port, error)) from None
        return PrometheusMetricReader()
    if name == "console":
        from opentelemetry.sdk.metrics.export import (  # noqa: PLC0415
            ConsoleMetricExporter,
            PeriodicExportingMetricReader,
        )

        return PeriodicExportingMetricReader(ConsoleMetricExporter())
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # noqa: PLC0415
        OTLPMetricExporter,
    )
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader  # noqa: PLC0415

    return PeriodicExportingMetricReader(OTLPMetricExporter())


def _span_exporter(name: str, *, explicit: bool = True) -> Any:
    if name == "none":
        return None
    if name not in _ACCEPTED[ENV_TRACES]:
        raise _ExporterError(_unsupported(ENV_TRACES, name))
    if not _optional(ENV_TRACES, name, explicit):
        return None
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter  # noqa: PLC0415

        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )

    return OTLPSpanExporter()
