"""
Fuzzing with Hypothesis: bad values anywhere give a ConfigurationError, never a crash.

Every family feeds wrong types, non-finite and huge numbers, unhashable values, broken
``__repr__`` methods and secret-looking strings to one way configuration enters buttress:

- every parameter of every policy constructor, of ``protect`` and of the few other public
  functions that take settings (a value accepted must then build a pipeline without a large
  allocation and run calls without an error of buttress's own);
- every key of the configuration file, through a real TOML file and ``load_settings``;
- every ``BUTTRESS_*`` variable (and the side features' port variables);
- ``buttress config check`` on fuzzed files (in-process for the count, and as a real command);
- start-up under ``BUTTRESS_STRICT=true`` with bad values (exit 2, one line) and without it
  (the app runs, one line of error);
- ``Retry-After`` and rate-limit headers through the real parsers: never an exception, and the
  delay is ``None`` or a finite number of seconds >= 0.

A crash is any exception but the documented ones. Crashes are counted rather than raised, so a
run reports every family's figures, then fails if any family crashed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import email.utils
import inspect
import io
import math
import os
import subprocess
import sys
import tempfile
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from requests.structures import CaseInsensitiveDict
from tests.reliability.figures import record, scale

import buttress
from buttress import ConfigurationError, telemetry
from buttress._cli import main as cli_main
from buttress._config_file import KINDS, LLM_TOKEN_KEYS, POLICIES, settable_keys
from buttress._config_layering import BUDGET_FIELDS
from buttress._config_options import DbOptions, HttpOptions
from buttress._http_signals import parse_retry_after, server_delay
from buttress._registry import REGISTRY
from buttress._settings import (
    db_options_for,
    http_options_for,
    llm_fallbacks_for,
    llm_tokens_for,
    load_settings,
    policies_for,
)
from buttress._settings_env import (
    ENV_BREAKER_FAILURE_RATE,
    ENV_BREAKER_OPEN_DURATION,
    ENV_BULKHEAD_MAX_CONCURRENT,
    ENV_DISABLED,
    ENV_ENABLED,
    ENV_INSTRUMENTATIONS,
    ENV_MAX_TARGETS,
    ENV_MODE,
    ENV_PROMETHEUS_PORT,
    ENV_RETRY_ATTEMPTS,
    ENV_SAMPLES,
    ENV_STRICT,
    ENV_TIMEOUT_ATTEMPT,
    ENV_TIMEOUT_TOTAL,
    read_health_port,
    read_port,
)
from buttress.integrations import instrument as instrument_integrations
from buttress.integrations import uninstrument_all
from buttress.integrations._llm_signals import llm_server_delay, parse_duration
from buttress.testing import FakeClock

PART = "fuzzing"
ROOT = Path(__file__).resolve().parents[2]
SECRET = "sk-live-9f8e7d6c5b4a39281706f5e4d3c2"
"""A canary credential: no message may contain it, whatever value carries it."""
EARLIEST = dt.datetime(1, 1, 1)  # noqa: DTZ001 - Hypothesis takes naive bounds
LATEST = dt.datetime(9999, 12, 31)  # noqa: DTZ001
PEAK_BOUND = 16 * 2**20
"""Bytes a pipeline built from an accepted value may allocate (a bulkhead of 10**9 slots...)."""

FUZZ = settings(
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    max_examples=1,  # each family sets its own count
)


# -- the values -----------------------------------------------------------------------------


class BrokenRepr:
    """A value whose repr raises: a message that shows it must not crash."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class Unhashable:
    """A value that cannot be a dictionary key or a set member."""

    __hash__ = None  # type: ignore[assignment]


def zero(*_args: object, **_kwargs: object) -> int:
    """A callable that returns a value every callable parameter can live with."""
    return 0


HUGE = [10**9 + 1, 2**31, 2**63, 10**18, 10**400, -(10**400), 10**5000]
SPECIAL_FLOATS = [0.0, -0.0, 5e-324, 1e-308, 1e308, 1e15, math.inf, -math.inf, math.nan]
ODD = [
    Decimal(1),
    Decimal("NaN"),
    Fraction(1, 3),
    complex(1, 1),
    ValueError,
    (ValueError,),
    (),
    BrokenRepr(),
    Unhashable(),
    object(),
    [0] * 100_000,
    {"a": [1]},
    zero,
]
STRINGS = [
    "",
    "none",
    "count",
    "time",
    "full",
    "exponential",
    "reraise",
    SECRET,
    f"Bearer {SECRET}",
    "x" * 300,
    "١٢٣",
]

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.sampled_from([0, 1, 2, 3, -1, 10**8, 10**9, *HUGE]),
    st.floats(),
    st.sampled_from(SPECIAL_FLOATS),
    st.text(max_size=12),
    st.sampled_from(STRINGS),
    st.binary(max_size=6),
    st.lists(st.integers(), max_size=3),
    st.lists(st.text(max_size=3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.frozensets(st.integers(), max_size=2),
    st.sampled_from(ODD),
)


@dataclasses.dataclass
class Tally:
    """What one family tried: inputs, how many were rejected or accepted, and the crashes."""

    family: str
    tried: int = 0
    rejected: int = 0
    accepted: int = 0
    crashes: list[str] = dataclasses.field(default_factory=list)

    def crash(self, where: str, error: BaseException | str) -> None:
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self.crashes.append(f"{where}: {text}"[:300])

    def report(self) -> None:
        record(
            PART,
            f"{self.family}: bad inputs tried (rejected / accepted)",
            f"{self.tried} ({self.rejected} / {self.accepted})",
        )
        record(PART, f"{self.family}: crashes", len(self.crashes), "0", not self.crashes)

    def check(self) -> None:
        self.report()
        shown = "\n".join(self.crashes[:20])
        assert not self.crashes, f"{len(self.crashes)} crashes, first ones:\n{shown}"


def one_line_message(error: BaseException) -> str | None:
    """What is wrong with *error*'s message, or ``None``: one line, no canary."""
    try:
        text = str(error)
    except Exception as exc:  # noqa: BLE001 - that is the finding
        return f"str() of the error failed: {type(exc).__name__}"
    if "\n" in text:
        return f"message on several lines: {text[:120]!r}"
    if SECRET in text:
        return "message shows the canary secret"
    return None


# -- calls through an accepted configuration -------------------------------------------------

EXPECTED = (ConnectionError, buttress.ResilienceError, buttress.TimeoutError)


def exercise(pipeline: buttress.Pipeline) -> None:
    """One failing-then-succeeding call, sync then async; only documented outcomes may follow."""
    failures = [2]

    def flaky() -> int:
        if failures[0]:
            failures[0] -= 1
            raise ConnectionError("fuzz")
        return 1

    async def aflaky() -> int:
        return flaky()

    with contextlib.suppress(*EXPECTED):
        pipeline.call(flaky)
    failures[0] = 2
    with contextlib.suppress(*EXPECTED):
        asyncio.run(pipeline.acall(aflaky))


def protected(**kwargs: Any) -> buttress.Pipeline:
    """``protect`` with a fake clock, measuring what building the pipeline allocates."""
    tracemalloc.start()
    try:
        pipeline = buttress.protect("fuzz", clock=FakeClock(), replace=True, **kwargs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    if peak > PEAK_BOUND:
        raise AssertionError(f"building the pipeline allocated {peak / 2**20:.0f} MiB")
    return pipeline


# -- family 1: constructor and function parameters ---------------------------------------------


def _init_fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def _use_policy(slot: str) -> Callable[[Any], None]:
    def use(policy: Any) -> None:
        exercise(protected(**{slot: policy}))

    return use


def _use_backoff(backoff: Any) -> None:
    exercise(protected(retry=buttress.Retry(on=ConnectionError, backoff=backoff)))


def _use_budget(budget: Any) -> None:
    exercise(protected(retry=buttress.Retry(on=ConnectionError, budget=budget)))


def _use_rules(rules: Any) -> None:
    buttress.protect("fuzz", retry=buttress.Retry(on=ConnectionError)).call(zero)
    buttress.health(rules=rules)


def _nothing(_value: Any) -> None:
    pass


# (label, parameter, make(value) -> object, use(object))
PARAMETERS: list[tuple[str, str, Callable[[Any], Any], Callable[[Any], None]]] = []


def _add(label: str, names: list[str], make: Callable[[str, Any], Any], use: Any) -> None:
    for name in names:
        PARAMETERS.append((label, name, lambda v, n=name: make(n, v), use))


_add(
    "Retry",
    _init_fields(buttress.Retry),
    lambda n, v: buttress.Retry(**{"on": ConnectionError, n: v}),
    _use_policy("retry"),
)
for _cls, _slot in (
    (buttress.CircuitBreaker, "breaker"),
    (buttress.Timeout, "timeout"),
    (buttress.Bulkhead, "bulkhead"),
    (buttress.RateLimit, "rate_limit"),
    (buttress.Cache, "cache"),
):
    _add(_cls.__name__, _init_fields(_cls), lambda n, v, c=_cls: c(**{n: v}), _use_policy(_slot))
_add(
    "CircuitBreaker(window='time')",
    ["window_size"],
    lambda n, v: buttress.CircuitBreaker(window="time", **{n: v}),
    _use_policy("breaker"),
)
_add(
    "Fallback",
    _init_fields(buttress.Fallback),
    lambda n, v: buttress.Fallback(**({n: v} if n != "on" else {"value": 0, "on": v})),
    _use_policy("fallback"),
)
_add(
    "RateLimit.per_minute",
    ["n"],
    lambda _n, v: buttress.RateLimit.per_minute(v),
    _use_policy("rate_limit"),
)
for _factory in (buttress.exponential, buttress.constant, buttress.decorrelated):
    _add(
        _factory.__name__,
        list(inspect.signature(_factory).parameters),
        lambda n, v, f=_factory: f(**{n: v}),
        _use_backoff,
    )
_add(
    "RetryBudget",
    _init_fields(buttress.RetryBudget),
    lambda n, v: buttress.RetryBudget(**{n: v}),
    _use_budget,
)
_add(
    "HealthRules",
    _init_fields(buttress.HealthRules),
    lambda n, v: buttress.HealthRules(**{n: v}),
    _use_rules,
)
_add("HttpOptions", _init_fields(HttpOptions), lambda n, v: HttpOptions(**{n: v}), _nothing)
_add("DbOptions", _init_fields(DbOptions), lambda n, v: DbOptions(**{n: v}), _nothing)


def _protect_with(name: str, value: Any) -> buttress.Pipeline:
    policies = {"retry": buttress.Retry(on=ConnectionError), "bulkhead": buttress.Bulkhead()}
    if name == "name":
        return buttress.protect(value, **policies)
    kwargs = {"clock": FakeClock(), **policies, name: value}
    return buttress.protect("fuzz", **kwargs)


def _use_pipeline(pipeline: buttress.Pipeline) -> None:
    exercise(pipeline)
    if pipeline.probe is not None:
        buttress.probe(pipeline.name)
    buttress.health()


_add(
    "protect",
    [p for p in inspect.signature(buttress.protect).parameters if p not in POLICIES],
    _protect_with,
    _use_pipeline,
)


def _options(name: str, value: Any) -> Any:
    pipeline = buttress.protect("fuzz-options", cache=buttress.Cache())
    return pipeline.options(**{name: value})


_add("Pipeline.options", ["priority", "cache_key"], _options, lambda o: o.call(zero))


def _configure(name: str, value: Any) -> None:
    saved = REGISTRY.max_targets
    try:
        buttress.configure(**{name: value})
    finally:
        REGISTRY.set_max_targets(saved)


_add("configure", ["max_targets", "propagate_deadlines"], _configure, _nothing)
_add("health", ["window", "rules"], lambda n, v: buttress.health(**{n: v}), _nothing)


def _health_server(name: str, value: Any) -> None:
    # host: no str from here, which would be looked up in DNS; admin_token: any value.
    kwargs: dict[str, Any] = {"port": 0, "host": "127.0.0.1", name: value}
    if name == "port" and isinstance(value, int) and 0 < value < 65536:
        kwargs["port"] = 0  # a fixed port could be anyone's
    with contextlib.suppress(OSError):  # documented: the address cannot be bound
        buttress.start_health_server(**kwargs).stop()


_add("start_health_server", ["port", "host", "admin_token"], _health_server, _nothing)


def _hook(_name: str, value: Any) -> None:
    remove = telemetry.add_hook(value)
    try:
        exercise(protected(retry=buttress.Retry(on=ConnectionError)))
    finally:
        remove()


def _set_hooks(_name: str, value: Any) -> None:
    saved = telemetry.get_hooks()
    try:
        telemetry.set_hooks(value)
        exercise(protected(retry=buttress.Retry(on=ConnectionError)))
    finally:
        telemetry.set_hooks(saved)


def _instrument_telemetry(_name: str, value: Any) -> None:
    try:
        telemetry.instrument(samples_per_second=value)
        exercise(protected(retry=buttress.Retry(on=ConnectionError)))
    finally:
        telemetry.uninstrument()


def _set_limit(_name: str, value: Any) -> None:
    bulkhead = protected(bulkhead=buttress.Bulkhead()).bulkhead
    assert bulkhead is not None
    bulkhead.set_limit(value)


def _integrations(_name: str, value: Any) -> None:
    try:
        instrument_integrations(value)
    finally:
        uninstrument_all()


_add("telemetry.add_hook", ["hook"], _hook, _nothing)
_add("telemetry.set_hooks", ["hooks"], _set_hooks, _nothing)
_add("telemetry.instrument", ["samples_per_second"], _instrument_telemetry, _nothing)
_add("BulkheadState.set_limit", ["limit"], _set_limit, _nothing)
_add("integrations.instrument", ["names"], _integrations, _nothing)


def _host_value(name: str, value: Any) -> bool:
    return not (name == "host" and isinstance(value, str))


def fuzz_parameter(
    tally: Tally,
    label: str,
    name: str,
    make: Callable[[Any], Any],
    use: Callable[[Any], None],
    examples: int,
) -> None:
    """Feed *examples* values to one parameter, counting into *tally*."""

    @settings(FUZZ, max_examples=examples)
    @given(value=VALUES)
    def one(value: Any) -> None:
        if not _host_value(name, value):
            return
        tally.tried += 1
        where = f"{label}({name}={type(value).__name__})"
        try:
            made = make(value)
        except ConfigurationError as error:
            tally.rejected += 1
            problem = one_line_message(error)
            named = name in str(error) or label == "integrations.instrument"
            if problem is None and not named:
                problem = f"the message does not name {name!r}: {str(error)[:120]}"
            if problem is not None:
                tally.crash(where, problem)
            return
        except Exception as error:  # noqa: BLE001 - a crash, counted
            tally.crash(where + " at construction", error)
            return
        tally.accepted += 1
        try:
            use(made)
        except ConfigurationError as error:
            tally.crash(where + " accepted, then failed later", error)
        except Exception as error:  # noqa: BLE001 - a crash, counted
            tally.crash(where + " accepted, then", error)
        finally:
            buttress.reset_targets()

    one()


@pytest.mark.timeout(scale(120, 1800))
def test_every_constructor_parameter_rejects_bad_values_at_construction() -> None:
    """Each parameter: ConfigurationError naming it, or a value that builds and runs cleanly."""
    tally = Tally("constructor parameters")
    for label, name, make, use in PARAMETERS:
        fuzz_parameter(tally, label, name, make, use, scale(8, 300))
    record(PART, "constructor parameters covered", len(PARAMETERS))
    tally.check()


# -- the TOML file ------------------------------------------------------------------------------


def toml_key(key: str) -> str:
    return toml_string(key)


def toml_string(text: str) -> str:
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    """*value* written as TOML (the writer is checked by tomllib reading it back)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        text = repr(value)
        return text if any(c in text for c in ".e") else text + ".0"
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


TOML_SCALARS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, 1, -1, 10**9, 10**9 + 1, 100_001, 3_601, 2**63 - 1, -(2**63)]),
    st.floats(),
    st.sampled_from([math.inf, -math.inf, math.nan, 1e308, 5e-324, 3600.5]),
    st.text(max_size=15),
    st.sampled_from(
        [
            "none",
            "exponential",
            "constant",
            "decorrelated",
            "count",
            "time",
            "response",
            "error",
            "GET",
            "full",
            "raise",
            "openai/gpt-4o",
            SECRET,
            f"Bearer {SECRET}",
        ]
    ),
    st.booleans(),
    st.datetimes(min_value=EARLIEST, max_value=LATEST),
    st.dates(),
    st.times(),
)
TOML_VALUES = st.one_of(
    TOML_SCALARS,
    st.lists(TOML_SCALARS, max_size=3),
    st.lists(st.lists(st.integers(), max_size=2), max_size=2),
    st.dictionaries(st.sampled_from(["ratio", "window", "a", "backoff"]), TOML_SCALARS, max_size=2),
)


def config_keys() -> list[tuple[str, ...]]:
    """Every key a file may set, as (section, ..., key); a bare policy stands for `policy = v`."""
    keys: list[tuple[str, ...]] = []
    for policy in POLICIES:
        keys.append((policy,))
        keys += [(policy, key) for key in settable_keys(policy)]
    keys += [("retry", "budget", sub) for sub in BUDGET_FIELDS]
    keys += [("http", f.name) for f in dataclasses.fields(HttpOptions)]
    keys += [("db", f.name) for f in dataclasses.fields(DbOptions)]
    keys += [("llm", key) for key in ("fallbacks", *LLM_TOKEN_KEYS)]
    return keys


KEYS = config_keys()
TABLES = ["defaults.http", "defaults.db", "defaults.llm", "defaults.function", 'targets."api:443"']


def table_for(key: tuple[str, ...], pick: int) -> str:
    # The tables where the key is accepted, so that its value is what gets checked.
    fitting = {
        "http": ["defaults.http", 'targets."api:443"'],
        "db": ["defaults.db", 'targets."api:443"'],
        "llm": ["defaults.llm", 'targets."api:443"'],
    }.get(key[0], TABLES)
    if key == ("llm", "fallbacks"):
        fitting = ['targets."api:443"']
    return fitting[pick % len(fitting)]


def toml_file(entries: list[tuple[str, tuple[str, ...], Any]]) -> str:
    """A file setting each (table, key path, value)."""
    lines = []
    for table, key, value in entries:
        lines.append(f"[{table}]")
        lines.append(".".join(key) + " = " + toml_value(value))
    return "\n".join(lines) + "\n"


ENTRIES = st.lists(
    st.tuples(st.sampled_from(KEYS), st.integers(min_value=0, max_value=4), TOML_VALUES),
    min_size=1,
    max_size=3,
    unique_by=lambda e: e[0],
).map(lambda es: [(table_for(key, pick), key, value) for key, pick, value in es])


def use_settings(settings_: Any) -> None:
    """Everything an integration asks of loaded settings, and a call through each kind."""
    for kind in KINDS:
        policies = policies_for(settings_, "api:443", kind)
        pipeline = buttress.protect(
            "fuzz", template=policies, kind=kind, clock=FakeClock(), replace=True
        )
        exercise(pipeline)
    http_options_for(settings_, "api:443")
    db_options_for(settings_, "api:443")
    llm_tokens_for(settings_, "api:443")
    llm_fallbacks_for(settings_, "api:443")


@pytest.mark.timeout(scale(120, 1800))
def test_every_configuration_key_through_the_toml_file() -> None:
    """Each key of a real file: a ConfigurationError naming the key path, or settings that work."""
    tally = Tally("configuration file keys")
    written = [0]
    with tempfile.TemporaryDirectory(prefix="buttress-fuzz-") as folder:
        path = Path(folder) / "buttress.toml"

        @settings(FUZZ, max_examples=scale(500, 20_000))
        @given(entries=ENTRIES)
        def one(entries: list[tuple[str, tuple[str, ...], Any]]) -> None:
            text = toml_file(entries)
            path.write_text(text, encoding="utf-8")
            written[0] += 1
            tally.tried += 1
            where = ", ".join(f"[{t}] {'.'.join(k)}" for t, k, _ in entries)
            try:
                loaded = load_settings({"BUTTRESS_CONFIG": str(path)})
            except ConfigurationError as error:
                tally.rejected += 1
                message = str(error)
                problem = one_line_message(error)
                if problem is None and str(path) not in message:
                    problem = f"the message does not name the file: {message[:120]}"
                if problem is None and len(entries) == 1 and entries[0][1][-1] not in message:
                    problem = f"the message does not name the key: {message[:160]}"
                if problem is not None:
                    tally.crash(where, problem)
                return
            except Exception as error:  # noqa: BLE001 - a crash, counted
                tally.crash(where, error)
                return
            tally.accepted += 1
            try:
                use_settings(loaded)
            except Exception as error:  # noqa: BLE001 - a crash, counted (even a late ConfigurationError)
                tally.crash(where + " accepted, then", error)
            finally:
                buttress.reset_targets()

        one()
    record(PART, "configuration files written", written[0])
    tally.check()


# -- environment variables ---------------------------------------------------------------------

POLICY_VARIABLES = [
    ENV_ENABLED,
    ENV_MODE,
    ENV_INSTRUMENTATIONS,
    ENV_DISABLED,
    ENV_STRICT,
    ENV_SAMPLES,
    ENV_RETRY_ATTEMPTS,
    ENV_TIMEOUT_ATTEMPT,
    ENV_TIMEOUT_TOTAL,
    ENV_BREAKER_FAILURE_RATE,
    ENV_BREAKER_OPEN_DURATION,
    ENV_BULKHEAD_MAX_CONCURRENT,
    ENV_MAX_TARGETS,
]

ENV_TEXT = st.one_of(
    st.text(max_size=20).filter(lambda s: "\x00" not in s),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats().map(repr),
    st.sampled_from(
        [
            "9" * 5000,
            "9" * 30,
            "1e400",
            "-1e400",
            "nan",
            "inf",
            "-0",
            " 1 ",
            "0x10",
            "1_000",
            "١٢",
            "true",
            "TRUE",
            "none",
            "observe",
            "requests,httpx",
            "requests,,nope",
            "1000000001",
            "8081-8084",
            "65536",
            SECRET,
            f"Bearer {SECRET}",
            f"8081 {SECRET}",
        ]
    ),
)


@pytest.mark.timeout(scale(120, 1800))
def test_every_environment_variable() -> None:
    """Each BUTTRESS_* variable: a ConfigurationError naming it, or settings that work."""
    tally = Tally("environment variables")

    @settings(FUZZ, max_examples=scale(400, 20_000))
    @given(
        given_vars=st.dictionaries(
            st.sampled_from(POLICY_VARIABLES), ENV_TEXT, min_size=1, max_size=3
        ),
        port=ENV_TEXT,
    )
    def one(given_vars: dict[str, str], port: str) -> None:
        tally.tried += 1
        where = ", ".join(sorted(given_vars))
        try:
            loaded = load_settings(given_vars)
        except ConfigurationError as error:
            tally.rejected += 1
            message = str(error)
            problem = one_line_message(error)
            if problem is None and not any(name in message for name in given_vars):
                problem = f"the message names no variable: {message[:120]}"
            if problem is not None:
                tally.crash(where, problem)
        except Exception as error:  # noqa: BLE001 - a crash, counted
            tally.crash(where, error)
        else:
            tally.accepted += 1
            try:
                use_settings(loaded)
            except Exception as error:  # noqa: BLE001 - a crash, counted
                tally.crash(where + " accepted, then", error)
            finally:
                buttress.reset_targets()
        # The side features' ports are read apart (a bad one turns that feature off only).
        for read in (
            lambda: read_health_port({"BUTTRESS_HEALTH_PORT": port}),
            lambda: read_port({ENV_PROMETHEUS_PORT: port}, ENV_PROMETHEUS_PORT, 9464),
        ):
            tally.tried += 1
            try:
                read()
            except ConfigurationError as error:
                tally.rejected += 1
                problem = one_line_message(error)
                if problem is not None:
                    tally.crash("port variable", problem)
            except Exception as error:  # noqa: BLE001 - a crash, counted
                tally.crash("port variable", error)
            else:
                tally.accepted += 1

    one()
    tally.check()


# -- buttress config check ---------------------------------------------------------------------

VALID_FILE = """\
[defaults.http]
retry = { attempts = 4, backoff = "exponential", backoff_initial = 0.1 }
breaker = { failure_rate_threshold = 0.5, window = "time", window_size = 60 }
http = { retry_statuses = [429, 503] }

[targets."api.example.com:443"]
bulkhead = { max_concurrent = 10 }
rate_limit = { rate = 5.0 }
llm = { fallbacks = ["openai/gpt-4o-mini"] }
"""

MUTATIONS = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=len(VALID_FILE)), st.binary(min_size=0, max_size=4)
    ),
    min_size=1,
    max_size=4,
)


def mutated(changes: list[tuple[int, bytes]]) -> bytes:
    """The valid file with bytes replaced or inserted at the given offsets."""
    data = bytearray(VALID_FILE.encode())
    for offset, blob in changes:
        at = min(offset, len(data))
        data[at : at + (1 if blob else 0)] = blob
    return bytes(data)


SPECIAL_FILES: list[bytes] = [
    b"[defaults.http]\nretry.backoff = []\n",
    b"[defaults.http]\nretry.backoff = {}\n",
    b'[targets."a"]\nbulkhead.max_concurrent = 9223372036854775807\n',
    b'[defaults.function]\nbreaker = { window = "time", window_size = 1e300 }\n',
    b"[defaults.function]\ntimeout.attempt = nan\n",
    b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n",
    b"\xff\xfe[defaults]\n",
    b'[defaults.http]\nretry.budget_exhausted = "' + SECRET.encode() + b'"\n',
    b"",
]

CHECK_FILES = st.one_of(
    ENTRIES.map(lambda es: toml_file(es).encode()),
    MUTATIONS.map(mutated),
    st.binary(max_size=64),
    st.sampled_from(SPECIAL_FILES),
)


def check_command(path: Path) -> tuple[int, str, str]:
    """``buttress config check PATH`` in this process: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(["config", "check", str(path)])
    return code, out.getvalue(), err.getvalue()


def check_output_problem(code: int, out: str, err: str) -> str | None:
    if code not in (0, 2):
        return f"exit code {code}"
    if "Traceback" in err or "internal error" in err:
        return f"stderr: {err[:200]!r}"
    if code == 0:
        return None if err == "" and "OK" in out else f"exit 0 with stderr {err[:100]!r}"
    lines = err.splitlines()
    if len(lines) != 1 or not lines[0].startswith("buttress: config check: "):
        return f"stderr is not one line: {err[:200]!r}"
    if SECRET in err:
        return "stderr shows the canary secret"
    return None


@pytest.mark.timeout(scale(120, 1800))
def test_config_check_on_fuzzed_files() -> None:
    """`buttress config check` exits 0 or 2 with one line on stderr, whatever the file holds."""
    tally = Tally("config check files")
    with tempfile.TemporaryDirectory(prefix="buttress-fuzz-") as folder:
        path = Path(folder) / "fuzzed.toml"

        @settings(FUZZ, max_examples=scale(300, 33_000))
        @given(data=CHECK_FILES)
        def one(data: bytes) -> None:
            path.write_bytes(data)
            tally.tried += 1
            try:
                code, out, err = check_command(path)
            except BaseException as error:  # noqa: BLE001 - a crash, counted (SystemExit too)
                tally.crash("config check", error)
                return
            if code == 2:
                tally.rejected += 1
            else:
                tally.accepted += 1
            problem = check_output_problem(code, out, err)
            if problem is not None:
                tally.crash(f"config check of {data[:60]!r}", problem)

        one()
    tally.check()


def run_child(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def child_env(**variables: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BUTTRESS_", "OTEL_"))}
    base["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / "src"), str(ROOT), base.get("PYTHONPATH", "")) if p
    )
    return {**base, **variables}


def test_config_check_command_on_bad_files(tmp_path: Path) -> None:
    """The real command: exit 2, one line on stderr, no traceback, for the worst files."""
    files = SPECIAL_FILES[:-1] + [mutated([(i * 37, b"\x00]")]) for i in range(scale(1, 40))]
    paths = []
    for n, data in enumerate(files):
        path = tmp_path / f"bad-{n}.toml"
        path.write_bytes(data)
        paths.append(path)
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(
            pool.map(
                lambda p: run_child(["-m", "buttress", "config", "check", str(p)], child_env()),
                paths,
            )
        )
    problems = [
        f"{p.name}: {check_output_problem(r.returncode, r.stdout, r.stderr)}"
        for p, r in zip(paths, results, strict=True)
        if r.returncode != 2 or check_output_problem(r.returncode, r.stdout, r.stderr) is not None
    ]
    record(PART, "config check command: bad files run", len(paths))
    record(PART, "config check command: not exit 2 with one line", len(problems), "0", not problems)
    assert [] == problems


# -- start-up with bad values ------------------------------------------------------------------

BAD_STARTS: list[tuple[str, dict[str, str], bytes | None]] = [
    ("BUTTRESS_MODE", {"BUTTRESS_MODE": "bogus"}, None),
    ("BUTTRESS_RETRY_ATTEMPTS huge", {"BUTTRESS_RETRY_ATTEMPTS": "9" * 5000}, None),
    ("BUTTRESS_BULKHEAD_MAX_CONCURRENT", {"BUTTRESS_BULKHEAD_MAX_CONCURRENT": "1000000001"}, None),
    ("BUTTRESS_TIMEOUT_TOTAL nan", {"BUTTRESS_TIMEOUT_TOTAL": "nan"}, None),
    ("BUTTRESS_ENABLED secret", {"BUTTRESS_ENABLED": f"Bearer {SECRET}"}, None),
    ("BUTTRESS_HEALTH_PORT secret", {"BUTTRESS_HEALTH_PORT": f"Bearer {SECRET}"}, None),
    ("BUTTRESS_CONFIG missing", {"BUTTRESS_CONFIG": "/nonexistent/buttress.toml"}, None),
    ("retry.backoff = []", {}, b"[defaults.http]\nretry.backoff = []\n"),
    ("huge max_concurrent", {}, b'[targets."a"]\nbulkhead.max_concurrent = 9223372036854775807\n'),
    (
        "time window 1e300",
        {},
        b'[defaults.db]\nbreaker = { window = "time", window_size = 1e300 }\n',
    ),
    ("deep nesting", {}, b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n"),
    ("template: file", {}, b'[targets."a"]\nbreaker.open_duration = 400\n'),
    ("template: variable", {"BUTTRESS_BREAKER_OPEN_DURATION": "400"}, None),
    (
        "secret in the file",
        {},
        b'[defaults.llm]\nretry.budget_exhausted = "' + SECRET.encode() + b'"\n',
    ),
]


def _start_case(
    case: tuple[str, dict[str, str], bytes | None], strict: bool, folder: Path
) -> str | None:
    """Start an app with *case*'s bad value; what is wrong with how it went, or ``None``."""
    label, variables, file = case
    env = child_env(**{"BUTTRESS_ENABLED": "true", **variables})
    if file is not None:
        path = folder / f"{abs(hash(label))}-{int(strict)}.toml"
        path.write_bytes(file)
        env["BUTTRESS_CONFIG"] = str(path)
    if strict:
        env["BUTTRESS_STRICT"] = "true"
    result = run_child(["-c", "print('app ran')"], env)
    err = result.stderr
    lines = [line for line in err.splitlines() if line.strip()]
    if "Traceback" in err or SECRET in err:
        return f"{label}: stderr {err[:300]!r}"
    if strict:
        prefix = "buttress: BUTTRESS_STRICT=true, exiting with code 2: "
        if (result.returncode, result.stdout) != (2, "") or len(lines) != 1:
            return f"{label} (strict): exit {result.returncode}, stdout {result.stdout!r}, {err[:300]!r}"
        return None if lines[0].startswith(prefix) else f"{label} (strict): {lines[0][:200]!r}"
    if (result.returncode, result.stdout) != (0, "app ran\n") or len(lines) != 1:
        return f"{label}: exit {result.returncode}, stdout {result.stdout!r}, {err[:300]!r}"
    return None


@pytest.mark.timeout(scale(120, 1800))
def test_start_up_with_bad_values(tmp_path: Path) -> None:
    """Strict: exit 2 and one line, on every path (env, file). Otherwise the app runs, one line."""
    # Strict on every path in both sizes; the short size checks fewer non-strict starts.
    lenient = BAD_STARTS if scale(False, True) else BAD_STARTS[::3]
    runs = [(case, True) for case in BAD_STARTS] + [(case, False) for case in lenient]
    with ThreadPoolExecutor(max_workers=3) as pool:
        problems = [p for p in pool.map(lambda r: _start_case(r[0], r[1], tmp_path), runs) if p]
    record(PART, "start-ups with a bad value (strict and not)", len(runs))
    record(
        PART,
        "start-ups not as documented (exit 2 strict; app runs otherwise)",
        len(problems),
        "0",
        not problems,
    )
    assert [] == problems


# -- headers -----------------------------------------------------------------------------------

HTTP_DATES = st.datetimes(min_value=EARLIEST, max_value=LATEST).map(
    lambda d: email.utils.format_datetime(d.replace(tzinfo=dt.UTC), usegmt=True)
)
ASCTIME = st.datetimes(min_value=EARLIEST, max_value=LATEST).map(
    lambda d: d.strftime("%a %b %d %H:%M:%S ") + f"{d.year}"
)
OFFSET_DATES = st.tuples(
    HTTP_DATES, st.sampled_from(["+0100", "-2359", "+9999", "-0000", "EST", "XYZ"])
).map(lambda t: t[0].replace("GMT", t[1]))
NUMBERS = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**400).map(str),
    st.floats().map(repr),
    st.sampled_from(["1e400", "-0", "+5", "0x10", "1_0", "٣", " 7 ", "5s", "inf", "nan"]),
)
GARBAGE = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(min_codepoint=0x80), max_size=20),
    st.sampled_from(
        [
            "Fri, 31 Dec 99999 23:59:59 GMT",
            "Mon, 00 Jan 0000 00:00:00 GMT",
            "Mon, 01 Jan 0001 00:00:00 +2359",
        ]
    ),
)
RETRY_AFTER = st.one_of(NUMBERS, HTTP_DATES, ASCTIME, OFFSET_DATES, GARBAGE)
DURATIONS = st.one_of(
    NUMBERS,
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=10**30),
            st.sampled_from(["h", "m", "s", "ms", "us", "µs", "ns"]),
        ),
        min_size=1,
        max_size=4,
    ).map(lambda parts: "".join(f"{n}{unit}" for n, unit in parts)),
    st.sampled_from(["9" * 400 + "h", "1h2m3.5s", "6m0s", "-1s", "1.5.5s"]),
    GARBAGE,
)
INSTANTS = st.one_of(
    st.datetimes(min_value=EARLIEST, max_value=LATEST).map(lambda d: d.isoformat() + "Z"),
    st.datetimes(
        min_value=EARLIEST,
        max_value=LATEST,
        timezones=st.sampled_from(
            [
                dt.UTC,
                dt.timezone(dt.timedelta(hours=23, minutes=59)),
                dt.timezone(dt.timedelta(hours=-23, minutes=-59)),
            ]
        ),
    ).map(lambda d: d.isoformat()),
    GARBAGE,
)
RATE_HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "retry-after": RETRY_AFTER,
        "retry-after-ms": NUMBERS,
        "x-ratelimit-reset-requests": DURATIONS,
        "x-ratelimit-remaining-requests": st.sampled_from(["0", "1", "", "x"]),
        "x-ratelimit-reset-tokens": DURATIONS,
        "x-ratelimit-remaining-tokens": st.sampled_from(["0", "10", "-1"]),
        "anthropic-ratelimit-requests-reset": INSTANTS,
        "anthropic-ratelimit-requests-remaining": st.sampled_from(["0", "5"]),
        "anthropic-ratelimit-tokens-reset": INSTANTS,
        "anthropic-ratelimit-tokens-remaining": st.sampled_from(["0", "5"]),
        "anthropic-ratelimit-input-tokens-reset": INSTANTS,
        "anthropic-ratelimit-output-tokens-reset": INSTANTS,
    },
)


class FakeResponse:
    def __init__(self, status: int, headers: Any) -> None:
        self.status_code = status
        self.headers = headers


class FakeAPIError(Exception):
    """Shaped like the SDKs' errors: a status and a response with headers."""

    def __init__(self, status: int, headers: Any) -> None:
        super().__init__("rate limited")
        self.status_code = status
        self.response = FakeResponse(status, headers)


def bounded(delay: object) -> bool:
    return delay is None or (isinstance(delay, float | int) and 0 <= delay < math.inf)


@pytest.mark.timeout(scale(120, 1800))
def test_retry_after_and_rate_limit_headers() -> None:
    """The real parsers never raise; a delay is None or finite and >= 0."""
    tally = Tally("Retry-After and rate-limit headers")

    def check(where: str, parse: Callable[[], object]) -> None:
        tally.tried += 1
        try:
            delay = parse()
        except Exception as error:  # noqa: BLE001 - a crash, counted
            tally.crash(where, error)
            return
        if delay is None:
            tally.rejected += 1
        else:
            tally.accepted += 1
        if not bounded(delay):
            tally.crash(where, f"unbounded delay {delay!r}")

    @settings(FUZZ, max_examples=scale(500, 50_000))
    @given(
        value=RETRY_AFTER,
        duration=DURATIONS,
        headers=RATE_HEADERS,
        status=st.sampled_from([429, 503, 200]),
    )
    def one(value: str, duration: str, headers: dict[str, str], status: int) -> None:
        check(f"Retry-After {value[:40]!r}", lambda: parse_retry_after(value))
        check(f"duration {duration[:40]!r}", lambda: parse_duration(duration))
        for mapping in (CaseInsensitiveDict(headers), headers):
            check(
                f"headers {headers}"[:200], lambda m=mapping: server_delay(FakeResponse(status, m))
            )
            check(
                f"LLM headers {headers}"[:200],
                lambda m=mapping: llm_server_delay(FakeAPIError(status, m)),
            )

    one()
    tally.check()
