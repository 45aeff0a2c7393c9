"""
Process-wide switches, in one locked place (stamina's ``_config``).

The drivers read :data:`CONFIG` attributes directly on every call: a plain attribute read is the
cheapest check Python has, and these switches change rarely (tests, emergencies).
"""

from __future__ import annotations

import threading
from types import TracebackType

from . import _validate


class _Config:
    __slots__ = ("active", "lock", "propagate_deadlines", "testing", "testing_attempts")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = True
        # Publishing each attempt's deadline in a ContextVar costs ~0.2 us per attempt, more
        # than the rest of the happy path; it is switched on by whoever reads it (client
        # integrations, or users through buttress.configure(propagate_deadlines=True)).
        self.propagate_deadlines = False
        self.testing = False
        self.testing_attempts = 1


CONFIG = _Config()


class _Restore:
    """
    Returned by the setters: use it as a context manager to restore the previous value.

    It restores only the switches its setter changed, so nested and interleaved setters
    (an emergency ``set_active(False)`` inside a ``set_testing`` block) keep each other's work.
    """

    __slots__ = ("_saved",)

    def __init__(self, saved: dict[str, object]) -> None:
        self._saved = saved

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with CONFIG.lock:
            for name, value in self._saved.items():
                setattr(CONFIG, name, value)


def set_active(active: bool) -> _Restore:
    """
    Turn every pipeline on or off; off means calls pass straight through, nothing is recorded.

    Returns a context manager that restores the previous setting::

        with buttress.testing.set_active(False):
            ...

    .. versionadded:: 0.1.0
    """
    with CONFIG.lock:
        saved: dict[str, object] = {"active": CONFIG.active}
        CONFIG.active = bool(active)
    return _Restore(saved)


def set_testing(testing: bool, *, attempts: int = 1) -> _Restore:
    """
    Testing mode: retries happen without back-off, and at most *attempts* attempts are made.

    ``attempts=1`` (the default) makes every call single-shot, so a test of a failure path
    fails at once instead of retrying. Returns a context manager that restores the previous
    setting.

    .. versionadded:: 0.1.0
    """
    _validate.integer("set_testing", "attempts", attempts, low=1)
    with CONFIG.lock:
        saved: dict[str, object] = {
            "testing": CONFIG.testing,
            "testing_attempts": CONFIG.testing_attempts,
        }
        CONFIG.testing = bool(testing)
        CONFIG.testing_attempts = attempts
    return _Restore(saved)


def is_active() -> bool:
    """Whether pipelines are active (see :func:`set_active`)."""
    return CONFIG.active
