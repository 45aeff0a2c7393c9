"""
Automatic resilience for client libraries: one module per library, each reversible.

``buttress.integrations.instrument(["requests"])`` patches now; zero-code activation calls
:func:`instrument_lazily`, which patches each wanted library when the application imports it.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

import wrapt

from .._exceptions import ConfigurationError
from ._base import Integration

if TYPE_CHECKING:
    from .._settings import Settings

logger = logging.getLogger("buttress")

# name -> (module holding INTEGRATION, the library module it patches)
AVAILABLE: dict[str, tuple[str, str]] = {
    "requests": ("buttress.integrations.requests", "requests"),
    "httpx": ("buttress.integrations.httpx", "httpx"),
    "httpx2": ("buttress.integrations.httpx2", "httpx2"),
    "aiohttp": ("buttress.integrations.aiohttp", "aiohttp"),
    "urllib3": ("buttress.integrations.urllib3", "urllib3"),
    "psycopg": ("buttress.integrations.psycopg", "psycopg"),
    "psycopg2": ("buttress.integrations.psycopg2", "psycopg2"),
    "asyncpg": ("buttress.integrations.asyncpg", "asyncpg"),
    "pymysql": ("buttress.integrations.pymysql", "pymysql"),
    "sqlalchemy": ("buttress.integrations.sqlalchemy", "sqlalchemy"),
    "redis": ("buttress.integrations.redis", "redis"),
    "sqlite3": ("buttress.integrations.sqlite3", "sqlite3"),
    "openai": ("buttress.integrations.openai", "openai"),
    "anthropic": ("buttress.integrations.anthropic", "anthropic"),
    "groq": ("buttress.integrations.groq", "groq"),
    "google-genai": ("buttress.integrations.google_genai", "google.genai"),
}
"""Every integration, by the name BUTTRESS_INSTRUMENTATIONS uses: HTTP clients, database
drivers, LLM SDKs (docs/integrations.md). A library that is not installed is skipped; so is an
integration module that does not exist (see :func:`get`)."""

__all__ = ["AVAILABLE", "Integration", "get", "instrument", "instrument_lazily", "uninstrument_all"]

_hooked: set[str] = set()


def get(name: str) -> Integration | None:
    """The integration called *name* (see :data:`AVAILABLE`), or ``None`` if not built yet."""
    module_name, _library = AVAILABLE[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name == module_name:
            return None
        raise
    integration: Integration = module.INTEGRATION
    return integration


def instrument(names: Iterable[str] | None = None) -> list[str]:
    """
    Patch the named libraries now (all available ones by default); returns those patched.

    A library that is not installed is skipped.

    .. versionadded:: 0.1.0
    """
    if names is not None:
        names = _known_names(names)
    done = []
    for name in AVAILABLE if names is None else names:
        integration = get(name)
        if integration is not None and integration.available():
            _instrument_one(name)
            done.append(name)
    return done


def _known_names(names: object) -> list[str]:
    # A str would be iterated letter by letter: refuse it, as anything not a name.
    from .._validate import shown  # noqa: PLC0415

    accepted = "an iterable of names among " + ", ".join(AVAILABLE)
    if isinstance(names, str | bytes) or not isinstance(names, Iterable):
        raise ConfigurationError(
            f"integrations.instrument: names={shown(names)} is not accepted; expected {accepted}"
        )
    listed = list(names)
    unknown = [n for n in listed if not isinstance(n, str) or n not in AVAILABLE]
    if unknown:
        raise ConfigurationError(
            f"integrations.instrument: {', '.join(shown(n) for n in unknown[:5])} is not a known "
            f"integration; expected {accepted}"
        )
    return listed


def _instrument_one(name: str) -> None:
    try:
        integration = get(name)
        if integration is not None:
            integration.instrument()
    except Exception:
        logger.exception("buttress: could not instrument %s; it runs unprotected", name)


def instrument_lazily(settings: Settings) -> None:
    """Patch every wanted library when it is imported (at once if it already is)."""
    for name, (_module, library) in AVAILABLE.items():
        if not settings.wants(name):
            continue
        if name in _hooked:
            # Hooked by an earlier activation: its hook will not fire again for a library that
            # is already imported, so patch it now.
            if library in sys.modules:
                _instrument_one(name)
            continue
        _hooked.add(name)

        def hook(_module: object, name: str = name) -> None:
            from .. import _activation  # noqa: PLC0415

            if _activation.is_active():
                _instrument_one(name)

        wrapt.register_post_import_hook(hook, library)


def uninstrument_all() -> None:
    """Restore every library patched so far."""
    for module_name, _library in AVAILABLE.values():
        module = sys.modules.get(module_name)
        if module is not None:
            module.INTEGRATION.uninstrument()
