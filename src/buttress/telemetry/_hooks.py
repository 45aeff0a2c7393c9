"""
The hook registry: where events go.

Shaped like stamina's instrumentation hooks: a process-wide, copy-on-write tuple of callables.
Emitting loops over that tuple, so with no hook registered an event costs one empty loop; the
policies build events only on decisions, never on the happy path.

A hook must never break the host application: anything a hook raises is logged once per hook
and swallowed, except ``KeyboardInterrupt`` and ``SystemExit``, which are the user's to give. That
includes ``asyncio.CancelledError``: hooks are synchronous, so a task's real cancellation is never
raised inside one (it arrives at the task's next ``await``, and ``task.cancel()`` called by a hook
still lands there); a ``CancelledError`` out of a hook is the hook's own (a cancelled future it
waited on) and must not cancel the caller's call. Swallowing it also keeps the policies' books
straight: they emit between taking and giving back a permit, and expect emit() to return.

Hooks run inline, in the caller's thread, like OpenTelemetry's synchronous span processors: a
slow hook delays the call that emitted the event by its own duration. Policies emit outside their
locks, so other calls are not held up, except that a breaker delivers its events in order: a
call with a breaker event to deliver waits for a slow hook still delivering the previous one.
Rather than hide that behind a thread (which would drop or reorder events, or grow a queue,
under load), emit() times each hook and warns once per hook that takes longer than
:data:`SLOW_HOOK` seconds on one event, naming it and its time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from ._events import Event

logger = logging.getLogger("buttress")


class Hook(Protocol):
    """
    Anything that takes an :class:`Event`.

    .. versionadded:: 0.1.0
    """

    def __call__(self, event: Event, /) -> None:
        """Handle *event*; must be quick and must not block (it runs inside the call)."""
        ...


SLOW_HOOK = 0.1
"""Seconds: a hook that takes longer on one event is reported once (a warning naming it)."""

_lock = threading.Lock()
_hooks: tuple[Hook, ...] = ()
_failed: set[int] = set()
"""ids of the registered hooks that raised (reported); forgotten when the hook is removed."""
_slow: set[int] = set()
"""ids of the registered hooks reported as slow; forgotten when the hook is removed."""
_now: Callable[[], float] = time.monotonic
"""Where emit() reads time to time hooks; unit tests put a FakeClock's ``monotonic`` here."""


def get_hooks() -> tuple[Hook, ...]:
    """
    The hooks currently registered, in call order.

    .. versionadded:: 0.1.0
    """
    return _hooks


def set_hooks(hooks: Iterable[Hook]) -> None:
    """
    Replace every registered hook.

    Raises:
        ConfigurationError: *hooks* is not an iterable of callables.

    .. versionadded:: 0.1.0
    """
    hooks = _checked("set_hooks", hooks)
    global _hooks  # a copy-on-write tuple is the cheapest thing to read
    with _lock:
        old, _hooks = _hooks, tuple(hooks)
        _forget(old, _hooks)


def add_hook(hook: Hook) -> Callable[[], None]:
    """
    Register *hook* and return a function that removes it again.

    Raises:
        ConfigurationError: *hook* is not callable.

    .. versionadded:: 0.1.0
    """
    _checked("add_hook", (hook,))
    global _hooks  # noqa: PLW0603
    with _lock:
        _hooks = (*_hooks, hook)

    def remove() -> None:
        global _hooks
        with _lock:
            old, _hooks = _hooks, tuple(h for h in _hooks if h is not hook)
            _forget(old, _hooks)

    return remove


def _forget(old: tuple[Hook, ...], new: tuple[Hook, ...]) -> None:
    """Drop the reports of removed hooks: a later hook may reuse a dead one's id (lock held)."""
    kept = {id(hook) for hook in new}
    for hook in old:
        if id(hook) not in kept:
            _failed.discard(id(hook))
            _slow.discard(id(hook))


def emit(event: Event) -> None:
    """
    Deliver *event* to every hook, inline; a failing or slow hook is reported once per hook.

    Costs one clock reading per hook, only when hooks are registered (events are built only on
    decisions, never on the happy path).
    """
    hooks = _hooks
    if not hooks:
        return
    now = _now
    start = now()
    for hook in hooks:
        try:
            hook(event)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # incl. CancelledError and GeneratorExit: see the module doc
            if _first(_failed, hook):
                logger.exception(
                    "buttress: event hook %s failed on %s; its errors are ignored",
                    hook_name(hook),
                    type(event).__name__,
                )
        end = now()
        if end - start > SLOW_HOOK and _first(_slow, hook):
            logger.warning(
                "buttress: event hook %s took %.3f s on %s, delaying the call that emitted it:"
                " hooks run inline and must be quick (hand slow work to a queue or a thread)",
                hook_name(hook),
                end - start,
                type(event).__name__,
            )
        start = end


def _first(seen: set[int], hook: Hook) -> bool:
    """Whether this is the first report of its kind about *hook* (then it is remembered)."""
    with _lock:
        if id(hook) in seen:
            return False
        seen.add(id(hook))
        return True


def hook_name(hook: object) -> str:
    """A readable name: ``module.qualname`` for functions and methods, else the type's."""
    try:
        module = getattr(hook, "__module__", None)
        qualname = getattr(hook, "__qualname__", None)
        if not isinstance(qualname, str):
            kind = type(hook)
            module, qualname = kind.__module__, kind.__qualname__
    except Exception:
        return object.__repr__(hook)
    return f"{module}.{qualname}" if isinstance(module, str) else qualname


def _checked(owner: str, hooks: object) -> tuple[Hook, ...]:
    # At registration, not at the first event: there a non-callable would only be logged.
    from .._exceptions import ConfigurationError  # noqa: PLC0415
    from .._validate import shown  # noqa: PLC0415

    if isinstance(hooks, str | bytes) or not isinstance(hooks, Iterable):
        raise ConfigurationError(
            f"{owner}: hooks={shown(hooks)} is not accepted; expected an iterable of callables "
            "taking one event"
        )
    checked = tuple(hooks)
    for hook in checked:
        if not callable(hook):
            what = "hook" if owner == "add_hook" else "hooks contains"
            raise ConfigurationError(
                f"{owner}: {what} {shown(hook)}, which is not accepted; expected a callable "
                "taking one event"
            )
    return checked
