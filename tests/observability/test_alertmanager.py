"""alerts/alertmanager.yml: valid for amtool, routes by severity, inhibits an open breaker's symptoms."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from buttress.observability import _alertmanager as am
from buttress.observability import _prometheus_rules as rules


def _alerts(root) -> list[dict]:
    """The generated alerting rules."""
    groups = yaml.safe_load((root / "alerts" / rules.ALERTS_FILE).read_text())["groups"]
    return [r for g in groups for r in g["rules"]]


def test_config_passes_amtool_check(amtool, root) -> None:
    """`amtool check-config alerts/alertmanager.yml` succeeds."""
    result = subprocess.run(
        [amtool, "check-config", str(root / "alerts" / "alertmanager.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert 0 == result.returncode, result.stdout + result.stderr


def test_every_alert_routes_to_its_severity_receiver(amtool, root) -> None:
    """`amtool config routes test` sends each alert, with its labels, to its severity's receiver."""
    config = str(root / "alerts" / "alertmanager.yml")
    for rule in _alerts(root):
        severity = rule["labels"]["severity"]
        labels = [
            f"alertname={rule['alert']}",
            "target=payments",
            "job=checkout",
            *(f"{k}={v}" for k, v in rule["labels"].items()),
        ]
        expected = am.RECEIVER_BY_SEVERITY[severity]
        result = subprocess.run(
            [
                amtool,
                "config",
                "routes",
                "test",
                f"--config.file={config}",
                f"--verify.receivers={expected}",
                *labels,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

        assert 0 == result.returncode, (rule["alert"], result.stdout, result.stderr)


def test_unknown_alerts_go_to_the_default_receiver(amtool, root) -> None:
    """An alert that is not buttress's lands on the default receiver."""
    result = subprocess.run(
        [
            amtool,
            "config",
            "routes",
            "test",
            f"--config.file={root / 'alerts' / 'alertmanager.yml'}",
            f"--verify.receivers={am.DEFAULT_RECEIVER}",
            "alertname=Other",
            "severity=critical",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert 0 == result.returncode, result.stdout + result.stderr


def test_open_breaker_inhibits_failure_rate_and_retry_storm_of_the_same_target(root) -> None:
    """The inhibition rule's matchers select exactly the intended alerts, per target."""
    config = yaml.safe_load((root / "alerts" / "alertmanager.yml").read_text())
    (rule,) = config["inhibit_rules"]
    names = {r["alert"] for r in _alerts(root)}

    def matching(matchers: list[str]) -> set[str]:
        (matcher,) = matchers
        op, value = re.fullmatch(r'alertname(=~|=)"(.+)"', matcher).groups()
        return {n for n in names if (re.fullmatch(value, n) if op == "=~" else n == value)}

    assert {"ButtressCircuitOpen"} == matching(rule["source_matchers"])
    assert {"ButtressHighFailureRate", "ButtressRetryStorm"} == matching(rule["target_matchers"])
    assert {"target", "job", "kind"} == set(rule["equal"])


def test_routing_groups_by_target_and_limits_repeats(root) -> None:
    """Notifications group by target and repeat at most every couple of hours."""
    route = yaml.safe_load((root / "alerts" / "alertmanager.yml").read_text())["route"]

    assert "target" in route["group_by"]
    assert all(
        r.get("repeat_interval", route["repeat_interval"]) in {"2h", "12h", "24h"}
        for r in route["routes"]
    )


@pytest.mark.parametrize(
    "key",
    ["api_url", "auth_password", "auth_secret", "credentials", "password", "bearer_token", "url"],
)
def test_no_inline_secrets(root, key) -> None:
    """Credentials are *_file paths; webhook URLs are placeholders on example.com."""

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                yield k, v
                yield from walk(v)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    config = yaml.safe_load((root / "alerts" / "alertmanager.yml").read_text())
    for k, v in walk(config):
        if k == key == "url":
            assert ".example.com/" in v
        elif k.endswith(key) and not k.endswith("_file"):
            pytest.fail(f"inline secret {k}")
