# House style writes assertions as `expected == actual`; ruff's SIM300 calls that Yoda style.
# ruff: noqa: SIM300

"""Tests for Fallback's configuration and FallbackState's pure decisions."""

from __future__ import annotations

import asyncio
import inspect

import pytest

import buttress
from buttress._context import PolicyContext
from buttress._exceptions import CircuitOpenError, ConfigurationError
from buttress.policies._fallback import MISSING, Fallback, FallbackState
from buttress.telemetry._events import FallbackUsed
from buttress.testing import capture_events


def make(events: list, *, observe: bool = False, **kwargs) -> FallbackState:
    """A FallbackState whose events go to *events*."""
    ctx = PolicyContext(target="svc", kind="llm", observe=observe, emit=events.append)
    return Fallback(**kwargs).bind(ctx)


def used(error_type: str, *, observed: bool = False) -> FallbackUsed:
    """The FallbackUsed event expected for target svc."""
    return FallbackUsed(target="svc", kind="llm", error_type=error_type, observed=observed)


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({}, "Fallback: give exactly one of value=... or handler=...; got value=MISSING"),
        ({"value": 1, "handler": lambda e: 2}, "give exactly one of value=... or handler=..."),
        ({"handler": 42}, "Fallback: handler=42 is not accepted; expected a callable"),
        ({"value": 1, "on": ()}, "Fallback: on=() is not accepted"),
        ({"value": 1, "on": "ValueError"}, "on='ValueError' is not accepted"),
        ({"value": 1, "on": (ValueError, "x")}, "non-empty tuple of exception types"),
    ],
)
def test_invalid_configuration_raises(kwargs, fragment):
    """Bad Fallback parameters fail at construction, naming what is wrong."""
    with pytest.raises(ConfigurationError) as info:
        Fallback(**kwargs)

    assert fragment in str(info.value)


@pytest.mark.parametrize("value", [None, 0, "", [], False])
def test_falsy_values_are_valid_substitutes(value):
    """None and other falsy values are legitimate fallback values."""
    state = make([], value=value)

    assert value == state.handle(ValueError("x"))


def test_missing_sentinel_repr():
    """The 'no value given' sentinel has a readable repr."""
    assert "MISSING" == repr(MISSING)


@pytest.mark.parametrize(
    ("fallback", "expected"),
    [
        (Fallback(value=0), "<Fallback value=0 on=Exception>"),
        (
            Fallback(value="x", on=(KeyError, OSError)),
            "<Fallback value='x' on=(KeyError, OSError)>",
        ),
    ],
)
def test_repr(fallback, expected):
    """Fallback's repr shows the substitute and what it replaces."""
    assert expected == repr(fallback)


def test_repr_of_a_handler():
    """With a handler, the repr names the handler instead of a value."""

    def cached(exc):
        return None

    assert repr(Fallback(handler=cached)).startswith("<Fallback handler=<function")


def test_state_repr():
    """FallbackState's repr names its target."""
    assert "<FallbackState target='svc'>" == repr(make([], value=1))


def test_public_name():
    """buttress.Fallback is the same class."""
    assert Fallback is buttress.Fallback


# --- applies ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("on", "exc", "expected"),
    [
        (Exception, ValueError("x"), True),
        (Exception, CircuitOpenError("open", target="svc"), True),
        (Exception, KeyboardInterrupt(), False),
        (Exception, SystemExit(1), False),
        (Exception, asyncio.CancelledError(), False),
        (KeyError, KeyError("k"), True),
        (KeyError, ValueError("v"), False),
        ((KeyError, ConnectionError), ConnectionResetError(), True),
        ((KeyError, ConnectionError), TimeoutError(), False),
        (lambda exc: "cache" in str(exc), RuntimeError("cache miss"), True),
        (lambda exc: "cache" in str(exc), RuntimeError("disk full"), False),
    ],
)
def test_applies_follows_the_on_spec(on, exc, expected):
    """The fallback replaces exactly the failures its `on` names; never BaseException."""
    state = make([], value=None, on=on)

    assert expected == state.applies(exc)


def test_applies_reports_nothing_when_enforcing():
    """applies() decides only; the event is emitted when the substitute is served."""
    events: list = []
    state = make(events, value=1)

    state.applies(ValueError("x"))

    assert [] == events


def test_observe_mode_reports_but_never_applies():
    """In observe mode a matching failure is reported as observed and not replaced."""
    events: list = []
    state = make(events, observe=True, value=1)

    applied = state.applies(ValueError("x"))

    assert (False, [used("ValueError", observed=True)]) == (applied, events)


def test_observe_mode_ignores_failures_outside_on():
    """In observe mode a failure the fallback would not replace is not reported."""
    events: list = []
    state = make(events, observe=True, value=1, on=KeyError)

    applied = state.applies(ValueError("x"))

    assert (False, []) == (applied, events)


# --- handle ----------------------------------------------------------------------------------


def test_handle_returns_the_value_and_reports_it():
    """handle() serves the configured value and emits FallbackUsed."""
    events: list = []
    state = make(events, value={"cached": True})

    result = state.handle(ConnectionError("down"))

    assert ({"cached": True}, [used("ConnectionError")]) == (result, events)


def test_handle_calls_the_handler_with_the_failure():
    """A handler receives the failure and its return value is served."""
    seen = []
    state = make([], handler=lambda exc: seen.append(exc) or "substitute")
    error = KeyError("k")

    result = state.handle(error)

    assert ("substitute", [error]) == (result, seen)


def test_handle_reports_the_qualified_error_type():
    """FallbackUsed carries the module-qualified class of buttress's own errors."""
    events: list = []
    state = make(events, value=None)

    state.handle(CircuitOpenError("open", target="svc"))

    assert "buttress.CircuitOpenError" == events[0].error_type


def test_handler_errors_propagate():
    """An exception raised by the handler reaches the caller."""

    def broken(exc):
        raise RuntimeError("handler failed")

    state = make([], handler=broken)

    with pytest.raises(RuntimeError) as info:
        state.handle(ValueError("x"))

    assert "handler failed" == str(info.value)


def test_async_handler_from_sync_raises_and_closes_the_coroutine():
    """An async handler used from a sync call is a configuration error; the coroutine is closed."""
    created = []

    async def ahandler(exc):
        return "never"

    def handler(exc):
        coroutine = ahandler(exc)
        created.append(coroutine)
        return coroutine

    state = make([], handler=handler)

    with pytest.raises(ConfigurationError) as info:
        state.handle(ValueError("x"))

    assert "is async; async handlers only work with acall()" in str(info.value)
    assert inspect.CORO_CLOSED == inspect.getcoroutinestate(created[0])


def test_async_def_handler_from_sync_raises():
    """Passing an `async def` handler directly fails the same way on a sync call."""

    async def ahandler(exc):
        return "never"

    state = make([], handler=ahandler)

    with pytest.raises(ConfigurationError) as info:
        state.handle(ValueError("x"))

    assert "target 'svc'" in str(info.value)


def test_events_go_to_hooks_by_default():
    """Without an injected emit, FallbackUsed reaches the registered hooks."""
    state = Fallback(value=1).bind(PolicyContext(target="hooked"))

    with capture_events() as events:
        state.handle(ValueError("x"))

    assert ["hooked"] == [e.target for e in events if isinstance(e, FallbackUsed)]


# --- ahandle ---------------------------------------------------------------------------------


def test_ahandle_awaits_an_async_handler():
    """ahandle() awaits a coroutine handler and serves its result."""
    events: list = []

    async def ahandler(exc):
        await asyncio.sleep(0)
        return f"recovered from {type(exc).__name__}"

    state = make(events, handler=ahandler)

    result = asyncio.run(state.ahandle(TimeoutError()))

    assert ("recovered from TimeoutError", [used("TimeoutError")]) == (result, events)


def test_ahandle_accepts_a_sync_handler():
    """ahandle() serves a sync handler's return value as is."""
    state = make([], handler=lambda exc: 7)

    assert 7 == asyncio.run(state.ahandle(ValueError("x")))


def test_ahandle_serves_the_value():
    """ahandle() serves the configured value and reports it."""
    events: list = []
    state = make(events, value="static")

    result = asyncio.run(state.ahandle(ValueError("x")))

    assert ("static", [used("ValueError")]) == (result, events)


def test_ahandle_propagates_handler_errors():
    """An exception from an async handler reaches the awaiting caller."""

    async def broken(exc):
        raise LookupError("nothing cached")

    state = make([], handler=broken)

    with pytest.raises(LookupError):
        asyncio.run(state.ahandle(ValueError("x")))
