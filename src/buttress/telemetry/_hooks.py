"""
The hook registry: where events go.

Shaped like stamina's instrumentation hooks: a process-wide, copy-on-write tuple of callables.
Emitting loops over that tuple, so with no hook registered an event costs one empty loop; the
policies build events only on decisions, never on the happy path.

A hook must never break the host application: an exception raised by a hook is logged once per
hook and swallowed.
"""

from __future__ import annotations

import logging
import threading
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
        """Handle *event*; must be quick and must not block."""
        ...


_lock = threading.Lock()
_hooks: tuple[Hook, ...] = ()
_failed: set[int] = set()


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
    global _hooks  # noqa: PLW0603 - a copy-on-write tuple is the cheapest thing to read
    with _lock:
        _hooks = tuple(hooks)


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
        global _hooks  # noqa: PLW0603
        with _lock:
            _hooks = tuple(h for h in _hooks if h is not hook)

    return remove


def emit(event: Event) -> None:
    """Deliver *event* to every hook; a failing hook is logged (once) and skipped."""
    for hook in _hooks:
        try:
            hook(event)
        except Exception:
            if id(hook) not in _failed:
                _failed.add(id(hook))
                logger.exception("buttress: event hook %r failed; its errors are ignored", hook)


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
