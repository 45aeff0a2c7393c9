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
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from opentelemetry import metrics, trace

logger = logging.getLogger("buttress")


def _names(value: str | None, default: str) -> list[str]:
    return [n.strip().lower() for n in (value or default).split(",") if n.strip()]


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
        readers = [
            r
            for r in (
                _reader(n, environ, explicit="OTEL_METRICS_EXPORTER" in environ)
                for n in _names(environ.get("OTEL_METRICS_EXPORTER"), "otlp")
            )
            if r is not None
        ]
        if readers:
            metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
            done["metrics"] = [type(r).__name__ for r in readers]
    provider = trace.get_tracer_provider()
    if owns_sdk and not isinstance(provider, TracerProvider):
        exporters = [
            e
            for e in (
                _span_exporter(n, explicit="OTEL_TRACES_EXPORTER" in environ)
                for n in _names(environ.get("OTEL_TRACES_EXPORTER"), "otlp")
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


def _missing_otlp(variable: str, explicit: bool) -> None:
    # Asked for by name: say so loudly. The specification's default with nothing set: quietly.
    level = logging.WARNING if explicit else logging.INFO
    logger.log(level, "buttress: %s=otlp needs opentelemetry-exporter-otlp; skipped", variable)


def _reader(name: str, environ: Mapping[str, str], *, explicit: bool = True) -> Any:
    if name == "none":
        return None
    if name == "prometheus":
        from opentelemetry.exporter.prometheus import PrometheusMetricReader  # noqa: PLC0415
        from prometheus_client import start_http_server  # noqa: PLC0415

        host = environ.get("OTEL_EXPORTER_PROMETHEUS_HOST", "localhost")
        port = int(environ.get("OTEL_EXPORTER_PROMETHEUS_PORT", "9464"))
        start_http_server(port=port, addr=host)
        return PrometheusMetricReader()
    if name == "console":
        from opentelemetry.sdk.metrics.export import (  # noqa: PLC0415
            ConsoleMetricExporter,
            PeriodicExportingMetricReader,
        )

        return PeriodicExportingMetricReader(ConsoleMetricExporter())
    if name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # noqa: PLC0415
                OTLPMetricExporter,
            )
        except ImportError:
            _missing_otlp("OTEL_METRICS_EXPORTER", explicit)
            return None
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader  # noqa: PLC0415

        return PeriodicExportingMetricReader(OTLPMetricExporter())
    logger.warning("buttress: OTEL_METRICS_EXPORTER=%r is not supported; ignored", name)
    return None


def _span_exporter(name: str, *, explicit: bool = True) -> Any:
    if name == "none":
        return None
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter  # noqa: PLC0415

        return ConsoleSpanExporter()
    if name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
                OTLPSpanExporter,
            )
        except ImportError:
            _missing_otlp("OTEL_TRACES_EXPORTER", explicit)
            return None
        return OTLPSpanExporter()
    logger.warning("buttress: OTEL_TRACES_EXPORTER=%r is not supported; ignored", name)
    return None
