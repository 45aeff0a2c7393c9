# Copyright 2025 the buttress developers. SPDX-License-Identifier: Apache-2.0
# The house style asserts `expected == actual`, which SIM300 calls a Yoda condition.
# ruff: noqa: SIM300
"""The breaker's consecutive-failure trigger, and the last upstream status its rejections carry."""

from __future__ import annotations

import asyncio

import pytest

import buttress
from buttress._config_layering import PLAIN_FIELDS, settable_keys
from buttress._context import PolicyContext
from buttress._exceptions import CircuitOpenError
from buttress.policies._circuit_breaker import CircuitBreaker, CircuitBreakerState, CircuitState
from buttress.telemetry._events import CallRejected, CircuitStateChanged, Event
from buttress.testing import FakeClock


class Response:
    """A response with a status code, as a result predicate and status_of read it."""

    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


class HTTPError(Exception):
    """A client error carrying the response, as requests' and httpx's do."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.response = Response(status)


def failed(result: object) -> bool:
    """5xx responses are failures."""
    return isinstance(result, Response) and result.status_code >= 500


class Harness:
    """A bound breaker on a fake clock, recording the events it emits."""

    def __init__(self, *, observe: bool = False, **config: object) -> None:
        self.clock = FakeClock()
        self.events: list[Event] = []
        ctx = PolicyContext(
            target="svc", kind="http", clock=self.clock, observe=observe, emit=self.events.append
        )
        config.setdefault("failure_on", (ConnectionError, HTTPError))
        self.config = CircuitBreaker(**config)  # type: ignore[arg-type]
        self.state: CircuitBreakerState = self.config.bind(ctx)

    @property
    def now(self) -> float:
        return self.clock.monotonic()

    def succeed(self, n: int = 1, result: object = None) -> None:
        for _ in range(n):
            self.state.acquire(self.now)
            self.state.on_result(self.now, 0.01, result)

    def fail(self, n: int = 1, exc: BaseException | None = None) -> None:
        for _ in range(n):
            self.state.acquire(self.now)
            self.state.on_exception(self.now, 0.01, exc or ConnectionError("refused"))

    def rejection(self) -> CircuitOpenError:
        with pytest.raises(CircuitOpenError) as info:
            self.state.acquire(self.now)
        return info.value

    def transitions(self) -> list[tuple[str, str]]:
        return [
            (e.from_state, e.to_state) for e in self.events if isinstance(e, CircuitStateChanged)
        ]


# -- configuration ------------------------------------------------------------------------------


def test_off_by_default():
    """Without consecutive_failures, failures below minimum_calls never trip, however many."""
    h = Harness(window="time", window_size=30, minimum_calls=100)
    h.fail(99)

    assert (None, CircuitState.CLOSED) == (h.config.consecutive_failures, h.state.state)


def test_repr_shows_the_trigger():
    """The repr names consecutive_failures when it is set."""
    assert "<CircuitBreaker consecutive_failures=5>" == repr(CircuitBreaker(consecutive_failures=5))


@pytest.mark.parametrize("value", [0, -1, True, False, 2.0, "5", 5.5])
def test_bad_values_are_rejected(value):
    """Only an int >= 1 or None is accepted; the message names the key and the value."""
    with pytest.raises(buttress.ConfigurationError) as info:
        CircuitBreaker(consecutive_failures=value)

    assert str(info.value).startswith(f"CircuitBreaker: consecutive_failures={value!r} is ")
    assert "expected an integer >= 1 or None" in str(info.value)


def test_it_is_a_configuration_file_key():
    """The key is derived from the dataclass field, None ("none") accepted."""
    assert (True, True) == (
        PLAIN_FIELDS["breaker"]["consecutive_failures"],
        "consecutive_failures" in settable_keys("breaker"),
    )


# -- the trigger --------------------------------------------------------------------------------


@pytest.mark.parametrize("window", ["count", "time"])
def test_trips_on_the_nth_failure_in_a_row_below_minimum_calls(window):
    """Five failures in a row trip the breaker though the window wants 100 calls."""
    h = Harness(window=window, window_size=30, minimum_calls=100, consecutive_failures=5)
    h.fail(4)

    assert CircuitState.CLOSED == h.state.state

    h.fail(1)

    assert CircuitState.OPEN == h.state.state
    assert [("closed", "open")] == h.transitions()


@pytest.mark.parametrize("window", ["count", "time"])
def test_a_success_restarts_the_count(window):
    """Four failures, a success, four failures: never five in a row, so the breaker stays closed."""
    h = Harness(window=window, window_size=100, minimum_calls=100, consecutive_failures=5)
    h.fail(4)
    h.succeed()
    h.fail(4)

    assert CircuitState.CLOSED == h.state.state

    h.fail(1)

    assert CircuitState.OPEN == h.state.state


def test_an_exception_outside_failure_on_restarts_the_count():
    """The dependency answered (a 404, a bug of the caller's): that is a success here too."""
    h = Harness(minimum_calls=100, consecutive_failures=3)
    h.fail(2)
    h.fail(1, exc=ValueError("not found"))
    h.fail(2)

    assert CircuitState.CLOSED == h.state.state


def test_ignored_and_released_attempts_do_not_restart_the_count():
    """Outcomes that record nothing (ignored, cancelled) neither extend nor break the run."""
    h = Harness(minimum_calls=100, consecutive_failures=3, ignore=(LookupError,))
    h.fail(1)
    h.fail(1, exc=KeyError("ignored"))
    h.fail(1, exc=KeyboardInterrupt())
    h.state.acquire(h.now)
    h.state.release()
    h.fail(1)

    assert CircuitState.CLOSED == h.state.state

    h.fail(1)

    assert CircuitState.OPEN == h.state.state


def test_failed_results_count_too():
    """A result failure_on_result calls a failure extends the run like an exception does."""
    h = Harness(minimum_calls=100, consecutive_failures=3, failure_on_result=failed)
    h.succeed(2, result=Response(503))
    h.fail(1)

    assert CircuitState.OPEN == h.state.state


def test_a_slow_success_restarts_the_count():
    """Slowness is the slow-call rate's business; a slow success is still a success."""
    h = Harness(minimum_calls=100, consecutive_failures=2, slow_call_duration=1.0)
    h.fail(1)
    h.state.acquire(h.now)
    h.state.on_result(h.now, 5.0, None)
    h.fail(1)

    assert CircuitState.CLOSED == h.state.state


def test_one_trips_on_the_first_failure():
    """consecutive_failures=1 opens the breaker on any failure."""
    h = Harness(minimum_calls=100, consecutive_failures=1)
    h.succeed(10)
    h.fail(1)

    assert CircuitState.OPEN == h.state.state


def test_the_rate_window_still_trips_on_its_own():
    """The trigger sits next to the rate window: alternating failures trip by rate, not by run."""
    h = Harness(minimum_calls=4, failure_rate_threshold=0.5, consecutive_failures=5)
    h.fail(1)
    h.succeed(1)
    h.fail(1)
    h.succeed(1)

    assert CircuitState.OPEN == h.state.state


# -- the lock-free fast paths -------------------------------------------------------------------


def test_a_full_clean_count_window_cannot_hide_the_run_from_successes():
    """
    After a failure the quiet fast path is off, so the next success resets the run.

    A full, clean count window lets successes skip the lock. If a failure left that flag set,
    the success after it would be skipped and the run would reach the limit across it.
    """
    h = Harness(window_size=4, minimum_calls=4, failure_rate_threshold=1.0, consecutive_failures=3)
    h.succeed(4)
    assert h.state._quiet

    h.fail(2)
    assert not h.state._quiet
    h.succeed(1)  # the window still holds failures: recorded under the lock, and resets the run
    h.fail(2)

    assert (CircuitState.CLOSED, 2) == (h.state.state, h.state._run)


def test_a_clean_time_window_cannot_hide_the_run_from_successes():
    """The time window's lock-free success path is off while a run is under way."""
    h = Harness(
        window="time",
        window_size=2,
        minimum_calls=1000,
        consecutive_failures=3,
        failure_rate_threshold=1.0,
    )
    h.succeed(2)
    assert h.state._clean

    h.fail(2)
    h.clock.advance(5)  # the failures age out of the window; the run must not
    h.fail(1)

    assert CircuitState.OPEN == h.state.state


def test_a_failure_the_time_window_drops_still_stops_the_fast_path():
    """
    A failure reported with a `now` older than the window is dropped by the window, not the run.

    The window then looks clean; the lock-free path must stay off all the same, or the next
    success would be skipped and the run would go on across it.
    """
    h = Harness(window="time", window_size=2, minimum_calls=1000, consecutive_failures=2)
    h.clock.advance(10)
    h.succeed(1)
    h.state.acquire(h.now)
    h.state.on_exception(h.now - 5, 0.01, ConnectionError("late report"))

    assert (1, 0, False) == (h.state._run, h.state.snapshot(h.now).failures, h.state._clean)

    h.succeed(1)
    h.fail(1)

    assert CircuitState.CLOSED == h.state.state


def test_a_success_skipped_by_a_driver_leaves_no_run_behind():
    """The drivers skip on_result while _quiet; _quiet is never set while a run is under way."""
    h = Harness(window_size=3, minimum_calls=3, failure_rate_threshold=1.0, consecutive_failures=2)
    h.succeed(3)
    h.fail(1)
    # What the drivers inline: `if not (br._quiet and fast): br.on_result(...)`.
    for _ in range(3):
        h.state.acquire(h.now)
        if not h.state._quiet:
            h.state.on_result(h.now, 0.01, None)
    h.fail(1)

    assert CircuitState.CLOSED == h.state.state


# -- half-open and the other states -------------------------------------------------------------


def test_half_open_keeps_its_probe_rules():
    """A probe failure under the probe threshold does not re-open, whatever the trigger says."""
    h = Harness(
        minimum_calls=100,
        consecutive_failures=1,
        half_open_calls=4,
        failure_rate_threshold=0.5,
        open_duration=5,
    )
    h.fail(1)
    h.clock.advance(5)
    h.fail(1)
    h.succeed(3)

    assert [("closed", "open"), ("open", "half_open"), ("half_open", "closed")] == h.transitions()


def test_the_count_starts_over_after_closing():
    """Probe failures do not carry into the closed state's run."""
    h = Harness(
        minimum_calls=100,
        consecutive_failures=3,
        half_open_calls=3,
        failure_rate_threshold=1.0,
        open_duration=5,
    )
    h.fail(3)
    h.clock.advance(5)
    h.succeed(1)
    h.fail(2)  # the last two probes fail: 2/3 under the threshold of 1.0, so it closes
    assert CircuitState.CLOSED == h.state.state

    h.fail(2)

    assert CircuitState.CLOSED == h.state.state


def test_the_count_starts_over_after_reset():
    """An operator reset clears the run with the window."""
    h = Harness(minimum_calls=100, consecutive_failures=3)
    h.fail(2)
    h.state.reset()
    h.fail(2)

    assert CircuitState.CLOSED == h.state.state


def test_observe_mode_trips_and_reports_but_admits():
    """In observe mode the trigger trips the state machine; the rejection is only reported."""
    h = Harness(observe=True, minimum_calls=100, consecutive_failures=2)
    h.fail(2)
    h.state.acquire(h.now)

    assert (CircuitState.OPEN, [True]) == (
        h.state.state,
        [e.observed for e in h.events if isinstance(e, CallRejected)],
    )


# -- the last upstream status -------------------------------------------------------------------


def test_an_open_breaker_reports_the_status_that_tripped_it():
    """The lock-free rejection carries the status of the last failure counted."""
    h = Harness(minimum_calls=100, consecutive_failures=2)
    h.fail(1, exc=HTTPError(502))
    h.fail(1, exc=HTTPError(503))

    assert (503, 503) == (h.rejection().last_status, h.rejection().last_status)


def test_a_failed_result_reports_its_status():
    """A failure read from a returned value carries that value's status."""
    h = Harness(minimum_calls=100, consecutive_failures=1, failure_on_result=failed)
    h.succeed(1, result=Response(504))

    assert 504 == h.rejection().last_status


def test_a_failure_without_status_reports_none():
    """A connection error has no status: the last failure decides, even after a 503."""
    h = Harness(minimum_calls=100, consecutive_failures=2)
    h.fail(1, exc=HTTPError(503))
    h.fail(1)

    assert None is h.rejection().last_status


def test_a_half_open_rejection_reports_the_status():
    """The locked rejection (probe permits all taken) carries the status too."""
    h = Harness(minimum_calls=100, consecutive_failures=1, half_open_calls=1, open_duration=5)
    h.fail(1, exc=HTTPError(500))
    h.clock.advance(5)
    h.state.acquire(h.now)  # the one probe

    assert (CircuitState.HALF_OPEN, 500) == (h.state.state, h.rejection().last_status)


def test_a_failed_probe_updates_the_status():
    """A probe that fails and re-opens the breaker reports its own status."""
    h = Harness(minimum_calls=100, consecutive_failures=1, half_open_calls=1, open_duration=5)
    h.fail(1, exc=HTTPError(500))
    h.clock.advance(5)
    h.fail(1, exc=HTTPError(503))

    assert (CircuitState.OPEN, 503) == (h.state.state, h.rejection().last_status)


def test_the_rate_window_trip_reports_the_status_too():
    """Whatever tripped the breaker, the last counted failure's status is reported."""
    h = Harness(minimum_calls=2, failure_rate_threshold=0.5)
    h.succeed(1)
    h.fail(1, exc=HTTPError(429))

    assert 429 == h.rejection().last_status


def test_successes_and_stragglers_do_not_change_the_status():
    """Only failures the breaker counts set the status: not successes, not late outcomes."""
    h = Harness(minimum_calls=100, consecutive_failures=1)
    h.state.acquire(h.now)  # a straggler, admitted while closed
    h.fail(1, exc=HTTPError(503))
    h.state.on_exception(h.now, 0.01, HTTPError(500))

    assert 503 == h.rejection().last_status


def test_forcing_open_and_closing_clear_the_status():
    """A forced-open breaker reports no status; a closed one starts over."""
    h = Harness(minimum_calls=100, consecutive_failures=1, half_open_calls=1, open_duration=5)
    h.fail(1, exc=HTTPError(503))
    h.state.force_open()

    assert None is h.rejection().last_status

    h.state.reset()
    h.fail(1, exc=HTTPError(502))

    assert 502 == h.rejection().last_status

    h.clock.advance(5)
    h.succeed(1)  # the probe closes the breaker
    h.state.force_open()

    assert None is h.rejection().last_status


def test_a_success_never_reads_a_status():
    """The success path leaves the result alone: no status lookup on the way."""

    class Watched:
        reads = 0

        @property
        def status_code(self) -> int:
            Watched.reads += 1
            return 200

    h = Harness(minimum_calls=100, consecutive_failures=2, failure_on_result=lambda r: False)
    h.succeed(3, result=Watched())
    h.fail(1, exc=ValueError("answered"))

    assert 0 == Watched.reads


# -- through the pipeline -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_dead_dependency_is_refused_after_five_calls_at_any_traffic(mode):
    """
    Sequential calls that always fail: the breaker opens on the fifth, the sixth never starts.

    The window alone (100 calls in 30 s) would never have tripped at this traffic.
    """
    clock = FakeClock()
    calls = 0

    def dead() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("refused")

    async def adead() -> None:
        dead()

    guard = buttress.protect(
        "dead:80",
        breaker=CircuitBreaker(
            window="time", window_size=30, minimum_calls=100, consecutive_failures=5
        ),
        clock=clock,
    )
    outcomes = []
    for _ in range(8):
        try:
            if mode == "sync":
                guard.call(dead)
            else:
                asyncio.run(guard.acall(adead))
        except Exception as exc:  # noqa: BLE001 - the test sorts them
            outcomes.append(type(exc).__name__)
        clock.advance(1.0)

    assert (5, ["ConnectionError"] * 5 + ["CircuitOpenError"] * 3) == (calls, outcomes)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_driver_fast_path_successes_break_the_run(mode):
    """Through the drivers' inlined fast path: failures, a success, failures: still closed."""
    clock = FakeClock()
    script = iter(["ok"] * 3 + ["fail"] * 2 + ["ok"] + ["fail"] * 2)

    def step() -> str:
        if next(script) == "fail":
            raise ConnectionError("refused")
        return "ok"

    async def astep() -> str:
        return step()

    guard = buttress.protect(
        "flaky:80",
        breaker=CircuitBreaker(
            window_size=3, minimum_calls=3, failure_rate_threshold=1.0, consecutive_failures=3
        ),
        clock=clock,
    )
    for _ in range(8):
        try:
            if mode == "sync":
                guard.call(step)
            else:
                asyncio.run(guard.acall(astep))
        except ConnectionError:
            pass

    assert CircuitState.CLOSED == guard.breaker.state
