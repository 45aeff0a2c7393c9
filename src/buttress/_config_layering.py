"""
Layering: how one table of the file (or the quick variables) changes a :class:`PolicySet`.

A layer is a mapping of policy name to :class:`PolicyPatch`; :func:`apply_patches` applies it on
top of the layers below. This module holds everything policy-specific about that: which keys of
each policy are settable (derived from the policies' dataclass fields), the back-off shapes and
their parameters, the policy a patch starts from when the layers below removed it, and the
``build`` helper that blames a bad value on the key that set it. It is apart from the TOML
parsing (:mod:`._config_file`) because the environment's quick variables (:mod:`._settings`)
layer the same way without any file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ._api import PolicySet
from ._exceptions import ConfigurationError
from ._validate import shown
from .policies._backoff import (
    Backoff,
    _Constant,
    _Decorrelated,
    _Exponential,
    constant,
    decorrelated,
    exponential,
)
from .policies._bulkhead import Bulkhead
from .policies._cache import Cache
from .policies._circuit_breaker import CircuitBreaker
from .policies._fallback import Fallback
from .policies._rate_limit import RateLimit
from .policies._retry import Retry
from .policies._retry_budget import RetryBudget
from .policies._timeout import Timeout

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "BUDGET_FIELDS",
    "FUNCTION_RETRY_ON",
    "PLAIN_FIELDS",
    "POLICIES",
    "PolicyPatch",
    "apply_patches",
    "build",
    "check_backoff_keys",
    "settable_keys",
]

_T = TypeVar("_T")

POLICIES: Final = ("retry", "breaker", "timeout", "bulkhead", "rate_limit", "cache", "fallback")
"""The policy keys of a table, in :class:`~buttress.PolicySet` order."""

FUNCTION_RETRY_ON: Final = (ConnectionError, TimeoutError)
"""What a retry added by configuration retries when the kind has no template (``function``).

Plain functions can fail in any way; connection errors and timeouts (buttress's own
``TimeoutError`` included, it subclasses the builtin) are the only failures safe to call
transient without knowing the code. Pass ``retry=Retry(on=...)`` to ``protect`` for more.
"""

_CLASSES: Final[Mapping[str, type[Any]]] = {
    "retry": Retry,
    "breaker": CircuitBreaker,
    "timeout": Timeout,
    "bulkhead": Bulkhead,
    "rate_limit": RateLimit,
    "cache": Cache,
    "fallback": Fallback,
}
_PLAIN_TYPES = frozenset({"bool", "float", "int", "str", "None"})
_BACKOFF_KEYS: Final = ("backoff", "backoff_initial", "backoff_max", "backoff_multiplier", "jitter")
# Per shape: the file's key -> the factory's parameter.
_BACKOFF_PARAMS: Final[Mapping[str, Mapping[str, str]]] = {
    "exponential": {
        "backoff_initial": "initial",
        "backoff_max": "max",
        "backoff_multiplier": "multiplier",
        "jitter": "jitter",
    },
    "constant": {"backoff_initial": "seconds", "jitter": "jitter"},
    "decorrelated": {"backoff_initial": "initial", "backoff_max": "max"},
}
_BACKOFF_FACTORIES: Final[Mapping[str, Callable[..., Backoff]]] = {
    "exponential": exponential,
    "constant": constant,
    "decorrelated": decorrelated,
}


def _plain_fields(cls: type[DataclassInstance]) -> dict[str, bool]:
    """The init fields of *cls* a TOML value can hold, mapped to whether ``None`` is accepted."""
    plain: dict[str, bool] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        # The policy modules use `from __future__ import annotations`: types are strings.
        annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "?")
        parts = {part.strip() for part in annotation.split("|")}
        if parts <= _PLAIN_TYPES:
            plain[f.name] = "None" in parts
    return plain


PLAIN_FIELDS: Final[Mapping[str, Mapping[str, bool]]] = {
    name: _plain_fields(cls) for name, cls in _CLASSES.items()
}
"""Policy -> its parameters a file can set, mapped to whether ``"none"`` (``None``) is accepted."""
BUDGET_FIELDS: Final = _plain_fields(RetryBudget)
"""The same for the ``retry.budget`` sub-table."""


def settable_keys(policy: str) -> tuple[str, ...]:
    """
    The keys a file may set in the table of *policy* (``retry``, ``breaker``, ...), sorted.

    For ``retry``, ``budget`` stands for the ``budget`` sub-table (or ``budget = false``).
    """
    keys = set(PLAIN_FIELDS[policy])
    if policy == "retry":
        keys |= {*_BACKOFF_KEYS, "budget"}
    return tuple(sorted(keys))


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyPatch:
    """
    What one table (or the environment) says about one policy.

    Attributes:
        remove: ``policy = false``: the policy is removed.
        values: Parameter -> value, ``"none"`` already turned into ``None``. For ``retry`` also
            the back-off keys, ``budget`` (a bool) and ``budget.<parameter>``.
        origins: Parameter -> where it was set (``file: key.path`` or ``VARIABLE=value``).
        where: The table itself, for errors that come from several keys together.

    .. versionadded:: 0.1.0
    """

    remove: bool = False
    values: Mapping[str, object] = field(default_factory=dict)
    origins: Mapping[str, str] = field(default_factory=dict)
    where: str = ""


def check_backoff_keys(values: Mapping[str, object], origins: Mapping[str, str]) -> None:
    """Check what can be checked before knowing the back-off the table adjusts."""
    if "backoff" not in values:
        return
    shape = values["backoff"]
    # A TOML array or table is unhashable: test the type before looking it up.
    if not isinstance(shape, str) or shape not in _BACKOFF_PARAMS:
        raise ConfigurationError(
            f"{origins['backoff']} = {shown(shape)} is not accepted; expected one of "
            + ", ".join(repr(s) for s in _BACKOFF_PARAMS)
        )
    _backoff(_BACKOFF_FACTORIES[str(shape)](), values, origins)


def apply_patches(
    current: PolicySet, patches: Mapping[str, PolicyPatch], template: PolicySet
) -> PolicySet:
    """
    Apply one layer's *patches* to *current*.

    A patch of a policy that *current* lacks starts from the kind's *template* policy (so
    ``breaker = true`` after ``breaker = false`` brings the template's breaker back), or from
    the policy's own defaults when the template has none.

    Raises:
        ConfigurationError: prefixed with the file and key path (or variable) of the bad value.

    .. versionadded:: 0.1.0
    """
    changes: dict[str, Any] = {}
    for name, patch in patches.items():
        if patch.remove:
            changes[name] = None
            continue
        base = getattr(current, name)
        if base is None:
            base = _seed(name, template)
        if name == "retry":
            changes[name] = _apply_retry(base, patch)
        else:
            changes[name] = build(
                partial(dataclasses.replace, base), patch.values, patch.origins, patch.where
            )
    return dataclasses.replace(current, **changes)


def _seed(name: str, template: PolicySet) -> Any:
    policy = getattr(template, name)
    if policy is not None:
        return policy
    if name == "retry":
        return Retry(on=FUNCTION_RETRY_ON)
    return _CLASSES[name]()


def _apply_retry(base: Retry, patch: PolicyPatch) -> Retry:
    values = patch.values
    changes = {k: v for k, v in values.items() if k in PLAIN_FIELDS["retry"]}
    origins = dict(patch.origins)
    if any(k in values for k in _BACKOFF_KEYS):
        changes["backoff"] = _backoff(base.backoff, values, origins)
        origins.setdefault("backoff", next(origins[k] for k in _BACKOFF_KEYS if k in values))
    budget_keys = {
        k.removeprefix("budget."): v for k, v in values.items() if k.startswith("budget.")
    }
    if "budget" in values or budget_keys:
        budget = base.budget
        if values.get("budget") is False:
            budget = None
        elif budget_keys or budget is None:
            budget_origins = {
                k.removeprefix("budget."): o for k, o in origins.items() if k.startswith("budget.")
            }
            budget = build(
                partial(dataclasses.replace, budget or RetryBudget()),
                budget_keys,
                budget_origins,
                patch.where,
            )
        changes["budget"] = budget
        origins.setdefault("budget", next(o for k, o in origins.items() if k.startswith("budget")))
    return build(partial(dataclasses.replace, base), changes, origins, patch.where)


def _backoff(current: Backoff, values: Mapping[str, object], origins: Mapping[str, str]) -> Backoff:
    """The back-off *values* describe: ``backoff`` starts a shape afresh, else adjust *current*."""
    params: dict[str, object]
    if "backoff" in values:
        shape, params = str(values["backoff"]), {}
    elif isinstance(current, _Exponential):
        shape = "exponential"
        params = {
            "initial": current.initial,
            "max": current.max,
            "multiplier": current.multiplier,
            "jitter": current.jitter,
        }
    elif isinstance(current, _Constant):
        shape, params = "constant", {"seconds": current.seconds, "jitter": current.jitter}
    elif isinstance(current, _Decorrelated):
        shape, params = "decorrelated", {"initial": current.initial, "max": current.max}
    else:
        first = next(origins[k] for k in _BACKOFF_KEYS if k in values)
        raise ConfigurationError(
            f"{first}: the back-off {current!r} cannot be adjusted from configuration; "
            "set retry.backoff too (exponential, constant or decorrelated)"
        )
    accepted = _BACKOFF_PARAMS[shape]
    changes: dict[str, object] = {}
    change_origins: dict[str, str] = {}
    for key in _BACKOFF_KEYS[1:]:
        if key not in values:
            continue
        if key not in accepted:
            raise ConfigurationError(
                f"{origins[key]}: {key} does not apply to {shape} back-off; "
                f"accepted with {shape}: backoff, {', '.join(accepted)}"
            )
        changes[accepted[key]] = values[key]
        change_origins[accepted[key]] = origins[key]
    factory = _BACKOFF_FACTORIES[shape]
    return build(lambda **kw: factory(**{**params, **kw}), changes, change_origins, "")


def build(
    make: Callable[..., _T],
    changes: Mapping[str, object],
    origins: Mapping[str, str],
    where: str,
) -> _T:
    """``make(**changes)``, with a failure blamed on the key that causes it alone, if one does."""
    try:
        return make(**changes)
    except ConfigurationError as exc:
        for key, value in changes.items():
            try:
                make(**{key: value})
            except ConfigurationError as single:
                raise ConfigurationError(f"{origins.get(key, where)}: {single}") from None
        keys = ", ".join(origins.get(k, k) for k in changes)
        raise ConfigurationError(f"{where or keys}: {exc}") from None
