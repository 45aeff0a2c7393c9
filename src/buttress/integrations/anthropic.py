"""
anthropic: every model call of ``Anthropic``/``AsyncAnthropic`` runs through ``anthropic/<model>``.

**What is patched, and why there.** ``anthropic._base_client.SyncAPIClient.request`` and
``AsyncAPIClient.request`` (Stainless-generated, as openai's): the one method that
``messages.create``, the ``messages.stream()`` helper (which calls ``_post`` directly, not
``create``), ``count_tokens``, ``with_raw_response`` and the beta resources all go through. It
has the model (``options.json_data["model"]``), returns the SDK's objects and streams, and holds
the SDK's retry loop, so one buttress attempt is one HTTP request. A stream's first event
(``message_start``) is read inside the attempt, so ``messages.stream()`` is retried until its
first event and never after.

**The SDK's retries are off**: ``Anthropic`` and ``AsyncAnthropic`` are built with
``max_retries=0`` unless the caller passes ``max_retries`` (respected; attempts then multiply).
The Bedrock and Vertex clients' constructors are not patched; their requests are still
wrapped, and since buttress did not see them built, each of their requests is sent with the
SDK's retries off (as for any client built before the SDK was patched).

Rate limits: on a 429, ``retry-after`` wins, then the ``anthropic-ratelimit-*-reset`` RFC 3339
times (see :func:`buttress.integrations._llm.llm_server_delay`). A 529 (overloaded) is a 5xx
and is retried.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from typing import Any

from ._base import Integration
from ._llm import (
    StainlessSDK,
    no_sdk_retries,
    register_transport_errors,
    register_transport_modules,
    stainless_arequest,
    stainless_request,
)

__all__ = ["INTEGRATION", "AnthropicIntegration"]


def _connection_error() -> type[BaseException]:
    import anthropic  # noqa: PLC0415

    return anthropic.APIConnectionError


def _timeout_error() -> type[BaseException]:
    import anthropic  # noqa: PLC0415

    return anthropic.APITimeoutError


SDK = StainlessSDK("anthropic", _connection_error, _timeout_error)


class AnthropicIntegration(Integration):
    """Patches the anthropic clients' ``request`` and their constructors (``max_retries``)."""

    name = "anthropic"
    module = "anthropic"

    def patches(self) -> list[tuple[str, str, Any]]:
        """The patch list."""
        import anthropic  # noqa: PLC0415

        register_transport_errors(anthropic.APIConnectionError)
        register_transport_modules("httpx2")
        return [
            ("anthropic._base_client", "SyncAPIClient.request", stainless_request(SDK)),
            ("anthropic._base_client", "AsyncAPIClient.request", stainless_arequest(SDK)),
            ("anthropic", "Anthropic.__init__", no_sdk_retries),
            ("anthropic", "AsyncAnthropic.__init__", no_sdk_retries),
        ]


INTEGRATION = AnthropicIntegration()
