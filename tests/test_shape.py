"""Drivers compiled for a call shape (``Pipeline.shaped``): what the HTTP integrations rely on."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from tests.support.call_shape import RESEND, SHAPE, BadStatus, Response

import buttress
from buttress._shape import MIN_LEFT, CallShape
from buttress.integrations._base import _inside, passthrough
from buttress.telemetry._hooks import add_hook
from buttress.testing import FakeClock, set_active


class Server:
    """Answers with *statuses* in turn, recording what each attempt saw."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.responses: list[Response] = []
        self.resends: list[int] = []
        self.timeouts: list[Any] = []

    def __call__(self, **kwargs: Any) -> Response:
        self.resends.append(RESEND.get())
        self.timeouts.append(kwargs.get("timeout", "absent"))
        response = Response(self.statuses.pop(0))
        self.responses.append(response)
        return response


def run(mode: str, pipeline: buttress.Pipeline, fn: Server, **kwargs: Any) -> Any:
    if mode == "sync":
        return pipeline.shaped(SHAPE)(fn, (), kwargs, 0, None)

    async def afn(**kw: Any) -> Response:
        return fn(**kw)

    return asyncio.run(pipeline.ashaped(SHAPE)(afn, (), kwargs, 0, None))


def pipeline(clock: FakeClock, *, timeout: buttress.Timeout | None = None) -> buttress.Pipeline:
    return buttress.Pipeline(
        "shaped",
        retry=buttress.Retry(on=BadStatus, attempts=3, backoff=buttress.constant(0.5), budget=None),
        timeout=timeout,
        clock=clock,
    )


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    """Both drivers, publishing deadlines as zero-code activation does (restored by conftest)."""
    buttress.configure(propagate_deadlines=True)
    return str(request.param)


def test_a_failing_status_is_retried_and_the_retried_response_released(
    mode: str, clock: FakeClock
) -> None:
    server = Server(503, 503, 200)
    result = run(mode, pipeline(clock), server)
    assert result is server.responses[-1]
    assert result.status == 200
    assert not result.closed
    assert [r.closed for r in server.responses[:-1]] == [True, True]
    assert server.resends == [0, 1, 2]  # published on resends only
    assert RESEND.get() == 0  # and reset after each


def test_the_last_failing_response_is_carried_out_unreleased(mode: str, clock: FakeClock) -> None:
    server = Server(503, 503, 503)
    with pytest.raises(BadStatus) as caught:
        run(mode, pipeline(clock), server)
    assert caught.value.response is server.responses[-1]
    assert not caught.value.response.closed
    assert [r.closed for r in server.responses] == [True, True, False]


def test_each_attempt_gets_what_is_left_of_its_deadline(mode: str, clock: FakeClock) -> None:
    server = Server(503, 200)
    guard = pipeline(clock, timeout=buttress.Timeout(attempt=5.0, total=5.2))
    run(mode, guard, server)
    # The first attempt gets its attempt timeout; the retry, 0.5 s later, what the total leaves.
    assert server.timeouts == [5.0, pytest.approx(4.7)]


def test_the_callers_own_timeout_is_only_shortened(mode: str, clock: FakeClock) -> None:
    guard = pipeline(clock, timeout=buttress.Timeout(attempt=5.0))
    shorter = Server(200)
    run(mode, guard, shorter, timeout=2.0)
    longer = Server(200)
    run(mode, guard, longer, timeout=60.0)
    assert (shorter.timeouts, longer.timeouts) == ([2.0], [5.0])


def test_a_timeout_that_is_not_a_number_reaches_the_client_as_given(
    mode: str, clock: FakeClock
) -> None:
    """The client judges it (and fails in its own words); nothing stays published after."""
    guard = pipeline(clock, timeout=buttress.Timeout(attempt=5.0))
    server = Server(200)
    run(mode, guard, server, timeout="soon")
    assert server.timeouts == ["soon"]
    assert buttress.remaining() is None


def test_a_tighten_that_raises_leaves_no_deadline_published(mode: str, clock: FakeClock) -> None:
    """The caller's argument is merged before the deadline is published, never after."""

    def refuse(callers: Any, left: float) -> Any:
        raise TypeError(f"cannot merge {callers!r}")

    shape = dataclasses.replace(SHAPE, tighten=refuse)
    guard = pipeline(clock, timeout=buttress.Timeout(attempt=5.0))
    server = Server(200)
    with pytest.raises(TypeError, match="cannot merge"):
        if mode == "sync":
            guard.shaped(shape)(server, (), {"timeout": 1.0}, 0, None)
        else:

            async def afn(**kw: Any) -> Response:
                return server(**kw)

            asyncio.run(guard.ashaped(shape)(afn, (), {"timeout": 1.0}, 0, None))
    assert buttress.remaining() is None
    assert server.timeouts == []


def test_a_spent_deadline_still_hands_over_a_positive_timeout(mode: str) -> None:
    clock = FakeClock()
    guard = pipeline(clock, timeout=buttress.Timeout(attempt=1e-9))
    server = Server(200)
    run(mode, guard, server)
    assert server.timeouts == [MIN_LEFT]


def test_without_a_timeout_policy_the_argument_is_left_alone(mode: str, clock: FakeClock) -> None:
    server = Server(200)
    run(mode, pipeline(clock), server)
    assert server.timeouts == ["absent"]


def test_without_deadline_propagation_the_argument_is_left_alone(
    mode: str, clock: FakeClock
) -> None:
    buttress.configure(propagate_deadlines=False)
    server = Server(200)
    run(mode, pipeline(clock, timeout=buttress.Timeout(attempt=5.0)), server)
    assert server.timeouts == ["absent"]


def test_observe_mode_hands_over_no_deadline(mode: str, clock: FakeClock) -> None:
    guard = buttress.Pipeline(
        "observed", timeout=buttress.Timeout(attempt=5.0), clock=clock, observe=True
    )
    server = Server(200)
    run(mode, guard, server)
    assert server.timeouts == ["absent"]


def test_shaped_drivers_are_cached_per_shape(clock: FakeClock) -> None:
    guard = pipeline(clock)
    assert guard.shaped(SHAPE) is guard.shaped(SHAPE)
    assert guard.ashaped(SHAPE) is guard.ashaped(SHAPE)
    assert guard.shaped(CallShape()) is not guard.shaped(SHAPE)


def test_each_attempt_is_marked_as_a_client_call_and_nothing_else_is(
    mode: str, clock: FakeClock
) -> None:
    shape = dataclasses.replace(SHAPE, inside=_inside, marks="http")
    during: list[tuple[bool, bool, float | None]] = []
    in_hooks: list[str | None] = []

    def fn(**_: Any) -> Response:
        during.append((passthrough("http"), passthrough("db"), buttress.remaining()))
        return Response(503 if len(during) == 1 else 200)

    guard = pipeline(clock)
    remove = add_hook(lambda event: in_hooks.append(_inside.get()))
    try:
        with set_active(True):
            if mode == "sync":
                guard.shaped(shape)(fn, (), {}, 0, None)
            else:

                async def afn(**kw: Any) -> Response:
                    return fn(**kw)

                asyncio.run(guard.ashaped(shape)(afn, (), {}, 0, None))
    finally:
        remove()
    # Inside an attempt a nested HTTP client passes through, a database client does not; with no
    # timeout policy there is no deadline to see.
    assert during == [(True, False, None), (True, False, None)]
    # A hook (here: told of the retry) may make HTTP calls of its own, with their own pipeline.
    assert in_hooks
    assert set(in_hooks) == {None}
    assert _inside.get() is None
