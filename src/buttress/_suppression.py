"""
Whether OpenTelemetry instrumentation is suppressed in the current context.

The SDK's own exporters suppress instrumentation while they export, and so does
``opentelemetry.instrumentation.utils.suppress_instrumentation()``: an exporter's HTTP request
must never run through a pipeline, and nothing buttress traces may land in it. Both the
integrations (``integrations._base.passthrough``) and the span listener
(``telemetry._otel_spans``) ask, so the reading lives here, once.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context

SUPPRESS = otel_context._SUPPRESS_INSTRUMENTATION_KEY
"""The context key the API's ``suppress_instrumentation`` sets (read through the API, so the
instrumentation package is not required)."""


def _otel_context_var() -> ContextVar[Any] | None:
    """
    OpenTelemetry's own context variable, when its default runtime context is in use.

    Reading it directly saves three Python calls (``get_value`` -> ``get_current`` ->
    ``ContextVarsRuntimeContext.get_current``) on every patched call. Any other runtime context
    (``OTEL_PYTHON_CONTEXT``) goes through the public API.
    """
    try:
        from opentelemetry.context import _RUNTIME_CONTEXT  # noqa: PLC0415
        from opentelemetry.context.contextvars_context import (  # noqa: PLC0415
            ContextVarsRuntimeContext,
        )
    except ImportError:  # pragma: no cover - a future API layout: use the public path
        return None
    var = getattr(_RUNTIME_CONTEXT, "_current_context", None)
    if type(_RUNTIME_CONTEXT) is ContextVarsRuntimeContext and isinstance(var, ContextVar):
        return var
    return None  # pragma: no cover - only with a custom OTEL_PYTHON_CONTEXT


OTEL_CONTEXT = _otel_context_var()
"""OpenTelemetry's context variable, or None: hot paths may read ``OTEL_CONTEXT.get()`` inline."""


def suppressed() -> bool:
    """Whether instrumentation is suppressed here; False if the context cannot be read."""
    try:
        if OTEL_CONTEXT is not None:
            return bool(OTEL_CONTEXT.get().get(SUPPRESS))
        return bool(otel_context.get_value(SUPPRESS))  # pragma: no cover - see OTEL_CONTEXT
    except Exception:
        return False
