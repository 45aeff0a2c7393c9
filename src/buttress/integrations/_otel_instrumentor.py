"""
The ``opentelemetry_instrumentor`` entry point: ``opentelemetry-instrument python app.py``.

The distro loads this instrumentor after it has set up the SDK from the ``OTEL_*`` variables,
so buttress uses those providers and sets up none of its own. It stays inert unless
``BUTTRESS_ENABLED=true``: installing buttress never changes an application by itself. Listing
``buttress`` in ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` keeps it off entirely (the distro then
does not load it, and the start-up hook checks the same variable).
"""

from __future__ import annotations

import os
import sys
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
        from .._exceptions import ConfigurationError  # noqa: PLC0415

        try:
            activate(owns_sdk=False)
        except ConfigurationError as error:  # strict only
            # The distro would log this and carry on: strict asked for a stop, with the same
            # one line and exit code as the start-up hook (buttress._bootstrap).
            one_line = " ".join(str(error).splitlines())
            sys.stderr.write(f"buttress: BUTTRESS_STRICT=true, exiting with code 2: {one_line}\n")
            sys.stderr.flush()
            os._exit(2)

    def _uninstrument(self, **kwargs: Any) -> None:
        from .._activation import deactivate  # noqa: PLC0415

        deactivate()
