"""The generated dashboards validate against Grafana's own JSON schemas (offline, no server)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema (dashboards group) is absent")


def _errors(schemas: Path, plugin: str, definition: str, instance: Any) -> list[str]:
    """Validation errors of *instance* against *definition* of ``<plugin>.jsonschema.json``."""
    schema = json.loads((schemas / f"{plugin}.jsonschema.json").read_text())
    if definition not in schema["definitions"]:
        return []
    schema["$ref"] = f"#/definitions/{definition}"
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}"
        for e in validator.iter_errors(instance)
    ]


def dashboard_errors(schemas: Path, board: dict[str, Any]) -> list[str]:
    """Every schema error of *board*: the dashboard, each panel, each panel's plugin parts."""
    errors = _errors(schemas, "dashboard", "Dashboard", {**board, "panels": []})
    for panel in board["panels"]:
        where = f"panel {panel['id']} ({panel['title']})"
        kind = "RowPanel" if panel["type"] == "row" else "Panel"
        errors += [f"{where}: {e}" for e in _errors(schemas, "dashboard", kind, panel)]
        if panel["type"] == "row":
            continue
        plugin = panel["type"].replace("-", "")
        assert (schemas / f"{plugin}.jsonschema.json").is_file(), plugin
        errors += [
            f"{where} options: {e}"
            for e in _errors(schemas, plugin, "Options", panel.get("options", {}))
        ]
        custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom", {})
        errors += [f"{where} custom: {e}" for e in _errors(schemas, plugin, "FieldConfig", custom)]
        for target in panel.get("targets", []):
            errors += [
                f"{where} target: {e}" for e in _errors(schemas, "prometheus", "Dataquery", target)
            ]
    return errors


@pytest.mark.parametrize(
    "name", ["buttress-overview.json", "buttress-target.json", "buttress-llm.json"]
)
def test_dashboard_validates(schemas, boards, name) -> None:
    """The dashboard, every panel and every panel's options and custom field config are valid."""
    assert [] == dashboard_errors(schemas, boards[name])


def test_validation_catches_a_broken_panel(schemas, boards) -> None:
    """A wrong legend mode and a string schemaVersion are reported (the check is not vacuous)."""
    board = copy.deepcopy(boards["buttress-overview.json"])
    board["schemaVersion"] = "42"
    panel = next(p for p in board["panels"] if p["type"] == "timeseries")
    panel["options"]["legend"]["displayMode"] = "bogus"

    errors = dashboard_errors(schemas, board)

    assert any("schemaVersion" in e for e in errors)
    assert any("bogus" in e for e in errors)
