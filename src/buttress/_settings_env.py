"""
The ``BUTTRESS_*`` environment variables: their names, readers and the quick-override layer.

Each variable is read and checked here, and the quick overrides become one policy layer. Every
reader fails with a message naming the variable, the value (by its length only when it looks
like a secret) and what is accepted. Kept apart from :mod:`._settings`, which assembles
:class:`~._settings.Settings` and resolves the layers, so that the rules of one variable sit in
one place and the precedence code reads without them.
"""

from __future__ import annotations

import enum
import math
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, Literal

from ._config_layering import PolicyPatch
from ._exceptions import ConfigurationError
from ._validate import MAX_COUNT, shown

if TYPE_CHECKING:
    from ._settings import Settings

__all__ = [
    "KNOWN_INSTRUMENTATIONS",
    "NOT_SET",
    "NotSet",
    "quick_patches",
    "read_bool",
    "read_health_port",
    "read_integer",
    "read_mode",
    "read_names",
    "read_number",
    "read_port",
    "read_raw",
    "read_samples",
    "read_timeout",
    "strict_requested",
]

ENV_ENABLED: Final = "BUTTRESS_ENABLED"
ENV_MODE: Final = "BUTTRESS_MODE"
ENV_INSTRUMENTATIONS: Final = "BUTTRESS_INSTRUMENTATIONS"
ENV_DISABLED: Final = "BUTTRESS_DISABLED_INSTRUMENTATIONS"
ENV_STRICT: Final = "BUTTRESS_STRICT"
ENV_CONFIG: Final = "BUTTRESS_CONFIG"
ENV_SAMPLES: Final = "BUTTRESS_METRICS_SAMPLES_PER_SECOND"
ENV_RETRY_ATTEMPTS: Final = "BUTTRESS_RETRY_ATTEMPTS"
ENV_TIMEOUT_ATTEMPT: Final = "BUTTRESS_TIMEOUT_ATTEMPT"
ENV_TIMEOUT_TOTAL: Final = "BUTTRESS_TIMEOUT_TOTAL"
ENV_BREAKER_FAILURE_RATE: Final = "BUTTRESS_BREAKER_FAILURE_RATE"
ENV_BREAKER_OPEN_DURATION: Final = "BUTTRESS_BREAKER_OPEN_DURATION"
ENV_BULKHEAD_MAX_CONCURRENT: Final = "BUTTRESS_BULKHEAD_MAX_CONCURRENT"
ENV_MAX_TARGETS: Final = "BUTTRESS_MAX_TARGETS"
# Side features: read when they start, never by load_settings, so that a bad value turns the
# feature off rather than buttress.
ENV_HEALTH_PORT: Final = "BUTTRESS_HEALTH_PORT"
ENV_PROMETHEUS_PORT: Final = "OTEL_EXPORTER_PROMETHEUS_PORT"

KNOWN_INSTRUMENTATIONS: Final = (
    "requests",
    "httpx",
    "httpx2",
    "aiohttp",
    "urllib3",
    "psycopg",
    "psycopg2",
    "asyncpg",
    "pymysql",
    "sqlalchemy",
    "redis",
    "sqlite3",
    "openai",
    "anthropic",
    "groq",
    "google-genai",
)
"""The instrumentation names ``BUTTRESS_INSTRUMENTATIONS`` and :meth:`Settings.wants` accept."""

_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off"})
_BOOLEANS: Final = "true, false, 1, 0, yes, no, on or off (any case)"
_PORT: Final = re.compile(r"[0-9]{1,5}")
_PORT_RANGE: Final = re.compile(r"([0-9]{1,5})\s*-\s*([0-9]{1,5})")


class NotSet(enum.Enum):
    """
    The type of :data:`NOT_SET`: a quick variable that was not given.

    .. versionadded:: 0.1.0
    """

    NOT_SET = "not set"

    def __repr__(self) -> str:
        return "NOT_SET"


NOT_SET: Final = NotSet.NOT_SET
"""A timeout variable that was not given (``None`` means it was given as ``none``)."""


def strict_requested(environ: Mapping[str, str] = os.environ) -> bool:
    """
    Whether ``BUTTRESS_STRICT`` asks for strictness; never raises.

    For a bootstrap deciding what to do when :func:`load_settings` fails: raise (strict) or
    log and leave buttress off. A malformed value counts as strict: when the operator's intent
    is unclear, failing loudly is the safer reading.

    .. versionadded:: 0.1.0
    """
    raw = read_raw(environ, ENV_STRICT)
    return raw is not None and raw.lower() not in _FALSE


def quick_patches(settings: Settings) -> dict[str, PolicyPatch]:
    """The quick variables as one layer, in the same shape as a file table."""
    given: dict[str, dict[str, tuple[object, str]]] = {}

    def put(policy: str, key: str, value: object, variable: str) -> None:
        shown = "none" if value is None else f"{value:g}" if isinstance(value, float) else value
        given.setdefault(policy, {})[key] = (value, f"{variable}={shown}")

    if settings.retry_attempts is not None:
        put("retry", "attempts", settings.retry_attempts, ENV_RETRY_ATTEMPTS)
    if settings.timeout_attempt is not NOT_SET:
        put("timeout", "attempt", settings.timeout_attempt, ENV_TIMEOUT_ATTEMPT)
    if settings.timeout_total is not NOT_SET:
        put("timeout", "total", settings.timeout_total, ENV_TIMEOUT_TOTAL)
    if settings.breaker_failure_rate is not None:
        put(
            "breaker",
            "failure_rate_threshold",
            settings.breaker_failure_rate,
            ENV_BREAKER_FAILURE_RATE,
        )
    if settings.breaker_open_duration is not None:
        put("breaker", "open_duration", settings.breaker_open_duration, ENV_BREAKER_OPEN_DURATION)
    if settings.bulkhead_max_concurrent is not None:
        put(
            "bulkhead",
            "max_concurrent",
            settings.bulkhead_max_concurrent,
            ENV_BULKHEAD_MAX_CONCURRENT,
        )
    return {
        policy: PolicyPatch(
            values={k: v for k, (v, _) in keys.items()},
            origins={k: o for k, (_, o) in keys.items()},
            where=", ".join(o for _, o in keys.values()),
        )
        for policy, keys in given.items()
    }


def read_raw(environ: Mapping[str, str], name: str) -> str | None:
    """The value of *name*, stripped; ``None`` when it is unset or blank."""
    raw = environ.get(name)
    if raw is None or not raw.strip():
        return None
    return raw.strip()


def _shown(value: str) -> str:
    """*value* as a message may show it: secret-looking or long values by their length only."""
    return shown(value)


def _plain(value: str) -> str:
    """*value* as :func:`_shown` shows it, without quotes: for host names inside a sentence."""
    shown = _shown(value)
    return value if shown == repr(value) else shown


def _reject(name: str, raw: str, accepted: str) -> ConfigurationError:
    return ConfigurationError(f"{name}={_shown(raw)} is not accepted; expected {accepted}")


def read_bool(environ: Mapping[str, str], name: str) -> bool:
    """*name* as a boolean; unset means false."""
    raw = read_raw(environ, name)
    if raw is None:
        return False
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise _reject(name, raw, _BOOLEANS)


def read_mode(environ: Mapping[str, str]) -> Literal["enforce", "observe"]:
    """``BUTTRESS_MODE``: ``enforce`` (the default) or ``observe``."""
    raw = read_raw(environ, ENV_MODE)
    if raw is None or raw.lower() == "enforce":
        return "enforce"
    if raw.lower() == "observe":
        return "observe"
    raise _reject(ENV_MODE, raw, "enforce or observe")


def read_names(environ: Mapping[str, str], name: str) -> frozenset[str] | None:
    """*name* as a set of known instrumentation names; ``None`` when unset."""
    raw = read_raw(environ, name)
    if raw is None:
        return None
    names = [part.strip().lower() for part in raw.split(",") if part.strip()]
    unknown = [n for n in names if n not in KNOWN_INSTRUMENTATIONS]
    if unknown:
        raise ConfigurationError(
            f"{name}: unknown instrumentation {', '.join(_shown(n) for n in unknown)}; "
            "expected a comma-separated list of: " + ", ".join(KNOWN_INSTRUMENTATIONS)
        )
    return frozenset(names)


def _float(name: str, raw: str, accepted: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise _reject(name, raw, accepted) from None
    if not math.isfinite(value):
        raise _reject(name, raw, accepted)
    return value


def read_number(
    environ: Mapping[str, str],
    name: str,
    accepted: str,
    *,
    low: float,
    low_inclusive: bool = True,
    high: float | None = None,
) -> float | None:
    """*name* as a finite number within the bounds; ``None`` when unset."""
    raw = read_raw(environ, name)
    if raw is None:
        return None
    value = _float(name, raw, accepted)
    if (value < low if low_inclusive else value <= low) or (high is not None and value > high):
        raise _reject(name, raw, accepted)
    return value


def read_samples(environ: Mapping[str, str]) -> float:
    """``BUTTRESS_METRICS_SAMPLES_PER_SECOND``: >= 0, 50 when unset."""
    value = read_number(environ, ENV_SAMPLES, "a number of samples per second >= 0", low=0.0)
    return 50.0 if value is None else value


def read_integer(environ: Mapping[str, str], name: str, accepted: str) -> int | None:
    """*name* as an integer from 1 to :data:`~._validate.MAX_COUNT`; ``None`` when unset."""
    raw = read_raw(environ, name)
    if raw is None:
        return None
    try:
        value = int(raw)  # also refuses more than 4300 digits, with a ValueError
    except ValueError:
        raise _reject(name, raw, accepted) from None
    if value < 1:
        raise _reject(name, raw, accepted)
    if value > MAX_COUNT:
        raise _reject(name, raw, f"{accepted} and <= {MAX_COUNT}")
    return value


def read_timeout(environ: Mapping[str, str], name: str) -> float | NotSet | None:
    """*name* as seconds > 0, ``None`` for ``none``, :data:`NOT_SET` when unset."""
    raw = read_raw(environ, name)
    if raw is None:
        return NOT_SET
    if raw.lower() == "none":
        return None
    accepted = "a number of seconds > 0, or none"
    value = _float(name, raw, accepted)
    if value <= 0:
        raise _reject(name, raw, accepted)
    return value


def read_port(environ: Mapping[str, str], name: str, default: int) -> int:
    """*name* as a TCP port, 0..65535; *default* when unset."""
    raw = read_raw(environ, name)
    if raw is None:
        return default
    port = int(raw) if _PORT.fullmatch(raw) else -1
    if not 0 <= port <= 65535:
        raise _reject(name, raw, "an integer from 0 to 65535")
    return port


def read_health_port(environ: Mapping[str, str]) -> int | range | None:
    """
    ``BUTTRESS_HEALTH_PORT``: a port, or a range ``FIRST-LAST`` (one port per worker).

    Returns:
        The port (0 picks a free one), the range of ports to try in order, or ``None`` when
        unset.
    """
    raw = read_raw(environ, ENV_HEALTH_PORT)
    if raw is None:
        return None
    if _PORT.fullmatch(raw) and int(raw) <= 65535:
        return int(raw)
    match = _PORT_RANGE.fullmatch(raw)
    if match is not None:
        first, last = int(match[1]), int(match[2])
        if 1 <= first <= last <= 65535:
            return range(first, last + 1)
    raise _reject(
        ENV_HEALTH_PORT,
        raw,
        "an integer from 0 to 65535 (0 picks a free port), or a range FIRST-LAST of ports "
        "from 1 to 65535 with FIRST <= LAST, such as 8081-8084 (each process takes the "
        "first free one)",
    )
