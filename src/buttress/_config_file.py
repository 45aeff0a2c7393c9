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

The code is split by responsibility: this module reads the TOML and checks its tables and keys
(target patterns, ``http``, ``db`` and ``llm`` keys); :mod:`._config_layering` knows the
policies (settable keys, back-off shapes, :func:`apply_patches`); :mod:`._config_options` holds
:class:`HttpOptions` and :class:`DbOptions`. Every name in ``__all__`` is importable from here.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

from ._config_layering import (
    BUDGET_FIELDS,
    FUNCTION_RETRY_ON,
    PLAIN_FIELDS,
    POLICIES,
    PolicyPatch,
    apply_patches,
    build,
    check_backoff_keys,
    settable_keys,
)
from ._config_options import DbOptions, HttpOptions
from ._exceptions import ConfigurationError
from ._validate import shown

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

KINDS: Final = ("http", "db", "llm", "function")
"""The kinds of target, as ``protect(kind=...)`` and ``[defaults.<kind>]`` name them."""


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _db_options(raw: object, parts: tuple[str, ...], path: str) -> dict[str, object]:
    """A ``db`` table (``[defaults.db]`` or a target table), checked against :class:`DbOptions`."""
    table = _table(raw, parts, path)
    _check_keys(table, parts, [f.name for f in dataclasses.fields(DbOptions)], path)
    origins = {k: f"{path}: {_key_path((*parts, k))}" for k in table}
    build(partial(dataclasses.replace, DbOptions()), table, origins, "")
    return dict(table)


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
    except RecursionError:  # tomllib recurses into nested arrays and inline tables
        raise ConfigurationError(
            f"{shown}: invalid TOML: arrays or inline tables nested too deeply"
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
            f"{path}: {_key_path(parts)} = {shown(value)} is not accepted; expected a table"
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
        build(partial(dataclasses.replace, HttpOptions()), http_table, origins, "")
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
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and math.isnan(value))
    ):
        raise ConfigurationError(f"{where} = {shown(value)} is not accepted; expected {accepted}")
    if not (0 < value < math.inf if budget else value >= 0):
        raise ConfigurationError(f"{where} = {shown(value)} is out of range; expected {accepted}")
    return float(value)


def _llm_fallbacks(table: Mapping[str, Any], parts: tuple[str, ...], path: str) -> tuple[str, ...]:
    chain = table.get("fallbacks", [])
    where = f"{path}: {_key_path((*parts, 'fallbacks'))}"
    if not isinstance(chain, list) or not all(
        isinstance(name, str) and "/" in name.strip("/") for name in chain
    ):
        raise ConfigurationError(
            f"{where} = {shown(chain)} is not accepted; expected a list of 'provider/model' "
            'targets, for example ["openai/gpt-4o-mini"]'
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
            f"{where} = {shown(raw)} is not accepted; expected a table of {name} settings, "
            "true (keep or add it) or false (remove it)"
        )
    _check_keys(raw, parts, accepted, path)
    if not accepted:
        # An empty table, as true, would have to build a fallback from nothing.
        raise ConfigurationError(
            f"{where} = {shown(raw)} is not accepted; expected false (a {name} is configured "
            "in code, a file can only remove it)"
        )
    values: dict[str, object] = {}
    origins: dict[str, str] = {}
    for key, value in raw.items():
        key_parts = (*parts, key)
        if name == "retry" and key == "budget" and not isinstance(value, bool):
            budget = _table(value, key_parts, path)
            _check_keys(budget, key_parts, tuple(BUDGET_FIELDS), path)
            for sub, item in budget.items():
                values[f"budget.{sub}"] = _none(item, nullable=BUDGET_FIELDS[sub])
                origins[f"budget.{sub}"] = f"{path}: {_key_path((*key_parts, sub))}"
            continue
        values[key] = _none(value, nullable=PLAIN_FIELDS[name].get(key, False))
        origins[key] = f"{path}: {_key_path(key_parts)}"
    if name == "retry":
        check_backoff_keys(values, origins)
    return PolicyPatch(values=values, origins=origins, where=where)


def _none(value: object, *, nullable: bool) -> object:
    # TOML has no null: "none" stands for None where a parameter accepts it.
    if nullable and isinstance(value, str) and value.strip().lower() == "none":
        return None
    return value
