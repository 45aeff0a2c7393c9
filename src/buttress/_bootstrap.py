"""
Run by ``buttress.pth`` at interpreter start-up, only when ``BUTTRESS_ENABLED`` is true.

Start-up code must never take the application down: any error is logged and buttress stays off,
except that ``BUTTRESS_STRICT=true`` turns a configuration error into an exit, as asked.
"""

from __future__ import annotations

import sys

from ._exceptions import ConfigurationError


def _run() -> None:
    try:
        from ._activation import activate  # noqa: PLC0415

        activate()
    except ConfigurationError as error:  # only raised in strict mode
        sys.stderr.write(f"buttress: configuration error (BUTTRESS_STRICT=true): {error}\n")
        raise SystemExit(2) from None
    except Exception as error:  # never break the interpreter's start-up
        sys.stderr.write(f"buttress: could not start, continuing without it: {error!r}\n")


_run()
