"""
buttress's own faults, met while serving a call: reported once, and the call goes on without us.

buttress sits on every outbound call of the host. When its own code fails on the way to a call
(a settings lookup, a patch's routing), the host's call must still go through, unprotected or
with the defaults, and the fault must be visible without flooding the log: a broken lookup fails
on every call until it is mended.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

logger = logging.getLogger("buttress")

T = TypeVar("T")

_reported: set[str] = set()
_lock = threading.Lock()


def own_fault(where: str, target: str | None = None) -> None:
    """
    Report a fault of buttress's own code, from an ``except`` block, once per *where*.

    Logged at ERROR with its traceback the first time only. *target* is a target name (a
    ``host:port``, a database or a provider/model), which never holds credentials.
    """
    with _lock:
        if where in _reported:
            return
        _reported.add(where)
    logger.error(
        "buttress: internal error in %s%s; the call goes on without it (reported once)",
        where,
        "" if target is None else f" (target {target!r})",
        exc_info=True,  # noqa: LOG014 - called from an except block: the fault's traceback
    )


def or_default(where: str, target: str, lookup: Callable[[], T], default: T) -> T:
    """``lookup()``, or *default* after reporting the fault (see :func:`own_fault`)."""
    try:
        return lookup()
    except Exception:
        own_fault(where, target)
        return default


def forget() -> None:
    """Report every fault again when it next happens (tests)."""
    with _lock:
        _reported.clear()
