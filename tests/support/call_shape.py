"""
A client-like call shape for driver tests: responses with a status, and 503 retried.

Shared by ``tests/test_shape.py`` (what a shape asks of the drivers) and
``tests/test_driver_lane.py`` (the lanes against the general drivers).
"""

from __future__ import annotations

import operator
from contextvars import ContextVar

from buttress._shape import CallShape

RESEND: ContextVar[int] = ContextVar("test_resend", default=0)


class Response:
    """A response: a status, and whether it was released."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.closed = False

    def close(self) -> None:
        self.closed = True


class BadStatus(Exception):
    """Carries a failing :class:`Response` through the pipeline."""

    def __init__(self, response: Response, status: int) -> None:
        super().__init__(status)
        self.response = response


def discard(exc: BaseException) -> None:
    """Releases the response of a :class:`BadStatus` that is being retried."""
    if isinstance(exc, BadStatus):
        exc.response.close()


SHAPE = CallShape(
    deadline_argument="timeout",
    status=operator.attrgetter("status"),
    failing=frozenset({503}),
    failure=BadStatus,
    discard=discard,
    resend=RESEND,
)
