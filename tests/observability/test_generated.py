"""The committed dashboards, rules and Alertmanager example are exactly what the generators give."""

from __future__ import annotations

import filecmp
import re
from pathlib import Path

import pytest

from buttress import _cli
from buttress.observability import AlertParams, alert_files, dashboard_files
from buttress.telemetry import semconv

pytest.importorskip("grafana_foundation_sdk", reason="the 'dashboards' dependency group is absent")


def _diff(generated: Path, committed: Path) -> list[str]:
    """Files that differ or exist on one side only, relative to the folders."""
    cmp = filecmp.dircmp(generated, committed)
    out = [*cmp.left_only, *cmp.diff_files]
    out += [f"{n} (committed only)" for n in cmp.right_only if n != "tests"]
    for sub, child in cmp.subdirs.items():
        out += [f"{sub}/{n}" for n in (*child.left_only, *child.right_only, *child.diff_files)]
    return out


def test_committed_dashboards_are_up_to_date(tmp_path, root) -> None:
    """`buttress dashboards` regenerates dashboards/ byte for byte (regenerate on drift)."""
    assert 0 == _cli.main(["dashboards", "--out", str(tmp_path)])

    assert [] == _diff(tmp_path, root / "dashboards")


def test_committed_alerts_are_up_to_date(tmp_path, root) -> None:
    """`buttress alerts` regenerates alerts/ (rules, tests, alertmanager.yml) byte for byte."""
    assert 0 == _cli.main(["alerts", "--out", str(tmp_path)])

    assert [] == _diff(tmp_path, root / "alerts")
    assert [] == _diff(tmp_path / "tests", root / "alerts" / "tests")


def test_generation_is_deterministic() -> None:
    """Two runs give identical text."""
    assert dashboard_files() == dashboard_files()
    assert alert_files() == alert_files()


def test_parameters_reach_the_output() -> None:
    """The selector, data source, SLO and thresholds change the generated text."""
    boards = dashboard_files(datasource="mimir", selector='job="checkout"')
    files = alert_files(AlertParams(selector='job="checkout"', slo=0.99, failure_ratio=0.2))

    assert 'buttress_calls_total{job=\\"checkout\\"' in boards["buttress-overview.json"]
    assert '"value": "mimir"' in boards["buttress-overview.json"]
    assert "(14.4 * (1 - 0.99))" in files["buttress-alerts.yaml"]
    assert "> 0.2'" in files["buttress-alerts.yaml"]
    assert 'absent(buttress_calls_total{job="checkout"})' in files["buttress-alerts.yaml"]


@pytest.mark.parametrize("bad", [{"slo": 1.0}, {"slo": 0.0}, {"failure_for": "ten minutes"}])
def test_invalid_parameters_are_refused(bad) -> None:
    """An SLO outside (0, 1) or a malformed duration is a ValueError."""
    with pytest.raises(ValueError, match=next(iter(bad))):
        AlertParams(**bad)


def test_cli_reports_invalid_parameters(tmp_path, capsys) -> None:
    """`buttress alerts --slo 2` exits 2 with the reason on stderr."""
    assert 2 == _cli.main(["alerts", "--slo", "2", "--out", str(tmp_path)])

    assert "slo must be between 0 and 1" in capsys.readouterr().err


def test_every_metric_name_comes_from_semconv(queries, root) -> None:
    """Every buttress_* name in dashboards and rules is a semconv metric (plus histogram suffixes)."""
    known = set()
    for metric in semconv.METRICS:
        known.add(metric.prometheus)
        if metric.instrument == "histogram":
            known.update(metric.prometheus + s for s in ("_bucket", "_sum", "_count"))
    rules = "".join(p.read_text() for p in (root / "alerts").glob("*.yaml"))
    used = set(re.findall(r"\bbuttress_[a-z_]+\b", " ".join(q[3] for q in queries) + rules))
    used = {u for u in used if not u.startswith("buttress_target")}  # recording rules

    assert set() == used - known


def test_panels_have_explicit_ids_legends_and_rate_interval(boards) -> None:
    """Panel ids are unique; every query has a legend and no fixed range window."""
    for name, board in boards.items():
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), name
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                assert target["legendFormat"], (name, panel["title"])
                assert [] == re.findall(r"\[\d+[smhd]\]", target["expr"]), (name, panel["title"])
                assert "[" not in target["expr"] or "$__rate_interval" in target["expr"]


def test_dashboards_have_stable_uids_and_variables(boards) -> None:
    """Uids are fixed; the drill-down has target and kind variables from label_values."""
    assert {"buttress-overview", "buttress-target", "buttress-llm"} == {
        b["uid"] for b in boards.values()
    }
    variables = {v["name"]: v for v in boards["buttress-target.json"]["templating"]["list"]}

    assert {"datasource", "kind", "target"} == set(variables)
    assert variables["target"]["query"].startswith("label_values(buttress_calls_total")
    assert variables["kind"]["query"].startswith("label_values(buttress_calls_total")


def test_panels_link_to_runbook_anchors(boards, root) -> None:
    """Every panel link points at a heading that exists in docs/runbooks.md."""
    headings = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in (root / "docs" / "runbooks.md").read_text().splitlines()
        if line.startswith("#")
    }
    anchors = {
        link["url"].rsplit("#", 1)[1]
        for board in boards.values()
        for panel in board["panels"]
        for link in panel.get("links", [])
    }

    assert anchors
    assert set() == anchors - headings


def test_llm_dashboard_says_tokens_are_not_recorded(boards) -> None:
    """No token metric exists yet, and the LLM view says so in a text panel."""
    texts = [
        p["options"]["content"]
        for p in boards["buttress-llm.json"]["panels"]
        if p["type"] == "text"
    ]

    assert not any("token" in m.name for m in semconv.METRICS)
    assert any("not recorded yet" in t for t in texts)
