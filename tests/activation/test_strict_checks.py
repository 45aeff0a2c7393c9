"""
What BUTTRESS_STRICT checks of the exporters at start-up, in-process: nothing is set up.

``check_environment`` parses the ``OTEL_*`` values buttress's SDK set-up would use and
probe-binds the Prometheus port (released at once); the set-up itself stays lazy.
"""

from __future__ import annotations

import importlib.util

import pytest
from tests.activation.children import free_port, listening

from buttress._otel_setup import check_environment

PROMETHEUS = {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1"}


def otlp_installed() -> bool:
    """Whether opentelemetry-exporter-otlp (HTTP) is importable here."""
    try:
        return importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is not None
    except ImportError:
        return False


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"OTEL_METRICS_EXPORTER": "none", "OTEL_TRACES_EXPORTER": "none"},
        {"OTEL_METRICS_EXPORTER": " Console , NONE ", "OTEL_TRACES_EXPORTER": "console"},
        {"OTEL_METRICS_EXPORTER": "", "OTEL_TRACES_EXPORTER": "  "},
    ],
)
def test_supported_settings_pass(environ: dict[str, str]) -> None:
    """Unset means the specification's default (otlp), which is never an error when absent."""
    assert None is check_environment(environ)


@pytest.mark.parametrize("variable", ["OTEL_METRICS_EXPORTER", "OTEL_TRACES_EXPORTER"])
def test_otlp_asked_for_by_name_needs_its_package(variable: str) -> None:
    """An exporter named explicitly that cannot be built is a start-up error."""
    problem = check_environment({variable: "otlp"})

    if otlp_installed():
        assert None is problem
    else:
        assert f"{variable}=otlp needs opentelemetry-exporter-otlp, which is not installed" == (
            problem
        )


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        (
            {"OTEL_METRICS_EXPORTER": "prometheus,statsd"},
            (
                "OTEL_METRICS_EXPORTER='statsd' is not supported; expected prometheus, otlp, "
                "console or none (comma-separated)"
            ),
        ),
        (
            {"OTEL_TRACES_EXPORTER": "prometheus"},
            (
                "OTEL_TRACES_EXPORTER='prometheus' is not supported; expected otlp, console or none "
                "(comma-separated)"
            ),
        ),
        (
            {**PROMETHEUS, "OTEL_EXPORTER_PROMETHEUS_PORT": "9464x"},
            (
                "OTEL_EXPORTER_PROMETHEUS_PORT='9464x' is not accepted; expected an integer from 0 "
                "to 65535"
            ),
        ),
        (
            {"OTEL_METRICS_EXPORTER": "sk-live-0123456789abcdefABCDEF"},
            (
                "OTEL_METRICS_EXPORTER=<30 characters, not shown> is not supported; expected "
                "prometheus, otlp, console or none (comma-separated)"
            ),
        ),
    ],
)
def test_bad_values_are_named_with_what_is_accepted(environ: dict[str, str], expected: str) -> None:
    """One sentence: the variable, the value (never a secret-looking one) and what is accepted."""
    assert expected == check_environment(environ)


def test_a_busy_prometheus_port_is_found_at_start_up() -> None:
    """The probe binds like prometheus_client would; a port in use is named with the reason."""
    port = free_port()
    with listening(port):
        problem = check_environment({**PROMETHEUS, "OTEL_EXPORTER_PROMETHEUS_PORT": str(port)})

    assert (
        f"OTEL_EXPORTER_PROMETHEUS_PORT={port}: cannot serve Prometheus metrics on "
        f"127.0.0.1:{port} (Address already in use); choose a free port, one per process that "
        "serves metrics"
    ) == problem


def test_the_prometheus_probe_releases_the_port() -> None:
    """After a successful check the port is free again for the SDK to bind at the first call."""
    port = free_port()

    assert None is check_environment({**PROMETHEUS, "OTEL_EXPORTER_PROMETHEUS_PORT": str(port)})
    with listening(port):  # would raise if the probe still held it
        pass


def test_a_prometheus_host_that_does_not_resolve_names_the_host_variable() -> None:
    """Not the port's fault: the message points at OTEL_EXPORTER_PROMETHEUS_HOST."""
    problem = check_environment(
        {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_HOST": "x.invalid"}
    )

    assert problem is not None
    assert problem.startswith("OTEL_EXPORTER_PROMETHEUS_HOST=x.invalid: cannot serve Prometheus")
    assert problem.endswith("check OTEL_EXPORTER_PROMETHEUS_HOST")
