"""
:class:`HttpOptions` and :class:`DbOptions`: what the integrations may retry beyond the policies.

They are plain value objects that check themselves, built from ``http.*`` and ``db.*`` keys of
the configuration file (and by hand in tests). Kept apart from the file parsing because they are
read on every request by the integrations, not just at load time, and know nothing of TOML.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._exceptions import ConfigurationError
from ._http_signals import TRANSIENT_STATUSES
from ._validate import shown

__all__ = ["DbOptions", "HttpOptions"]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token: methods, header names


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class HttpOptions:
    """
    What HTTP integrations may retry, beyond what the retry policy decides.

    Args:
        retry_methods: Methods retried without an idempotency key (idempotent ones by default).
        retry_statuses: Response statuses that count as retryable.
        retry_non_idempotent: Also retry POST and PATCH without an idempotency key.
        idempotency_header: A request carrying this header is safe to retry whatever its method.
        open_breaker: How an open breaker answers a request: ``"response"`` (the default) with a
            response that repeats the last status the dependency answered, marked with an
            ``x-buttress-rejected: circuit_open`` header, as Envoy answers an overflow with a 503
            marked ``x-envoy-overloaded``; or ``"error"``, the library's connection error. When
            the breaker opened on errors without a status (refused, reset, timed out), both
            raise the connection error: that is what the app saw.

    .. versionadded:: 0.1.0
    """

    retry_methods: frozenset[str] = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
    retry_statuses: frozenset[int] = TRANSIENT_STATUSES
    retry_non_idempotent: bool = False
    idempotency_header: str = "Idempotency-Key"
    open_breaker: str = "response"

    def __post_init__(self) -> None:
        # Lists (as TOML gives them) are accepted and normalised to frozensets.
        methods: object = self.retry_methods
        if isinstance(methods, str) or not isinstance(methods, list | tuple | set | frozenset):
            raise ConfigurationError(
                f"HttpOptions: retry_methods={shown(methods)} is not accepted; "
                "expected a list of HTTP methods such as ['GET', 'PUT']"
            )
        for method in methods:
            if not isinstance(method, str) or not _TOKEN.fullmatch(method):
                raise ConfigurationError(
                    f"HttpOptions: retry_methods contains {shown(method)}, which is not accepted; "
                    "expected HTTP method names such as 'GET'"
                )
        object.__setattr__(self, "retry_methods", frozenset(m.upper() for m in methods))
        statuses: object = self.retry_statuses
        if isinstance(statuses, str) or not isinstance(statuses, list | tuple | set | frozenset):
            raise ConfigurationError(
                f"HttpOptions: retry_statuses={shown(statuses)} is not accepted; "
                "expected a list of HTTP status codes (integers 100 to 599)"
            )
        for status in statuses:
            if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
                raise ConfigurationError(
                    f"HttpOptions: retry_statuses contains {shown(status)}, which is not accepted; "
                    "expected HTTP status codes (integers 100 to 599)"
                )
        object.__setattr__(self, "retry_statuses", frozenset(statuses))
        if not isinstance(self.retry_non_idempotent, bool):
            raise ConfigurationError(
                f"HttpOptions: retry_non_idempotent={shown(self.retry_non_idempotent)} is not "
                "accepted; expected true or false"
            )
        if self.open_breaker not in ("response", "error"):
            raise ConfigurationError(
                f"HttpOptions: open_breaker={shown(self.open_breaker)} is not accepted; "
                "expected 'response' or 'error'"
            )
        header: object = self.idempotency_header
        if not isinstance(header, str) or not _TOKEN.fullmatch(header):
            raise ConfigurationError(
                f"HttpOptions: idempotency_header={shown(header)} is not accepted; "
                "expected a header name such as 'Idempotency-Key'"
            )

    def __repr__(self) -> str:
        methods = ",".join(sorted(self.retry_methods)) or "-"
        statuses = ",".join(str(s) for s in sorted(self.retry_statuses)) or "-"
        return (
            f"<HttpOptions retry_methods={methods} retry_statuses={statuses} "
            f"retry_non_idempotent={self.retry_non_idempotent} "
            f"idempotency_header={self.idempotency_header!r}>"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DbOptions:
    """
    What database integrations may retry, beyond what the retry policy decides.

    Args:
        retry_writes: Also retry Redis write commands (``SET``, ``INCR``...) on connection
            errors, never on timeouts: at-least-once, so a write whose reply was lost runs
            twice. SQL statements are never retried as writes, whatever this says.

    .. versionadded:: 0.1.0
    """

    retry_writes: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.retry_writes, bool):
            raise ConfigurationError(
                f"DbOptions: retry_writes={shown(self.retry_writes)} is not accepted; "
                "expected true or false"
            )
