"""A real /metrics endpoint: every semconv metric is exposed under its documented Prometheus name."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from prometheus_client.parser import text_string_to_metric_families

import buttress
from buttress.telemetry import semconv as sc
from buttress.testing import FakeClock


def _load_make_sample() -> ModuleType:
    # tests/ is not a package (import mode "importlib"): load the sample script by path.
    path = Path(__file__).with_name("make_sample.py")
    spec = importlib.util.spec_from_file_location("buttress_make_sample", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


make_sample = _load_make_sample()

EXPORTER_LABELS = frozenset({"otel_scope_name", "otel_scope_version", "otel_scope_schema_url"})


@pytest.fixture(scope="module")
def scraped() -> str:
    """The body of GET /metrics over HTTP after the sample scenario; the server is stopped."""
    buttress.reset_targets()
    with make_sample.instrumented() as registry, make_sample.serving(registry) as url:
        make_sample.scenario(FakeClock(start=0.0))
        text = make_sample.scrape(url)
    buttress.reset_targets()
    return text


def samples(text: str) -> dict[str, list[dict[str, str]]]:
    """Sample name -> the label sets it was exposed with (exporter labels removed)."""
    found: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = {k: v for k, v in sample.labels.items() if k not in EXPORTER_LABELS}
            found.setdefault(sample.name, []).append(labels)
    return found


def value(text: str, name: str, **labels: str) -> float:
    """The value of the one sample *name* with exactly *labels* (plus exporter labels)."""
    matches = [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
        and {k: v for k, v in s.labels.items() if k not in EXPORTER_LABELS} == labels
    ]
    assert 1 == len(matches), (name, labels, matches)
    return matches[0]


def exposed_names(metric: sc.Metric) -> tuple[str, ...]:
    if metric.instrument == "histogram":
        return tuple(f"{metric.prometheus}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
    return (metric.prometheus,)


@pytest.mark.parametrize("metric", sc.METRICS, ids=[m.name for m in sc.METRICS])
def test_every_semconv_metric_is_served_with_its_labels(scraped: str, metric: sc.Metric) -> None:
    """Each metric appears under its Prometheus name(s), every sample with exactly its labels."""
    found = samples(scraped)
    for name in exposed_names(metric):
        assert name in found, f"{name} missing from /metrics"
        extra = {"le"} if name.endswith("_bucket") else set()
        assert {frozenset(metric.labels) | extra} == {frozenset(s) for s in found[name]}


def test_the_documented_prometheus_names_and_labels_are_pinned(scraped: str) -> None:
    """The names and label sets promised in the issue, spelled out: renaming one breaks this."""
    expected = {
        "buttress_calls_total": {"target", "kind", "outcome"},
        "buttress_call_duration_seconds_bucket": {"target", "kind", "outcome", "le"},
        "buttress_call_duration_seconds_sum": {"target", "kind", "outcome"},
        "buttress_call_duration_seconds_count": {"target", "kind", "outcome"},
        "buttress_retries_total": {"target", "kind", "error_type"},
        "buttress_rejections_total": {"target", "kind", "reason"},
        "buttress_circuit_state": {"target", "kind", "state"},
        "buttress_circuit_transitions_total": {"target", "kind", "from_state", "to_state"},
        "buttress_bulkhead_active": {"target", "kind"},
        "buttress_bulkhead_queued": {"target", "kind"},
        "buttress_bulkhead_limit": {"target", "kind"},
        "buttress_bulkhead_queue_wait_seconds_bucket": {"target", "kind", "le"},
        "buttress_bulkhead_queue_wait_seconds_sum": {"target", "kind"},
        "buttress_bulkhead_queue_wait_seconds_count": {"target", "kind"},
        "buttress_cache_requests_total": {"target", "kind", "result"},
    }
    found = samples(scraped)

    assert expected == {
        name: set().union(*(set(labels) for labels in found[name]))
        for name in expected
        if name in found
    }


def test_scraped_values_match_the_scenario(scraped: str) -> None:
    """A few exact values: counts, the breaker's state, a queue wait and a Retry-After delay."""
    http = {"kind": "http"}
    assert 3.0 == value(
        scraped, "buttress_calls_total", target="api.example.com", outcome="success", **http
    )
    assert 1.0 == value(
        scraped, "buttress_calls_total", target="openai/gpt-4o", kind="llm", outcome="fallback"
    )
    assert 0.0 == value(
        scraped, "buttress_calls_total", target="openai/gpt-4o", kind="llm", outcome="failure"
    )
    assert 1.0 == value(
        scraped, "buttress_circuit_state", target="api.example.com", state="open", **http
    )
    assert 0.0 == value(
        scraped, "buttress_circuit_state", target="api.example.com", state="closed", **http
    )
    assert 1.0 == value(
        scraped,
        "buttress_circuit_transitions_total",
        target="api.example.com",
        from_state="closed",
        to_state="open",
        **http,
    )
    assert 1.0 == value(
        scraped, "buttress_cache_requests_total", target="geo", kind="function", result="hit"
    )
    assert pytest.approx(0.05) == value(
        scraped, "buttress_bulkhead_queue_wait_seconds_sum", target="orders-db", kind="db"
    )
    assert 3.0 == value(
        scraped, "buttress_retry_delay_seconds_sum", target="billing", source="server", **http
    )
    assert 1.0 == value(
        scraped, "buttress_timeouts_total", target="geo", kind="function", scope="total"
    )
    assert 1.0 == value(scraped, "buttress_bulkhead_limit", target="orders-db", kind="db")


def test_histogram_buckets_are_the_semconv_boundaries(scraped: str) -> None:
    """The call duration histogram is exposed with DURATION_BUCKETS, not the SDK's ms defaults."""
    bounds = {
        float(labels["le"]) for labels in samples(scraped)[f"{sc.CALL_DURATION.prometheus}_bucket"]
    }

    assert {*sc.DURATION_BUCKETS, float("inf")} == bounds


def test_the_server_is_stopped_after_serving() -> None:
    """serving() closes its socket: the URL refuses connections afterwards."""
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    with make_sample.serving(CollectorRegistry()) as url:
        assert "" == make_sample.scrape(url).strip()

    with pytest.raises(OSError):
        make_sample.scrape(url)


def test_the_committed_sample_lists_every_metric() -> None:
    """docs/sample-metrics.txt (regenerate with make_sample.py) mentions every metric."""
    text = make_sample.SAMPLE.read_text(encoding="utf-8")

    assert [] == [
        name for m in sc.METRICS for name in exposed_names(m) if f"\n{name}{{" not in f"\n{text}"
    ]
    assert all(line.startswith("buttress_") for line in text.splitlines())
