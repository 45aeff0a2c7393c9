"""The hook registry: what a hook raises stays with it, and a slow hook is named once (issue 14)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator

import pytest

import buttress
from buttress.telemetry import CallRejected, Event, RetryScheduled, _hooks, add_hook
from buttress.testing import FakeClock


class HookFault(BaseException):
    """A hook's own BaseException subclass: neither Exception nor a request to stop."""


@pytest.fixture(autouse=True)
def _no_hooks() -> Iterator[None]:
    saved = _hooks.get_hooks()
    _hooks.set_hooks([])
    yield
    _hooks.set_hooks(saved)


def raising(error: BaseException) -> Callable[[Event], None]:
    def hook(event: Event) -> None:
        raise error

    return hook


def retried_once(clock: FakeClock) -> buttress.Pipeline:
    """A pipeline whose first attempt fails and the second succeeds: emits RetryScheduled."""
    return buttress.protect(
        "hooked",
        retry=buttress.Retry(on=ConnectionError, attempts=2, backoff=buttress.constant(0.0)),
        breaker=None,
        bulkhead=None,
        timeout=None,
        clock=clock,
    )


def flaky() -> Callable[[], str]:
    calls = 0

    def call() -> str:
        nonlocal calls
        calls += 1
        if calls % 2:
            raise ConnectionError("first attempt")
        return "ok"

    return call


def failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "failed on" in r.getMessage()]


@pytest.mark.parametrize(
    "error",
    [
        ValueError("hook bug"),
        HookFault("custom"),
        GeneratorExit(),
        asyncio.CancelledError(),
        StopIteration(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_hooks_exception_never_reaches_the_caller_and_is_logged_once(
    error: BaseException, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    add_hook(raising(error))
    guard = retried_once(clock)
    call = flaky()
    with caplog.at_level(logging.ERROR, logger="buttress"):
        results = [guard.call(call) for _ in range(3)]
    assert results == ["ok", "ok", "ok"]
    logged = failures(caplog)
    assert len(logged) == 1, [r.getMessage() for r in logged]
    assert "raising.<locals>.hook" in logged[0].getMessage()
    assert "RetryScheduled" in logged[0].getMessage()
    assert logged[0].exc_info is not None
    assert logged[0].exc_info[0] is type(error)


@pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit(3)], ids=repr)
def test_keyboard_interrupt_and_system_exit_are_the_users_to_give(error: BaseException) -> None:
    add_hook(raising(error))
    with pytest.raises(type(error)):
        _hooks.emit(CallRejected(target="t", kind="function", reason="circuit_open"))


def test_the_other_hooks_still_hear_the_event(caplog: pytest.LogCaptureFixture) -> None:
    heard: list[Event] = []
    add_hook(raising(HookFault()))
    add_hook(heard.append)
    event = CallRejected(target="t", kind="function", reason="circuit_open")
    with caplog.at_level(logging.ERROR, logger="buttress"):
        _hooks.emit(event)
        _hooks.emit(event)
    assert heard == [event, event]
    assert len(failures(caplog)) == 1


def test_a_removed_hook_is_forgotten(caplog: pytest.LogCaptureFixture) -> None:
    """Reports are per registered hook: a dead hook's id, reused later, must not silence one."""
    hook = raising(HookFault())
    event = CallRejected(target="t", kind="function", reason="circuit_open")
    with caplog.at_level(logging.ERROR, logger="buttress"):
        remove = add_hook(hook)
        _hooks.emit(event)
        remove()
        assert id(hook) not in _hooks._failed
        add_hook(hook)
        _hooks.emit(event)
        _hooks.set_hooks([])
        assert not _hooks._failed
    assert len(failures(caplog)) == 2


def test_an_async_call_survives_a_hooks_cancelled_error(clock: FakeClock) -> None:
    """The hook's CancelledError is its own: the caller's task is not cancelled by it."""
    add_hook(raising(asyncio.CancelledError()))
    guard = retried_once(clock)
    call = flaky()

    async def attempt() -> str:
        await asyncio.sleep(0)
        return call()

    async def main() -> tuple[str, int]:
        result = await guard.acall(attempt)
        await asyncio.sleep(0)  # a cancellation requested meanwhile would land here
        task = asyncio.current_task()
        assert task is not None
        return result, task.cancelling()

    assert asyncio.run(main()) == ("ok", 0)


async def until(condition: Callable[[], bool]) -> None:
    """Let the other tasks run until *condition* holds (bounded: a failure must not hang)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


def test_a_real_cancellation_still_propagates_with_a_cancelling_hook() -> None:
    """task.cancel() reaches a queued and a running call; the hook's CancelledError does not."""
    add_hook(raising(asyncio.CancelledError()))
    guard = buttress.protect(
        "cancel-me",
        retry=None,
        breaker=None,
        timeout=None,
        bulkhead=buttress.Bulkhead(max_concurrent=1, max_queue=1, max_wait=60.0),
    )
    release = asyncio.Event()
    heard: list[Event] = []

    async def held() -> str:
        await release.wait()
        return "done"

    async def main() -> tuple[bool, bool, int, int]:
        add_hook(heard.append)
        running = asyncio.create_task(guard.acall(held))
        await until(lambda: guard.bulkhead is not None and guard.bulkhead.active == 1)
        queued = asyncio.create_task(guard.acall(held))
        # The queued call's event went through the cancelling hook first.
        await until(lambda: any(type(e).__name__ == "BulkheadQueued" for e in heard))
        assert not queued.done()
        queued.cancel()
        running.cancel()
        results = await asyncio.gather(running, queued, return_exceptions=True)
        assert guard.bulkhead is not None
        return (
            isinstance(results[0], asyncio.CancelledError),
            isinstance(results[1], asyncio.CancelledError),
            guard.bulkhead.active,
            guard.bulkhead.queued,
        )

    assert asyncio.run(main()) == (True, True, 0, 0)


def test_a_hook_that_cancels_its_callers_task_cancels_it_at_the_next_await(
    clock: FakeClock,
) -> None:
    """Cancelling through the task (not by raising) is a real cancellation: it is honoured."""

    def cancel_caller(event: Event) -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()

    add_hook(cancel_caller)
    guard = retried_once(clock)
    call = flaky()

    async def attempt() -> str:
        await asyncio.sleep(0)
        return call()

    async def main() -> None:
        await guard.acall(attempt)

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())


def test_a_slow_hook_is_named_once_with_its_time(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_hooks, "_now", clock.monotonic)

    def slow_hook(event: Event) -> None:
        clock.advance(0.75)

    def quick_hook(event: Event) -> None:
        clock.advance(_hooks.SLOW_HOOK / 2)

    add_hook(quick_hook)
    add_hook(slow_hook)
    event = RetryScheduled(target="t", kind="function", attempt=1, delay=0.0, error_type="E")
    with caplog.at_level(logging.WARNING, logger="buttress"):
        for _ in range(5):
            _hooks.emit(event)
    slow = [r for r in caplog.records if "took" in r.getMessage()]
    expected = (
        f"buttress: event hook {__name__}.test_a_slow_hook_is_named_once_with_its_time"
        ".<locals>.slow_hook took 0.750 s on RetryScheduled, delaying the call that emitted it:"
        " hooks run inline and must be quick (hand slow work to a queue or a thread)"
    )
    assert [r.getMessage() for r in slow] == [expected]
    assert slow[0].levelno == logging.WARNING


def test_a_slow_hook_delays_only_the_call_that_emitted(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inline by design: the emitting call pays the hook's time, on the caller's clock."""
    monkeypatch.setattr(_hooks, "_now", clock.monotonic)
    add_hook(lambda event: clock.advance(2.0))
    guard = retried_once(clock)
    start = clock.monotonic()
    assert guard.call(flaky()) == "ok"
    assert clock.monotonic() - start == pytest.approx(2.0)  # one event: one hook's time
    start = clock.monotonic()
    assert guard.call(lambda: "plain") == "plain"  # no decision, no event, no delay
    assert clock.monotonic() == start


def test_hook_names_read_well() -> None:
    class Listener:
        def __call__(self, event: Event) -> None: ...

        def on_event(self, event: Event) -> None: ...

    listener = Listener()
    assert _hooks.hook_name(listener).endswith("test_hook_names_read_well.<locals>.Listener")
    assert _hooks.hook_name(listener.on_event).endswith("Listener.on_event")
    assert _hooks.hook_name(print) == "builtins.print"

    class Odd:
        def __getattr__(self, name: str) -> object:
            raise RuntimeError(name)

        def __call__(self, event: Event) -> None: ...

    assert "Odd" in _hooks.hook_name(Odd())
