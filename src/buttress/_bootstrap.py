"""
Run by ``buttress.pth`` at interpreter start-up, unless ``BUTTRESS_ENABLED`` is unset or false.

Any value but a false one (``false``, ``0``, ``no``, ``off``) gets here, so that a typo such as
``ture`` reaches :func:`~._activation.activate`, which rejects it loudly instead of ignoring it.

Start-up code must never take the application down: any error is logged and buttress stays off,
except that ``BUTTRESS_STRICT=true`` turns a configuration or start-up error into an exit, as
asked.
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
        exit_strict(str(error))
    except Exception as error:  # never break the interpreter's start-up
        if _strict():
            exit_strict(f"buttress could not start ({type(error).__name__})")
        # The type only: an exception's text may quote a value of the environment.
        sys.stderr.write(
            f"buttress: could not start, continuing without it: {type(error).__name__}\n"
        )


def exit_strict(message: str) -> None:
    """Say why on one line of stderr and exit with code 2 (``BUTTRESS_STRICT=true``)."""
    one_line = " ".join(message.splitlines())
    sys.stderr.write(f"buttress: BUTTRESS_STRICT=true, exiting with code 2: {one_line}\n")
    sys.stderr.flush()
    # SystemExit from a .pth file makes CPython report a fatal error in site with a
    # traceback; nothing has run yet, so a plain exit is the clean way to fail fast.
    os._exit(2)


def _strict() -> bool:
    try:
        from ._settings_env import strict_requested  # noqa: PLC0415

        return strict_requested()
    except Exception:
        return os.environ.get("BUTTRESS_STRICT", "").strip().lower() not in (
            "",
            "false",
            "0",
            "no",
            "off",
        )


_run()
