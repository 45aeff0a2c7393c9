"""
The TOML configuration file, parsed and checked into a :class:`ConfigFile`.

Its tables are then layered onto the built-in templates by :func:`apply_patches`.

A file is a set of *layers*. ``[defaults.<kind>]`` applies to every target of that kind;
``[targets."pattern"]`` to the targets whose name the pattern matches (the most specific one
wins, see :meth:`ConfigFile.section_for`). Each table says, per policy, either ``false``
(remove it), ``true`` (keep it, or add it with its defaults) or which parameters change.

Only plain values (numbers, strings, booleans) are settable. The settable keys of a policy are
derived from its dataclass fields, so a new plain parameter becomes configurable without
touching this module; callables (``on``, ``retry_after``, ``failure_on``, a cache ``key``, a
fallback ``value``) stay with the code, because a file cannot name a function safely.

Everything is checked when the file is loaded: unknown keys here, values by the policy
constructors themselves (their messages name the parameter, the value and the range), each
error prefixed with the file and the full key path.

See docs/configuration.md.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ._api import PolicySet
from ._exceptions import ConfigurationError
from ._http_signals import TRANSIENT_STATUSES
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
    "FUNCTION_RETRY_ON",
    "KINDS",
    "POLICIES",
    "ConfigFile",
    "DbOptions",
    "HttpOptions",
    "PolicyPatch",
    "Section",
    "apply_patches",
    "load_config_file",
    "parse_config",
    "settable_keys",
]

_T = TypeVar("_T")

KINDS: Final = ("http", "db", "llm", "function")
"""The kinds of target, as ``protect(kind=...)`` and ``[defaults.<kind>]`` name them."""

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
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token: methods, header names


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


_FIELDS: Final[Mapping[str, Mapping[str, bool]]] = {
    name: _plain_fields(cls) for name, cls in _CLASSES.items()
}
_BUDGET_FIELDS: Final = _plain_fields(RetryBudget)


def settable_keys(policy: str) -> tuple[str, ...]:
    """
    The keys a file may set in the table of *policy* (``retry``, ``breaker``, ...), sorted.

    For ``retry``, ``budget`` stands for the ``budget`` sub-table (or ``budget = false``).
    """
    keys = set(_FIELDS[policy])
    if policy == "retry":
        keys |= {*_BACKOFF_KEYS, "budget"}
    return tuple(sorted(keys))


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class HttpOptions:
    """
    What HTTP integrations may retry, beyond what the retry policy decides.

    Args:
        retry_methods: Methods retried without an idempotency key (idempotent ones by default).
        retry_statuses: Response statuses that count as retryable.
        retry_non_idempotent: Also retry POST and PATCH without an idempotency key.
        idempotency_header: A request carrying this header is safe to retry whatever its method.

    .. versionadded:: 0.1.0
    """

    retry_methods: frozenset[str] = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
    retry_statuses: frozenset[int] = TRANSIENT_STATUSES
    retry_non_idempotent: bool = False
    idempotency_header: str = "Idempotency-Key"

    def __post_init__(self) -> None:
        # Lists (as TOML gives them) are accepted and normalised to frozensets.
        methods: object = self.retry_methods
        if isinstance(methods, str) or not isinstance(methods, list | tuple | set | frozenset):
            raise ConfigurationError(
                f"HttpOptions: retry_methods={methods!r} is not accepted; "
                "expected a list of HTTP methods such as ['GET', 'PUT']"
            )
        for method in methods:
            if not isinstance(method, str) or not _TOKEN.fullmatch(method):
                raise ConfigurationError(
                    f"HttpOptions: retry_methods contains {method!r}, which is not accepted; "
                    "expected HTTP method names such as 'GET'"
                )
        object.__setattr__(self, "retry_methods", frozenset(m.upper() for m in methods))
        statuses: object = self.retry_statuses
        if isinstance(statuses, str) or not isinstance(statuses, list | tuple | set | frozenset):
            raise ConfigurationError(
                f"HttpOptions: retry_statuses={statuses!r} is not accepted; "
                "expected a list of HTTP status codes (integers 100 to 599)"
            )
        for status in statuses:
            if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
                raise ConfigurationError(
                    f"HttpOptions: retry_statuses contains {status!r}, which is not accepted; "
                    "expected HTTP status codes (integers 100 to 599)"
                )
        object.__setattr__(self, "retry_statuses", frozenset(statuses))
        if not isinstance(self.retry_non_idempotent, bool):
            raise ConfigurationError(
                f"HttpOptions: retry_non_idempotent={self.retry_non_idempotent!r} is not "
                "accepted; expected true or false"
            )
        header: object = self.idempotency_header
        if not isinstance(header, str) or not _TOKEN.fullmatch(header):
            raise ConfigurationError(
                f"HttpOptions: idempotency_header={header!r} is not accepted; "
                "expected a header name such as 'Idempotency-Key'"
            )

    def __repr__(self) -> str:
        methods = ",".join(sorted(self.retry_methods)) or "-"
        statuses = ",".join(str(s) for s in sorted(self.retry_statuses)) or "-"
        return (
            f"<HttpOptions retry_methods={methods} retry_statuses={statuses} "
            f"retry_non_idempotent={self.retry_non_idempotent} "
            f"idempotency_header={self.idempotency_header!r}>"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DbOptions:
    """
    What database integrations may retry, beyond what the retry policy decides.

    Args:
        retry_writes: Also retry Redis write commands (``SET``, ``INCR``...) on connection
            errors, never on timeouts: at-least-once, so a write whose reply was lost runs
            twice. SQL statements are never retried as writes, whatever this says.

    .. versionadded:: 0.1.0
    """

    retry_writes: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.retry_writes, bool):
            raise ConfigurationError(
                f"DbOptions: retry_writes={self.retry_writes!r} is not accepted; "
                "expected true or false"
            )


def _db_options(raw: object, parts: tuple[str, ...], path: str) -> dict[str, object]:
    """A ``db`` table (``[defaults.db]`` or a target table), checked against :class:`DbOptions`."""
    table = _table(raw, parts, path)
    _check_keys(table, parts, [f.name for f in dataclasses.fields(DbOptions)], path)
    origins = {k: f"{path}: {_key_path((*parts, k))}" for k in table}
    _build(partial(dataclasses.replace, DbOptions()), table, origins, "")
    return dict(table)


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


@dataclass(frozen=True, slots=True, kw_only=True)
class Section:
    """
    One table of the file: ``[defaults.<kind>]`` or ``[targets."pattern"]``.

    .. versionadded:: 0.1.0
    """

    name: str
    """Its key path, as written in error messages: ``defaults.http``, ``targets."a:443"``."""
    pattern: str | None
    """The target pattern, or ``None`` for a defaults table."""
    policies: Mapping[str, PolicyPatch]
    http: Mapping[str, object]
    """``http.*`` keys, already checked against :class:`HttpOptions`."""
    db: Mapping[str, object] = field(default_factory=dict)
    """``db.*`` keys (``[defaults.db]`` and target tables), checked against :class:`DbOptions`."""
    fallbacks: tuple[str, ...] | None = None
    """``llm.fallbacks``: the targets an LLM call falls back to, in order (target tables only)."""
    tokens_per_minute: float | None = None
    """``llm.tokens_per_minute``: the LLM token budget per target (> 0), or ``None`` (not set)."""
    tokens_max_wait: float | None = None
    """``llm.tokens_max_wait``: seconds a call may wait for that budget (>= 0), or ``None``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigFile:
    """
    A loaded and checked configuration file.

    .. versionadded:: 0.1.0
    """

    path: str
    defaults: Mapping[str, Section]
    """Kind -> its ``[defaults.<kind>]`` table."""
    targets: tuple[Section, ...]
    """The ``[targets."pattern"]`` tables, in file order."""

    def section_for(self, target: str) -> Section | None:
        """
        The target table that applies to *target*, or ``None``.

        A table named exactly *target* wins; otherwise the longest glob pattern that matches
        (:func:`fnmatch.fnmatchcase`: ``*``, ``?``, ``[seq]``; case-sensitive), the first in
        the file among equally long ones.

        .. versionadded:: 0.1.0
        """
        best: Section | None = None
        for section in self.targets:
            pattern = section.pattern or ""
            if pattern == target:
                return section
            if (
                _is_glob(pattern)
                and fnmatch.fnmatchcase(target, pattern)
                and (best is None or len(pattern) > len(best.pattern or ""))
            ):
                best = section
        return best


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _key_path(parts: Sequence[str]) -> str:
    return ".".join(
        p if _BARE_KEY.fullmatch(p) else json.dumps(p, ensure_ascii=False) for p in parts
    )


def load_config_file(path: str | os.PathLike[str]) -> ConfigFile:
    """
    Read, parse and check the TOML file at *path*.

    Raises:
        ConfigurationError: the file cannot be read, is not valid TOML (the message gives the
            line and column), has an unknown key or a bad value (the message gives the key
            path and what is accepted).

    .. versionadded:: 0.1.0
    """
    shown = os.fspath(path)
    try:
        with open(path, "rb") as stream:  # noqa: PTH123 - a plain path in, no Path needed
            data = tomllib.load(stream)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigurationError(f"{shown}: cannot read the configuration file: {reason}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{shown}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigurationError(
            f"{shown}: invalid TOML: the file is not UTF-8 (byte {exc.start}: {exc.reason})"
        ) from None
    return parse_config(data, shown)


def parse_config(data: Mapping[str, Any], path: str) -> ConfigFile:
    """
    Check the parsed TOML *data* of the file *path* (used in messages) into a :class:`ConfigFile`.

    .. versionadded:: 0.1.0
    """
    _check_keys(data, (), ("defaults", "targets"), path)
    defaults: dict[str, Section] = {}
    if "defaults" in data:
        table = _table(data["defaults"], ("defaults",), path)
        _check_keys(table, ("defaults",), KINDS, path)
        for kind, raw in table.items():
            defaults[kind] = _section(
                raw, ("defaults", kind), path, None, http=kind == "http", llm=kind == "llm"
            )
    targets: list[Section] = []
    if "targets" in data:
        table = _table(data["targets"], ("targets",), path)
        for pattern, raw in table.items():
            parts = ("targets", pattern)
            if not pattern.strip():
                raise ConfigurationError(
                    f"{path}: {_key_path(parts)}: an empty target pattern is not accepted; "
                    'expected a target name such as "api.example.com:443" or a glob'
                )
            targets.append(_section(raw, parts, path, pattern, http=True, llm=True))
    return ConfigFile(path=path, defaults=defaults, targets=tuple(targets))


def _table(value: object, parts: Sequence[str], path: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ConfigurationError(
            f"{path}: {_key_path(parts)} = {value!r} is not accepted; expected a table"
        )
    return value


def _check_keys(
    table: Mapping[str, Any], parts: Sequence[str], accepted: Sequence[str], path: str
) -> None:
    for key in table:
        if key not in accepted:
            where = _key_path(parts) if parts else "the top level"
            options = ", ".join(accepted) if accepted else "none"
            raise ConfigurationError(
                f"{path}: unknown key {_key_path((*parts, key))}; "
                f"accepted keys in {where}: {options}"
            )


def _section(
    raw: object, parts: tuple[str, ...], path: str, pattern: str | None, *, http: bool, llm: bool
) -> Section:
    table = _table(raw, parts, path)
    extra = (*(("http",) if http else ()), *(("llm",) if llm else ()))
    if pattern is not None or parts == ("defaults", "db"):
        extra = (*extra, "db")
    _check_keys(table, parts, (*POLICIES, *extra), path)
    policies = {
        name: _policy(name, table[name], (*parts, name), path) for name in POLICIES if name in table
    }
    options: dict[str, object] = {}
    if "http" in table:
        http_parts = (*parts, "http")
        http_table = _table(table["http"], http_parts, path)
        accepted = [f.name for f in dataclasses.fields(HttpOptions)]
        _check_keys(http_table, http_parts, accepted, path)
        origins = {k: f"{path}: {_key_path((*http_parts, k))}" for k in http_table}
        # Checked now, against the defaults, so that a bad value fails at load time.
        _build(partial(dataclasses.replace, HttpOptions()), http_table, origins, "")
        options = dict(http_table)
    llm_options = (
        _llm_options(table["llm"], (*parts, "llm"), path, chains=pattern is not None)
        if "llm" in table
        else {}
    )
    db = _db_options(table["db"], (*parts, "db"), path) if "db" in table else {}
    return Section(
        db=db,
        name=_key_path(parts),
        pattern=pattern,
        policies=policies,
        http=options,
        **llm_options,
    )


LLM_TOKEN_KEYS: Final = ("tokens_per_minute", "tokens_max_wait")
"""The ``llm.*`` token-budget keys, accepted in ``[defaults.llm]`` and in target tables."""


def _llm_options(raw: object, parts: tuple[str, ...], path: str, *, chains: bool) -> dict[str, Any]:
    # chains: a target table, where llm.fallbacks is accepted too.
    table = _table(raw, parts, path)
    _check_keys(table, parts, (*(("fallbacks",) if chains else ()), *LLM_TOKEN_KEYS), path)
    options: dict[str, Any] = {}
    if chains:
        options["fallbacks"] = _llm_fallbacks(table, parts, path)
    for key in LLM_TOKEN_KEYS:
        if key in table:
            options[key] = _llm_number(
                table, (*parts, key), path, budget=key == "tokens_per_minute"
            )
    return options


def _llm_number(
    table: Mapping[str, Any], parts: tuple[str, ...], path: str, *, budget: bool
) -> float:
    # budget: tokens_per_minute (finite, > 0); otherwise tokens_max_wait (>= 0; inf waits forever)
    value = table[parts[-1]]
    where = f"{path}: {_key_path(parts)}"
    if budget:
        accepted = "a finite number of tokens > 0, for example 100000"
    else:
        accepted = "a number of seconds >= 0, for example 5.0"
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ConfigurationError(f"{where} = {value!r} is not accepted; expected {accepted}")
    if not (0 < value < math.inf if budget else value >= 0):
        raise ConfigurationError(f"{where} = {value!r} is out of range; expected {accepted}")
    return float(value)


def _llm_fallbacks(table: Mapping[str, Any], parts: tuple[str, ...], path: str) -> tuple[str, ...]:
    chain = table.get("fallbacks", [])
    where = f"{path}: {_key_path((*parts, 'fallbacks'))}"
    if not isinstance(chain, list) or not all(
        isinstance(name, str) and "/" in name.strip("/") for name in chain
    ):
        raise ConfigurationError(
            f"{where} = {chain!r} is not accepted; expected a list of 'provider/model' targets, "
            'for example ["openai/gpt-4o-mini"]'
        )
    return tuple(chain)


def _policy(name: str, raw: object, parts: tuple[str, ...], path: str) -> PolicyPatch:
    where = f"{path}: {_key_path(parts)}"
    accepted = settable_keys(name)
    if isinstance(raw, bool):
        if raw and not accepted:
            # Fallback values are code (a value of the call's own return type): nothing to set.
            raise ConfigurationError(
                f"{where} = true is not accepted; expected false (a {name} is configured in "
                "code, a file can only remove it)"
            )
        return PolicyPatch(remove=not raw, where=where)
    if not isinstance(raw, dict):
        raise ConfigurationError(
            f"{where} = {raw!r} is not accepted; expected a table of {name} settings, "
            "true (keep or add it) or false (remove it)"
        )
    _check_keys(raw, parts, accepted, path)
    values: dict[str, object] = {}
    origins: dict[str, str] = {}
    for key, value in raw.items():
        key_parts = (*parts, key)
        if name == "retry" and key == "budget" and not isinstance(value, bool):
            budget = _table(value, key_parts, path)
            _check_keys(budget, key_parts, tuple(_BUDGET_FIELDS), path)
            for sub, item in budget.items():
                values[f"budget.{sub}"] = _none(item, nullable=_BUDGET_FIELDS[sub])
                origins[f"budget.{sub}"] = f"{path}: {_key_path((*key_parts, sub))}"
            continue
        values[key] = _none(value, nullable=_FIELDS[name].get(key, False))
        origins[key] = f"{path}: {_key_path(key_parts)}"
    if name == "retry":
        _check_backoff_keys(values, origins)
    return PolicyPatch(values=values, origins=origins, where=where)


def _none(value: object, *, nullable: bool) -> object:
    # TOML has no null: "none" stands for None where a parameter accepts it.
    if nullable and isinstance(value, str) and value.strip().lower() == "none":
        return None
    return value


def _check_backoff_keys(values: Mapping[str, object], origins: Mapping[str, str]) -> None:
    """Check what can be checked before knowing the back-off the table adjusts."""
    if "backoff" not in values:
        return
    shape = values["backoff"]
    if shape not in _BACKOFF_PARAMS:
        raise ConfigurationError(
            f"{origins['backoff']} = {shape!r} is not accepted; expected one of "
            + ", ".join(repr(s) for s in _BACKOFF_PARAMS)
        )
    _backoff(_BACKOFF_FACTORIES[str(shape)](), values, origins)


# --- layering -----------------------------------------------------------------------------


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
            changes[name] = _build(
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
    changes = {k: v for k, v in values.items() if k in _FIELDS["retry"]}
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
            budget = _build(
                partial(dataclasses.replace, budget or RetryBudget()),
                budget_keys,
                budget_origins,
                patch.where,
            )
        changes["budget"] = budget
        origins.setdefault("budget", next(o for k, o in origins.items() if k.startswith("budget")))
    return _build(partial(dataclasses.replace, base), changes, origins, patch.where)


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
    return _build(lambda **kw: factory(**{**params, **kw}), changes, change_origins, "")


def _build(
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
