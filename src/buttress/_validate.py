"""
Construction-time validation with messages that name the parameter, the value and the range.

Bad configuration must fail where it is written, never later on a hot path.
"""

from __future__ import annotations

import math
from typing import Any

from ._exceptions import ConfigurationError


def number(
    owner: str,
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    allow_none: bool = False,
) -> float | None:
    """
    Check that *value* is a real number within the given bounds and return it as a float.

    Raises:
        ConfigurationError: naming ``owner.name``, the value, and the accepted range.
    """
    if value is None and allow_none:
        return None
    accepted = _describe(low, high, low_inclusive, high_inclusive, allow_none)
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ConfigurationError(f"{owner}: {name}={value!r} is not accepted; expected {accepted}")
    too_low = low is not None and (value < low if low_inclusive else value <= low)
    too_high = high is not None and (value > high if high_inclusive else value >= high)
    if too_low or too_high:
        raise ConfigurationError(f"{owner}: {name}={value!r} is out of range; expected {accepted}")
    return float(value)


def integer(
    owner: str,
    name: str,
    value: Any,
    *,
    low: int | None = None,
    high: int | None = None,
    allow_none: bool = False,
) -> int | None:
    """Check that *value* is an int within ``[low, high]`` and return it."""
    if value is None and allow_none:
        return None
    accepted = _describe(low, high, True, True, allow_none, kind="an integer")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{owner}: {name}={value!r} is not accepted; expected {accepted}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigurationError(f"{owner}: {name}={value!r} is out of range; expected {accepted}")
    return value


def choice(owner: str, name: str, value: Any, accepted: tuple[str, ...]) -> str:
    """Check that *value* is one of the *accepted* strings."""
    if value not in accepted:
        options = ", ".join(repr(a) for a in accepted)
        raise ConfigurationError(
            f"{owner}: {name}={value!r} is not accepted; expected one of {options}"
        )
    return str(value)


def _describe(
    low: float | None,
    high: float | None,
    low_inclusive: bool,
    high_inclusive: bool,
    allow_none: bool,
    *,
    kind: str = "a number",
) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>=' if low_inclusive else '>'} {low:g}")
    if high is not None:
        parts.append(f"{'<=' if high_inclusive else '<'} {high:g}")
    text = kind + (" " + " and ".join(parts) if parts else "")
    return text + (" or None" if allow_none else "")
