"""
Configuration at the edge: environment variables and the TOML file, read once and typed.

``BUTTRESS_*`` variables and the file ``BUTTRESS_CONFIG`` names become one :class:`Settings`;
:func:`policies_for` then gives each target its policies.

Nothing below the edge reads the environment (house style R14): the bootstrap calls
:func:`load_settings` once and hands the result down. Every bad value fails there, loudly, with
a message naming the variable (or the file and key path), the value and what is accepted. The
file is checked in full at load time, for every kind and every target table, so
:func:`policies_for` cannot fail later on a first call.

Precedence, lowest first::

    built-in template of the kind  <  [defaults.<kind>]  <  the best [targets."pattern"]
        <  BUTTRESS_* quick variables (an incident-time override for every target)

The ``BUTTRESS_*`` variables themselves (names, readers, the quick overrides as a policy layer)
live in :mod:`._settings_env`; this module assembles them and the file into :class:`Settings`
and resolves the layers. Every name in ``__all__`` is importable from here.

See docs/configuration.md.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from . import templates
from ._api import PolicySet
from ._config_file import (
    KINDS,
    ConfigFile,
    DbOptions,
    HttpOptions,
    PolicyPatch,
    Section,
    apply_patches,
    load_config_file,
)
from ._exceptions import ConfigurationError
from ._settings_env import (
    ENV_BREAKER_FAILURE_RATE,
    ENV_BREAKER_OPEN_DURATION,
    ENV_BULKHEAD_MAX_CONCURRENT,
    ENV_CONFIG,
    ENV_DISABLED,
    ENV_ENABLED,
    ENV_INSTRUMENTATIONS,
    ENV_MAX_TARGETS,
    ENV_RETRY_ATTEMPTS,
    ENV_STRICT,
    ENV_TIMEOUT_ATTEMPT,
    ENV_TIMEOUT_TOTAL,
    KNOWN_INSTRUMENTATIONS,
    NOT_SET,
    NotSet,
    quick_patches,
    read_bool,
    read_integer,
    read_mode,
    read_names,
    read_number,
    read_raw,
    read_samples,
    read_timeout,
    strict_requested,
)
from ._validate import shown

__all__ = [
    "KNOWN_INSTRUMENTATIONS",
    "NOT_SET",
    "DbOptions",
    "HttpOptions",
    "NotSet",
    "Settings",
    "check_report",
    "db_options_for",
    "http_options_for",
    "llm_fallbacks_for",
    "llm_tokens_for",
    "load_settings",
    "policies_for",
    "strict_requested",
]

DEFAULT_TOKENS_MAX_WAIT: Final = 0.0
"""``llm.tokens_max_wait`` when no table sets it: waiting for tokens is opt-in, as for requests."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """
    Everything the environment and the configuration file say, checked and typed.

    Quick overrides (``retry_attempts`` to ``bulkhead_max_concurrent``) are ``None`` when their
    variable is not set; the two timeouts are :data:`NOT_SET` then, since ``None`` means "no
    timeout" for them. ``max_targets`` is for ``buttress.configure(max_targets=...)``.

    .. versionadded:: 0.1.0
    """

    enabled: bool = False
    mode: Literal["enforce", "observe"] = "enforce"
    instrumentations: frozenset[str] | None = None
    """The instrumentations selected, or ``None`` for all of them."""
    disabled: frozenset[str] = frozenset()
    strict: bool = False
    config_path: str | None = None
    samples_per_second: float = 50.0
    retry_attempts: int | None = None
    timeout_attempt: float | NotSet | None = NOT_SET
    timeout_total: float | NotSet | None = NOT_SET
    breaker_failure_rate: float | None = None
    breaker_open_duration: float | None = None
    bulkhead_max_concurrent: int | None = None
    max_targets: int | None = None
    file: ConfigFile | None = None

    @property
    def observe(self) -> bool:
        """
        Whether pipelines run in observe mode (``protect(observe=True)``).

        .. versionadded:: 0.1.0
        """
        return self.mode == "observe"

    def wants(self, name: str) -> bool:
        """
        Whether the instrumentation *name* should be installed.

        True when buttress is enabled, *name* is selected (or nothing is) and not disabled.

        Raises:
            ConfigurationError: *name* is not in :data:`KNOWN_INSTRUMENTATIONS`.

        .. versionadded:: 0.1.0
        """
        if name not in KNOWN_INSTRUMENTATIONS:
            raise ConfigurationError(
                f"Settings.wants: name={shown(name)} is not accepted; expected one of "
                + ", ".join(KNOWN_INSTRUMENTATIONS)
            )
        selected = self.instrumentations is None or name in self.instrumentations
        return self.enabled and selected and name not in self.disabled


def load_settings(environ: Mapping[str, str] = os.environ) -> Settings:
    """
    Read every ``BUTTRESS_*`` variable in *environ* and the file ``BUTTRESS_CONFIG`` names.

    Unset and empty variables mean the default. The file, when given, is loaded and checked in
    full: every ``[defaults.<kind>]`` and ``[targets."pattern"]`` table, for every kind, with
    the quick variables on top.

    Raises:
        ConfigurationError: naming the variable (or file and key path), the value and what is
            accepted. Secret-looking values are never echoed.

    .. versionadded:: 0.1.0
    """
    config_path = read_raw(environ, ENV_CONFIG)
    settings = Settings(
        enabled=read_bool(environ, ENV_ENABLED),
        mode=read_mode(environ),
        instrumentations=read_names(environ, ENV_INSTRUMENTATIONS),
        disabled=read_names(environ, ENV_DISABLED) or frozenset(),
        strict=read_bool(environ, ENV_STRICT),
        config_path=config_path,
        samples_per_second=read_samples(environ),
        retry_attempts=read_integer(environ, ENV_RETRY_ATTEMPTS, "an integer >= 1"),
        timeout_attempt=read_timeout(environ, ENV_TIMEOUT_ATTEMPT),
        timeout_total=read_timeout(environ, ENV_TIMEOUT_TOTAL),
        breaker_failure_rate=read_number(
            environ,
            ENV_BREAKER_FAILURE_RATE,
            "a failure rate > 0 and <= 1, such as 0.5",
            low=0.0,
            low_inclusive=False,
            high=1.0,
        ),
        breaker_open_duration=read_number(
            environ,
            ENV_BREAKER_OPEN_DURATION,
            "a number of seconds > 0",
            low=0.0,
            low_inclusive=False,
        ),
        bulkhead_max_concurrent=read_integer(
            environ, ENV_BULKHEAD_MAX_CONCURRENT, "an integer >= 1"
        ),
        max_targets=read_integer(environ, ENV_MAX_TARGETS, "an integer >= 1"),
    )
    if config_path is not None:
        try:
            file = load_config_file(config_path)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{ENV_CONFIG}: {exc}") from None
        settings = dataclasses.replace(settings, file=file)
    check_settings(settings)
    return settings


def policies_for(settings: Settings, target: str, kind: str) -> PolicySet:
    """
    The effective policies of *target*, a target of *kind*: ``http``, ``db``, ``llm``, ``function``.

    Layers, lowest first: the kind's built-in template (``function`` has none), the file's
    ``[defaults.<kind>]``, its most specific ``[targets."pattern"]`` matching *target*, then
    the ``BUTTRESS_*`` quick variables. Use the result as ``protect(target,
    template=..., kind=kind, observe=settings.observe)``.

    Raises:
        ConfigurationError: *kind* is unknown (a loaded :class:`Settings` has been checked
            for every kind, so nothing else can fail).

    .. versionadded:: 0.1.0
    """
    if kind not in KINDS:
        raise ConfigurationError(
            f"policies_for: kind={shown(kind)} is not accepted; expected one of "
            + ", ".join(repr(k) for k in KINDS)
        )
    file = settings.file
    section = file.section_for(target) if file is not None else None
    return _resolve(settings, kind, section.policies if section is not None else None)


def llm_fallbacks_for(settings: Settings, target: str) -> tuple[str, ...]:
    """
    The fallback chain of an LLM *target* from the best target table's ``llm.fallbacks``.

    .. versionadded:: 0.1.0
    """
    file = settings.file
    section = file.section_for(target) if file is not None else None
    return section.fallbacks or () if section is not None else ()


def llm_tokens_for(settings: Settings, target: str) -> tuple[float, float] | None:
    """
    The token budget of an LLM *target*: ``(tokens_per_minute, max_wait)``, or ``None``.

    Each key layers on its own: ``[defaults.llm]`` < the best target table. ``None`` when
    neither sets ``llm.tokens_per_minute``; ``llm.tokens_max_wait`` defaults to 0 (reject at
    once, as ``rate_limit.max_wait`` does).

    .. versionadded:: 0.1.0
    """
    file = settings.file
    if file is None:
        return None
    per_minute: float | None = None
    max_wait = DEFAULT_TOKENS_MAX_WAIT
    for layer in (file.defaults.get("llm"), file.section_for(target)):
        if layer is not None:
            if layer.tokens_per_minute is not None:
                per_minute = layer.tokens_per_minute
            if layer.tokens_max_wait is not None:
                max_wait = layer.tokens_max_wait
    return None if per_minute is None else (per_minute, max_wait)


def http_options_for(settings: Settings, target: str) -> HttpOptions:
    """
    The HTTP options of *target*: the defaults < ``[defaults.http]`` < the best target table.

    .. versionadded:: 0.1.0
    """
    file = settings.file
    return _http_options(file, file.section_for(target) if file is not None else None)


def _http_options(file: ConfigFile | None, section: Section | None) -> HttpOptions:
    options = HttpOptions()
    defaults = file.defaults.get("http") if file is not None else None
    for layer in (defaults, section):
        if layer is not None and layer.http:
            changes: dict[str, Any] = dict(layer.http)
            options = dataclasses.replace(options, **changes)
    return options


def db_options_for(settings: Settings, target: str) -> DbOptions:
    """
    The database options of *target*: the defaults < ``[defaults.db]`` < the best target table.

    .. versionadded:: 0.1.0
    """
    options = DbOptions()
    file = settings.file
    if file is None:
        return options
    for layer in (file.defaults.get("db"), file.section_for(target)):
        if layer is not None and layer.db:
            changes: dict[str, Any] = dict(layer.db)
            options = dataclasses.replace(options, **changes)
    return options


def check_settings(settings: Settings) -> None:
    """
    Resolve every kind with every target table (and with none), so that errors show now.

    Raises:
        ConfigurationError: from the first layer that cannot apply.
    """
    file = settings.file
    sections = file.targets if file is not None else ()
    for kind in KINDS:
        _resolve(settings, kind, None)
        for section in sections:
            _resolve(settings, kind, section.policies)


_TEMPLATES: Final[Mapping[str, Callable[[], PolicySet]]] = {
    "http": templates.http,
    "db": templates.database,
    "llm": templates.llm,
    "function": PolicySet,
}


def _resolve(
    settings: Settings, kind: str, target_patches: Mapping[str, PolicyPatch] | None
) -> PolicySet:
    template = _TEMPLATES[kind]()
    current = template
    defaults = settings.file.defaults.get(kind) if settings.file is not None else None
    layers = (
        (defaults.policies if defaults is not None else None, ""),
        (target_patches, f" (applied to a target of kind {kind!r})"),
        (quick_patches(settings), f" (applied to kind {kind!r})"),
    )
    for given, context in layers:
        if not given:
            continue
        patches = _enforce_configured_timeouts(given)
        try:
            current = apply_patches(current, patches, template)
        except ConfigurationError as exc:
            if context and _fails_alone(patches):
                raise  # wrong whatever the kind: naming one would mislead
            raise ConfigurationError(f"{exc}{context}") from None
    return current


def _enforce_configured_timeouts(patches: Mapping[str, PolicyPatch]) -> Mapping[str, PolicyPatch]:
    """
    *patches*, where a timeout you set is also enforced on the app's own client timeouts.

    The templates' timeouts respect a timeout the app's client already has (see
    ``Timeout.respect_app_timeout``); a ``timeout.attempt`` or ``timeout.total`` set in the file
    or the environment is a choice, so it applies as given unless the same layer says otherwise.
    """
    patch = patches.get("timeout")
    if (
        patch is None
        or patch.remove
        or "respect_app_timeout" in patch.values
        or not {"attempt", "total"} & patch.values.keys()
    ):
        return patches
    enforced = dataclasses.replace(
        patch,
        values={**patch.values, "respect_app_timeout": False},
        origins={**patch.origins, "respect_app_timeout": patch.where},
    )
    return {**patches, "timeout": enforced}


def _fails_alone(patches: Mapping[str, PolicyPatch]) -> bool:
    """Whether *patches* fail on their own, over no template (the error is not the kind's)."""
    try:
        apply_patches(PolicySet(), patches, PolicySet())
    except ConfigurationError:
        return True
    return False


# --- `buttress config check` ----------------------------------------------------------------


def check_report(
    path: str,
    *,
    kinds: Sequence[str] = KINDS,
    targets: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> str:
    """
    Check the file at *path* and describe the effective policies, for ``buttress config check``.

    One block per kind's defaults, per target table and per name in *targets*, for each of
    *kinds*. With *environ*, its ``BUTTRESS_*`` quick variables apply on top.

    Raises:
        ConfigurationError: the file (or *environ*) is invalid.

    .. versionadded:: 0.1.0
    """
    file = load_config_file(path)
    base = load_settings({k: v for k, v in (environ or {}).items() if k != ENV_CONFIG})
    settings = dataclasses.replace(base, config_path=path, file=file)
    check_settings(settings)
    tables = len(file.targets)
    defaults = len(file.defaults)
    summary = (
        f"{path}: OK ({defaults} defaults table{'' if defaults == 1 else 's'}, "
        f"{tables} target table{'' if tables == 1 else 's'})"
    )
    lines = [summary]
    if environ is not None:
        quick = ", ".join(p.where for p in quick_patches(settings).values()) or "none set"
        lines.append(f"quick variables: {quick}")
    for kind in kinds:
        table = file.defaults.get(kind)
        origin = f"[{table.name}] over" if table is not None else "no [defaults] table,"
        template = "no template" if kind == "function" else f"the built-in {kind} template"
        lines += ["", f"kind {kind}: defaults ({origin} {template})"]
        lines += _describe(settings, kind, None)
        for section in file.targets:
            lines += ["", f"kind {kind}: target table [{section.name}]"]
            lines += _describe(settings, kind, section.pattern)
        for name in targets:
            best = file.section_for(name)
            matched = f"matches [{best.name}]" if best is not None else "no target table"
            lines += ["", f"kind {kind}: target {name!r} ({matched})"]
            lines += _describe(settings, kind, name)
    return "\n".join(lines) + "\n"


def _describe(settings: Settings, kind: str, target: str | None) -> list[str]:
    file = settings.file
    section = file.section_for(target) if file is not None and target is not None else None
    policies = _resolve(settings, kind, section.policies if section is not None else None)
    lines = []
    for f in dataclasses.fields(policies):
        policy = getattr(policies, f.name)
        lines.append(f"  {f.name:<11}{'none' if policy is None else repr(policy)}")
        if f.name == "retry" and policy is not None:
            lines.append(
                f"  {'':<11}  max_retry_after={policy.max_retry_after:g} "
                f"budget={policy.budget!r} budget_exhausted={policy.budget_exhausted!r}"
            )
    if kind == "http":
        lines.append(f"  {'http':<11}{_http_options(file, section)!r}")
    return lines
