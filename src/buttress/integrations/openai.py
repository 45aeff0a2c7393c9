"""
openai: every model call of ``OpenAI``/``AsyncOpenAI`` runs through its ``openai/<model>`` pipeline.

**What is patched, and why there.** ``openai._base_client.SyncAPIClient.request`` and
``AsyncAPIClient.request``: the one method every endpoint goes through (``chat.completions``
create, ``parse`` and ``stream()``, ``responses``, ``embeddings``, ``with_raw_response``...). It
is the lowest point that still has the model name (``options.json_data["model"]``) and
returns the SDK's own objects (parsed responses, ``Stream`` objects), and it is where the
SDK's own retry loop lives, so with the SDK's retries off one buttress attempt is exactly one
HTTP request. A request without a model (files, ``models.list``) is not a generation and is
left to the HTTP integrations.

**Who retries**: in enforce mode ``OpenAI``, ``AsyncOpenAI`` and the Azure clients are built
with ``max_retries=0`` and buttress retries, unless the caller passes ``max_retries`` (to the
constructor, ``with_options()`` or a request's options): then the SDK keeps it and buttress
does not retry that call, so ``max_retries=2`` is at most 3 requests. Observe mode changes
nothing. See :mod:`buttress.integrations._llm_stainless` for the details,
:mod:`buttress.integrations._llm` for what is retried and when, streams, and fallback to
``groq``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from ._openai_shape import openai_compatible

__all__ = ["INTEGRATION", "SDK"]

CHAT_PATH = "/chat/completions"

SDK, INTEGRATION = openai_compatible(
    "openai",
    ("OpenAI", "AsyncOpenAI", "AzureOpenAI", "AsyncAzureOpenAI"),
    CHAT_PATH,
    transport="httpx2",
)
