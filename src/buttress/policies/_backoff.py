"""
Back-off schedules: how long to wait before attempt *n + 1*.

A back-off is a small immutable object with one pure method, ``delay(attempt, previous, random)``;
randomness is passed in so tests control jitter. Three shapes cover what the field uses:

- :func:`exponential` with *full jitter* by default: AWS's "Exponential Backoff And Jitter"
  analysis shows full jitter spreads synchronised clients best (Envoy uses it too).
- :func:`decorrelated`: AWS's decorrelated jitter, which grows from the previous delay.
- :func:`constant`: for dependencies that recover on a fixed cadence.

Every schedule is capped: an uncapped exponential back-off turns a blip into minutes of waiting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .. import _validate
from .._exceptions import ConfigurationError

_JITTERS = ("full", "equal", "none")


class Backoff(Protocol):
    """
    A back-off schedule.

    .. versionadded:: 0.1.0
    """

    def delay(self, attempt: int, previous: float, random: Callable[[], float]) -> float:
        """
        Seconds to wait after failed attempt *attempt* (1-based).

        Args:
            attempt: The attempt that just failed, starting at 1.
            previous: The previous delay (0.0 before the first retry).
            random: Returns a float in [0, 1).
        """
        ...


def _jittered(raw: float, jitter: str, random: Callable[[], float]) -> float:
    if jitter == "full":
        return raw * random()
    if jitter == "equal":
        half = raw / 2.0
        return half + half * random()
    return raw


@dataclass(frozen=True, slots=True)
class _Exponential:
    initial: float
    max: float
    multiplier: float
    jitter: str

    def delay(self, attempt: int, previous: float, random: Callable[[], float]) -> float:
        # A large multiplier ** attempt overflows a float long before max applies.
        try:
            raw = min(self.max, self.initial * self.multiplier ** (attempt - 1))
        except OverflowError:
            raw = self.max
        return _jittered(raw, self.jitter, random)

    def __repr__(self) -> str:
        return (
            f"exponential(initial={self.initial:g}, max={self.max:g}, "
            f"multiplier={self.multiplier:g}, jitter={self.jitter!r})"
        )


@dataclass(frozen=True, slots=True)
class _Constant:
    seconds: float
    jitter: str

    def delay(self, attempt: int, previous: float, random: Callable[[], float]) -> float:
        return _jittered(self.seconds, self.jitter, random)

    def __repr__(self) -> str:
        return f"constant({self.seconds:g}, jitter={self.jitter!r})"


@dataclass(frozen=True, slots=True)
class _Decorrelated:
    initial: float
    max: float

    def delay(self, attempt: int, previous: float, random: Callable[[], float]) -> float:
        # sleep = min(cap, uniform(base, previous * 3)), starting from base.
        upper = max(self.initial, previous * 3.0)
        return min(self.max, self.initial + (upper - self.initial) * random())

    def __repr__(self) -> str:
        return f"decorrelated(initial={self.initial:g}, max={self.max:g})"


def exponential(
    *,
    initial: float = 0.2,
    max: float = 10.0,  # noqa: A002 - the natural name for a cap, as in stamina
    multiplier: float = 2.0,
    jitter: str = "full",
) -> Backoff:
    """
    Exponential back-off: ``min(max, initial * multiplier ** (attempt - 1))``, then jittered.

    Args:
        initial: The first un-jittered delay in seconds (> 0).
        max: The cap in seconds (>= initial).
        multiplier: Growth per attempt (>= 1).
        jitter: ``"full"`` (uniform in [0, d), the default), ``"equal"`` (uniform in
            [d/2, d)) or ``"none"``.

    .. versionadded:: 0.1.0
    """
    owner = "exponential"
    _validate.number(owner, "initial", initial, low=0, low_inclusive=False)
    _check_max(owner, initial, max)
    _validate.number(owner, "multiplier", multiplier, low=1)
    _validate.choice(owner, "jitter", jitter, _JITTERS)
    return _Exponential(float(initial), float(max), float(multiplier), jitter)


def constant(seconds: float = 1.0, *, jitter: str = "none") -> Backoff:
    """
    The same delay before every retry.

    .. versionadded:: 0.1.0
    """
    _validate.number("constant", "seconds", seconds, low=0)
    _validate.choice("constant", "jitter", jitter, _JITTERS)
    return _Constant(float(seconds), jitter)


def decorrelated(*, initial: float = 0.2, max: float = 10.0) -> Backoff:  # noqa: A002
    """
    Decorrelated jitter: each delay is uniform in ``[initial, previous * 3]``, capped at *max*.

    .. versionadded:: 0.1.0
    """
    _validate.number("decorrelated", "initial", initial, low=0, low_inclusive=False)
    _check_max("decorrelated", initial, max)
    return _Decorrelated(float(initial), float(max))


def _check_max(owner: str, initial: float, cap: float) -> None:
    # The bound comes from initial: a message that names max alone would blame the wrong value.
    try:
        _validate.number(owner, "max", cap, low=initial)
    except ConfigurationError as error:
        raise ConfigurationError(f"{error} (initial={_validate.shown(initial)})") from None


_BY_NAME: dict[str, Callable[[], Backoff]] = {
    "exponential": exponential,
    "constant": constant,
    "decorrelated": decorrelated,
}


def backoff_from_name(owner: str, name: str) -> Backoff:
    """Build a back-off with its defaults from its name (used by configuration files)."""
    _validate.choice(owner, "backoff", name, tuple(_BY_NAME))
    return _BY_NAME[name]()
