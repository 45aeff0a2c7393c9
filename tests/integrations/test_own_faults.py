"""buttress's own faults before a patched call: logged once, and the call goes on without them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest

from buttress import _activation, _faults, _settings
from buttress._config_options import DbOptions, HttpOptions
from buttress.integrations import _base, _http


class Injected(RuntimeError):
    pass


def broken(*args: object) -> object:
    raise Injected("lookup")


@pytest.fixture(autouse=True)
def _fresh_reports() -> Iterator[None]:
    caches = (_activation._http_options, _activation._db_options, _activation._llm_tokens)
    _faults.forget()
    for cache in caches:
        cache.clear()
    yield
    _faults.forget()
    for cache in caches:
        cache.clear()


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
    monkeypatch.setattr(_settings, "http_options_for", broken)
    with caplog.at_level(logging.ERROR, logger="buttress"):
        routes = [_http.Route(f"h{i}.example:80", _base.unprotected("x", "http")) for i in range(3)]
    defaults = HttpOptions()
    assert all(r.statuses == defaults.retry_statuses for r in routes)
    assert routes[0].retryable("GET", None, one_shot=False)
    assert not routes[0].retryable("POST", None, one_shot=False)
    assert len([r for r in caplog.records if r.name == "buttress"]) == 1


@pytest.mark.parametrize(
    ("lookup", "setting", "default"),
    [
        (_activation.http_options, "http_options_for", HttpOptions()),
        (_activation.db_options, "db_options_for", DbOptions()),
        (_activation.llm_tokens, "llm_tokens_for", None),
        (_activation.llm_fallbacks, "llm_fallbacks_for", ()),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
def test_a_failed_option_lookup_gives_the_default_once_logged_and_not_cached(
    lookup: Callable[[str], object],
    setting: str,
    default: object,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with monkeypatch.context() as patch, caplog.at_level(logging.ERROR, logger="buttress"):
        patch.setattr(_settings, setting, broken)
        assert [lookup(f"t{i}") for i in range(3)] == [default] * 3
        caches = (_activation._http_options, _activation._db_options, _activation._llm_tokens)
        assert not any("t0" in cache for cache in caches)
    lines = [r for r in caplog.records if r.name == "buttress"]
    assert len(lines) == 1
    assert "(target 't0')" in lines[0].getMessage()
    assert lines[0].exc_info is not None
    assert lines[0].exc_info[0] is Injected
    assert lookup("t0") == default  # mended: looked up again, from the real settings
