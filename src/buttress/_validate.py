"""
Construction-time validation with messages that name the parameter, the value and the range.

Bad configuration must fail where it is written, never later on a hot path: every check here
raises :class:`ConfigurationError` and nothing else, whatever the value (wrong type, unhashable,
non-finite, too large for a float, a ``__repr__`` that raises). Messages show values through
:func:`shown`, which never echoes a secret-looking or long value.
"""

from __future__ import annotations

import math
import re
from typing import Any, Final

from ._exceptions import ConfigurationError

MAX_COUNT: Final = 1_000_000_000
"""The largest count any parameter accepts (attempts, slots, queue, entries, burst...).

Far above any sensible setting, and small enough that every count stays exact in a float and in
an OpenTelemetry int64, and that nothing sized by a count can be asked for absurd memory.
"""

# A long run of token characters mixing letters and digits reads like a key or a password;
# so do the words that usually come with one. Messages then say how long the value is, never
# what it is.
_SECRET_RUN: Final = re.compile(r"[A-Za-z0-9+/=_\-.~:]{20,}")
_SECRET_WORDS: Final = re.compile(
    r"bearer\s|basic\s|passw|secret|token|api[-_]?key|://[^/\s]*:[^/\s]*@", re.IGNORECASE
)
_MAX_SHOWN: Final = 40
_MAX_REPR: Final = 160


def looks_secret(text: str) -> bool:
    """Whether *text* holds something that reads like a credential."""
    if _SECRET_WORDS.search(text):
        return True
    return any(
        any(c.isdigit() for c in run) and any(c.isalpha() for c in run)
        for run in _SECRET_RUN.findall(text)
    )


def shown(value: object) -> str:
    """
    *value* as a message may show it: short, and never a secret.

    Strings that look secret or are long are shown by their length only; huge integers by their
    size; other values by a bounded ``repr`` (or their type, when the ``repr`` fails, is long or
    holds something secret-looking).
    """
    if value is None or isinstance(value, bool | float):
        return repr(value)
    if isinstance(value, int):
        if value.bit_length() > 64:
            return f"<an integer of about {int(value.bit_length() * 0.30103) + 1} digits>"
        return repr(value)
    if isinstance(value, str):
        if len(value) > _MAX_SHOWN or looks_secret(value):
            return f"<{len(value)} characters, not shown>"
        return repr(value)
    kind = type(value).__name__
    if isinstance(value, list | tuple | dict | set | frozenset | bytes | bytearray) and (
        len(value) > 16
    ):
        return f"<{kind} of {len(value)} items, not shown>"
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not turn a message into a crash
        return f"<{kind} object>"
    if len(text) > _MAX_REPR or looks_secret(text):
        return f"<{kind} object, not shown>"
    return text


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
    finite: bool = False,
) -> float | None:
    """
    Check that *value* is a real number within the given bounds and return it as a float.

    Integers too large for a float are out of range, as infinities are with *finite*.

    Raises:
        ConfigurationError: naming ``owner.name``, the value, and the accepted range.
    """
    if value is None and allow_none:
        return None
    accepted = _describe(low, high, low_inclusive, high_inclusive, allow_none, finite=finite)
    is_real = isinstance(value, int | float) and not isinstance(value, bool)
    if not is_real or (isinstance(value, float) and math.isnan(value)):
        raise ConfigurationError(
            f"{owner}: {name}={shown(value)} is not accepted; expected {accepted}"
        )
    # int and float compare exactly, however large the int: no conversion before the checks.
    too_low = low is not None and (value < low if low_inclusive else value <= low)
    too_high = high is not None and (value > high if high_inclusive else value >= high)
    if too_low or too_high:
        raise ConfigurationError(
            f"{owner}: {name}={shown(value)} is out of range; expected {accepted}"
        )
    try:
        converted = float(value)
    except OverflowError:  # an int beyond 1.8e308: no float holds it
        raise ConfigurationError(
            f"{owner}: {name}={shown(value)} is out of range; expected {accepted} "
            "(as a float: within +-1.8e308)"
        ) from None
    if finite and not math.isfinite(converted):
        raise ConfigurationError(
            f"{owner}: {name}={shown(value)} is out of range; expected {accepted}"
        )
    return converted


def integer(
    owner: str,
    name: str,
    value: Any,
    *,
    low: int | None = None,
    high: int | None = None,
    allow_none: bool = False,
) -> int | None:
    """
    Check that *value* is an int within ``[low, high]`` and return it.

    Every count also stops at :data:`MAX_COUNT`; the message names that ceiling when it is what
    the value passed.
    """
    if value is None and allow_none:
        return None
    accepted = _describe(low, high, True, True, allow_none, kind="an integer")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(
            f"{owner}: {name}={shown(value)} is not accepted; expected {accepted}"
        )
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigurationError(
            f"{owner}: {name}={shown(value)} is out of range; expected {accepted}"
        )
    if value > MAX_COUNT:
        ceiling = _describe(low, MAX_COUNT, True, True, allow_none, kind="an integer")
        raise ConfigurationError(
            f"{owner}: {name}={shown(value)} is out of range; expected {ceiling}"
        )
    return int(value)


def choice(owner: str, name: str, value: Any, accepted: tuple[str, ...]) -> str:
    """Check that *value* is one of the *accepted* strings."""
    if not isinstance(value, str) or value not in accepted:
        options = ", ".join(repr(a) for a in accepted)
        raise ConfigurationError(
            f"{owner}: {name}={shown(value)} is not accepted; expected one of {options}"
        )
    return str(value)


def boolean(owner: str, name: str, value: Any) -> bool:
    """Check that *value* is ``True`` or ``False`` (not merely truthy)."""
    if not isinstance(value, bool):
        raise ConfigurationError(
            f"{owner}: {name}={shown(value)} is not accepted; expected True or False"
        )
    return value


def function(owner: str, name: str, value: Any, expected: str, *, allow_none: bool = True) -> None:
    """
    Check that *value* is callable (or ``None`` with *allow_none*).

    Args:
        owner: The class or function checking, for the message.
        name: The parameter.
        value: What was given.
        expected: What the callable takes and returns, for the message ("a callable taking
            the exception and returning a bool").
        allow_none: Whether ``None`` (no callable) is accepted.
    """
    if (value is None and allow_none) or callable(value):
        return
    or_none = ", or None" if allow_none else ""
    raise ConfigurationError(
        f"{owner}: {name}={shown(value)} is not accepted; expected {expected}{or_none}"
    )


def _describe(
    low: float | None,
    high: float | None,
    low_inclusive: bool,
    high_inclusive: bool,
    allow_none: bool,
    *,
    kind: str = "a number",
    finite: bool = False,
) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>=' if low_inclusive else '>'} {low:g}")
    if high is not None:
        parts.append(f"{'<=' if high_inclusive else '<'} {_bound(high)}")
    text = ("a finite number" if finite else kind) + (" " + " and ".join(parts) if parts else "")
    return text + (" or None" if allow_none else "")


def _bound(value: float) -> str:
    # Counts read better in full (1000000000) than as 1e+09.
    return str(value) if isinstance(value, int) else f"{value:g}"
