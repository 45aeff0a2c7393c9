"""
What a child made by ``os.fork()`` keeps of buttress, and what it starts afresh.

``fork()`` copies the whole memory of the process but only the thread that called it. Whatever
the other threads were doing stays in the copy, frozen: a bulkhead permit taken by a call in
flight, a breaker's half-open probe, a waiter in a bulkhead queue, a lock held for a few
instructions. Nothing in the child will ever give them back, so without this module a child
forked while another thread was inside a protected call rejected every call for good. That is
what preforking servers do: gunicorn runs the start-up hook (and so activation) in its master,
then forks the workers, maybe while a thread of the master is busy.

:func:`after_fork_in_child` runs in every child (``os.register_at_fork``, registered once when
this module is imported; hooks are inherited, so grandchildren run it too). It:

1. frees every lock of a buttress module: module-level locks, and the locks of buttress objects
   a module holds (``CONFIG``, ``REGISTRY``, the integrations, the installed OpenTelemetry
   listener). In place, because other modules may hold the same lock object;
2. runs the module-level resets registered with :func:`on_fork` (the async watchdogs);
3. calls ``_after_fork_in_child()`` on every runtime object registered with :func:`track`
   (bulkheads, breakers, rate limits, retry budgets, caches), which frees its locks and drops
   what belonged to calls in flight.

What the child keeps and what it drops follows one rule: state that describes the dependency
is kept (a breaker's state and window, a rate limit's tokens, a retry budget's window, cached
entries, outcome counts), while bookkeeping of calls in flight is dropped, because those calls
belong to threads that do not exist in the child (bulkhead permits and queue, half-open probes
taken, cache flights, undelivered events, the watches of other threads' event loops).

One case is beyond reach: a thread that forks from *inside* a protected call. Its copy in the
child returns through that call and gives back the permit and probe it took in the parent, so
that child's bulkhead admits one call over its limit for its lifetime. Forking from inside a
protected call is unusual (``multiprocessing`` children exit without returning), and telling
whose permit is whose would cost every call a per-thread record.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol

logger = logging.getLogger("buttress")

__all__ = ["after_fork_in_child", "on_fork", "reinit", "track"]

# Any: typeshed knows neither _at_fork_reinit() nor _is_owned().
_LOCK: Any = type(threading.Lock())
_RLOCK: Any = type(threading.RLock())


class ForkAware(Protocol):
    """A runtime object that puts itself right in a forked child."""

    def _after_fork_in_child(self) -> None:
        """Drop what belonged to the parent's other threads; runs with no other thread alive."""


_tracked: weakref.WeakSet[ForkAware] = weakref.WeakSet()
_callbacks: list[Callable[[], None]] = []


def track(obj: ForkAware) -> None:
    """Have *obj*'s ``_after_fork_in_child()`` run in every child forked while it is alive."""
    _tracked.add(obj)


def on_fork(callback: Callable[[], None]) -> Callable[[], None]:
    """Run *callback* (a module-level reset) in every forked child; usable as a decorator."""
    _callbacks.append(callback)
    return callback


def reinit(lock: Any) -> None:
    """
    Make *lock* (a ``threading.Lock`` or ``RLock``) free again, in place, in a forked child.

    A lock another thread held at the fork stays held in the child, with nobody to release it.
    An ``RLock`` the forking thread holds itself is left alone: that thread goes on in the child
    and releases it. A plain ``Lock`` cannot tell its owner; buttress never calls out of its
    own code while holding one, so the forking thread holds none.
    """
    if type(lock) is _RLOCK and lock._is_owned():
        return
    lock._at_fork_reinit()


def _module_locks() -> list[Any]:
    # Every lock a buttress module holds: directly, or as an attribute of a buttress object the
    # module holds, alone or in a tuple (CONFIG, REGISTRY, the integrations, the installed
    # OpenTelemetry listener). Found rather than listed, so that a lock added later is not
    # forgotten; plain loops and a memo of types, as this runs in every forked child.
    found: list[Any] = []
    ours: dict[type, bool] = {_LOCK: False, _RLOCK: False, tuple: False}
    for name, module in list(sys.modules.items()):
        if not (name == "buttress" or name.startswith("buttress.")):
            continue
        namespace = getattr(module, "__dict__", None)  # None: an entry that blocks an import
        if namespace is None:
            continue
        for value in list(namespace.values()):
            kind = type(value)
            mine = ours.get(kind)
            if mine is None:
                mine = ours[kind] = kind.__module__.startswith("buttress")
            if mine:
                _own_locks(value, found)
            elif kind is _LOCK or kind is _RLOCK:
                found.append(value)
            elif kind is tuple:
                for item in value:
                    if type(item).__module__.startswith("buttress"):
                        _own_locks(item, found)
    return found


def _own_locks(obj: object, found: list[Any]) -> None:
    # The locks among the attributes of a buttress object.
    names = set(getattr(obj, "__dict__", ()))
    for cls in type(obj).__mro__:
        slots = cls.__dict__.get("__slots__", ())
        names.update((slots,) if isinstance(slots, str) else slots)
    for name in names:
        value = getattr(obj, name, None)
        if type(value) is _LOCK or type(value) is _RLOCK:
            found.append(value)


def after_fork_in_child() -> None:
    """Reset buttress's per-process state in a forked child (see the module's docstring)."""
    seen: set[int] = set()
    failures: list[str] = []
    try:
        for lock in _module_locks():
            if id(lock) not in seen:  # a lock imported into a second module is the same one
                seen.add(id(lock))
                reinit(lock)
    except Exception as error:  # buttress's own fault must not break the child
        failures.append(f"module locks ({type(error).__name__})")
    for callback in _callbacks:
        try:
            callback()
        except Exception as error:
            name = getattr(callback, "__qualname__", "a reset")
            failures.append(f"{name} ({type(error).__name__})")
    for obj in list(_tracked):
        try:
            obj._after_fork_in_child()
        except Exception as error:
            failures.append(f"{type(obj).__name__} ({type(error).__name__})")
    if failures:
        logger.warning(
            "buttress: after fork, process %s could not reset: %s; calls through the affected "
            "policies may be rejected or wait",
            os.getpid(),
            ", ".join(failures),
        )


if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX; Windows has no fork
    os.register_at_fork(after_in_child=after_fork_in_child)
