"""
Fallback chains: the call in flight, the chains and clients, and the handler that serves them.

:mod:`._llm` describes what falls back where ("Fallback chains"). This module holds the state
behind it: the logical call each SDK wrapper publishes with :func:`begin_call` (the handler
reads it when the pipeline gives up), the chains of :func:`set_fallbacks`, the client serving
each provider, and the :class:`ChatShape` each integration registers to re-send a chat
completion. It is separate from :mod:`._llm` because it is the one part with process-wide
registries and cross-SDK answers; the pipeline only hooks its handler in.
"""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace

from .. import _activation
from .._exceptions import RejectedError
from .._exceptions import TimeoutError as PolicyTimeoutError
from .._pipeline import Pipeline
from ..policies._retry import _no_retry
from ._llm_signals import llm_is_transient

__all__ = [
    "ChatShape",
    "begin_call",
    "capture_client",
    "clear_fallbacks",
    "end_call",
    "register_chat_shape",
    "register_client",
    "set_fallbacks",
]

SPAN_EVENT_LLM_FALLBACK = "buttress.llm.fallback"
SPAN_ATTR_SERVED_BY = "buttress.fallback.served_by"


@dataclass(frozen=True, slots=True)
class ChatShape:
    """How to send an OpenAI-shaped chat completion body on one provider's client."""

    send: Callable[[Any, dict[str, Any], bool], Any]
    """``send(client, body, stream)`` with a sync client."""
    asend: Callable[[Any, dict[str, Any], bool], Awaitable[Any]]
    """The same with an async client."""
    translated: bool = False
    """
    Whether the provider speaks another shape (google, anthropic): ``send`` then translates,
    and returns an OpenAI ``chat.completion`` dict, or for a stream an iterator (``asend``: an
    async iterator) of ``chat.completion.chunk`` dicts whose first item is already read. The
    caller's own SDK types are built from those.
    """
    accepts: Callable[[Mapping[str, Any], bool], bool] | None = None
    """``accepts(body, stream)``: whether this provider can serve that request (``None``: any)."""
    serves: Callable[[Any], tuple[bool, ...]] | None = None
    """Which kinds of call (``is_async``) a client serves (``None``: its ``post`` says)."""


@dataclass
class _Call:
    """The logical call running through a pipeline now (read by the fallback handler)."""

    target: str
    started: float
    body: dict[str, Any] | None = None
    stream: bool = False
    is_async: bool = False
    pipeline: Pipeline | None = None
    tried: list[str] = field(default_factory=list)
    no_retry: bool = False
    """Whether the caller forbade retries (``buttress.no_retry()``) around the call. Fallbacks
    are sent under that, not under the scope an SDK wrapper opens when the SDK retries."""


_current: ContextVar[_Call | None] = ContextVar("buttress_llm_call", default=None)
_in_fallback: ContextVar[bool] = ContextVar("buttress_llm_in_fallback", default=False)
_chains: dict[str, tuple[str, ...]] = {}
_clients: dict[tuple[str, bool], Any] = {}
_shapes: dict[str, ChatShape] = {}
# Guards _chains and _clients (_llm_stainless.no_sdk_retries takes it too).
_lock = threading.Lock()
_SHAPE_MODULES = {
    "openai": "buttress.integrations.openai",
    "groq": "buttress.integrations.groq",
    "google": "buttress.integrations.google_genai",
    "anthropic": "buttress.integrations.anthropic",
}


def set_fallbacks(chains: Mapping[str, list[str] | tuple[str, ...]]) -> None:
    """
    Set the fallback chain of each ``provider/model`` target, replacing any set before.

    Example: ``set_fallbacks({"groq/llama-3.3-70b-versatile": ["openai/gpt-4o-mini"]})``.
    A fallback provider needs a client: see :func:`register_client`.

    .. versionadded:: 0.1.0
    """
    checked: dict[str, tuple[str, ...]] = {}
    for primary, chain in chains.items():
        for name in (primary, *chain):
            if not isinstance(name, str) or "/" not in name.strip("/"):
                from .._exceptions import ConfigurationError  # noqa: PLC0415

                raise ConfigurationError(
                    f"set_fallbacks: target {name!r} is not accepted; expected 'provider/model'"
                )
        checked[primary] = tuple(chain)
    with _lock:
        _chains.clear()
        _chains.update(checked)


def clear_fallbacks() -> None:
    """Forget every fallback chain and registered client."""
    with _lock:
        _chains.clear()
        _clients.clear()


def register_client(provider: str, client: Any) -> None:
    """
    Use *client* (sync or async) when a call falls back to a model of *provider*.

    Register a sync and an async client to serve both kinds of calls.

    .. versionadded:: 0.1.0
    """
    kinds = _kinds(provider, client)
    with _lock:
        for is_async in kinds:
            _clients[(provider, is_async)] = client


def capture_client(provider: str, client: Any) -> None:
    """Keep *client* for *provider*'s fallbacks unless one was kept already (integrations)."""
    kinds = _kinds(provider, client)
    with _lock:
        for is_async in kinds:
            _clients.setdefault((provider, is_async), client)


def _kinds(provider: str, client: Any) -> tuple[bool, ...]:
    shape = _shape(provider)
    if shape is not None and shape.serves is not None:
        return shape.serves(client)
    return (inspect.iscoroutinefunction(getattr(client, "post", None)),)


def register_chat_shape(provider: str, shape: ChatShape) -> None:
    """Say how to send an OpenAI-shaped chat completion on *provider*'s client (integrations)."""
    _shapes[provider] = shape


def _shape(provider: str) -> ChatShape | None:
    shape = _shapes.get(provider)
    if shape is None and provider in _SHAPE_MODULES:
        importlib.import_module(_SHAPE_MODULES[provider])
        shape = _shapes.get(provider)
    return shape


def begin_call(
    target: str,
    pipeline: Pipeline,
    *,
    body: dict[str, Any] | None,
    stream: bool,
    is_async: bool,
) -> Any:
    """Publish the logical call for the fallback handler; returns the token for :func:`end_call`."""
    call = _Call(
        target=target,
        started=pipeline.context.clock.monotonic(),
        body=body if body is not None and not _in_fallback.get() else None,
        stream=stream,
        is_async=is_async,
        pipeline=pipeline,
        no_retry=_no_retry.get(),
    )
    return _current.set(call)


def end_call(token: Any) -> None:
    """Undo :func:`begin_call`."""
    _current.reset(token)


def _chain(target: str) -> tuple[str, ...]:
    # Chains set in code win; otherwise the configuration file's llm.fallbacks for the target.
    chain = _chains.get(target)
    return chain if chain is not None else _activation.llm_fallbacks(target)


def _fallback_applies(exc: BaseException) -> bool:
    call = _current.get()
    if call is None or call.body is None or not _chain(call.target):
        return False
    if not (isinstance(exc, RejectedError | PolicyTimeoutError) or llm_is_transient(exc)):
        return False  # a bad request fails the same way anywhere
    return any(True for _ in _candidates(call))


def _candidates(call: _Call) -> Iterator[tuple[str, str, ChatShape, Any]]:
    body = call.body or {}
    for fallback in _chain(call.target):
        provider, _, model = fallback.partition("/")
        shape = _shape(provider)
        client = _clients.get((provider, call.is_async))
        if shape is None or client is None:
            continue
        if shape.accepts is not None and not shape.accepts(body, call.stream):
            continue  # a request that does not translate faithfully (tools, images...)
        if shape.translated and _caller_types(call.target) is None:
            continue
        yield fallback, model, shape, client


def _caller_types(target: str) -> tuple[Any, Any, Any, Any] | None:
    """The caller's ``ChatCompletion``, ``ChatCompletionChunk``, ``Stream`` and ``AsyncStream``."""
    provider = target.partition("/")[0]
    try:
        chat = importlib.import_module(f"{provider}.types.chat")
        sdk = importlib.import_module(provider)
        types = (chat.ChatCompletion, chat.ChatCompletionChunk, sdk.Stream, sdk.AsyncStream)
    except (ImportError, AttributeError):
        return None
    return types


class _Detached:
    """The ``response`` of a translated stream: closing it closes the fallback SDK's stream."""

    status_code = 200

    def __init__(self, chunks: Any) -> None:
        self.headers: dict[str, str] = {}
        self.is_closed = False
        self._chunks = chunks

    def close(self) -> None:
        """Close the fallback's stream (and its connection)."""
        self.is_closed = True
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()

    async def aclose(self) -> None:
        """Close the fallback's async stream (and its connection)."""
        self.is_closed = True
        close = getattr(self._chunks, "aclose", None)
        if close is not None:
            await close()


def _as_stream(stream_cls: Any, chunk_cls: Any, chunks: Any, items: Any) -> Any:
    # The caller's own Stream class, fed by translated chunks instead of an SSE decoder: its
    # iteration, close() and context manager work as usual (see the SDKs' _streaming.py).
    stream = stream_cls.__new__(stream_cls)
    stream.response = _Detached(chunks)
    stream._cast_to = chunk_cls
    stream._client = None
    stream._options = None
    stream._decoder = None
    stream._iterator = items
    return stream


def _chunks(chunk_cls: Any, chunks: Iterator[dict[str, Any]]) -> Iterator[Any]:
    for chunk in chunks:
        yield chunk_cls.construct(**chunk)


async def _achunks(chunk_cls: Any, chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[Any]:
    async for chunk in chunks:
        yield chunk_cls.construct(**chunk)


def _as_caller(call: _Call, result: Any) -> Any:
    """A translated answer (a dict, or chunk dicts) as the caller's SDK objects."""
    types = _caller_types(call.target)
    assert types is not None  # noqa: S101 - _candidates checked
    completion_cls, chunk_cls, stream_cls, astream_cls = types
    if not call.stream:
        return completion_cls.construct(**result)
    if call.is_async:
        return _as_stream(astream_cls, chunk_cls, result, _achunks(chunk_cls, result))
    return _as_stream(stream_cls, chunk_cls, result, _chunks(chunk_cls, result))


def _served(call: _Call, fallback: str) -> None:
    span = trace.get_current_span()
    if span.is_recording():
        span.add_event(
            SPAN_EVENT_LLM_FALLBACK, {"buttress.target": call.target, SPAN_ATTR_SERVED_BY: fallback}
        )


def _failed(call: _Call, exc: BaseException) -> BaseException:
    # The chain failed: the original target's own error reaches the caller, and the pipeline
    # counts the call by that error (a fallback handler that raises is how the call ended).
    return exc


def _handle_fallback(exc: BaseException) -> Any:
    call = _current.get()
    assert call is not None  # noqa: S101 - _fallback_applies checked
    assert call.body is not None  # noqa: S101
    if call.is_async:
        return _ahandle(call, exc)
    token = _in_fallback.set(True)
    scope = _no_retry.set(call.no_retry)
    try:
        for fallback, model, shape, client in _candidates(call):
            try:
                result = shape.send(client, {**call.body, "model": model}, call.stream)
                if shape.translated:
                    result = _as_caller(call, result)
            except Exception:  # noqa: S112 - the next fallback, or the original error
                continue
            _served(call, fallback)
            return result
    finally:
        _no_retry.reset(scope)
        _in_fallback.reset(token)
    raise _failed(call, exc)


async def _ahandle(call: _Call, exc: BaseException) -> Any:
    assert call.body is not None  # noqa: S101
    token = _in_fallback.set(True)
    scope = _no_retry.set(call.no_retry)
    try:
        for fallback, model, shape, client in _candidates(call):
            try:
                result = await shape.asend(client, {**call.body, "model": model}, call.stream)
                if shape.translated:
                    result = _as_caller(call, result)
            except Exception:  # noqa: S112 - the next fallback, or the original error
                continue
            _served(call, fallback)
            return result
    finally:
        _no_retry.reset(scope)
        _in_fallback.reset(token)
    raise _failed(call, exc)
