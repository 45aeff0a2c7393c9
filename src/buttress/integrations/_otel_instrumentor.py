"""
The ``opentelemetry_instrumentor`` entry point: ``opentelemetry-instrument python app.py``.

The distro loads this instrumentor after it has set up the SDK from the ``OTEL_*`` variables,
so buttress uses those providers and sets up none of its own. It stays inert unless
``BUTTRESS_ENABLED=true``: installing buttress never changes an application by itself. Listing
``buttress`` in ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` keeps it off entirely (the distro then
does not load it, and the start-up hook checks the same variable).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)


class ButtressInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Activates buttress from the environment when loaded by opentelemetry-instrument."""

    def instrumentation_dependencies(self) -> Collection[str]:
        """None: buttress works with whatever client libraries are installed."""
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        from .._activation import activate  # noqa: PLC0415

        activate(owns_sdk=False)

    def _uninstrument(self, **kwargs: Any) -> None:
        from .._activation import deactivate  # noqa: PLC0415

        deactivate()
