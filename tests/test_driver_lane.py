"""
The lanes (``_driver_lane``): a client call's first attempt on the default client layout.

Every scenario runs four times, sync and async, through the lane and through the general
driver alone (the lane switched off at compile time), and all must leave the same trace: what
the client saw, what was counted, what the breaker and the bulkhead hold, which events fired.
The lane is a shortcut, never a behaviour of its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import pytest
from tests.support.call_shape import RESEND, BadStatus, Response
from tests.support.call_shape import SHAPE as BASE_SHAPE

import buttress
from buttress import _driver_async, _driver_sync
from buttress._shape import CallShape
from buttress._stats import FAILURE, REJECTED, SUCCESS
from buttress.policies._timeout import deadline_var
from buttress.telemetry._events import Event, TimedOut
from buttress.telemetry._hooks import add_hook
from buttress.testing import FakeClock

INSIDE: ContextVar[str | None] = ContextVar("test_lane_inside", default=None)


class Refused(Exception):
    """A transport error: retried."""


class Invalid(Exception):
    """An error of the caller's: not retried."""


SHAPE = dataclasses.replace(BASE_SHAPE, inside=INSIDE, marks="http")


class Server:
    """
    Plays *script* in turn: a status to answer, an exception to raise, or a callable.

    Records what each attempt saw: its timeout, resend number, mark and published deadline.
    *took* is how long each attempt lasts on the fake clock.
    """

    def __init__(self, clock: FakeClock, *script: Any, took: float = 0.01) -> None:
        self.clock = clock
        self.script = list(script)
        self.took = took
        self.responses: list[Response] = []
        self.seen: list[tuple[Any, int, str | None, bool]] = []

    def __call__(self, **kwargs: Any) -> Response:
        self.seen.append(
            (kwargs.get("timeout"), RESEND.get(), INSIDE.get(), deadline_var.get() is not None)
        )
        self.clock.advance(self.took)
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        if callable(step):
            return step()  # type: ignore[no-any-return]
        response = Response(step)
        self.responses.append(response)
        return response


def make(clock: FakeClock | None, **overrides: Any) -> buttress.Pipeline:
    """The default client layout: bulkhead outside the retry, breaker inside, timeouts."""
    options: dict[str, Any] = {
        "retry": buttress.Retry(
            on=(BadStatus, Refused), attempts=3, backoff=buttress.constant(0.5), budget=None
        ),
        "breaker": buttress.CircuitBreaker(minimum_calls=10, window_size=20),
        "timeout": buttress.Timeout(attempt=2.0, total=10.0),
        "bulkhead": buttress.Bulkhead(max_concurrent=2, max_queue=0, max_wait=0),
        "clock": clock,
    }
    options.update(overrides)
    return buttress.Pipeline("lane-test", **options)


@pytest.fixture(params=["sync-lane", "sync-general", "async-lane", "async-general"])
def driver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which driver runs the scenario; deadlines published as zero-code activation does."""
    buttress.configure(propagate_deadlines=True)
    if request.param.endswith("general"):
        monkeypatch.setattr(_driver_sync, "build_lane", lambda *_: None)
        monkeypatch.setattr(_driver_async, "build_alane", lambda *_: None)
    return str(request.param)


@pytest.fixture
def events() -> Iterator[list[Event]]:
    seen: list[Event] = []
    remove = add_hook(seen.append)
    yield seen
    remove()


def run(
    driver: str,
    pipeline: buttress.Pipeline,
    server: Server,
    shape: CallShape = SHAPE,
    **kwargs: Any,
) -> Any:
    """One call through *driver*; in async mode a script step may return an awaitable."""
    if driver.startswith("sync"):
        return pipeline.shaped(shape)(server, (), kwargs, 0, None)

    async def attempt(**kw: Any) -> Any:
        answer = server(**kw)
        return await answer if inspect.isawaitable(answer) else answer

    async def main() -> Any:
        return await pipeline.ashaped(shape)(attempt, (), kwargs, 0, None)

    return asyncio.run(main())


def permits(pipeline: buttress.Pipeline) -> int:
    assert pipeline.bulkhead is not None
    return len(pipeline.bulkhead._free)


def test_the_default_client_layout_runs_through_the_lane(driver: str, clock: FakeClock) -> None:
    pipeline = make(clock)
    compiled = pipeline.shaped(SHAPE) if driver.startswith("sync") else pipeline.ashaped(SHAPE)
    lane = "lane" if driver.startswith("sync") else "alane"
    assert compiled.__name__ == (lane if driver.endswith("lane") else "attempts")


@pytest.mark.parametrize(
    "overrides",
    [
        {"observe": True},
        {"rate_limit": buttress.RateLimit(rate=100, burst=10)},
        {"bulkhead": None},
        {"breaker": None},
        {"timeout": None},
        {
            "order": [
                "fallback",
                "cache",
                "rate_limit",
                "bulkhead",
                "breaker",
                "timeout",
                "retry",
                "attempt_timeout",
            ]
        },
    ],
    ids=["observe", "rate-limit", "no-bulkhead", "no-breaker", "no-timeout", "breaker-outside"],
)
def test_other_layouts_have_no_lane(clock: FakeClock, overrides: dict[str, Any]) -> None:
    buttress.configure(propagate_deadlines=True)
    pipeline = make(clock, **overrides)
    assert pipeline.shaped(SHAPE).__name__ != "lane"
    assert pipeline.ashaped(SHAPE).__name__ != "alane"


def test_a_first_success_is_counted_and_gives_its_permit_back(
    driver: str, clock: FakeClock
) -> None:
    pipeline = make(clock)
    server = Server(clock, 200)
    result = run(driver, pipeline, server)
    assert result is server.responses[0]
    assert server.seen == [(2.0, 0, "http", True)]
    assert pipeline.stats.counts[SUCCESS] == 1
    assert permits(pipeline) == 2
    assert INSIDE.get() is None
    assert deadline_var.get() is None


def test_the_callers_timeout_is_shortened_not_replaced(driver: str, clock: FakeClock) -> None:
    server = Server(clock, 200, 200)
    run(driver, make(clock), server, timeout=0.5)
    run(
        driver, make(clock), server, timeout=(0.5, None)
    )  # not a number: reaches the client as given
    assert [seen[0] for seen in server.seen] == [0.5, (0.5, None)]


def test_a_failing_status_goes_on_to_the_retry_without_resending(
    driver: str, clock: FakeClock
) -> None:
    pipeline = make(clock)
    server = Server(clock, 503, 503, 200)
    result = run(driver, pipeline, server)
    assert result is server.responses[-1]
    assert [seen[1] for seen in server.seen] == [0, 1, 2]
    assert [r.closed for r in server.responses] == [True, True, False]
    assert pipeline.stats.counts[SUCCESS] == 1
    assert permits(pipeline) == 2


def test_a_transport_error_goes_on_to_the_retry(driver: str, clock: FakeClock) -> None:
    pipeline = make(clock)
    server = Server(clock, Refused("reset"), 200)
    assert run(driver, pipeline, server) is server.responses[-1]
    assert len(server.seen) == 2
    assert permits(pipeline) == 2


def test_an_error_that_is_not_retried_reaches_the_caller_unchanged(
    driver: str, clock: FakeClock
) -> None:
    pipeline = make(clock)
    error = Invalid("bad request")
    with pytest.raises(Invalid) as raised:
        run(driver, pipeline, Server(clock, error))
    assert raised.value is error
    assert pipeline.stats.counts[FAILURE] == 1
    assert permits(pipeline) == 2


def test_the_last_error_does_not_carry_the_first_as_its_context(
    driver: str, clock: FakeClock
) -> None:
    last = Invalid("second")
    with pytest.raises(Invalid) as raised:
        run(driver, make(clock), Server(clock, Refused("first"), last))
    assert raised.value is last
    assert raised.value.__context__ is None


def test_the_breaker_hears_each_attempt_with_its_duration(
    driver: str, clock: FakeClock, events: list[Event]
) -> None:
    # Two slow failures fill the breaker's minimum: it opens (failure rate 100 %), and the
    # third attempt is refused without reaching the client. The dependency did answer the
    # second: the caller gets that answer, not a rejection.
    pipeline = make(clock, breaker=buttress.CircuitBreaker(minimum_calls=2, window_size=2))
    server = Server(clock, Refused("1"), Refused("2"), 200, took=3.0)
    with pytest.raises(Refused, match="2"):
        run(driver, pipeline, server)
    assert len(server.seen) == 2
    assert (pipeline.stats.counts[FAILURE], pipeline.stats.counts[REJECTED]) == (1, 0)
    overruns = [e for e in events if isinstance(e, TimedOut) and e.scope == "attempt"]
    # Both attempts took 3 s of their 2 s: reported by the sync drivers; the async ones cancel
    # at the deadline instead (on the loop's clock, which this fake clock does not move).
    assert len(overruns) == (2 if driver.startswith("sync") else 0)
    assert permits(pipeline) == 2


def test_an_open_breaker_rejects_before_the_client_is_called(driver: str, clock: FakeClock) -> None:
    pipeline = make(clock)
    assert pipeline.breaker is not None
    pipeline.breaker.force_open()
    server = Server(clock, 200)
    with pytest.raises(buttress.CircuitOpenError):
        run(driver, pipeline, server)
    assert server.seen == []
    assert permits(pipeline) == 2


def test_a_slow_success_is_reported_as_an_overrun(
    driver: str, clock: FakeClock, events: list[Event]
) -> None:
    pipeline = make(clock)
    run(driver, pipeline, Server(clock, 200, took=2.5))
    overruns = [(e.scope, e.timeout) for e in events if isinstance(e, TimedOut)]
    assert overruns == ([("attempt", 2.0)] if driver.startswith("sync") else [])  # see above
    assert pipeline.stats.counts[SUCCESS] == 1


def test_the_total_deadline_starts_with_the_first_attempt(driver: str, clock: FakeClock) -> None:
    # 0.8 s first attempt + 0.5 s back-off: the second attempt has 0.7 s of the 2 s left, and
    # after it no third one starts; the caller gets the last failure.
    pipeline = make(clock, timeout=buttress.Timeout(attempt=1.0, total=2.0))
    server = Server(clock, 503, 503, 200, took=0.8)
    with pytest.raises(BadStatus):
        run(driver, pipeline, server)
    assert [seen[0] for seen in server.seen] == [1.0, pytest.approx(0.7)]
    assert pipeline.stats.counts[FAILURE] == 1
    assert permits(pipeline) == 2


def test_a_full_bulkhead_rejects_without_calling(driver: str, clock: FakeClock) -> None:
    pipeline = make(clock, bulkhead=buttress.Bulkhead(max_concurrent=1, max_queue=0, max_wait=0))
    nested = Server(clock, 200)

    def call_again() -> Response:
        with pytest.raises(buttress.RejectedError):
            pipeline.shaped(SHAPE)(nested, (), {}, 0, None)
        return Response(200)

    async def acall_again() -> Response:
        with pytest.raises(buttress.RejectedError):
            await pipeline.ashaped(SHAPE)(nested, (), {}, 0, None)
        return Response(200)

    run(driver, pipeline, Server(clock, call_again if driver.startswith("sync") else acall_again))
    assert nested.seen == []
    assert permits(pipeline) == 1


def test_an_interrupt_gives_the_permit_back_and_counts_nothing(
    driver: str, clock: FakeClock
) -> None:
    pipeline = make(clock)
    with pytest.raises(KeyboardInterrupt):
        run(driver, pipeline, Server(clock, KeyboardInterrupt()))
    assert sum(pipeline.stats.counts) == 0
    assert permits(pipeline) == 2
    assert INSIDE.get() is None
    assert deadline_var.get() is None


def test_a_timeout_the_client_cannot_take_sends_nothing_and_gives_the_permit_back(
    driver: str, clock: FakeClock
) -> None:
    def refuse(callers: Any, left: float) -> Any:
        raise ValueError(f"timeout {callers!r} is not accepted")

    pipeline = make(clock)
    server = Server(clock, 200)
    with pytest.raises(ValueError, match="not accepted"):
        run(driver, pipeline, server, dataclasses.replace(SHAPE, tighten=refuse), timeout="soon")
    assert server.seen == []
    assert permits(pipeline) == 2
    assert deadline_var.get() is None


def test_with_deadlines_not_propagated_the_client_gets_its_own_timeout(
    driver: str, clock: FakeClock
) -> None:
    buttress.configure(propagate_deadlines=False)
    server = Server(clock, 200)
    run(driver, make(clock), server, timeout=7)
    assert server.seen == [(7, 0, "http", False)]


@pytest.mark.parametrize("lane", [True, False], ids=["lane", "general"])
def test_an_async_first_attempt_past_its_deadline_is_cancelled_and_retried(
    lane: bool, monkeypatch: pytest.MonkeyPatch, events: list[Event]
) -> None:
    # Real time (the watchdog runs on the loop's clock): a 50 ms attempt timeout.
    buttress.configure(propagate_deadlines=True)
    if not lane:
        monkeypatch.setattr(_driver_async, "build_alane", lambda *_: None)
    pipeline = make(
        None,
        timeout=buttress.Timeout(attempt=0.05, total=5.0),
        retry=buttress.Retry(on=TimeoutError, attempts=2, backoff=buttress.constant(0.0)),
    )
    cancelled: list[bool] = []
    answers = [None, Response(200)]

    async def attempt(**_: Any) -> Response:
        answer = answers.pop(0)
        if answer is None:
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                cancelled.append(True)
                raise
        assert answer is not None
        return answer

    async def main() -> Any:
        return await pipeline.ashaped(SHAPE)(attempt, (), {}, 0, None)

    result = asyncio.run(main())
    assert result.status == 200
    assert cancelled == [True]
    assert [(e.scope, e.cancelled) for e in events if isinstance(e, TimedOut)] == [
        ("attempt", True)
    ]
    assert pipeline.stats.counts[SUCCESS] == 1
    assert permits(pipeline) == 2


def test_a_client_that_reads_the_deadline_itself_gets_it_published(
    driver: str, clock: FakeClock
) -> None:
    # httpx's shape: no timeout argument; its send reads buttress.remaining() per attempt.
    left: list[float | None] = []

    def read_deadline() -> Response:
        left.append(buttress.remaining())
        return Response(200)

    pipeline = make(clock)
    shape = dataclasses.replace(SHAPE, deadline_argument=None)
    compiled = pipeline.shaped(shape) if driver.startswith("sync") else pipeline.ashaped(shape)
    assert (compiled.__name__ in ("lane", "alane")) == driver.endswith("lane")
    server = Server(clock, read_deadline, took=0.0)
    run(driver, pipeline, server, shape, timeout=5)
    assert left == [2.0]
    assert server.seen[0][0] == 5  # the caller's own argument, untouched


# --- the plain lane: protect() calls, no client duties ---------------------------------------------


@pytest.fixture(params=["sync-lane", "sync-general", "async-lane", "async-general"])
def plain(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """A plain call through the lane or through the general driver alone, sync or async."""
    if request.param.endswith("general"):
        monkeypatch.setattr(_driver_sync, "build_plain_lane", lambda *_: None)
        monkeypatch.setattr(_driver_async, "build_alane", lambda *_: None)
    return str(request.param)


def call(plain: str, pipeline: buttress.Pipeline, fn: Any, *args: Any) -> Any:
    """``pipeline.call(fn, *args)``, or its async twin around *fn*."""
    if plain.startswith("sync"):
        return pipeline.call(fn, *args)

    async def afn(*a: Any) -> Any:
        return fn(*a)

    return asyncio.run(pipeline.acall(afn, *args))


def test_a_plain_call_on_the_default_layout_runs_through_the_lane(
    plain: str, clock: FakeClock
) -> None:
    def compiled(pipeline: buttress.Pipeline) -> str:
        run = pipeline._run if plain.startswith("sync") else pipeline._arun
        return run.__name__

    lane = "plain" if plain.startswith("sync") else "alane"
    assert compiled(make(clock)) == (lane if plain.endswith("lane") else "attempts")
    assert compiled(make(clock, observe=True)) not in ("plain", "alane")


def test_a_plain_success_is_counted_and_gives_its_permit_back(plain: str, clock: FakeClock) -> None:
    pipeline = make(clock)
    assert call(plain, pipeline, lambda x: x * 2, 21) == 42
    assert pipeline.stats.counts[SUCCESS] == 1
    assert permits(pipeline) == 2


def test_a_plain_failure_goes_on_to_the_retry_and_the_last_error_is_the_callers(
    plain: str, clock: FakeClock
) -> None:
    pipeline = make(clock)
    errors = [Refused("1"), Refused("2"), Invalid("3")]

    def flaky() -> None:
        clock.advance(0.01)
        raise errors.pop(0)

    with pytest.raises(Invalid, match="3") as raised:
        call(plain, pipeline, flaky)
    assert errors == []
    assert raised.value.__context__ is None
    assert pipeline.stats.counts[FAILURE] == 1
    assert permits(pipeline) == 2


def test_a_plain_call_sees_the_deadline_only_when_deadlines_are_propagated(
    plain: str, clock: FakeClock
) -> None:
    pipeline = make(clock)
    buttress.configure(propagate_deadlines=False)
    outside = call(plain, pipeline, buttress.remaining)
    buttress.configure(propagate_deadlines=True)
    inside = call(plain, pipeline, buttress.remaining)
    assert (outside, inside) == (None, 2.0)
    assert deadline_var.get() is None


def test_a_plain_call_steps_aside_for_an_open_breaker_and_an_interrupt_counts_nothing(
    plain: str, clock: FakeClock
) -> None:
    pipeline = make(clock)

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        call(plain, pipeline, interrupted)
    assert sum(pipeline.stats.counts) == 0
    assert pipeline.breaker is not None
    pipeline.breaker.force_open()
    with pytest.raises(buttress.CircuitOpenError):
        call(plain, pipeline, lambda: None)
    assert pipeline.stats.counts[REJECTED] == 1
    assert permits(pipeline) == 2


# --- a client with a timeout of its own (CallShape.app_timeout) ----------------------------------

OWN = dataclasses.replace(SHAPE, app_timeout=True)


def test_a_client_keeps_its_own_timeout_on_the_first_attempt(
    driver: str, clock: FakeClock, events: list[Event]
) -> None:
    # The built-in timeouts respect the app's: no timeout handed over, no deadline published,
    # and a 5 s attempt under a 2 s attempt timeout is no timeout at all.
    pipeline = make(clock)
    server = Server(clock, 200, 200, took=5.0)
    run(driver, pipeline, server, OWN)
    run(driver, pipeline, server, OWN, timeout=20.0)
    assert [seen[0] for seen in server.seen] == [None, 20.0]
    assert [seen[3] for seen in server.seen] == [False, False]
    assert [e for e in events if isinstance(e, TimedOut)] == []
    assert pipeline.stats.counts[SUCCESS] == 2


def test_the_retries_of_a_client_with_its_own_timeout_get_what_is_left_of_the_total(
    driver: str, clock: FakeClock
) -> None:
    # 0.8 s first attempt + 0.5 s back-off: the retry has 0.7 s of the 2 s total, whatever the
    # attempt timeout; the app's 20 s is shortened only there.
    pipeline = make(clock, timeout=buttress.Timeout(attempt=0.1, total=2.0))
    server = Server(clock, 503, 200, took=0.8)
    run(driver, pipeline, server, OWN, timeout=20.0)
    assert [seen[0] for seen in server.seen] == [20.0, pytest.approx(0.7)]
    assert [seen[3] for seen in server.seen] == [False, True]


def test_a_configured_timeout_shortens_the_clients_own(driver: str, clock: FakeClock) -> None:
    timeout = buttress.Timeout(attempt=1.0, total=10.0, respect_app_timeout=False)
    server = Server(clock, 200)
    run(driver, make(clock, timeout=timeout), server, OWN, timeout=20.0)
    assert [seen[0] for seen in server.seen] == [1.0]


@pytest.mark.parametrize("lane", [True, False])
@pytest.mark.parametrize("respect", [True, False])
def test_an_async_first_attempt_is_cancelled_only_by_a_configured_timeout(
    respect: bool, lane: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Real time: the watchdog runs on the event loop's clock. (The sync drivers never cancel.)
    buttress.configure(propagate_deadlines=True)
    if not lane:
        monkeypatch.setattr(_driver_async, "build_alane", lambda *_: None)
    timeout = buttress.Timeout(attempt=0.05, total=2.0, respect_app_timeout=respect)
    pipeline = make(None, timeout=timeout, retry=None)

    async def slow(**_: Any) -> Response:
        await asyncio.sleep(0.2)
        return Response(200)

    async def main() -> Any:
        return await pipeline.ashaped(OWN)(slow, (), {}, 0, None)

    if respect:
        assert asyncio.run(main()).status == 200
    else:
        with pytest.raises(buttress.TimeoutError, match="buttress: the attempt timeout of 0.05s"):
            asyncio.run(main())
