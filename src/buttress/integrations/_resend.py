"""
``http.request.resend_count`` on every resent HTTP attempt, whichever instrumentation made the span.

The retry loop sits above the point where OpenTelemetry's HTTP instrumentations create their
client spans, so each physical attempt gets its own span. Those instrumentations do not know an
attempt is a resend; this span processor does: the integrations publish the resend number in a
context variable around each attempt, and the processor copies it onto CLIENT spans as they
start (OTel semantic conventions: set only on resends, never 0).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from opentelemetry.trace import SpanKind

RESEND_COUNT = "http.request.resend_count"

resend: ContextVar[int] = ContextVar("buttress_resend", default=0)


try:
    from opentelemetry.sdk.trace import SpanProcessor as _SpanProcessor
except ImportError:  # pragma: no cover - the SDK is optional; then there is nothing to process
    _SpanProcessor = object  # type: ignore[assignment,misc]


class ResendCountProcessor(_SpanProcessor):
    """Marks CLIENT spans started during a resent attempt."""

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        """Set the resend count on a client span started inside a resent attempt."""
        count = resend.get()
        if count and span.kind is SpanKind.CLIENT:
            span.set_attribute(RESEND_COUNT, count)

    def on_end(self, span: Any) -> None:
        """Nothing to do when a span ends."""

    def shutdown(self) -> None:
        """Nothing to release."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing buffered."""
        return True
