"""
Zero-code activation: what ``BUTTRESS_ENABLED=true`` does, in one place.

Two entry points lead here and behave the same:

- ``buttress.pth`` (installed with the package) runs at interpreter start-up. With the variable
  unset it costs one dictionary lookup; with it set it calls :func:`activate`.
- the ``buttress`` entry point in the ``opentelemetry_instrumentor`` group, loaded by
  ``opentelemetry-instrument`` (see ``integrations/_otel_instrumentor.py``), which calls
  :func:`activate` with ``owns_sdk=False``: the distro has set up the providers already.

Activation reads the settings once (environment and ``BUTTRESS_CONFIG``), patches every wanted
client library that is installed (lazily, when the application imports it), publishes telemetry,
and starts the health endpoint if ``BUTTRESS_HEALTH_PORT`` is set. A configuration error
disables buttress and is logged loudly; the application keeps running, unless
``BUTTRESS_STRICT=true`` asks it to fail fast. Side features (the health endpoint, the
exporters) never switch the policies off: a failing one logs one WARNING, or under strict stops
the process at start-up like a configuration error.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._caches import remember
from ._config import CONFIG
from ._config_options import DbOptions, HttpOptions
from ._exceptions import ConfigurationError
from ._faults import or_default

if TYPE_CHECKING:
    from ._api import PolicySet
    from ._settings import Settings

logger = logging.getLogger("buttress")

_lock = threading.RLock()
_settings: Settings | None = None
_http_options: dict[str, HttpOptions] = {}
_db_options: dict[str, DbOptions] = {}
_llm_tokens: dict[str, tuple[float, float] | None] = {}
_MAX_CACHED = 4096
"""Per-target option caches restart past this many targets: a service that calls many hosts (a
webhook sender, a crawler) must not grow them without bound."""
_active = False
_owns_sdk = False
_sdk_checked = False
_environ: Mapping[str, str] = {}
_health: Any = None


def current() -> Settings:
    """The active settings, or the defaults when buttress was not activated."""
    global _settings  # noqa: PLW0603
    if _settings is None:
        from ._settings import load_settings  # noqa: PLC0415 - loaded on first use only

        _settings = load_settings({})
    return _settings


def policies(target: str, kind: str) -> PolicySet:
    """The effective policies of *target* under the active settings."""
    from ._settings import policies_for  # noqa: PLC0415

    _ensure_sdk()
    return policies_for(current(), target, kind)


def http_options(target: str) -> HttpOptions:
    """The HTTP retry rules of *target* (cached: read on every request)."""
    options = _http_options.get(target)
    if options is None:
        from ._settings import http_options_for  # noqa: PLC0415

        def lookup() -> HttpOptions:
            found = http_options_for(current(), target)
            return remember(_http_options, target, found, _MAX_CACHED)

        # A failed lookup is not cached: the next request tries again.
        options = or_default("looking up the HTTP options", target, lookup, HttpOptions())
    return options


def llm_fallbacks(target: str) -> tuple[str, ...]:
    """The fallback chain the configuration file gives an LLM *target* (``llm.fallbacks``)."""
    from ._settings import llm_fallbacks_for  # noqa: PLC0415

    def lookup() -> tuple[str, ...]:
        return llm_fallbacks_for(current(), target)

    return or_default("looking up the LLM fallbacks", target, lookup, ())


def llm_tokens(target: str) -> tuple[float, float] | None:
    """The token budget of an LLM *target* (``llm.tokens_per_minute``, max wait); cached."""
    try:
        return _llm_tokens[target]
    except KeyError:
        pass
    from ._settings import llm_tokens_for  # noqa: PLC0415

    def lookup() -> tuple[float, float] | None:
        return remember(_llm_tokens, target, llm_tokens_for(current(), target), _MAX_CACHED)

    return or_default("looking up the LLM token budget", target, lookup, None)


def db_options(target: str) -> DbOptions:
    """The database options of *target* (``db.retry_writes``; cached: read on every command)."""
    options = _db_options.get(target)
    if options is None:
        from ._settings import db_options_for  # noqa: PLC0415

        def lookup() -> DbOptions:
            return remember(_db_options, target, db_options_for(current(), target), _MAX_CACHED)

        options = or_default("looking up the database options", target, lookup, DbOptions())
    return options


def observing() -> bool:
    """Whether integrations build their pipelines in observe mode."""
    return current().mode == "observe"


def is_active() -> bool:
    """Whether :func:`activate` switched buttress on in this process."""
    return _active


def activate(environ: Mapping[str, str] | None = None, *, owns_sdk: bool = True) -> bool:
    """
    Switch buttress on from the environment; returns whether it is now active.

    All or nothing for the core only: the settings, the telemetry listener and the patches of
    the client libraries. A side feature that fails (the health endpoint, an exporter) logs one
    WARNING and the policies stay on.

    Args:
        environ: The variables to read (default: ``os.environ``).
        owns_sdk: Whether buttress may set up an OpenTelemetry SDK from the ``OTEL_*``
            variables when the application has none (the ``.pth`` path); the distro path sets
            up its own.

    Raises:
        ConfigurationError: only when ``BUTTRESS_STRICT`` asks for it, on a bad setting or a
            side feature that cannot start (buttress is then left off).
    """
    global _settings, _active, _owns_sdk, _environ  # noqa: PLW0603
    env = os.environ if environ is None else environ
    with _lock:
        if _active:
            return True
        disabled = env.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "")
        if "buttress" in {n.strip() for n in disabled.split(",")}:
            return False
        from ._settings import load_settings  # noqa: PLC0415
        from ._settings_env import ENV_ENABLED, read_bool, strict_requested  # noqa: PLC0415

        # A malformed BUTTRESS_STRICT counts as strict: when the intent is unclear, fail loudly.
        strict = strict_requested(env)
        try:
            # The switch first: with buttress off, the other variables are none of its business.
            if not read_bool(env, ENV_ENABLED):
                return False
            settings = load_settings(env)
        except Exception as error:
            if not isinstance(error, ConfigurationError):
                # A bug of ours, not a bad value the message could name: its type only, since
                # its text may quote a value.
                error = ConfigurationError(
                    f"buttress could not read its configuration ({type(error).__name__}); "
                    "please report this as a buttress bug"
                )
            if strict:
                raise error from None
            logger.error(  # noqa: TRY400 - the message is the point; no traceback for config
                "buttress: configuration error, buttress is DISABLED for this process: %s",
                error,
            )
            return False
        try:
            _settings = settings
            _forget_cached_options()
            _owns_sdk = owns_sdk
            _environ = dict(env)
            _active = True  # before patching: import hooks of loaded libraries fire at once
            _apply(settings)
        except Exception as error:
            # Never break the host application because of us.
            deactivate()
            if strict and isinstance(error, ConfigurationError):
                raise
            logger.exception("buttress: activation failed, buttress is DISABLED for this process")
            return False
        problem = _start_side_features(strict=strict)
        if problem is not None:  # strict only: fail at start-up, not at the first call
            deactivate()
            raise ConfigurationError(problem)
        logger.info("buttress: active (mode=%s)", settings.mode)
        return True


def _apply(settings: Settings) -> None:
    from . import _api  # noqa: PLC0415
    from .integrations import instrument_lazily  # noqa: PLC0415
    from .telemetry import instrument as instrument_telemetry  # noqa: PLC0415

    _api.configure(propagate_deadlines=True)
    if settings.max_targets is not None:
        _api.configure(max_targets=settings.max_targets)
    instrument_telemetry(samples_per_second=settings.samples_per_second)
    instrument_lazily(settings)


def _start_side_features(*, strict: bool) -> str | None:
    """
    Start the health endpoint; under *strict*, also check the exporters' variables.

    Returns:
        Under *strict*, the first problem; otherwise ``None``, each problem logged as one
        WARNING (no traceback: the message says what to do).
    """
    from ._health_server import HealthPortError, start_from_environment  # noqa: PLC0415

    global _health  # noqa: PLW0603
    try:
        _health = start_from_environment(_environ)
    except (ConfigurationError, HealthPortError) as error:
        if strict:
            return str(error)
        logger.warning("buttress: %s. The policies are on.", error)
    except Exception as error:  # an unexpected failure: still only the endpoint is lost
        if strict:
            name = type(error).__name__
            return f"BUTTRESS_HEALTH_PORT: the health endpoint failed to start ({name})"
        logger.warning(
            "buttress: the health endpoint failed to start (%s); the policies are on",
            type(error).__name__,
        )
        logger.debug("buttress: health endpoint failure", exc_info=True)
    if strict and _owns_sdk and not _under_opentelemetry_instrument(_environ):
        # The SDK itself is set up at the first pipeline (see _ensure_sdk); what can be checked
        # now is, so that strict fails at start-up. Binding the Prometheus port after the
        # health endpoint catches the two sharing one.
        from ._otel_setup import check_environment  # noqa: PLC0415

        return check_environment(_environ)
    return None


_AUTO_INSTRUMENTATION = ("opentelemetry", "instrumentation", "auto_instrumentation")


def _under_opentelemetry_instrument(env: Mapping[str, str]) -> bool:
    # The distro sets up the SDK from the same OTEL_* variables, with exporters buttress does not
    # know (otlp_proto_grpc, zipkin...): they are the distro's to check, not strict's. The .pth
    # runs before anything of the distro, so two signs are all there is: this process is the
    # opentelemetry-instrument launcher (it execs the app at once), or the app it started,
    # whose PYTHONPATH begins with the distro's sitecustomize directory.
    argv = getattr(sys, "argv", None) or [""]
    return Path(argv[0]).name == "opentelemetry-instrument" or any(
        Path(entry).parts[-3:] == _AUTO_INSTRUMENTATION
        for entry in env.get("PYTHONPATH", "").split(os.pathsep)
        if entry
    )


def deactivate() -> None:
    """Undo :func:`activate` (tests, embedding): restore every patched library."""
    global _settings, _active  # noqa: PLW0603
    with _lock:
        from .integrations import uninstrument_all  # noqa: PLC0415
        from .telemetry import uninstrument as uninstrument_telemetry  # noqa: PLC0415

        global _health  # noqa: PLW0603
        uninstrument_all()
        uninstrument_telemetry()
        if _health is not None:
            _health.stop()
            _health = None
        CONFIG.propagate_deadlines = False
        _settings = None
        _forget_cached_options()
        _active = False


def _forget_cached_options() -> None:
    # Everything resolved from the settings per target, here and in the HTTP routes.
    from .integrations._http import forget_routes  # noqa: PLC0415

    _http_options.clear()
    _db_options.clear()
    _llm_tokens.clear()
    forget_routes()


def _ensure_sdk() -> None:
    # Deferred until the first pipeline is built: at interpreter start-up the application has
    # not configured OpenTelemetry yet, and setting a global provider then would make the
    # application's own set_meter_provider() fail. By the first outbound call it has, or never
    # will.
    global _sdk_checked  # noqa: PLW0603
    if not _active:
        return
    with _lock:
        if _sdk_checked:
            return
        _sdk_checked = True
        try:
            from ._otel_setup import setup_sdk  # noqa: PLC0415

            setup_sdk(_environ, owns_sdk=_owns_sdk)
        except Exception as error:
            # Each exporter's own failure is reported by setup_sdk; this is anything else.
            logger.warning(
                "buttress: setting up OpenTelemetry failed (%s); continuing without buttress's "
                "SDK, the policies are on",
                type(error).__name__,
            )
            logger.debug("buttress: OpenTelemetry set-up failure", exc_info=True)


def reset_for_tests() -> dict[str, Any]:
    """Forget the SDK check (tests only); returns the state it had."""
    global _sdk_checked  # noqa: PLW0603
    state = {"sdk_checked": _sdk_checked}
    _sdk_checked = False
    return state
