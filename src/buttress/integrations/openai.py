"""
openai: every model call of ``OpenAI``/``AsyncOpenAI`` runs through its ``openai/<model>`` pipeline.

**What is patched, and why there.** ``openai._base_client.SyncAPIClient.request`` and
``AsyncAPIClient.request``: the one method every endpoint goes through (``chat.completions``
create, ``parse`` and ``stream()``, ``responses``, ``embeddings``, ``with_raw_response``...). It
is the lowest point that still has the model name (``options.json_data["model"]``) and
returns the SDK's own objects (parsed responses, ``Stream`` objects), and it is where the
SDK's own retry loop lives, so one buttress attempt is exactly one HTTP request. A request
without a model (files, ``models.list``) is not a generation and is left to the HTTP
integrations.

**The SDK's retries are off**: ``OpenAI``, ``AsyncOpenAI`` and the Azure clients are built with
``max_retries=0`` unless the caller passes ``max_retries`` (then it is respected, and each
buttress attempt is the SDK's whole loop: with ``max_retries=2`` and 3 buttress attempts, up to
9 requests). See :mod:`buttress.integrations._llm` for what is retried and when, streams, and
fallback to ``groq``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from typing import Any

from ._base import Integration
from ._llm import (
    ChatShape,
    StainlessSDK,
    no_sdk_retries,
    register_chat_shape,
    register_transport_errors,
    register_transport_modules,
    stainless_arequest,
    stainless_request,
)

__all__ = ["INTEGRATION", "OpenAIIntegration"]

CHAT_PATH = "/chat/completions"


def _connection_error() -> type[BaseException]:
    import openai  # noqa: PLC0415

    return openai.APIConnectionError


def _timeout_error() -> type[BaseException]:
    import openai  # noqa: PLC0415

    return openai.APITimeoutError


SDK = StainlessSDK("openai", _connection_error, _timeout_error, CHAT_PATH)


def _send(client: Any, body: dict[str, Any], stream: bool) -> Any:
    import openai  # noqa: PLC0415
    from openai.types.chat import ChatCompletion, ChatCompletionChunk  # noqa: PLC0415

    return client.post(
        CHAT_PATH,
        body=body,
        cast_to=ChatCompletion,
        stream=stream,
        stream_cls=openai.Stream[ChatCompletionChunk],
    )


async def _asend(client: Any, body: dict[str, Any], stream: bool) -> Any:
    import openai  # noqa: PLC0415
    from openai.types.chat import ChatCompletion, ChatCompletionChunk  # noqa: PLC0415

    return await client.post(
        CHAT_PATH,
        body=body,
        cast_to=ChatCompletion,
        stream=stream,
        stream_cls=openai.AsyncStream[ChatCompletionChunk],
    )


register_chat_shape("openai", ChatShape(_send, _asend))


class OpenAIIntegration(Integration):
    """Patches the openai clients' ``request`` and their constructors (``max_retries``)."""

    name = "openai"
    module = "openai"

    def patches(self) -> list[tuple[str, str, Any]]:
        """The patch list."""
        import openai  # noqa: PLC0415

        register_transport_errors(openai.APIConnectionError)
        register_transport_modules("httpx2")
        return [
            ("openai._base_client", "SyncAPIClient.request", stainless_request(SDK)),
            ("openai._base_client", "AsyncAPIClient.request", stainless_arequest(SDK)),
            ("openai", "OpenAI.__init__", no_sdk_retries),
            ("openai", "AsyncOpenAI.__init__", no_sdk_retries),
            ("openai", "AzureOpenAI.__init__", no_sdk_retries),
            ("openai", "AsyncAzureOpenAI.__init__", no_sdk_retries),
        ]


INTEGRATION = OpenAIIntegration()
