"""The target registry: bounded, idempotent, thread-safe, and honest about what it holds."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

import buttress
from buttress._pipeline import Pipeline
from buttress._registry import OVERFLOW_TARGET, REGISTRY, Registry


@pytest.fixture(autouse=True)
def _restore_max_targets() -> Iterator[None]:
    """configure(max_targets=...) is process-wide: put the bound back after each test."""
    saved = REGISTRY.max_targets
    yield
    REGISTRY.set_max_targets(saved)


class Builds:
    """A build function for Registry.get_or_create that counts its calls."""

    def __init__(self) -> None:
        self.labels: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, label: str) -> Pipeline:
        with self._lock:
            self.labels.append(label)
        return Pipeline(label, timeout=buttress.Timeout(), label=label)


def test_protect_folds_names_past_the_bound_into_other(caplog: pytest.LogCaptureFixture) -> None:
    """10,000 distinct names register 50 targets; the rest report as other, with one warning."""
    buttress.configure(max_targets=50)

    with caplog.at_level(logging.WARNING, logger="buttress"):
        guards = [buttress.protect(f"user-{i}") for i in range(10_000)]

    names = buttress.targets()
    assert 50 == len(names)
    assert sorted(f"user-{i}" for i in range(50)) == names
    assert {OVERFLOW_TARGET} == {g.target for g in guards[50:]}
    assert [f"user-{i}" for i in range(50)] == [g.target for g in guards[:50]]
    assert 1 == len([r for r in caplog.records if "max_targets" in r.getMessage()])
    assert 7 == guards[-1].call(lambda: 7)


def test_get_or_create_past_the_bound_reports_as_other_with_state_per_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Past the bound, integrations get a pipeline per name, labelled 'other' and unlisted: the
    same name gets the same pipeline, and the names kept stay bounded."""
    registry = Registry(max_targets=50)
    build = Builds()

    with caplog.at_level(logging.WARNING, logger="buttress"):
        pipelines = [registry.get_or_create(f"host-{i}", build) for i in range(10_000)]
        again = registry.get_or_create("host-9999", build)

    assert 50 == len(registry.names())
    assert OVERFLOW_TARGET not in registry.names()
    assert {OVERFLOW_TARGET} == {p.target for p in pipelines[50:]}
    assert 9_950 == len({id(p) for p in pipelines[50:]})
    assert again is pipelines[-1]
    assert 0 < len(registry._overflow) <= Registry.MAX_OVERFLOW
    assert 1 == len([r for r in caplog.records if "max_targets" in r.getMessage()])


def test_an_overflow_name_admitted_later_gets_a_registered_pipeline() -> None:
    """Raising the bound lets a name that was past it register under its own name."""
    registry = Registry(max_targets=1)
    build = Builds()
    registry.get_or_create("first", build)
    early = registry.get_or_create("second", build)

    registry.set_max_targets(2)
    late = registry.get_or_create("second", build)

    assert (OVERFLOW_TARGET, "second") == (early.target, late.target)
    assert late is registry.get("second")
    assert registry.overflow("second") is None


def test_the_overflow_warning_is_logged_again_after_reset_targets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """reset_targets() forgets that the warning was given, so a new overflow is reported."""
    buttress.configure(max_targets=1)

    with caplog.at_level(logging.WARNING, logger="buttress"):
        for _ in range(2):
            buttress.protect("a")
            buttress.protect("b")
            buttress.protect("c")
            buttress.reset_targets()

    assert 2 == len([r for r in caplog.records if "max_targets" in r.getMessage()])


def test_get_or_create_is_idempotent() -> None:
    """The second request for a name returns the first pipeline without building again."""
    registry = Registry()
    build = Builds()

    first = registry.get_or_create("db", build)
    second = registry.get_or_create("db", build)

    assert first is second
    assert ["db"] == build.labels
    assert first is registry.get("db")


def test_get_or_create_is_thread_safe() -> None:
    """16 threads racing on one name all get the same pipeline, built once."""
    registry = Registry()
    build = Builds()
    barrier = threading.Barrier(16)
    results: list[Pipeline] = []
    lock = threading.Lock()

    def race() -> None:
        barrier.wait(5)
        pipeline = registry.get_or_create("shared", build)
        with lock:
            results.append(pipeline)

    threads = [threading.Thread(target=race) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)

    assert 16 == len(results)
    assert 1 == len({id(p) for p in results})
    assert ["shared"] == build.labels


def test_protect_is_thread_safe_for_equal_policies() -> None:
    """16 threads protecting one name with equal policies get one registered pipeline."""
    barrier = threading.Barrier(16)
    results: list[buttress.Pipeline] = []
    lock = threading.Lock()

    def race() -> None:
        barrier.wait(5)
        guard = buttress.protect("svc", retry=buttress.Retry(on=ConnectionError, budget=None))
        with lock:
            results.append(guard)

    threads = [threading.Thread(target=race) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)

    assert 16 == len(results)
    assert {id(buttress.get_target("svc"))} == {id(g) for g in results}


def test_reset_targets_forgets_every_target() -> None:
    """After reset_targets() nothing is registered and a name can be protected differently."""
    buttress.protect("a", timeout=buttress.Timeout())
    buttress.protect("b", timeout=buttress.Timeout())

    buttress.reset_targets()

    assert [] == buttress.targets()
    assert buttress.get_target("a") is None
    fresh = buttress.protect("a", timeout=buttress.Timeout(total=5.0))
    assert fresh is buttress.get_target("a")


def test_targets_are_sorted() -> None:
    """targets() lists names sorted, whatever the registration order."""
    for name in ("zeta", "alpha", "Mid", "beta"):
        buttress.protect(name)

    assert ["Mid", "alpha", "beta", "zeta"] == buttress.targets()


def test_get_target_returns_the_registered_pipeline_or_none() -> None:
    """get_target() finds a protected name and returns None for an unknown one."""
    guard = buttress.protect("known")

    assert guard is buttress.get_target("known")
    assert buttress.get_target("unknown") is None


def test_names_folded_into_other_are_not_listed_or_found() -> None:
    """A pipeline past the bound works but neither targets() nor get_target() returns it."""
    buttress.configure(max_targets=1)
    buttress.protect("first")
    late = buttress.protect("late")

    assert ["first"] == buttress.targets()
    assert buttress.get_target("late") is None
    assert OVERFLOW_TARGET == late.target


def test_raising_the_bound_admits_new_names_again() -> None:
    """configure(max_targets=...) upwards lets later names register under their own name."""
    buttress.configure(max_targets=1)
    buttress.protect("one")
    buttress.configure(max_targets=2)

    two = buttress.protect("two")

    assert ("two", ["one", "two"]) == (two.target, buttress.targets())


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "10"])
def test_configure_refuses_a_bad_max_targets_and_names_it(value: object) -> None:
    """configure(max_targets=0) and other non-positive or non-int values raise, naming the key."""
    before = REGISTRY.max_targets

    with pytest.raises(buttress.ConfigurationError, match="max_targets"):
        buttress.configure(max_targets=value)  # type: ignore[arg-type]
    assert before == REGISTRY.max_targets


def test_set_max_targets_refuses_zero() -> None:
    """The registry itself validates its bound too."""
    registry = Registry(max_targets=7)

    with pytest.raises(buttress.ConfigurationError, match="max_targets"):
        registry.set_max_targets(0)
    assert 7 == registry.max_targets
