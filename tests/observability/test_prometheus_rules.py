"""Every PromQL expression parses (promtool), and the promtool unit tests cover every alert."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from buttress.observability import _prometheus_rules as rules


def _run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a tool; capture its output."""
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=120, check=False)


def test_rule_files_pass_promtool_check(promtool, root) -> None:
    """`promtool check rules alerts/*.yaml` succeeds."""
    files = sorted(str(p) for p in (root / "alerts").glob("*.yaml"))
    result = _run(promtool, "check", "rules", *files)

    assert 2 == len(files)
    assert 0 == result.returncode, result.stdout + result.stderr


def test_dashboard_queries_parse(promtool, queries, substitute, tmp_path) -> None:
    """Every dashboard query, variables substituted, parses as a recording rule."""
    rule_file = tmp_path / "dashboard-queries.yaml"
    rule_file.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "dashboards",
                        "rules": [
                            {"record": f"dashboard:query_{i}:check", "expr": substitute(q[3])}
                            for i, q in enumerate(queries)
                        ],
                    }
                ]
            }
        )
    )
    result = _run(promtool, "check", "rules", str(rule_file))

    assert len(queries) > 40
    assert 0 == result.returncode, result.stdout + result.stderr


def test_promtool_unit_tests_pass(promtool, root) -> None:
    """`promtool test rules alerts/tests/*.yaml` succeeds."""
    tests = sorted(str(p.relative_to(root)) for p in (root / "alerts" / "tests").glob("*.yaml"))
    result = _run(promtool, "test", "rules", *tests, cwd=root)

    assert tests
    assert 0 == result.returncode, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case(root) -> None:
    """For every alert name, some test case expects it to fire and another expects silence."""
    alert_names = {
        rule["alert"]
        for group in yaml.safe_load((root / "alerts" / rules.ALERTS_FILE).read_text())["groups"]
        for rule in group["rules"]
    }
    cases = yaml.safe_load((root / "alerts" / rules.TESTS_FILE).read_text())["tests"]
    fires, quiet = set(), set()
    for case in cases:
        for check in case["alert_rule_test"]:
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])

    assert 9 == len(alert_names)
    assert alert_names == fires
    assert alert_names == quiet


def test_burn_rate_alerts_cover_the_workbook_windows(root) -> None:
    """Page on 1h&5m at 14.4x and 6h&30m at 6x, ticket on 3d&6h at 1x, from recording rules."""
    groups = yaml.safe_load((root / "alerts" / rules.ALERTS_FILE).read_text())["groups"]
    slo = [r for g in groups for r in g["rules"] if r["alert"] == "ButtressErrorBudgetBurn"]
    records = {
        r["record"]
        for g in yaml.safe_load((root / "alerts" / rules.RULES_FILE).read_text())["groups"]
        for r in g["rules"]
    }
    got = {
        (
            r["labels"]["long_window"],
            r["labels"]["short_window"],
            r["labels"]["severity"],
            re.search(r"\(([\d.]+) \*", r["expr"]).group(1),
        )
        for r in slo
    }

    assert {
        ("1h", "5m", "critical", "14.4"),
        ("6h", "30m", "critical", "6"),
        ("3d", "6h", "warning", "1"),
    } == got
    assert {f"buttress_target:error_ratio:rate{w}" for w in ("5m", "30m", "1h", "6h", "3d")} == (
        records
    )
    for rule in slo:
        assert set(re.findall(r"buttress_target:error_ratio:rate\w+", rule["expr"])) <= records


def test_alerts_follow_mixin_conventions(root) -> None:
    """Buttress prefix, critical/warning severity, summary/description/runbook_url annotations."""
    headings = {
        line.lstrip("#").strip().lower()
        for line in (root / "docs" / "runbooks.md").read_text().splitlines()
        if line.startswith("#")
    }
    groups = yaml.safe_load((root / "alerts" / rules.ALERTS_FILE).read_text())["groups"]
    for rule in (r for g in groups for r in g["rules"]):
        assert re.fullmatch(r"Buttress[A-Z][A-Za-z]+", rule["alert"])
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert {"summary", "description", "runbook_url"} == set(rule["annotations"])
        assert rule["annotations"]["runbook_url"].endswith("#" + rule["alert"].lower())
        assert rule["alert"].lower() in headings
