"""
anthropic: every model call of ``Anthropic``/``AsyncAnthropic`` runs through ``anthropic/<model>``.

**What is patched, and why there.** ``anthropic._base_client.SyncAPIClient.request`` and
``AsyncAPIClient.request`` (Stainless-generated, as openai's): the one method that
``messages.create``, the ``messages.stream()`` helper (which calls ``_post`` directly, not
``create``), ``count_tokens``, ``with_raw_response`` and the beta resources all go through. It
has the model (``options.json_data["model"]``), returns the SDK's objects and streams, and holds
the SDK's retry loop, so with the SDK's retries off one buttress attempt is one HTTP request. A
stream's first event (``message_start``) is read inside the attempt, so ``messages.stream()`` is
retried until its first event and never after.

**Who retries**: in enforce mode ``Anthropic`` and ``AsyncAnthropic`` are built with
``max_retries=0`` and buttress retries, unless the caller passes ``max_retries``: then the SDK
keeps it and buttress does not retry that call (attempts never multiply; see
:mod:`buttress.integrations._llm_stainless`). Observe mode changes nothing. The Bedrock and
Vertex clients' constructors are not patched; their requests are still wrapped, and since
buttress did not see them built, in enforce mode each of their requests is sent with the SDK's
retries off (as for any client built before the SDK was patched).

Rate limits: on a 429, ``retry-after`` wins, then the ``anthropic-ratelimit-*-reset`` RFC 3339
times (see :func:`buttress.integrations._llm.llm_server_delay`). A 529 (overloaded) is a 5xx
and is retried.

**Serving fallbacks of OpenAI-shaped calls.** A Claude model can serve the fallback of an openai
or groq chat completion (``openai/gpt-4o-mini -> anthropic/claude-3-5-haiku-latest``): the body
is translated (:mod:`buttress.integrations._llm_translate`) to ``messages.create`` on the
application's first ``Anthropic``/``AsyncAnthropic`` client (or the one given to
``register_client``), which runs through the ``anthropic/<model>`` pipeline, and the answer
(or stream) is translated back to the caller's SDK types.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from . import _llm_translate as translate
from ._base import Integration
from ._llm import (
    ChatShape,
    atranslated_stream,
    register_chat_shape,
    register_transport_errors,
    register_transport_modules,
    translated_stream,
)
from ._llm_stainless import (
    StainlessSDK,
    keep_retry_choice,
    no_sdk_retries,
    retry_patches,
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


# --- serving the fallbacks of OpenAI-shaped calls ----------------------------------------------


def _accepts(body: Mapping[str, Any], stream: bool) -> bool:
    try:
        translate.check(body, translate.ANTHROPIC)
    except translate.UntranslatableError:
        return False
    return True


def _stream_maker(body: Mapping[str, Any], model: str) -> translate.AnthropicStream:
    return translate.AnthropicStream(
        chat_id="msg",
        created=int(time.time()),
        model=model,
        include_usage=translate.include_usage(body),
    )


def _send(client: Any, body: dict[str, Any], stream: bool) -> Any:
    request = translate.to_anthropic(body)
    if stream:
        events = client.messages.create(**request, stream=True)
        return translated_stream(events, _stream_maker(body, request["model"]))
    message = client.messages.create(**request)
    return translate.from_anthropic(
        message.model_dump(mode="json", exclude_none=True),
        model=request["model"],
        created=int(time.time()),
    )


async def _asend(client: Any, body: dict[str, Any], stream: bool) -> Any:
    request = translate.to_anthropic(body)
    if stream:
        events = await client.messages.create(**request, stream=True)
        return await atranslated_stream(events, _stream_maker(body, request["model"]))
    message = await client.messages.create(**request)
    return translate.from_anthropic(
        message.model_dump(mode="json", exclude_none=True),
        model=request["model"],
        created=int(time.time()),
    )


register_chat_shape("anthropic", ChatShape(_send, _asend, translated=True, accepts=_accepts))


class AnthropicIntegration(Integration):
    """Patches the anthropic clients' ``request``, and what decides their retries."""

    name = "anthropic"
    module = "anthropic"

    def patches(self) -> list[tuple[str, str, Any]]:
        """The patch list."""
        import anthropic  # noqa: PLC0415

        register_transport_errors(anthropic.APIConnectionError)
        register_transport_modules("httpx2")
        base = "anthropic._base_client"
        patches: list[tuple[str, str, Any]] = [
            (base, "SyncAPIClient.request", stainless_request(SDK)),
            (base, "AsyncAPIClient.request", stainless_arequest(SDK)),
            *retry_patches(base, SDK),
        ]
        for cls in ("Anthropic", "AsyncAnthropic"):
            patches += [
                ("anthropic", f"{cls}.__init__", no_sdk_retries),
                ("anthropic", f"{cls}.copy", keep_retry_choice),
                ("anthropic", f"{cls}.with_options", keep_retry_choice),
            ]
        return patches


INTEGRATION = AnthropicIntegration()
