# House style writes assertions as `expected == actual`; ruff's SIM300 calls that Yoda style.
# ruff: noqa: SIM300

"""Tests for the retry budget: retries as a share of recent calls over a sliding window."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import buttress
from buttress._exceptions import ConfigurationError
from buttress.policies._retry_budget import RetryBudget, RetryBudgetState

T = 100.0  # a time at a whole second, so bucket arithmetic is easy to read


def spend(state: RetryBudgetState, now: float, times: int) -> list[bool]:
    """Ask the budget for *times* retries at *now*."""
    return [state.try_spend(now) for _ in range(times)]


# --- configuration ---------------------------------------------------------------------------


def test_defaults_follow_envoy_and_finagle():
    """The default budget is 20 % of calls plus 3 retries per second over 10 seconds."""
    budget = RetryBudget()

    assert (0.2, 3.0, 10, None) == (
        budget.ratio,
        budget.min_per_second,
        budget.window,
        budget.drop_floor_after,
    )


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"ratio": -0.1}, "RetryBudget: ratio=-0.1 is out of range"),
        ({"ratio": 1.5}, "ratio=1.5 is out of range; expected a number >= 0 and <= 1"),
        ({"ratio": math.nan}, "ratio=nan is not accepted"),
        ({"ratio": "0.2"}, "ratio='0.2' is not accepted"),
        ({"min_per_second": -1}, "min_per_second=-1 is out of range"),
        ({"min_per_second": None}, "min_per_second=None is not accepted"),
        ({"window": 0}, "window=0 is out of range"),
        ({"window": 601}, "window=601 is out of range; expected an integer >= 1 and <= 600"),
        ({"window": 1.5}, "window=1.5 is not accepted"),
        ({"window": True}, "window=True is not accepted"),
        ({"drop_floor_after": 0}, "drop_floor_after=0 is out of range; expected an integer >= 1"),
        ({"drop_floor_after": True}, "drop_floor_after=True is not accepted"),
        ({"drop_floor_after": 2.0}, "drop_floor_after=2.0 is not accepted"),
    ],
)
def test_invalid_configuration_raises(kwargs, fragment):
    """Bad budget parameters fail at construction, naming the parameter and the range."""
    with pytest.raises(ConfigurationError) as info:
        RetryBudget(**kwargs)

    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [{"ratio": 0}, {"ratio": 1}, {"min_per_second": 0}, {"window": 1}, {"window": 600}],
)
def test_boundary_values_are_accepted(kwargs):
    """The ends of each accepted range are valid."""
    budget = RetryBudget(**kwargs)

    assert isinstance(budget.bind(), RetryBudgetState)


def test_bind_creates_independent_states():
    """Each bind() starts a fresh, unshared state."""
    budget = RetryBudget(ratio=0.0, min_per_second=1.0, window=1)
    first, second = budget.bind(), budget.bind()
    first.try_spend(T)

    assert (0.0, 0) == second.snapshot(T)


def test_public_name():
    """buttress.RetryBudget is the same class."""
    assert RetryBudget is buttress.RetryBudget


def test_state_repr():
    """The state's repr shows the ratio and the window."""
    assert "<RetryBudgetState ratio=0.2 window=10s>" == repr(RetryBudget().bind())


# --- spending --------------------------------------------------------------------------------


def test_floor_allows_min_per_second_times_window_without_traffic():
    """A quiet target may still retry min_per_second * window times per window."""
    state = RetryBudget(ratio=0.2, min_per_second=0.5, window=10).bind()

    granted = spend(state, T, 7)

    assert [True] * 5 + [False] * 2 == granted


def test_zero_budget_refuses_every_retry():
    """ratio=0 and min_per_second=0 forbid retries entirely."""
    state = RetryBudget(ratio=0.0, min_per_second=0.0).bind()
    state.calls += 1000

    assert [False] * 3 == spend(state, T, 3)


@pytest.mark.parametrize(
    ("ratio", "calls", "expected"),
    [(0.2, 10, 2), (0.2, 14, 2), (0.2, 15, 3), (0.5, 7, 3), (1.0, 4, 4), (0.0, 100, 0)],
)
def test_ratio_of_counted_calls_is_granted(ratio, calls, expected):
    """Without a floor, the budget grants floor(ratio * calls) retries."""
    state = RetryBudget(ratio=ratio, min_per_second=0.0, window=10).bind()
    state.calls += calls

    assert expected == sum(spend(state, T, 50))


def test_ratio_and_floor_add_up():
    """The budget is ratio * calls + min_per_second * window."""
    state = RetryBudget(ratio=0.5, min_per_second=0.2, window=10).bind()
    state.calls += 10

    assert 7 == sum(spend(state, T, 20))


def test_refusal_spends_nothing():
    """A refused retry is not counted against the budget."""
    state = RetryBudget(ratio=0.0, min_per_second=0.1, window=10).bind()
    spend(state, T, 5)

    assert (0.0, 1) == state.snapshot(T)


def test_calls_counted_later_reopen_the_budget():
    """Traffic counted after a refusal earns new retries at the next request."""
    state = RetryBudget(ratio=0.5, min_per_second=0.0, window=10).bind()
    before = spend(state, T, 1)
    state.calls += 2

    after = spend(state, T + 0.5, 2)

    assert ([False], [True, False]) == (before, after)


# --- drop_floor_after: no floor while every retry fails ---------------------------------------


def failing(state: RetryBudgetState, now: float, times: int) -> list[bool]:
    """Ask for *times* retries at *now*, each coming back as a failure before the next ask."""
    granted = []
    for _ in range(times):
        ok = state.try_spend(now)
        granted.append(ok)
        if ok:
            state.record_failed_retry(now)
    return granted


def test_the_floor_goes_once_enough_retries_all_failed():
    """Three retries, three failures: the fourth needs ratio * calls, which 10 calls do not give."""
    state = RetryBudget(drop_floor_after=3).bind()
    state.calls += 10  # 0.2 * 10 = 2 retries from the ratio: fewer than the 3 already spent

    assert [True, True, True, False, False] == failing(state, T, 5)


def test_the_ratio_still_applies_without_the_floor():
    """With the floor gone, retries are still granted up to ratio * calls."""
    state = RetryBudget(drop_floor_after=3).bind()
    failing(state, T, 3)
    state.calls += 20  # 0.2 * 20 = 4: one more than the 3 spent

    assert [True, False] == failing(state, T + 0.5, 2)


def test_the_floor_stays_below_the_threshold():
    """Two failed retries are not enough to tell: the floor stays."""
    state = RetryBudget(drop_floor_after=3).bind()
    failing(state, T, 2)

    assert state.try_spend(T)


def test_a_retry_that_did_not_fail_keeps_the_floor():
    """A spent retry not reported failed (it succeeded, or is still running) keeps the floor."""
    state = RetryBudget(drop_floor_after=3).bind()
    state.try_spend(T)  # this one comes back fine: never reported
    failing(state, T, 3)

    assert [True] * 5 == [state.try_spend(T) for _ in range(5)]


def test_the_floor_returns_when_the_failures_leave_the_window():
    """Failed retries older than the window no longer withdraw the floor."""
    state = RetryBudget(window=10, drop_floor_after=3).bind()
    failing(state, T, 3)

    assert (False, True) == (state.try_spend(T + 9.5), state.try_spend(T + 10.0))


def test_without_drop_floor_after_failures_change_nothing():
    """drop_floor_after=None is Finagle's budget: failed retries are not even counted."""
    state = RetryBudget(min_per_second=0.5, window=10).bind()

    assert [True] * 5 + [False] == failing(state, T, 6)
    assert [0] * 10 == state._failed


# --- the sliding window ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("later", "granted"),
    [(T + 0.5, False), (T + 9.0, False), (T + 9.999, False), (T + 10.0, True), (T + 500.0, True)],
)
def test_retries_leave_the_window_after_window_seconds(later, granted):
    """A retry spent in second s stops counting in second s + window."""
    state = RetryBudget(ratio=0.0, min_per_second=0.1, window=10).bind()
    spend(state, T, 1)

    assert granted == state.try_spend(later)


@pytest.mark.parametrize(("later", "calls"), [(T + 9.5, 10.0), (T + 10.0, 0.0), (T + 25.0, 0.0)])
def test_calls_leave_the_window_after_window_seconds(later, calls):
    """Calls folded into second s stop counting in second s + window."""
    state = RetryBudget(window=10).bind()
    state.calls += 10
    state.snapshot(T)

    assert (calls, 0) == state.snapshot(later)


def test_calls_between_folds_are_spread_over_the_seconds_they_may_have_happened_in():
    """Calls counted between folds at t and t + 2.5 land evenly in seconds t, t + 1 and t + 2."""
    state = RetryBudget(window=10).bind()
    state.snapshot(T)
    state.calls += 30
    state.snapshot(T + 2.5)

    windows = [
        state.snapshot(T + 10.0)[0],
        state.snapshot(T + 11.0)[0],
        state.snapshot(T + 12.0)[0],
    ]

    assert [20.0, 10.0, 0.0] == pytest.approx(windows)


def test_calls_from_a_long_gap_are_scaled_to_the_window():
    """Calls counted over 100 s are counted as the window's share of them."""
    state = RetryBudget(window=10).bind()
    state.snapshot(0.0)
    state.calls += 100

    assert (10.0, 0) == pytest.approx(state.snapshot(100.0))


def test_calls_before_the_first_fold_land_in_the_current_second():
    """With no earlier fold, every counted call is placed in the second of the first fold."""
    state = RetryBudget(window=10).bind()
    state.calls += 40

    assert [40.0, 40.0, 0.0] == [
        state.snapshot(T)[0],
        state.snapshot(T + 9.9)[0],
        state.snapshot(T + 10.0)[0],
    ]


def test_snapshot_is_idempotent():
    """Folding twice at the same time counts calls once."""
    state = RetryBudget().bind()
    state.calls += 7

    assert [(7.0, 0), (7.0, 0)] == [state.snapshot(T), state.snapshot(T)]


def test_window_of_one_second():
    """A one-second window forgets everything at the next second."""
    state = RetryBudget(ratio=0.5, min_per_second=0.0, window=1).bind()
    state.calls += 4
    first = spend(state, T + 0.1, 3)

    second = spend(state, T + 1.1, 1)

    assert ([True, True, False], [False]) == (first, second)


# --- the budget's promise, for any traffic ---------------------------------------------------

operations = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=4.0),  # time elapsed since the previous operation
        st.integers(min_value=0, max_value=30),  # calls counted by the driver
        st.integers(min_value=0, max_value=5),  # retries asked for
    ),
    min_size=1,
    max_size=60,
)


@given(
    ops=operations,
    ratio=st.sampled_from([0.0, 0.1, 0.2, 0.5, 1.0]),
    min_per_second=st.sampled_from([0.0, 0.1, 0.5, 3.0]),
    window=st.integers(min_value=1, max_value=12),
)
def test_retries_in_any_window_never_exceed_ratio_times_calls_plus_floor(
    ops, ratio, min_per_second, window
):
    """Retries granted in any window of *window* seconds are at most ratio * calls + floor."""
    state = RetryBudget(ratio=ratio, min_per_second=min_per_second, window=window).bind()
    floor = min_per_second * window
    now = 50.0
    counted = 0  # calls counted so far
    folds: list[tuple[int, int]] = []  # (second of a fold, calls counted before it)
    grants: list[int] = []  # the second of every granted retry
    for elapsed, calls, asks in ops:
        now += elapsed
        state.calls += calls
        counted += calls
        for _ in range(asks):
            folds.append((int(now), counted))
            if state.try_spend(now):
                grants.append(int(now))

    for end in set(grants):
        start = end - window + 1
        in_window = sum(1 for s in grants if start <= s <= end)
        # Calls folded in a second before the window can only sit in buckets before it.
        expired = max((c for s, c in folds if s < start), default=0)
        calls_in_reach = counted - expired
        assert in_window <= ratio * calls_in_reach + floor + 1e-9


@given(
    ops=operations,
    ratio=st.sampled_from([0.0, 0.1, 0.2, 0.5]),
    min_per_second=st.sampled_from([0.5, 3.0]),
    window=st.integers(min_value=1, max_value=12),
    drop_floor_after=st.integers(min_value=1, max_value=4),
    fails=st.lists(st.booleans(), min_size=1, max_size=8),
)
def test_with_every_retry_failing_only_the_ratio_is_granted_past_the_threshold(
    ops, ratio, min_per_second, window, drop_floor_after, fails
):
    """
    While every retry in the window failed and there were enough of them, no floor is granted.

    Each granted retry comes back failed or not (as *fails* cycles). Whenever a retry is granted
    although the window's retries all failed and number at least drop_floor_after, the ratio
    alone must have allowed it.
    """
    state = RetryBudget(
        ratio=ratio,
        min_per_second=min_per_second,
        window=window,
        drop_floor_after=drop_floor_after,
    ).bind()
    now = 50.0
    n = 0
    for elapsed, calls, asks in ops:
        now += elapsed
        state.calls += calls
        for _ in range(asks):
            state._fold(now)
            spent, failed = sum(state._retries), sum(state._failed)
            calls_in_window = sum(state._calls)
            if state.try_spend(now):
                if spent >= drop_floor_after and failed >= spent:
                    assert spent + 1 <= ratio * calls_in_window + 1e-9
                if fails[n % len(fails)]:
                    state.record_failed_retry(now)
                n += 1


@given(
    ops=operations,
    ratio=st.sampled_from([0.0, 0.2, 1.0]),
    window=st.integers(min_value=1, max_value=12),
)
def test_snapshot_never_counts_more_calls_than_were_made(ops, ratio, window):
    """The window's call count is never negative and never exceeds the calls counted."""
    state = RetryBudget(ratio=ratio, window=window).bind()
    now = 50.0
    counted = 0
    for elapsed, calls, asks in ops:
        now += elapsed
        state.calls += calls
        counted += calls
        for _ in range(asks):
            state.try_spend(now)
        calls_in_window, retries = state.snapshot(now)

        assert -1e-9 <= calls_in_window <= counted + 1e-9
        assert 0 <= retries
