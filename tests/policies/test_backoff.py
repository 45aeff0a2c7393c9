# House style writes assertions as `expected == actual`; ruff's SIM300 calls that Yoda style.
# ruff: noqa: SIM300

"""Tests for the back-off schedules: exponential, constant and decorrelated."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import buttress
from buttress._exceptions import ConfigurationError
from buttress.policies._backoff import backoff_from_name, constant, decorrelated, exponential

# [0, 1): what random.random() returns.
unit = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
attempts = st.integers(min_value=1, max_value=10_000)
positive = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)


def fixed(value: float):
    """A random source that always returns *value*."""
    return lambda: value


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 10.0), (50, 10.0), (10_000, 10.0)],
)
def test_exponential_without_jitter_doubles_up_to_the_cap(attempt, expected):
    """Un-jittered exponential back-off is initial * multiplier ** (attempt - 1), capped at max."""
    backoff = exponential(initial=0.5, max=10.0, multiplier=2.0, jitter="none")

    assert expected == backoff.delay(attempt, 0.0, fixed(0.99))


@pytest.mark.parametrize(("random", "expected"), [(0.0, 0.0), (0.25, 1.0), (0.5, 2.0)])
def test_exponential_full_jitter_scales_the_raw_delay_by_random(random, expected):
    """Full jitter picks uniformly in [0, d): d * random()."""
    backoff = exponential(initial=1.0, max=10.0, multiplier=2.0, jitter="full")

    assert expected == backoff.delay(3, 0.0, fixed(random))


@pytest.mark.parametrize(("random", "expected"), [(0.0, 2.0), (0.5, 3.0), (0.75, 3.5)])
def test_exponential_equal_jitter_keeps_at_least_half_the_delay(random, expected):
    """Equal jitter picks uniformly in [d/2, d)."""
    backoff = exponential(initial=1.0, max=10.0, multiplier=2.0, jitter="equal")

    assert expected == backoff.delay(3, 0.0, fixed(random))


def test_exponential_default_is_full_jitter_from_200ms_to_10s():
    """The default schedule is full-jitter exponential, 0.2 s doubling to a 10 s cap."""
    backoff = exponential()

    assert "exponential(initial=0.2, max=10, multiplier=2, jitter='full')" == repr(backoff)


def test_exponential_with_multiplier_one_is_constant():
    """A multiplier of 1 keeps every delay at *initial*."""
    backoff = exponential(initial=0.3, max=5.0, multiplier=1.0, jitter="none")

    assert [0.3] * 5 == [backoff.delay(n, 0.0, fixed(0.5)) for n in range(1, 6)]


def test_exponential_ignores_the_previous_delay():
    """Exponential delays depend on the attempt only, never on the previous delay."""
    backoff = exponential(initial=1.0, max=100.0, jitter="none")

    assert backoff.delay(4, 0.0, fixed(0.5)) == backoff.delay(4, 99.0, fixed(0.5))


@given(
    attempt=attempts,
    random=unit,
    initial=positive,
    extra=st.floats(min_value=0.0, max_value=1e6),
    multiplier=st.floats(min_value=1.0, max_value=100.0),
    jitter=st.sampled_from(["full", "equal", "none"]),
)
def test_exponential_delay_is_always_within_zero_and_max(
    attempt, random, initial, extra, multiplier, jitter
):
    """For any attempt and any random draw, an exponential delay lies in [0, max]."""
    cap = initial + extra
    backoff = exponential(initial=initial, max=cap, multiplier=multiplier, jitter=jitter)

    delay = backoff.delay(attempt, 0.0, fixed(random))

    assert 0.0 <= delay <= cap


@pytest.mark.parametrize("multiplier", [65_536.0, 1e6, 1e100])
def test_exponential_with_a_large_accepted_multiplier_never_overflows(multiplier):
    """A multiplier the constructor accepts must not make delay() raise: the cap applies."""
    backoff = exponential(initial=0.1, max=10.0, multiplier=multiplier, jitter="none")

    assert 10.0 == backoff.delay(100, 0.0, fixed(0.5))


@pytest.mark.parametrize(("random", "expected"), [(0.0, 2.0), (0.5, 2.0), (0.999, 2.0)])
def test_constant_without_jitter_is_constant(random, expected):
    """constant(s) waits s seconds before every retry whatever the draw."""
    backoff = constant(2.0)

    assert [expected] * 3 == [backoff.delay(n, 7.0, fixed(random)) for n in (1, 2, 1000)]


@pytest.mark.parametrize(
    ("jitter", "random", "expected"),
    [("full", 0.5, 1.0), ("full", 0.0, 0.0), ("equal", 0.5, 1.5), ("equal", 0.0, 1.0)],
)
def test_constant_with_jitter(jitter, random, expected):
    """constant() applies the same jitter shapes as exponential()."""
    backoff = constant(2.0, jitter=jitter)

    assert expected == backoff.delay(1, 0.0, fixed(random))


def test_constant_zero_is_accepted():
    """A zero constant delay retries immediately."""
    backoff = constant(0)

    assert 0.0 == backoff.delay(1, 0.0, fixed(0.5))


def test_constant_defaults_and_repr():
    """constant() defaults to one second without jitter."""
    backoff = constant()

    assert "constant(1, jitter='none')" == repr(backoff)


@pytest.mark.parametrize(
    ("previous", "random", "expected"),
    [
        (0.0, 0.0, 1.0),  # first retry: starts at initial
        (0.0, 0.9, 1.0),  # upper bound is max(initial, 0) = initial
        (2.0, 0.0, 1.0),  # lower bound is always initial
        (2.0, 0.5, 3.5),  # uniform in [1, 6)
        (10.0, 0.5, 15.5),  # uniform in [1, 30)
        (10.0, 0.99, 20.0),  # capped at max
    ],
)
def test_decorrelated_is_uniform_between_initial_and_three_times_previous(
    previous, random, expected
):
    """Decorrelated jitter draws in [initial, 3 * previous), capped at max."""
    backoff = decorrelated(initial=1.0, max=20.0)

    assert expected == pytest.approx(backoff.delay(5, previous, fixed(random)))


@given(
    attempt=attempts,
    random=unit,
    initial=positive,
    extra=st.floats(min_value=0.0, max_value=1e6),
    previous=st.floats(min_value=0.0, max_value=1e9),
)
def test_decorrelated_delay_is_always_within_initial_and_max(
    attempt, random, initial, extra, previous
):
    """For any previous delay and draw, a decorrelated delay lies in [initial, max]."""
    cap = initial + extra
    backoff = decorrelated(initial=initial, max=cap)

    delay = backoff.delay(attempt, previous, fixed(random))

    assert initial <= delay <= cap


@given(random=st.lists(unit, min_size=1, max_size=50))
def test_decorrelated_chain_stays_within_bounds(random):
    """Feeding each delay back as *previous* never leaves [initial, max]."""
    backoff = decorrelated(initial=0.2, max=10.0)
    previous = 0.0
    delays = []
    for attempt, draw in enumerate(random, start=1):
        previous = backoff.delay(attempt, previous, fixed(draw))
        delays.append(previous)

    assert all(0.2 <= d <= 10.0 for d in delays)


def test_decorrelated_repr():
    """decorrelated() names its parameters in its repr."""
    assert "decorrelated(initial=0.2, max=10)" == repr(decorrelated())


@pytest.mark.parametrize(
    ("factory", "kwargs", "fragment"),
    [
        (exponential, {"initial": 0}, "exponential: initial=0 is out of range"),
        (exponential, {"initial": -1.0}, "initial=-1.0"),
        (exponential, {"initial": math.nan}, "initial=nan is not accepted"),
        (exponential, {"initial": "1"}, "initial='1' is not accepted"),
        (exponential, {"initial": True}, "initial=True is not accepted"),
        (
            exponential,
            {"initial": 2.0, "max": 1.0},
            "max=1.0 is out of range; expected a number >= 2",
        ),
        (exponential, {"multiplier": 0.5}, "multiplier=0.5 is out of range"),
        (exponential, {"jitter": "half"}, "jitter='half' is not accepted"),
        (exponential, {"jitter": None}, "jitter=None"),
        (constant, {"seconds": -0.1}, "constant: seconds=-0.1 is out of range"),
        (constant, {"seconds": None}, "seconds=None is not accepted"),
        (constant, {"jitter": "random"}, "jitter='random'"),
        (decorrelated, {"initial": 0.0}, "decorrelated: initial=0.0 is out of range"),
        (decorrelated, {"initial": 3.0, "max": 2.0}, "max=2.0 is out of range"),
    ],
)
def test_invalid_parameters_raise_configuration_error(factory, kwargs, fragment):
    """Bad back-off parameters fail at construction with a message naming the parameter."""
    with pytest.raises(ConfigurationError) as info:
        factory(**kwargs)

    assert fragment in str(info.value)


def test_configuration_error_is_a_value_error():
    """Invalid back-off configuration can be caught as a ValueError."""
    with pytest.raises(ValueError):
        exponential(multiplier=0)


def test_backoffs_are_immutable():
    """Back-off schedules are frozen: a shared schedule cannot be changed under its users."""
    backoff = exponential()

    with pytest.raises(AttributeError):
        backoff.initial = 5.0  # type: ignore[attr-defined]


def test_equal_configurations_compare_equal():
    """Two schedules built with the same parameters are equal (pipelines compare specs)."""
    assert exponential(initial=1.0, max=5.0) == exponential(initial=1.0, max=5.0)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("exponential", exponential()), ("constant", constant()), ("decorrelated", decorrelated())],
)
def test_backoff_from_name_builds_the_default_schedule(name, expected):
    """A back-off name from a configuration file yields that schedule with its defaults."""
    assert expected == backoff_from_name("Retry", name)


def test_backoff_from_name_rejects_unknown_names():
    """An unknown back-off name fails with the owner and the accepted names."""
    with pytest.raises(ConfigurationError) as info:
        backoff_from_name("Retry", "linear")

    assert "Retry: backoff='linear' is not accepted" in str(info.value)


def test_public_names_are_the_same_functions():
    """buttress re-exports the three back-off constructors."""
    assert (exponential, constant, decorrelated) == (
        buttress.exponential,
        buttress.constant,
        buttress.decorrelated,
    )
