# House style writes assertions as `expected == actual`; ruff's SIM300 calls that Yoda style.
# ruff: noqa: SIM300

"""Tests for Retry's configuration and the pure decision RetryState.decide."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import buttress
from buttress._context import PolicyContext
from buttress._exceptions import ConfigurationError, RetryBudgetExhaustedError
from buttress.policies._backoff import constant, exponential
from buttress.policies._retry import Retry, RetryState, no_retry, retries_forbidden
from buttress.policies._retry_budget import RetryBudget
from buttress.telemetry._events import CallRejected, RetriesExhausted, RetryScheduled
from buttress.testing import capture_events, set_testing

NOW = 1000.0
NO_BUDGET = RetryBudget(ratio=0.0, min_per_second=0.0)


class ProviderError(Exception):
    """An error from a module other than builtins, to check the qualified error.type."""


def make(events: list, *, observe: bool = False, random: float = 0.5, **kwargs) -> RetryState:
    """A RetryState bound to a deterministic context whose events go to *events*."""
    kwargs.setdefault("on", ConnectionError)
    ctx = PolicyContext(
        target="svc", kind="http", random=lambda: random, observe=observe, emit=events.append
    )
    return Retry(**kwargs).bind(ctx)


def decide(
    state: RetryState,
    outcome: object = None,
    *,
    attempt: int = 1,
    previous: float = 0.0,
    now: float = NOW,
    deadline: float = math.inf,
    is_exception: bool | None = None,
):
    """Call decide() with defaults: a ConnectionError on attempt 1, no deadline."""
    if outcome is None:
        outcome = ConnectionError("down")
    if is_exception is None:
        is_exception = isinstance(outcome, BaseException)
    return state.decide(outcome, is_exception, attempt, previous, now, deadline)


# --- configuration ---------------------------------------------------------------------------


def test_defaults():
    """Retry defaults to 3 attempts, full-jitter exponential back-off and a 20 % budget."""
    retry = Retry(on=ConnectionError)

    expected = (3, None, exponential(), RetryBudget(), "reraise", 60.0)
    assert expected == (
        retry.attempts,
        retry.deadline,
        retry.backoff,
        retry.budget,
        retry.budget_exhausted,
        retry.max_retry_after,
    )


@pytest.mark.parametrize(
    "on",
    [ConnectionError, (ConnectionError, TimeoutError), lambda exc: True, BaseException],
)
def test_on_accepts_a_type_a_tuple_or_a_predicate(on):
    """`on` takes an exception type, a non-empty tuple of types, or a callable."""
    retry = Retry(on=on)

    assert on is retry.on


@pytest.mark.parametrize(
    ("on", "expected"),
    [
        (ConnectionError, [True, False, True]),
        ((ConnectionError, KeyError), [True, True, True]),
        (lambda exc: "retry" in str(exc), [False, False, True]),
    ],
)
def test_is_retryable_follows_the_on_spec(on, expected):
    """The compiled predicate matches exceptions the way `on` describes them."""
    state = make([], on=on)
    outcomes = [ConnectionError("x"), KeyError("x"), ConnectionResetError("retry")]

    assert expected == [state.is_retryable(e) for e in outcomes]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"on": None}, "Retry: on=None is not accepted"),
        ({"on": ()}, "non-empty tuple of exception types"),
        ({"on": (ValueError, int)}, "non-empty tuple"),
        ({"on": "ConnectionError"}, "on='ConnectionError' is not accepted"),
        ({"attempts": 0}, "attempts=0 is out of range"),
        ({"attempts": -1}, "attempts=-1 is out of range"),
        ({"attempts": 2.0}, "attempts=2.0 is not accepted"),
        ({"attempts": True}, "attempts=True is not accepted"),
        ({"attempts": None}, "attempts=None with deadline=None would retry forever"),
        ({"deadline": 0}, "deadline=0 is out of range"),
        ({"deadline": -5.0}, "deadline=-5.0 is out of range"),
        ({"deadline": math.nan}, "deadline=nan is not accepted"),
        ({"backoff": 0.5}, "backoff=0.5 is not accepted"),
        ({"backoff": "exponential"}, "backoff='exponential' is not accepted"),
        ({"max_retry_after": -1}, "max_retry_after=-1 is out of range"),
        ({"budget": 0.2}, "budget=0.2 is not accepted; expected a RetryBudget or None"),
        ({"budget_exhausted": "ignore"}, "budget_exhausted='ignore' is not accepted"),
    ],
)
def test_invalid_configuration_raises(kwargs, fragment):
    """Bad Retry parameters fail at construction, naming the parameter and the value."""
    kwargs.setdefault("on", ConnectionError)

    with pytest.raises(ConfigurationError) as info:
        Retry(**kwargs)

    assert fragment in str(info.value)


@pytest.mark.parametrize("on", [int, str, object])
def test_on_rejects_a_class_that_is_not_an_exception(on):
    """A non-exception class is a configuration error, not a predicate called on the hot path."""
    with pytest.raises(ConfigurationError) as info:
        Retry(on=on)

    assert f"Retry: on={on!r} is not accepted" in str(info.value)


def test_on_is_required():
    """Retry has no default `on`: retrying everything would retry bugs."""
    with pytest.raises(TypeError):
        Retry()  # type: ignore[call-arg]


def test_unbounded_attempts_are_allowed_with_a_deadline():
    """attempts=None is valid when a deadline bounds the retries."""
    retry = Retry(on=ConnectionError, attempts=None, deadline=5.0)

    assert (None, 5.0) == (retry.attempts, retry.deadline)


def test_budget_none_disables_the_budget():
    """budget=None binds no budget state."""
    state = make([], budget=None)

    assert state.budget is None


def test_each_bind_gets_its_own_budget():
    """Two pipelines bound from one Retry never share a retry budget."""
    retry = Retry(on=ConnectionError)
    ctx = PolicyContext(target="svc")

    assert retry.bind(ctx).budget is not retry.bind(ctx).budget


def test_repr_names_the_policy():
    """Retry's repr shows what it retries, its attempts, deadline, back-off and budget."""
    retry = Retry(on=ConnectionError, attempts=5, deadline=2.5, backoff=constant(1), budget=None)

    expected = (
        "<Retry on=ConnectionError attempts=5 deadline=2.5 backoff=constant(1, jitter='none') "
        "budget=None>"
    )
    assert expected == repr(retry)


def test_state_repr_names_the_target():
    """RetryState's repr names its target."""
    state = make([])

    assert repr(state).startswith("<RetryState target='svc' <Retry on=ConnectionError")


# --- decide: the happy retry -----------------------------------------------------------------


def test_retry_returns_the_backoff_delay_and_reports_it():
    """A retryable failure before the last attempt gets the back-off delay and a RetryScheduled."""
    events: list = []
    state = make(events, backoff=exponential(initial=1.0, max=10.0), random=0.5)

    delay = decide(state, attempt=2, previous=0.5)

    expected = [
        RetryScheduled(
            target="svc", kind="http", attempt=2, delay=1.0, error_type="ConnectionError"
        )
    ]
    assert (1.0, expected) == (delay, events)


def test_backoff_receives_the_attempt_previous_and_random():
    """decide() passes the failed attempt, the previous delay and the context's random source."""
    seen = []

    class Recording:
        def delay(self, attempt, previous, random):
            seen.append((attempt, previous, random()))
            return 0.25

    state = make([], backoff=Recording(), random=0.125)

    decide(state, attempt=2, previous=0.75)

    assert [(2, 0.75, 0.125)] == seen


def test_error_type_is_qualified_outside_builtins():
    """Events carry the module-qualified class name of non-builtin exceptions."""
    events: list = []
    state = make(events, on=ProviderError)

    decide(state, ProviderError("x"))

    assert f"{__name__}.ProviderError" == events[0].error_type


def test_retrying_a_result_reports_error_type_result():
    """A retry asked for by on_result reports error_type='result'."""
    events: list = []
    state = make(events, on_result=lambda r: r == 503)

    delay = decide(state, 503, is_exception=False)

    assert (0.5 * 0.2, "result") == (delay, events[0].error_type)


def test_events_go_to_hooks_by_default():
    """Without an injected emit, decisions reach the registered hooks."""
    state = Retry(on=ConnectionError).bind(PolicyContext(target="hooked", random=lambda: 0.0))

    with capture_events() as events:
        decide(state)

    assert [RetryScheduled] == [type(e) for e in events]


# --- decide: attempts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempts", "attempt", "retries"),
    [(1, 1, False), (2, 1, True), (2, 2, False), (3, 2, True), (3, 3, False), (3, 7, False)],
)
def test_attempts_cap_the_retries(attempts, attempt, retries):
    """No retry follows the last allowed attempt."""
    state = make([], attempts=attempts)

    assert retries == (decide(state, attempt=attempt) is not None)


def test_running_out_of_attempts_reports_retries_exhausted():
    """Stopping at the attempt cap emits RetriesExhausted(reason='attempts')."""
    events: list = []
    state = make(events, attempts=3)

    decide(state, attempt=3)

    expected = [
        RetriesExhausted(
            target="svc", kind="http", attempts=3, error_type="ConnectionError", reason="attempts"
        )
    ]
    assert expected == events


@given(attempts=st.integers(1, 50), attempt=st.integers(1, 100))
def test_retry_happens_iff_attempt_is_below_attempts(attempts, attempt):
    """Without other limits, decide() retries exactly when attempt < attempts."""
    state = make([], attempts=attempts, budget=None)

    assert (attempt < attempts) == (decide(state, attempt=attempt) is not None)


def test_unbounded_attempts_retry_until_the_deadline():
    """attempts=None keeps retrying far past any count while the deadline allows."""
    state = make([], attempts=None, deadline=60.0, budget=None, backoff=constant(1.0))

    assert 1.0 == decide(state, attempt=10_000, deadline=NOW + 60.0)


# --- decide: deadline ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("deadline", "retries"),
    [(NOW + 2.01, True), (NOW + 2.0, False), (NOW + 1.0, False), (NOW, False), (NOW - 1, False)],
)
def test_no_attempt_starts_at_or_after_the_deadline(deadline, retries):
    """A retry is refused when now + delay reaches the deadline."""
    events: list = []
    state = make(events, backoff=constant(2.0))

    delay = decide(state, deadline=deadline)

    assert retries == (delay is not None)
    if not retries:
        assert "deadline" == events[-1].reason


# --- decide: server-suggested delays ---------------------------------------------------------


@pytest.mark.parametrize(
    ("suggested", "expected"),
    [(5.0, 5.0), (0.0, 0.0), (60.0, 60.0), (3600.0, 60.0), (-3.0, 0.0), (math.inf, 60.0)],
)
def test_server_delay_replaces_backoff_capped_by_max_retry_after(suggested, expected):
    """A Retry-After value replaces the back-off delay, clamped to [0, max_retry_after]."""
    events: list = []
    state = make(events, backoff=constant(1.0), retry_after=lambda o: suggested)

    delay = decide(state)

    assert (expected, suggested) == (delay, events[0].server_delay)


def test_no_server_delay_keeps_the_backoff():
    """retry_after returning None leaves the back-off delay in place."""
    events: list = []
    state = make(events, backoff=constant(1.5), retry_after=lambda o: None)

    delay = decide(state)

    assert (1.5, None) == (delay, events[0].server_delay)


def test_retry_after_receives_the_outcome():
    """retry_after is called with the failed outcome itself."""
    seen = []
    state = make([], retry_after=seen.append)
    error = ConnectionError("x")

    decide(state, error)

    assert [error] == seen


def test_custom_max_retry_after():
    """max_retry_after sets the cap for server-suggested delays."""
    state = make([], max_retry_after=2.0, retry_after=lambda o: 30.0)

    assert 2.0 == decide(state)


def test_server_delay_past_the_deadline_stops_retrying():
    """A server-suggested delay that would end past the deadline gives up with reason deadline."""
    events: list = []
    state = make(events, backoff=constant(0.1), retry_after=lambda o: 10.0)

    delay = decide(state, deadline=NOW + 5.0)

    assert (None, "deadline") == (delay, events[-1].reason)


# --- decide: vetoes --------------------------------------------------------------------------


def test_no_retry_scope_vetoes_retries():
    """Inside no_retry(), decide() stops at once with reason 'vetoed'."""
    events: list = []
    state = make(events)

    with no_retry():
        delay = decide(state)

    assert (None, "vetoed") == (delay, events[-1].reason)


def test_no_retry_scope_nests_and_resets():
    """Leaving the innermost no_retry() keeps retries forbidden until the outer one ends."""
    observed = []
    with no_retry():
        with no_retry():
            observed.append(retries_forbidden())
        observed.append(retries_forbidden())
    observed.append(retries_forbidden())

    assert [True, True, False] == observed


def test_no_retry_is_exported():
    """buttress.no_retry is the same scope."""
    with buttress.no_retry():
        assert retries_forbidden()


def test_no_retry_scope_resets_after_an_exception():
    """An exception leaving no_retry() still ends the scope."""
    with pytest.raises(KeyError), no_retry():
        raise KeyError

    assert retries_forbidden() is False


def test_veto_receives_the_outcome_and_attempt():
    """A veto hook sees the failed outcome and its attempt number."""
    seen = []
    state = make([], veto=lambda outcome, attempt: seen.append((outcome, attempt)) or False)
    error = ConnectionError("x")

    decide(state, error, attempt=2)

    assert [(error, 2)] == seen


@pytest.mark.parametrize(
    ("vetoed", "expected"), [(True, (None, "RetriesExhausted")), (False, (0.1, "RetryScheduled"))]
)
def test_veto_true_forbids_the_retry(vetoed, expected):
    """veto() returning True stops retrying; False lets the retry go ahead."""
    events: list = []
    state = make(events, veto=lambda outcome, attempt: vetoed)

    delay = decide(state)

    assert expected == (delay, type(events[-1]).__name__)


def test_veto_wins_over_every_other_limit():
    """A vetoed outcome is reported as vetoed even on the last attempt past the deadline."""
    events: list = []
    state = make(events, attempts=2, veto=lambda o, a: True)

    decide(state, attempt=2, deadline=NOW)

    assert ["vetoed"] == [e.reason for e in events]


# --- decide: testing mode --------------------------------------------------------------------


def test_testing_mode_makes_retries_immediate():
    """In testing mode, delays are 0 even with a server-suggested delay."""
    state = make([], attempts=5, backoff=constant(3.0), retry_after=lambda o: 9.0)

    with set_testing(True, attempts=3):
        delays = [decide(state, attempt=n) for n in (1, 2, 3)]

    assert [0.0, 0.0, None] == delays


@pytest.mark.parametrize(
    ("configured", "testing_attempts", "last_retrying_attempt"),
    [(5, 1, 0), (5, 2, 1), (5, 3, 2), (2, 10, 1), (None, 4, 3)],
)
def test_testing_mode_caps_attempts(configured, testing_attempts, last_retrying_attempt):
    """Testing mode allows at most min(attempts, testing attempts) attempts."""
    state = make([], attempts=configured, deadline=100.0 if configured is None else None)

    with set_testing(True, attempts=testing_attempts):
        retrying = [n for n in range(1, 12) if decide(state, attempt=n) is not None]

    assert list(range(1, last_retrying_attempt + 1)) == retrying


def test_testing_mode_off_restores_the_backoff():
    """Leaving the set_testing() block restores the real back-off delays."""
    state = make([], backoff=constant(3.0))
    with set_testing(True):
        pass

    assert 3.0 == decide(state)


# --- decide: observe mode --------------------------------------------------------------------


def test_observe_mode_reports_the_retry_but_does_not_retry():
    """In observe mode the retry is reported with observed=True and decide() returns None."""
    events: list = []
    state = make(events, observe=True, backoff=constant(2.0), retry_after=lambda o: 4.0)

    delay = decide(state)

    expected = [
        RetryScheduled(
            target="svc",
            kind="http",
            attempt=1,
            delay=4.0,
            error_type="ConnectionError",
            server_delay=4.0,
            observed=True,
        )
    ]
    assert (None, expected) == (delay, events)


def test_observe_mode_does_not_spend_the_budget():
    """An observed retry takes nothing from the retry budget."""
    state = make([], observe=True, budget=RetryBudget(ratio=0.0, min_per_second=1.0, window=1))

    for _ in range(5):
        decide(state)

    assert (0.0, 0) == state.budget.snapshot(NOW)


def test_observe_mode_still_reports_exhaustion():
    """In observe mode the attempt cap is still reported as RetriesExhausted."""
    events: list = []
    state = make(events, observe=True, attempts=1)

    decide(state)

    assert ["attempts"] == [e.reason for e in events]


# --- decide: the retry budget ----------------------------------------------------------------


def test_retries_spend_the_budget():
    """Each granted retry is taken from the budget."""
    state = make([], budget=RetryBudget(ratio=0.0, min_per_second=1.0, window=10))

    for _ in range(3):
        decide(state)

    assert (0.0, 3) == state.budget.snapshot(NOW)


def test_spent_budget_reraises_by_default():
    """When the budget refuses, decide() returns None and reports the rejection."""
    events: list = []
    state = make(events, budget=NO_BUDGET)

    delay = decide(state, attempt=1)

    expected = [
        CallRejected(target="svc", kind="http", reason="retry_budget"),
        RetriesExhausted(
            target="svc", kind="http", attempts=1, error_type="ConnectionError", reason="budget"
        ),
    ]
    assert (None, expected) == (delay, events)


def test_budget_refuses_once_the_floor_is_spent():
    """With no traffic, the floor min_per_second * window is what the budget grants."""
    state = make([], budget=RetryBudget(ratio=0.5, min_per_second=0.5, window=4))

    granted = [decide(state) is not None for _ in range(4)]

    assert [True, True, False, False] == granted


def test_counted_calls_raise_the_budget():
    """Calls counted by the driver add ratio * calls to what the budget grants."""
    state = make([], budget=RetryBudget(ratio=0.5, min_per_second=0.0, window=10))
    state.budget.calls += 6

    granted = [decide(state) is not None for _ in range(5)]

    assert [True, True, True, False, False] == granted


def test_failed_retries_drop_the_floor_of_a_budget_that_asks_for_it():
    """
    decide(attempt >= 2) reports the failure of the retry that made that attempt.

    On a fresh budget with drop_floor_after=3, a call may retry twice (a 503, 503, 200 still
    succeeds) and a third time; once those three retries all failed, the fourth is refused.
    """
    events: list = []
    state = make(events, attempts=10, budget=RetryBudget(drop_floor_after=3))

    granted = [decide(state, attempt=n) is not None for n in range(1, 6)]

    assert [True, True, True, False, False] == granted
    assert ["retry_budget", "budget"] == [e.reason for e in events[-2:]]


def test_a_retry_refused_for_attempts_still_reports_its_failure():
    """The last attempt's failure counts too: the next call finds every retry failed."""
    budget = RetryBudget(drop_floor_after=2)
    state = make([], attempts=2, budget=budget)
    decide(state, attempt=1)  # granted: 1 spent
    decide(state, attempt=2)  # no attempts left, but the retry failed: 1 failed
    decide(state, attempt=1)  # granted: 2 spent
    decide(state, attempt=2)  # 2 failed

    assert None is decide(state, attempt=1)


def test_without_drop_floor_after_failed_retries_do_not_matter():
    """The default budget keeps granting from its floor however many retries failed."""
    state = make([], attempts=10, budget=RetryBudget(min_per_second=1.0, window=10))

    assert [True] * 9 == [decide(state, attempt=n) is not None for n in range(1, 10)]


def test_spent_budget_raises_when_asked_to():
    """budget_exhausted='raise' raises RetryBudgetExhaustedError from the last exception."""
    events: list = []
    state = make(events, budget=NO_BUDGET, budget_exhausted="raise")
    error = ConnectionError("down")

    with pytest.raises(RetryBudgetExhaustedError) as info:
        decide(state, error)

    assert (error, "svc", "retry_budget") == (
        info.value.__cause__,
        info.value.target,
        info.value.reason,
    )
    assert ["retry_budget", "budget"] == [e.reason for e in events]


def test_spent_budget_raises_without_cause_for_a_result():
    """For a retried result there is no exception to chain: __cause__ is None."""
    state = make([], budget=NO_BUDGET, budget_exhausted="raise", on_result=lambda r: True)

    with pytest.raises(RetryBudgetExhaustedError) as info:
        decide(state, "bad", is_exception=False)

    assert info.value.__cause__ is None


def test_budget_exhausted_error_is_a_rejection():
    """RetryBudgetExhaustedError is caught as a RejectedError and a ResilienceError."""
    state = make([], budget=NO_BUDGET, budget_exhausted="raise")

    with pytest.raises(buttress.RejectedError) as info:
        decide(state)

    assert isinstance(info.value, buttress.ResilienceError)


def test_no_budget_is_consulted_when_attempts_run_out():
    """Giving up on attempts spends nothing from the budget."""
    state = make([], attempts=1, budget=RetryBudget(ratio=0.0, min_per_second=1.0))

    decide(state)

    assert (0.0, 0) == state.budget.snapshot(NOW)


def test_no_budget_is_spent_when_the_deadline_refuses():
    """A retry refused by the deadline spends nothing from the budget."""
    state = make([], backoff=constant(1.0), budget=RetryBudget(ratio=0.0, min_per_second=1.0))

    decide(state, deadline=NOW + 0.5)

    assert (0.0, 0) == state.budget.snapshot(NOW)
