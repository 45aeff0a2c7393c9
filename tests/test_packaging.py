"""What the distribution promises: its public names, its version, its type information, its reprs."""

from __future__ import annotations
import __future__

import importlib.metadata
import importlib.resources
import inspect
import re
import tomllib
import types
import warnings
from pathlib import Path

import pytest

import buttress
import buttress.policies
import buttress.telemetry
import buttress.testing
from buttress import telemetry
from buttress.testing import FakeClock

ROOT = Path(__file__).resolve().parent.parent
PUBLIC_MODULES = [buttress, buttress.policies, buttress.telemetry, buttress.testing]


def public_names(module: types.ModuleType) -> list[str]:
    """The names a user sees on *module*, minus buttress submodules and __future__ flags."""
    names = []
    for name, value in vars(module).items():
        if name.startswith("_"):
            continue
        if isinstance(value, types.ModuleType) and value.__name__.startswith("buttress."):
            continue  # a submodule, bound as an attribute by the import system
        if isinstance(value, __future__._Feature):
            continue  # `from __future__ import annotations`
        names.append(name)
    return sorted(names)


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda m: m.__name__)
def test_all_is_sorted_and_names_only_existing_attributes(module: types.ModuleType) -> None:
    """__all__ is sorted, has no duplicates, and every name in it resolves."""
    exported = list(module.__all__)

    assert sorted(set(exported)) == exported
    assert [] == [name for name in exported if not hasattr(module, name)]


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda m: m.__name__)
def test_every_public_name_is_exported(module: types.ModuleType) -> None:
    """A public-looking attribute is in __all__ (httpx's check): nothing leaks by accident."""
    exported = set(module.__all__)

    assert [] == [name for name in public_names(module) if name not in exported]


def test_star_import_gives_exactly_all() -> None:
    """`from buttress import *` binds the names of __all__ and nothing else."""
    namespace: dict[str, object] = {}
    exec("from buttress import *", namespace)  # noqa: S102 - a fixed, local statement

    assert sorted(buttress.__all__) == sorted(k for k in namespace if k != "__builtins__")


def test_version_comes_from_the_installed_metadata() -> None:
    """buttress.__version__ is the distribution's version and reading it does not warn."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        version = buttress.__version__

    assert importlib.metadata.version("buttress") == version
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", version)


def test_unknown_module_attributes_still_raise_attribute_error() -> None:
    """The module __getattr__ only serves __version__."""
    with pytest.raises(AttributeError, match="__yolo__"):
        buttress.__yolo__  # noqa: B018


def test_py_typed_ships_with_the_package() -> None:
    """The PEP 561 marker is in the package, and the wheel target packages that directory."""
    marker = importlib.resources.files("buttress").joinpath("py.typed")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = config["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]

    assert marker.is_file()
    assert Path(str(marker)).parent == (ROOT / "src" / "buttress").resolve()
    assert ["src/buttress"] == packages
    assert "Typing :: Typed" in config["project"]["classifiers"]


def repr_examples() -> list[object]:
    """One instance of every public class: configs with defaults, states from protect()."""
    clock = FakeClock()
    health_server = buttress.start_health_server(0)
    health_server.stop()
    guard = buttress.protect(
        "repr",
        retry=buttress.Retry(on=ConnectionError),
        breaker=buttress.CircuitBreaker(),
        timeout=buttress.Timeout(),
        bulkhead=buttress.Bulkhead(),
        rate_limit=buttress.RateLimit(),
        cache=buttress.Cache(),
        fallback=buttress.Fallback(value=None),
        clock=clock,
    )
    assert guard.retry is not None
    assert guard.breaker is not None
    common = {"target": "repr", "kind": "function"}
    return [
        # configurations, with their defaults
        buttress.Retry(on=ConnectionError),
        buttress.CircuitBreaker(),
        buttress.Timeout(),
        buttress.Bulkhead(),
        buttress.RateLimit(),
        buttress.Cache(),
        buttress.Fallback(value=None),
        buttress.RetryBudget(),
        buttress.templates.http(),
        buttress.PolicySet(),
        buttress.constant(),
        buttress.exponential(),
        buttress.decorrelated(),
        # runtime state, bound by protect()
        guard,
        guard.options(priority=2),
        guard.retry,
        guard.retry.budget,
        guard.breaker,
        guard.breaker.snapshot(clock.monotonic()),
        guard.breaker.state,
        guard.bulkhead,
        guard.rate_limiter,
        guard.cache,
        guard.fallback,
        clock,
        buttress.SystemClock(),
        buttress.telemetry.OTelTelemetry(),
        # health
        buttress.health(),
        buttress.health().targets[0],
        buttress.HealthRules(),
        buttress.ProbeResult(target="repr", ok=True, error=None, duration=0.0),
        health_server,
        # errors
        buttress.ResilienceError("m", target="t"),
        buttress.RejectedError("m", target="t"),
        buttress.CircuitOpenError("m", target="t"),
        buttress.BulkheadFullError("m", target="t"),
        buttress.RateLimitedError("m", target="t"),
        buttress.RetryBudgetExhaustedError("m", target="t"),
        buttress.TimeoutError("m", target="t", timeout=1.0, scope="total"),
        buttress.ConfigurationError("m"),
        # events
        telemetry.Event(**common),
        telemetry.RetryScheduled(**common, attempt=1, delay=0.5, error_type="ConnectionError"),
        telemetry.RetriesExhausted(**common, attempts=3, error_type="E", reason="attempts"),
        telemetry.CircuitStateChanged(**common, from_state="closed", to_state="open"),
        telemetry.CallRejected(**common, reason="circuit_open"),
        telemetry.BulkheadQueued(**common, priority=0, queued=1),
        telemetry.BulkheadDequeued(**common, priority=0, wait=0.1),
        telemetry.RateLimitWaited(**common, wait=0.1),
        telemetry.TimedOut(**common, scope="attempt", timeout=1.0, cancelled=True),
        telemetry.CacheAccessed(**common, result="hit"),
        telemetry.FallbackUsed(**common, error_type="E"),
    ]


def public_classes() -> set[type]:
    """Every instantiable class exported by the public modules (protocols excluded)."""
    found = set()
    for module in PUBLIC_MODULES:
        for name in module.__all__:
            value = getattr(module, name)
            if inspect.isclass(value) and not getattr(value, "_is_protocol", False):
                found.add(value)
    return found


def test_repr_examples_cover_every_public_class() -> None:
    """A new public class must be added to repr_examples() so its repr gets checked."""
    covered = {type(example) for example in repr_examples()}

    assert [] == sorted(c.__qualname__ for c in public_classes() - covered)


def test_every_public_class_has_a_useful_repr() -> None:
    """No public object prints as <... object at 0x...>, and each repr names what it is."""
    default = re.compile(r" object at 0x[0-9a-f]+>")
    bad = []
    for example in repr_examples():
        text = repr(example)
        names = {type(example).__name__}
        if callable(getattr(example, "delay", None)) and not isinstance(example, type):
            names |= {"constant", "exponential", "decorrelated"}  # back-offs name their factory
        if default.search(text) or not any(name in text for name in names):
            bad.append(text)

    assert [] == bad
