"""
google-genai: every Gemini generation runs through its ``google/<model>`` pipeline.

**What is patched, and why there.** ``google.genai.models.Models._generate_content`` and
``_generate_content_stream``, and the same two of ``AsyncModels``. They are what the public
``generate_content`` and ``generate_content_stream`` call for each HTTP request: once per
automatic-function-calling round and once per continuation hop. That makes them the lowest point
that has the model name and returns the SDK's objects (``GenerateContentResponse``), and the
right unit to retry: retrying the public method would run the caller's tools again, while
retrying one round re-sends the same request. The model (``gemini-2.0-flash``,
``models/gemini-2.0-flash`` or a Vertex resource path) gives the target ``google/<model id>``.
Other endpoints (``embed_content``, ``count_tokens``, files...) are left to the HTTP
integrations.

**Who retries** (the rule is in :mod:`buttress.integrations._llm`): google-genai retries through
``HttpOptions(retry_options=...)`` (tenacity; none by default), and the async aiohttp path
retries a connection error once by itself unless ``retry_options`` is set. In enforce mode
buttress builds every client (``BaseApiClient.__init__``) with
``retry_options=HttpRetryOptions(attempts=1)`` unless the caller passed ``retry_options``, and
retries itself. ``retry_options`` the caller passed (to the client, or per request in
``config.http_options``) are kept, and buttress then runs the call without retries of its own:
the provider sees the requests the application asked for, not buttress's attempts times the
SDK's. In observe mode nothing is changed; the mode is read when a client is built. While the
SDK retries by itself, each request it sends (``BaseApiClient._request_once`` and
``_async_request_once``, one per tenacity attempt) is reported to
:mod:`buttress.integrations._llm_sdk_loop`; the aiohttp path's own reconnection happens inside
one such request and is not seen.

google-genai sends over httpx (sync, and async without aiohttp) or aiohttp (async); each attempt
runs inside ``inside("http")`` so those integrations pass the inner request through.

Failures: ``errors.APIError.code`` 408, 409, 429 and 5xx, and transport errors, are retried
(see :mod:`buttress.integrations._llm`); ``Retry-After`` is honoured when the server sends it,
and on a 429 the ``RetryInfo.retryDelay`` of the error body. A rejection of ours (open breaker,
full bulkhead) is raised as a ``buttress.RejectedError`` that is also an ``errors.APIError`` with
``code`` 503, and our timeout as one with ``code`` 504, so ``except errors.APIError`` still
catches them. No fallback chain applies to Gemini calls.

**Serving fallbacks of OpenAI-shaped calls.** A Gemini model can serve the fallback of an openai
or groq chat completion (``groq/llama-3.3-70b-versatile -> google/gemini-2.0-flash``): the body is
translated (:mod:`buttress.integrations._llm_translate`) to ``generate_content`` (or
``generate_content_stream``) on the application's ``genai.Client``, which runs through the
``google/<model>`` pipeline as any Gemini call, and the answer is translated back to the caller's
SDK types. The first ``genai.Client`` the application builds serves both sync and async
fallbacks (``client.models``, ``client.aio.models``); ``register_client("google", client)``
chooses another.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from .. import _activation
from .._exceptions import RejectedError
from .._exceptions import TimeoutError as PolicyTimeoutError
from .._pipeline import Pipeline
from ..policies._retry import no_retry
from . import _llm_sdk_loop, _llm_tokens
from . import _llm_translate as translate
from ._base import Integration, client_acall, client_call, inside
from ._llm import (
    ChatShape,
    aprefetch_iterator,
    atranslated_stream,
    begin_call,
    capture_client,
    compatible_error,
    end_call,
    pipeline_for,
    prefetch_iterator,
    register_chat_shape,
    register_transport_modules,
    skip,
    target_of,
    translated_stream,
)

__all__ = ["INTEGRATION", "GoogleGenAIIntegration"]

PROVIDER = "google"
_INIT_PARAMS = ("vertexai", "api_key", "credentials", "project", "location", "http_options")
_MARK = "_buttress_retry_options"
"""The API client attribute that says who chose its ``retry_options``."""
APP = "user"
"""The application passed ``retry_options``: kept, and buttress does not retry its calls."""


def _error(exc: BaseException) -> BaseException:
    from google.genai import errors  # noqa: PLC0415

    clone = compatible_error(exc, errors.APIError)
    if clone is not exc:
        timeout = isinstance(exc, PolicyTimeoutError)
        for name, value in (
            ("code", 504 if timeout else 503),
            ("status", "DEADLINE_EXCEEDED" if timeout else "UNAVAILABLE"),
            ("details", None),
            ("response", None),
        ):
            clone.__dict__.setdefault(name, value)
    return clone


def _retry_options(options: Any) -> Any:
    # HttpOptions or its dict form: the retry_options it carries, if any.
    if isinstance(options, Mapping):
        return options.get("retry_options")
    return getattr(options, "retry_options", None)


def _no_sdk_retries(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``BaseApiClient.__init__``: in enforce mode, no SDK retries unless the caller chose some."""
    bound = dict(zip(_INIT_PARAMS, args, strict=False))
    bound.update(kwargs)
    options = bound.get("http_options")
    chosen = _retry_options(options) is not None
    if chosen or _activation.observing():
        result = wrapped(*args, **kwargs)
    else:
        from google.genai import types  # noqa: PLC0415

        once = types.HttpRetryOptions(attempts=1)
        if options is None:
            options = types.HttpOptions(retry_options=once)
        elif isinstance(options, dict):
            options = {**options, "retry_options": once}
        else:
            options = options.model_copy(update={"retry_options": once})
        bound["http_options"] = options
        result = wrapped(**bound)
    if chosen:
        with contextlib.suppress(Exception):
            setattr(instance, _MARK, APP)
    return result


def _app_retries(instance: Any, kwargs: Mapping[str, Any]) -> bool:
    """Whether the application chose the SDK's retries for this generation."""
    if getattr(getattr(instance, "_api_client", None), _MARK, None) == APP:
        return True
    config = kwargs.get("config")
    options = config.get("http_options") if isinstance(config, Mapping) else None
    if options is None and not isinstance(config, Mapping):
        options = getattr(config, "http_options", None)
    return options is not None and _retry_options(options) is not None


def _request_once(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``BaseApiClient._request_once``: one request of the SDK's retry loop."""
    _llm_sdk_loop.starting()
    try:
        return wrapped(*args, **kwargs)
    except Exception as exc:
        _llm_sdk_loop.failed(exc)
        raise


async def _arequest_once(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``BaseApiClient._async_request_once``: the same, for coroutines."""
    _llm_sdk_loop.starting()
    try:
        return await wrapped(*args, **kwargs)
    except Exception as exc:
        _llm_sdk_loop.failed(exc)
        raise


@dataclass(frozen=True, slots=True)
class _Generation:
    """One generation to run: its target, the target's pipeline, and who retries it."""

    target: str
    pipeline: Pipeline
    app_retries: bool
    """The application chose the SDK's retries (enforce mode): buttress does not retry."""

    def sdk_loop(self) -> AbstractContextManager[None]:
        """Around one attempt: report the requests the SDK retries, if it retries by itself."""
        if self.app_retries or self.pipeline.context.observe:
            return _llm_sdk_loop.sdk_loop(self.pipeline)
        return contextlib.nullcontext()

    def retries(self) -> AbstractContextManager[None]:
        """Around the pipeline call: no retries of buttress's when the SDK has the app's."""
        return no_retry() if self.app_retries else contextlib.nullcontext()


def _prepare(instance: Any, kwargs: dict[str, Any]) -> _Generation | None:
    target = target_of(PROVIDER, kwargs.get("model"))
    if target is None:
        return None
    pipeline = pipeline_for(target)
    app = not pipeline.context.observe and _app_retries(instance, kwargs)
    return _Generation(target, pipeline, app)


def _call(call: _Generation, stream: bool, attempt: Callable[[], Any]) -> Any:
    # One logical call: published for the fallback handler, admitted by the token budget, run
    # through the pipeline, with our rejections made google-genai errors.
    target, pipeline = call.target, call.pipeline
    token = begin_call(target, pipeline, body=None, stream=stream, is_async=False)
    try:
        delay = _llm_tokens.before_call(target, pipeline)
        if delay > 0.0:
            pipeline.context.clock.sleep(delay)
        with call.retries():
            return client_call(pipeline, attempt)
    except (RejectedError, PolicyTimeoutError) as exc:
        raise _error(exc) from exc.__cause__
    finally:
        end_call(token)


async def _acall(call: _Generation, stream: bool, attempt: Callable[[], Awaitable[Any]]) -> Any:
    # The twin of _call, for coroutines.
    target, pipeline = call.target, call.pipeline
    token = begin_call(target, pipeline, body=None, stream=stream, is_async=True)
    try:
        delay = _llm_tokens.before_call(target, pipeline)
        if delay > 0.0:
            await pipeline.context.clock.asleep(delay)
        with call.retries():
            return await client_acall(pipeline, attempt)
    except (RejectedError, PolicyTimeoutError) as exc:
        raise _error(exc) from exc.__cause__
    finally:
        end_call(token)


def _generate(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if skip():
        return wrapped(*args, **kwargs)
    call = _prepare(instance, kwargs)
    if call is None:
        return wrapped(*args, **kwargs)

    def attempt() -> Any:
        with inside("http"), call.sdk_loop():
            result = wrapped(*args, **kwargs)
        _llm_tokens.after_response(call.target, result)
        return result

    return _call(call, False, attempt)


def _generate_stream(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Iterator[Any]:
    if skip():
        return wrapped(*args, **kwargs)  # type: ignore[no-any-return]
    call = _prepare(instance, kwargs)
    if call is None:
        return wrapped(*args, **kwargs)  # type: ignore[no-any-return]

    def attempt() -> Iterator[Any]:
        # The request is sent on the generator's first step: take it here, inside the attempt.
        with inside("http"), call.sdk_loop():
            return prefetch_iterator(wrapped(*args, **kwargs))

    result: Iterator[Any] = _call(call, True, attempt)
    return result


async def _agenerate(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if skip():
        return await wrapped(*args, **kwargs)
    call = _prepare(instance, kwargs)
    if call is None:
        return await wrapped(*args, **kwargs)

    async def attempt() -> Any:
        with inside("http"), call.sdk_loop():
            result = await wrapped(*args, **kwargs)
        _llm_tokens.after_response(call.target, result)
        return result

    return await _acall(call, False, attempt)


async def _agenerate_stream(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> AsyncIterator[Any]:
    if skip():
        return await wrapped(*args, **kwargs)  # type: ignore[no-any-return]
    call = _prepare(instance, kwargs)
    if call is None:
        return await wrapped(*args, **kwargs)  # type: ignore[no-any-return]

    async def attempt() -> AsyncIterator[Any]:
        with inside("http"), call.sdk_loop():
            return await aprefetch_iterator(await wrapped(*args, **kwargs))

    result: AsyncIterator[Any] = await _acall(call, True, attempt)
    return result


# --- serving the fallbacks of OpenAI-shaped calls ----------------------------------------------


def _capture(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    result = wrapped(*args, **kwargs)
    # The first Client the application builds serves Gemini fallbacks (register_client overrides).
    with contextlib.suppress(Exception):
        capture_client(PROVIDER, instance)
    return result


def _serves(client: Any) -> tuple[bool, ...]:
    # A genai.Client serves both kinds (models, aio.models); its AsyncClient only async calls.
    return (False, True) if hasattr(client, "aio") else (True,)


def _accepts(body: Mapping[str, Any], stream: bool) -> bool:
    try:
        translate.check(body, translate.GEMINI)
    except translate.UntranslatableError:
        return False
    return True


def _stream_maker(body: Mapping[str, Any], model: str) -> translate.GeminiStream:
    return translate.GeminiStream(
        chat_id=f"chatcmpl-{uuid.uuid4().hex}",
        created=int(time.time()),
        model=model,
        include_usage=translate.include_usage(body),
    )


def _send(client: Any, body: dict[str, Any], stream: bool) -> Any:
    request = translate.to_gemini(body)
    models = client.models
    if stream:
        chunks = models.generate_content_stream(**request)
        return translated_stream(chunks, _stream_maker(body, request["model"]))
    response = models.generate_content(**request)
    return translate.from_gemini(
        response.model_dump(mode="json", exclude_none=True),
        model=request["model"],
        created=int(time.time()),
        chat_id=f"chatcmpl-{uuid.uuid4().hex}",
    )


async def _asend(client: Any, body: dict[str, Any], stream: bool) -> Any:
    request = translate.to_gemini(body)
    models = getattr(client, "aio", client).models
    if stream:
        chunks = await models.generate_content_stream(**request)
        return await atranslated_stream(chunks, _stream_maker(body, request["model"]))
    response = await models.generate_content(**request)
    return translate.from_gemini(
        response.model_dump(mode="json", exclude_none=True),
        model=request["model"],
        created=int(time.time()),
        chat_id=f"chatcmpl-{uuid.uuid4().hex}",
    )


register_chat_shape(
    PROVIDER, ChatShape(_send, _asend, translated=True, accepts=_accepts, serves=_serves)
)


class GoogleGenAIIntegration(Integration):
    """Patches ``Models``/``AsyncModels`` generation and the API client's retries."""

    name = "google-genai"
    module = "google.genai"

    def patches(self) -> list[tuple[str, str, Any]]:
        """The patch list."""
        from google.genai import _api_client  # noqa: PLC0415

        register_transport_modules("httpx", "aiohttp")
        patches: list[tuple[str, str, Any]] = [
            ("google.genai.models", "Models._generate_content", _generate),
            ("google.genai.models", "Models._generate_content_stream", _generate_stream),
            ("google.genai.models", "AsyncModels._generate_content", _agenerate),
            ("google.genai.models", "AsyncModels._generate_content_stream", _agenerate_stream),
            ("google.genai._api_client", "BaseApiClient.__init__", _no_sdk_retries),
            ("google.genai.client", "Client.__init__", _capture),
        ]
        # One request of the SDK's retry loop (versions without these are not reported).
        for method, wrapper in (
            ("_request_once", _request_once),
            ("_async_request_once", _arequest_once),
        ):
            if method in vars(_api_client.BaseApiClient):
                patches.append(("google.genai._api_client", f"BaseApiClient.{method}", wrapper))
        return patches


INTEGRATION = GoogleGenAIIntegration()
