"""collector-config/ checked statically: no Collector, Grafana or container runtime runs in CI."""

from __future__ import annotations

import json

import pytest
import yaml

# Components of otelcol-contrib (v0.115) this config may use: type names before any "/name".
KNOWN = {
    "receivers": {"otlp", "prometheus", "hostmetrics", "filelog", "jaeger", "zipkin"},
    "processors": {
        "memory_limiter",
        "batch",
        "resource",
        "resourcedetection",
        "attributes",
        "filter",
        "transform",
        "tail_sampling",
        "k8sattributes",
    },
    "exporters": {
        "otlp",
        "otlphttp",
        "prometheus",
        "prometheusremotewrite",
        "debug",
        "file",
        "loki",
        "zipkin",
    },
    "extensions": {"health_check", "pprof", "zpages", "basicauth", "bearertokenauth"},
    "connectors": {"spanmetrics", "servicegraph", "count", "forward"},
}


def _load(root, name: str) -> dict:
    """A YAML file of collector-config/."""
    return yaml.safe_load((root / "collector-config" / name).read_text())


def _port(endpoint: str) -> int:
    """The port of host:port."""
    return int(endpoint.rsplit(":", 1)[1])


@pytest.mark.parametrize(
    "name",
    [
        "otelcol.yaml",
        "prometheus.yml",
        "tempo.yaml",
        "docker-compose.yml",
        "grafana/provisioning/datasources/buttress.yaml",
        "grafana/provisioning/dashboards/buttress.yaml",
    ],
)
def test_yaml_parses(root, name) -> None:
    """Every file is a YAML mapping."""
    assert isinstance(_load(root, name), dict)


def test_collector_components_are_known_and_wired(root) -> None:
    """Every component is an otelcol-contrib one, and pipelines use only declared components."""
    config = _load(root, "otelcol.yaml")
    for section, known in KNOWN.items():
        for name in config.get(section, {}):
            assert name.split("/")[0] in known, (section, name)
    service = config["service"]
    assert set(service["extensions"]) <= set(config["extensions"])
    for pipeline, spec in service["pipelines"].items():
        for section in ("receivers", "processors", "exporters"):
            assert set(spec[section]) <= set(config[section]), (pipeline, section)
        # memory_limiter first, batch after it: the documented order.
        assert "memory_limiter" == spec["processors"][0], pipeline
        assert "batch" in spec["processors"], pipeline


def test_collector_sends_metrics_to_prometheus_and_traces_to_tempo(root) -> None:
    """Metrics leave through the prometheus exporter, traces through OTLP to the tempo service."""
    config = _load(root, "otelcol.yaml")
    pipelines = config["service"]["pipelines"]
    tempo = _load(root, "tempo.yaml")

    assert "prometheus" in pipelines["metrics"]["exporters"]
    (traces,) = pipelines["traces"]["exporters"]
    host, port = config["exporters"][traces]["endpoint"].split(":")
    assert "tempo" == host
    assert _port(tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]) == int(
        port
    )


def test_ports_agree_across_files(root) -> None:
    """Prometheus scrapes the exporter's port; compose publishes OTLP, exporter and UI ports."""
    otel = _load(root, "otelcol.yaml")
    prom = _load(root, "prometheus.yml")
    compose = _load(root, "docker-compose.yml")["services"]
    sources = _load(root, "grafana/provisioning/datasources/buttress.yaml")["datasources"]
    exporter_port = _port(otel["exporters"]["prometheus"]["endpoint"])
    scrape = next(j for j in prom["scrape_configs"] if j["job_name"] == "otel-collector")
    published = {
        service: {int(p.split(":")[0]) for p in (spec.get("ports") or [])}
        for service, spec in compose.items()
    }

    assert [f"otel-collector:{exporter_port}"] == scrape["static_configs"][0]["targets"]
    assert {4317, 4318, exporter_port} <= published["otel-collector"]
    assert {_port(e["endpoint"]) for e in otel["receivers"]["otlp"]["protocols"].values()} <= (
        published["otel-collector"]
    )
    (am_target,) = prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert am_target.startswith("alertmanager:")
    assert _port(am_target) in published["alertmanager"]
    urls = {s["type"]: s["url"] for s in sources}
    assert _port(urls["prometheus"]) in published["prometheus"]
    assert _port(urls["tempo"]) in published["tempo"]
    assert _port(urls["alertmanager"]) in published["alertmanager"]


def test_grafana_provisioning_matches_the_dashboards(root, boards) -> None:
    """The provisioned Prometheus uid is the dashboards' default; dashboards and rules are mounted."""
    sources = _load(root, "grafana/provisioning/datasources/buttress.yaml")["datasources"]
    provider = _load(root, "grafana/provisioning/dashboards/buttress.yaml")["providers"][0]
    compose = _load(root, "docker-compose.yml")["services"]
    prometheus_uid = next(s["uid"] for s in sources if s["type"] == "prometheus")
    for board in boards.values():
        (ds,) = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
        assert prometheus_uid == ds["current"]["value"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in compose["grafana"]["volumes"]}
    assert provider["options"]["path"] == mounts["../dashboards"]
    prom_mounts = {v.split(":")[0]: v.split(":")[1] for v in compose["prometheus"]["volumes"]}
    prom = _load(root, "prometheus.yml")
    assert prom["rule_files"] == [prom_mounts["../alerts"] + "/*.yaml"]
    assert "../alerts/alertmanager.yml" in {
        v.split(":")[0] for v in compose["alertmanager"]["volumes"]
    }
    json.dumps(compose)  # plain data only
