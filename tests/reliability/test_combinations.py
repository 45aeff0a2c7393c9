"""
Policy combinations: every allowed order of every subset of policies, under threads, tasks and
cancellations, with exact invariants afterwards (issue 14).

The orders come from the order rules (``buttress._order``): fallback and cache outermost, the
timeout before the retry, and each admission policy (rate limit, bulkhead, breaker) outside or
inside the retry. Every pipeline those rules allow runs once with a fixed script, sync in
threads and async in tasks with some cancelled; then Hypothesis draws pipelines, parameters,
scripts and the mix of callers (threads, tasks, or both at once on one pipeline). After each
run, ``_pipelines.violations`` checks that every call was counted once as the outcome its
caller saw, that the bulkhead has every slot back, that no breaker probe is left out, that the
rate limit took one token per admission, and that no cache flight is left open. A pipeline with
a rate limit and a bulkhead that leaked a slot per call (defect 1) fails here at once.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.reliability._pipelines import (
    POLICIES,
    Ledger,
    Spec,
    allowed_orders,
    build,
    every_pipeline,
    is_again,
    layouts,
    violations,
)
from tests.reliability._workload import (
    STEPS,
    YieldingClock,
    async_dependency,
    in_tasks,
    in_threads,
    one_async_call,
    one_sync_call,
    sync_dependency,
)
from tests.reliability.figures import record, scale

from buttress import ConfigurationError
from buttress._order import DEFAULT_ORDER, parse_order
from buttress.testing import FakeClock

PART = "policy combinations"
SCRIPT = ("ok", "conn", "ok", "slow", "value", "conn", "again", "ok", "nested", "conn")
BOUND = 60.0
"""Seconds every run must end within: a run still going then is a deadlock."""

_names = itertools.count()
_totals: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def _hypothesis_figures() -> Iterator[None]:
    """Records, once the module is done, what the Hypothesis tests ran (many examples each)."""
    yield
    for key in ("threads", "tasks"):
        if _totals[f"{key} examples"]:
            record(PART, f"Hypothesis pipelines, {key}", _totals[f"{key} examples"])
            record(PART, f"Hypothesis calls, {key}", _totals[f"{key} calls"])
            record(PART, f"Hypothesis invariants checked, {key}", _totals[f"{key} invariants"])
    if _totals["tasks examples"]:
        record(PART, "Hypothesis calls cancelled", _totals["tasks cancelled"])


def _name() -> str:
    return f"combo-{next(_names)}"


def run_sync(
    spec: Spec, script: tuple[str, ...], threads: int, calls: int
) -> tuple[Ledger, list[str], int]:
    """*threads* threads of *calls* calls each; returns the ledger, violations, checks made."""
    clock = FakeClock()
    pipeline = build(spec, _name(), clock)
    ledger = Ledger()
    fn = sync_dependency(script, ledger, clock)
    again = is_again if "retry" in spec.policies and spec.on_result else None
    alive = in_threads(
        threads,
        calls,
        lambda call: one_sync_call(pipeline, fn, call, ledger, again, spec.priorities),
        bound=BOUND,
    )
    problems, checked = violations(pipeline, spec, ledger)
    if alive:
        problems.append(f"threads still running after {BOUND:g}s: {alive}")
    return ledger, problems, checked + 1


def run_async(
    spec: Spec,
    script: tuple[str, ...],
    tasks: int,
    cancel: tuple[int, ...],
    threads: int = 0,
    calls: int = 0,
) -> tuple[Ledger, list[str], int]:
    """*tasks* tasks (those in *cancel* cancelled), and *threads* sync threads of *calls* calls
    on the same pipeline at the same time; returns the ledger, violations and checks made."""
    clock = YieldingClock()
    pipeline = build(spec, _name(), clock)
    ledger = Ledger()
    again = is_again if "retry" in spec.policies and spec.on_result else None
    real_slow = 1.5 * (spec.attempt_timeout or 0.005)
    afn = async_dependency(script, ledger, clock, real_slow)
    fn = sync_dependency(script, ledger, clock)
    alive: list[str] = []

    def sync_callers() -> None:
        alive.extend(
            in_threads(
                threads,
                calls,
                lambda call: one_sync_call(pipeline, fn, call, ledger, again, spec.priorities),
                first=tasks,
                bound=BOUND,
            )
        )

    async def main() -> int:
        return await in_tasks(
            tasks,
            lambda call: one_async_call(pipeline, afn, call, ledger, again, spec.priorities),
            cancel,
            bound=BOUND,
        )

    helper = threading.Thread(target=sync_callers, daemon=True) if threads else None
    if helper is not None:
        helper.start()
    pending = asyncio.run(main())
    if helper is not None:
        helper.join(BOUND)
        if helper.is_alive():
            alive.append(helper.name)
    problems, checked = violations(pipeline, spec, ledger)
    if pending:
        problems.append(f"{pending} tasks still pending after {BOUND:g}s")
    if alive:
        problems.append(f"threads still running after {BOUND:g}s: {alive}")
    return ledger, problems, checked + 1


def test_the_order_rules_allow_exactly_the_generated_orders() -> None:
    """Of all 40,320 permutations of the stages, parse_order accepts exactly the eight layouts
    the combination tests generate, and refuses the rest with a ConfigurationError."""
    accepted = set()
    refused = 0
    for order in itertools.permutations(DEFAULT_ORDER):
        try:
            parse_order(order)
        except ConfigurationError:
            refused += 1
        else:
            accepted.add(order)
    record(
        PART, "orders accepted of all permutations", f"{len(accepted)} of {refused + len(accepted)}"
    )
    assert allowed_orders() == accepted
    assert 8 == len(accepted)


@pytest.mark.parametrize("driver", ["sync", "async"])
@pytest.mark.timeout(scale(120, 1800))
def test_every_allowed_order_of_every_subset_keeps_the_invariants(driver: str) -> None:
    """Each pipeline the order rules allow (432: every subset of the seven policies, each
    present admission policy outside or inside the retry) runs a fixed script concurrently;
    sync: threads; async: tasks, some cancelled. Every invariant holds after each."""
    threads, calls = scale((4, 6), (16, 25))
    tasks = scale(24, 200)
    cancel = tuple(range(0, tasks, 5))
    specs = list(every_pipeline(on_result=True, budget="raise"))
    failures: list[str] = []
    checked = calls_made = 0
    started = time.monotonic()
    for spec in specs:
        if driver == "sync":
            ledger, problems, n = run_sync(spec, SCRIPT, threads, calls)
        else:
            ledger, problems, n = run_async(spec, SCRIPT, tasks, cancel)
        checked += n
        calls_made += ledger.started
        if problems:
            failures.append(f"{spec}: {'; '.join(problems)}")
    elapsed = time.monotonic() - started
    what = "threads" if driver == "sync" else "tasks with cancellations"
    record(PART, f"pipelines run, {driver} ({what})", len(specs))
    record(PART, f"calls made, {driver}", calls_made)
    record(PART, f"invariants checked, {driver}", checked, "all hold", not failures)
    record(PART, f"pipelines breaking an invariant, {driver}", len(failures), "0", not failures)
    record(PART, f"seconds for every pipeline, {driver}", f"{elapsed:.1f}")
    assert [] == failures[:10], f"{len(failures)} of {len(specs)} pipelines broke an invariant"


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    """A pipeline drawn from the order rules, with parameters that make every policy act."""
    return Spec(
        policies=draw(st.frozensets(st.sampled_from(POLICIES))),
        inner=draw(st.sampled_from(list(layouts()))),
        attempts=draw(st.integers(1, 4)),
        budget=draw(st.sampled_from(["none", "reraise", "raise"])),
        on_result=draw(st.booleans()),
        minimum_calls=draw(st.integers(1, 8)),
        open_duration=draw(st.sampled_from([0.01, 0.05, 1.0])),
        half_open_calls=draw(st.integers(1, 3)),
        attempt_timeout=draw(st.sampled_from([None, 0.01, 0.02])),
        total_timeout=draw(st.sampled_from([None, 0.05, 0.5])),
        max_concurrent=draw(st.integers(1, 4)),
        max_queue=draw(st.integers(0, 4)),
        max_wait=draw(st.sampled_from([0.0, 0.005, 0.02])),
        rate=draw(st.sampled_from([1e-9, 50.0, 2000.0])),
        burst=draw(st.integers(1, 30)),
        rl_max_wait=draw(st.sampled_from([0.0, 0.01, 0.1])),
        cache_keys=draw(st.integers(1, 5)),
        fallback_on=draw(st.sampled_from(["all", "connection", "broken"])),
        observe=draw(st.booleans()),
        priorities=draw(st.integers(1, 3)),
    )


scripts = st.lists(st.sampled_from(STEPS), min_size=1, max_size=8).map(tuple)
HYPOTHESIS = settings(
    max_examples=scale(100, 2000),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.timeout(scale(120, 1800))
@HYPOTHESIS
@given(spec=specs(), script=scripts, threads=st.integers(2, 8), calls=st.integers(1, 12))
def test_hypothesis_pipelines_in_threads(
    spec: Spec, script: tuple[str, ...], threads: int, calls: int
) -> None:
    """Drawn pipelines and scripts, sync calls from real threads: every invariant holds."""
    ledger, problems, checked = run_sync(spec, script, threads, calls)
    _totals["threads examples"] += 1
    _totals["threads invariants"] += checked
    _totals["threads calls"] += ledger.started
    assert [] == problems, str(spec)


@pytest.mark.timeout(scale(120, 1800))
@HYPOTHESIS
@given(
    spec=specs(),
    script=scripts,
    tasks=st.integers(1, 60),
    cancel=st.lists(st.integers(0, 59), max_size=12).map(tuple),
    threads=st.sampled_from([0, 0, 2, 4]),
    calls=st.integers(1, 8),
)
def test_hypothesis_pipelines_in_tasks_with_cancellations(
    spec: Spec,
    script: tuple[str, ...],
    tasks: int,
    cancel: tuple[int, ...],
    threads: int,
    calls: int,
) -> None:
    """Drawn pipelines and scripts, async calls in tasks with some cancelled, and sometimes
    sync threads on the same pipeline at once: every invariant holds."""
    ledger, problems, checked = run_async(spec, script, tasks, cancel, threads, calls)
    _totals["tasks examples"] += 1
    _totals["tasks invariants"] += checked
    _totals["tasks calls"] += ledger.started
    _totals["tasks cancelled"] += ledger.seen["cancelled"]
    assert [] == problems, str(spec)
