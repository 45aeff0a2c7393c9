"""buttress's own faults before a patched call: logged once, and the call runs unprotected."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from buttress import _activation
from buttress._config_options import HttpOptions
from buttress.integrations import _base, _http


class Injected(RuntimeError):
    pass


def broken(*args: object) -> object:
    raise Injected("lookup")


@pytest.fixture(autouse=True)
def _fresh_reports() -> Iterator[None]:
    _base._faults.clear()
    yield
    _base._faults.clear()


def test_a_failed_settings_lookup_gives_an_unregistered_pipeline_without_policies(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_activation, "policies", broken)
    with caplog.at_level(logging.ERROR, logger="buttress"):
        first = _base.target_pipeline("db.example:5432", "db", lambda exc: True)
        second = _base.target_pipeline("other.example:5432", "db", lambda exc: True)
    for pipeline in (first, second):
        assert pipeline.retry is None
        assert pipeline.breaker is None
        assert pipeline.bulkhead is None
        assert pipeline.kind == "db"
    assert _base.REGISTRY.get("db.example:5432") is None  # the next call tries again
    assert first.call(lambda: 42) == 42
    lines = [r for r in caplog.records if r.name == "buttress"]
    assert len(lines) == 1
    assert "internal error in building the db pipeline" in lines[0].getMessage()
    assert lines[0].exc_info is not None
    assert lines[0].exc_info[0] is Injected


def test_the_settings_mended_the_next_call_is_protected(monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(_activation, "policies", broken)
        assert _base.REGISTRY.get("mend.example:80") is None
        _base.target_pipeline("mend.example:80", "http", lambda exc: True)
    assert _base.REGISTRY.get("mend.example:80") is None
    mended = _base.target_pipeline("mend.example:80", "http", lambda exc: True)
    assert _base.REGISTRY.get("mend.example:80") is mended


def test_a_failed_http_options_lookup_keeps_the_defaults(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_activation, "http_options", broken)
    with caplog.at_level(logging.ERROR, logger="buttress"):
        routes = [_http.Route(f"h{i}.example:80", _base.unprotected("x", "http")) for i in range(3)]
    defaults = HttpOptions()
    assert all(r.statuses == defaults.retry_statuses for r in routes)
    assert routes[0].retryable("GET", None, one_shot=False)
    assert not routes[0].retryable("POST", None, one_shot=False)
    assert len([r for r in caplog.records if r.name == "buttress"]) == 1
