"""
What a pipeline driver may know about the function it calls, beyond ``fn(*args, **kwargs)``.

A pipeline runs any callable. The client integrations need a little more around each attempt:
the attempt's deadline handed to the client as its own timeout argument, a returned response
whose status asks for a retry treated as a failure, a response being retried released, and the
resend number published for telemetry. Done by an object and a function around each attempt,
that costs frames and allocations on every request; a driver compiled with a :class:`CallShape`
does it inline (see ``Pipeline.shaped``). Inside a real ``requests`` GET, where buttress's code
runs with cold caches and every frame and object it touches counts, this took about 4 us of the
35-39 us buttress added per request (``benchmarks/bench_integration.py``, old and new code
alternated in one session).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable
from contextvars import ContextVar
from typing import Any

MIN_LEFT = 0.001
"""The smallest timeout handed to a client: a deadline already past still gives a (tiny) one."""


def shorter(callers: Any, left: float) -> Any:
    """
    The caller's own timeout, shortened to what is left of the deadline.

    Anything but a number is left as it is: the client then rejects it in its own words, where
    comparing it here would raise an error of ours.
    """
    if isinstance(callers, int | float):
        return min(callers, left)
    return callers


@dataclasses.dataclass(frozen=True, slots=True)
class CallShape:
    """
    Per-attempt duties a driver performs inline for one kind of callable.

    Hashable, so that a pipeline compiles one driver per shape and caches it.

    Attributes:
        deadline_argument: The keyword argument through which each attempt receives what is
            left of its deadline, in seconds (``"timeout"`` for ``requests``); ``None`` for none.
            Only when the pipeline publishes deadlines (a timeout is configured, not in observe
            mode).
        tighten: ``tighten(callers_value, left)``: merges a value the caller passed for
            *deadline_argument* with what is left (only called when the caller passed one, or
            when less than :data:`MIN_LEFT` is left).
        status: Reads a returned value's status code; ``None`` when results are never failures.
        failing: Status codes that make a returned value a failure.
        failure: ``failure(result, status)``: the exception that carries a failing result
            through the pipeline (retry, breaker and ``Retry-After`` see it; the integration
            unwraps the final one).
        discard: Releases what a failed attempt holds before it is retried (a response and its
            connection); may return an awaitable in the async driver.
        resend: A context variable set to the resend number (1, 2, ...) around each attempt
            after the first.
        inside: A context variable set to *marks* around each attempt, so that a nested client
            call of the same kind passes straight through (see ``integrations._base``), while
            code that runs between attempts (event hooks, back-off) is not marked.
        marks: The value for *inside* (``"http"``).
        app_timeout: The client has a timeout of its own (the app's, its library's default, a
            database server's statement timeout), which buttress cannot always see. When the
            pipeline's ``Timeout.respect_app_timeout`` is true (the built-in templates), the
            attempt timeout does not apply and the first attempt runs as the client would
            without buttress: no timeout handed over, no deadline published, nothing
            cancelled. The total timeout then bounds only the retries. Every zero-code
            integration compiles its calls with this.
    """

    deadline_argument: str | None = None
    tighten: Callable[[Any, float], Any] = shorter
    status: Callable[[Any], Hashable] | None = None
    failing: frozenset[Any] = frozenset()
    failure: Callable[[Any, Any], BaseException] | None = None
    discard: Callable[[BaseException], Any] | None = None
    resend: ContextVar[int] | None = None
    inside: ContextVar[str | None] | None = None
    marks: str | None = None
    app_timeout: bool = False


APP_TIMEOUT = CallShape(app_timeout=True)
"""The shape of a zero-code call with no other duty than respecting the client's own timeout."""
