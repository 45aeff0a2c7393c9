"""
What a policy is bound to when a pipeline is built: its target, clock, randomness and mode.

Policies are immutable configuration (``Retry``, ``CircuitBreaker``...). A pipeline binds each
one to a :class:`PolicyContext` to create its runtime state; two pipelines built from the same
``CircuitBreaker()`` therefore never share a window or a state.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ._clock import SYSTEM_CLOCK, Clock
from .telemetry._events import Event
from .telemetry._hooks import emit as _emit


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyContext:
    """
    The environment a policy's runtime state lives in.

    Attributes:
        target: The pipeline name every event carries.
        kind: ``http``, ``db``, ``llm`` or ``function``.
        clock: Where time comes from (a FakeClock in tests).
        random: Returns a float in [0, 1); used for jitter.
        observe: Observe mode: record and report every decision, enforce none.
        emit: Where events go (the hook registry by default).

    .. versionadded:: 0.1.0
    """

    target: str
    kind: str = "function"
    clock: Clock = SYSTEM_CLOCK
    random: Callable[[], float] = field(default=random.random)
    observe: bool = False
    emit: Callable[[Event], None] = _emit
