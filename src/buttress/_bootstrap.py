"""
Run by ``buttress.pth`` at interpreter start-up, only when ``BUTTRESS_ENABLED`` is true.

Start-up code must never take the application down: any error is logged and buttress stays off,
except that ``BUTTRESS_STRICT=true`` turns a configuration error into an exit, as asked.
"""

from __future__ import annotations

import os
import sys

from ._exceptions import ConfigurationError


def _run() -> None:
    try:
        from ._activation import activate  # noqa: PLC0415

        activate()
    except ConfigurationError as error:  # only raised in strict mode
        sys.stderr.write(f"buttress: configuration error (BUTTRESS_STRICT=true): {error}\n")
        sys.stderr.flush()
        # SystemExit from a .pth file makes CPython report a fatal error in site with a
        # traceback; nothing has run yet, so a plain exit is the clean way to fail fast.
        os._exit(2)
    except Exception as error:  # never break the interpreter's start-up
        sys.stderr.write(f"buttress: could not start, continuing without it: {error!r}\n")


_run()
