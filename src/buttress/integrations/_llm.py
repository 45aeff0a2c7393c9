"""
What the LLM SDK integrations share: targets, what is retried, streams, and fallback chains.

- **Target** = ``provider/model`` (``openai/gpt-4o-mini``, ``anthropic/claude-3-5-haiku``,
  ``groq/llama-3.3-70b-versatile``, ``google/gemini-2.0-flash``), taken from the call's
  ``model``. Limits, breakers and rate limits differ per model at every provider, so the model
  is the unit that fails together; the host would lump them all. Nothing else from the call
  is ever read into a target, an event, a log record or an error message: no API key, no
  prompt, no output (the SDK's own exceptions pass through unchanged, but buttress adds
  nothing to them).
- **One logical call, one pipeline**. The SDK's own retry loop is switched off (each
  integration forces ``max_retries=0``, google-genai ``HttpRetryOptions(attempts=1)``, when a
  client is built, unless the user chose a value; each attempt is then the SDK's whole loop),
  so retries, back-off and ``Retry-After`` are buttress's and visible in its metrics. The SDKs
  send over httpx (groq, google-genai), aiohttp (google-genai async) or httpx2 (openai,
  anthropic); each attempt runs inside ``inside("http")``, so the HTTP integrations let the
  inner request through instead of adding a second pipeline keyed by ``host:port``.
- **What is retried** (:func:`llm_is_transient`): 408, 409, 429 and 5xx responses, connection
  errors and timeouts: what the SDKs retry themselves. Never 400/401/403/404: the same request
  fails the same way. A server's ``x-should-retry: true|false`` wins, as in the SDKs. The
  breaker counts the same failures.
- **When** (:func:`llm_server_delay`): ``retry-after-ms``, then ``Retry-After``, then, on a
  429 only, the provider's rate-limit reset headers (OpenAI/Groq ``x-ratelimit-reset-*`` durations
  such as ``6m0s``; Anthropic ``anthropic-ratelimit-*-reset`` RFC 3339 times), then (a 429
  too) Gemini's ``RetryInfo.retryDelay`` in the error body. Without any, the configured
  back-off applies. The retry policy caps the delay by ``retry.max_retry_after`` and gives up
  rather than wait past the deadline.
- **Streams are retried only before their first chunk reaches the caller.** The attempt reads
  the first chunk itself (so a 503, a reset or a slow first token before any output is an
  ordinary failed attempt), then hands the caller the SDK's own stream object with that chunk
  put back in front. A failure after that propagates unchanged: output the caller has seen
  cannot be taken back, and replaying the prompt would duplicate it.
- **Fallback chains**: ``llm.fallbacks`` in a target table of the settings file, or
  :func:`set_fallbacks` in code (which wins), for openai and groq chat completions. A fallback
  is served by the first client the application built for that provider, or the one given to
  :func:`register_client`. To openai or groq (OpenAI-shaped) the same body is re-issued with
  the fallback's model, and the caller receives the fallback SDK's objects (same shape,
  different classes). To google (a ``genai.Client``) or anthropic the body is translated
  (:mod:`._llm_translate`: text messages and sampling parameters; tools, non-text content,
  ``n > 1``, ``response_format`` and logprobs are refused, so such a call does not fall back
  there), and the answer, stream included, comes back as the caller's own SDK types
  (``ChatCompletion``, chunks in its ``Stream``). Either way the fallback runs through the
  serving target's own pipeline. The original target counts ``outcome="fallback"`` and emits
  ``FallbackUsed`` (a ``buttress.fallback`` span event) plus a ``buttress.llm.fallback`` span
  event naming the target that served; the serving target counts its own outcome. When every
  fallback fails too, the caller gets the original target's error and that target counts its
  real outcome. Fallbacks of anthropic and google-genai calls, and of endpoints other than
  chat completions, are left for later. ``fallback = false`` in the settings file does not
  remove a chain.
- **Not done**: no token accounting (the rate limit counts calls, not tokens per minute), no
  cache of generations.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import inspect
import re
import threading
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
)
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry import trace

from .. import _activation
from .._exceptions import RejectedError
from .._exceptions import TimeoutError as PolicyTimeoutError
from .._http_signals import LLM_TRANSIENT_STATUSES, is_transport_failure, server_delay, status_of
from .._pipeline import Pipeline
from ..policies._fallback import Fallback
from ..policies._timeout import remaining
from . import _llm_tokens
from ._base import inside, passthrough, target_pipeline

__all__ = [
    "ChatShape",
    "clear_fallbacks",
    "llm_is_transient",
    "llm_server_delay",
    "parse_duration",
    "pipeline_for",
    "register_chat_shape",
    "register_client",
    "set_fallbacks",
    "skip",
    "target_of",
]

SPAN_EVENT_LLM_FALLBACK = "buttress.llm.fallback"
SPAN_ATTR_SERVED_BY = "buttress.fallback.served_by"

_transport: tuple[type[BaseException], ...] = ()
_lock = threading.Lock()


def register_transport_errors(*errors: type[BaseException]) -> None:
    """Add an SDK's connection and timeout errors to what LLM pipelines retry."""
    global _transport  # noqa: PLW0603 - a copy-on-write tuple read on every failure
    with _lock:
        _transport = tuple(dict.fromkeys((*_transport, *errors)))


def register_transport_modules(*names: str) -> None:
    """Register the transport errors of the HTTP libraries an SDK sends with, when installed."""
    errors: list[type[BaseException]] = []
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if name in ("httpx", "httpx2"):
            errors += [module.TimeoutException, module.NetworkError, module.RemoteProtocolError]
        elif name == "aiohttp":
            errors += [module.ClientConnectionError, module.ClientPayloadError]
            http_exceptions = importlib.import_module("aiohttp.http_exceptions")
            errors += [http_exceptions.TransferEncodingError, http_exceptions.ContentLengthError]
    register_transport_errors(*errors)


def skip() -> bool:
    """Whether a patched LLM entry point must call straight through (see ``_base.passthrough``)."""
    # inside("http") is what each attempt runs in: an SDK call made from there is the SDK's own.
    return passthrough("llm") or passthrough("http")


def target_of(provider: str, model: object) -> str | None:
    """``provider/model``, or ``None`` when the call names no model (not an LLM call)."""
    if not isinstance(model, str) or not model.strip():
        return None
    name = model.strip()
    # Gemini and Vertex name models by resource path: keep the model id.
    if "models/" in name:
        name = name.rsplit("models/", 1)[1]
    return f"{provider}/{name}"


# --- what is retried, and when ---------------------------------------------------------------


def _headers(exc: object) -> Any:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    return headers if headers is not None and hasattr(headers, "get") else None


def _status(exc: object) -> int | None:
    status = status_of(exc)
    if status is not None:
        return status
    code = getattr(exc, "code", None)  # google.genai.errors.APIError
    if isinstance(code, int) and not isinstance(code, bool) and 100 <= code <= 599:
        return code
    return None


def _is_transport(exc: BaseException) -> bool:
    return is_transport_failure(exc, _transport)


def llm_is_transient(exc: object) -> bool:
    """408, 409, 429 and 5xx, connection errors and timeouts; ``x-should-retry`` decides first."""
    headers = _headers(exc)
    if headers is not None:
        try:
            verdict = headers.get("x-should-retry")
        except Exception:
            verdict = None
        if verdict == "true":
            return True
        if verdict == "false":
            return False
    status = _status(exc)
    if status is not None:
        return status in LLM_TRANSIENT_STATUSES
    return isinstance(exc, BaseException) and _is_transport(exc)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(value: str) -> float | None:
    """Seconds from a Go-style duration (``1s``, ``6m0s``, ``250ms``, ``1h2m3.5s``), or ``None``."""
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)  # a bare number: seconds
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 else None
    position, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != position:
            return None
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    return total if position == len(text) else None


def _parse_instant(value: str, now: float) -> float | None:
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, when.timestamp() - now)


# (reset header, remaining header, parser) of each rate-limit dimension a provider reports.
_RESETS: tuple[tuple[str, str, str], ...] = (
    ("x-ratelimit-reset-requests", "x-ratelimit-remaining-requests", "duration"),
    ("x-ratelimit-reset-tokens", "x-ratelimit-remaining-tokens", "duration"),
    ("anthropic-ratelimit-requests-reset", "anthropic-ratelimit-requests-remaining", "instant"),
    ("anthropic-ratelimit-tokens-reset", "anthropic-ratelimit-tokens-remaining", "instant"),
    (
        "anthropic-ratelimit-input-tokens-reset",
        "anthropic-ratelimit-input-tokens-remaining",
        "instant",
    ),
    (
        "anthropic-ratelimit-output-tokens-reset",
        "anthropic-ratelimit-output-tokens-remaining",
        "instant",
    ),
)


def _reset_delay(headers: Any, now: float) -> float | None:
    exhausted: list[float] = []
    others: list[float] = []
    for reset_name, remaining_name, kind in _RESETS:
        raw = headers.get(reset_name)
        if raw is None:
            continue
        seconds = parse_duration(str(raw)) if kind == "duration" else _parse_instant(str(raw), now)
        if seconds is None:
            continue
        left = headers.get(remaining_name)
        (exhausted if left is not None and str(left).strip() == "0" else others).append(seconds)
    # The dimension that ran out decides; when none says so, the soonest reset is worth a try.
    if exhausted:
        return max(exhausted)
    return min(others) if others else None


def _retry_info(exc: object) -> float | None:
    # Gemini says when in its error body: google.rpc.RetryInfo {"retryDelay": "30s"}.
    details = getattr(exc, "details", None)
    error = details.get("error") if isinstance(details, Mapping) else None
    items = error.get("details") if isinstance(error, Mapping) else None
    for item in items if isinstance(items, list) else ():
        if isinstance(item, Mapping) and str(item.get("@type", "")).endswith("RetryInfo"):
            delay = item.get("retryDelay")
            if isinstance(delay, str):
                return parse_duration(delay)
    return None


def llm_server_delay(exc: object, *, now: Callable[[], float] = time.time) -> float | None:
    """
    The wait the provider asked for, in seconds, or ``None`` when it did not say.

    ``retry-after-ms``, then ``Retry-After`` (seconds or an HTTP date), then, for a 429 only,
    the rate-limit reset headers: of the dimensions whose ``remaining`` is 0 the latest reset
    (the call cannot pass before it), otherwise the soonest one. Reset headers come with every
    response; on a 5xx they say nothing about when the server recovers, so they are ignored.
    Last, Gemini's ``RetryInfo.retryDelay`` from a google-genai error body.
    """
    delay = server_delay(exc)
    if delay is not None:
        return delay
    if _status(exc) != 429:
        return None
    try:
        headers = _headers(exc)
        delay = _reset_delay(headers, now()) if headers is not None else None
        return delay if delay is not None else _retry_info(exc)
    except Exception:
        return None  # a provider's malformed header must not break the call


# --- pipelines -------------------------------------------------------------------------------


def pipeline_for(target: str) -> Pipeline:
    """The pipeline of an LLM target, built from the active settings on first use."""
    # The chain handler is always present, and a no-op unless a chain is set for this target
    # when a call fails: set_fallbacks() then works for pipelines built before it.
    pipeline: Pipeline = target_pipeline(
        target,
        "llm",
        llm_is_transient,
        retry_after=llm_server_delay,
        fallback=Fallback(handler=_handle_fallback, on=_fallback_applies),
    )
    return pipeline


def tighter_timeout(current: Any) -> Any:
    """
    The per-request timeout an attempt should pass: *current*, cut to the attempt's deadline.

    Synchronous attempts cannot be interrupted; the SDK's own timeout is the only safe way to
    stop blocking I/O, so the published deadline is handed to it. ``None`` keeps *current*.
    """
    left = remaining()
    if left is None:
        return None
    left = max(left, 0.001)
    if isinstance(current, int | float) and not isinstance(current, bool):
        return min(current, left)
    return left


def compatible_error(exc: BaseException, library_error: type[BaseException]) -> BaseException:
    """A rejection or timeout of ours, re-made as an instance of the SDK's connection error too."""
    from ._base import compatible  # noqa: PLC0415

    clone = compatible(exc, library_error)
    if clone is not exc:
        # The SDKs' error classes read these in __str__/__repr__ and in user code.
        for name, value in (("message", str(exc)), ("request", None), ("body", None)):
            if name not in clone.__dict__:
                clone.__dict__[name] = value
    return clone


# --- streams ---------------------------------------------------------------------------------


def _prepend(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


async def _aprepend(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    try:
        yield first
        async for item in rest:
            yield item
    finally:
        close = getattr(rest, "aclose", None)
        if close is not None:
            await close()


async def _aempty() -> AsyncIterator[Any]:
    return
    yield  # pragma: no cover - makes this an async generator


def prefetch_iterator(iterator: Iterator[Any]) -> Iterator[Any]:
    """Read the first item of *iterator* now; an iterator that yields it, then the rest."""
    try:
        first = next(iterator)
    except StopIteration:
        return iter(())
    return _prepend(first, iterator)


async def aprefetch_iterator(iterator: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """Await the first item of *iterator* now; an async iterator that yields it, then the rest."""
    try:
        first = await iterator.__anext__()
    except StopAsyncIteration:
        return _aempty()
    return _aprepend(first, iterator)


def prefetch_stream(stream: Any) -> Any:
    """
    Read the first event of a Stainless ``Stream`` into it; returns the same stream object.

    The stream's ``_iterator`` (the one generator ``__next__`` and ``__iter__`` both read) is
    replaced by one yielding the event read here first, so the caller's type, ``response``,
    ``close()`` and context manager are the SDK's own.
    """
    iterator = getattr(stream, "_iterator", None)
    if iterator is None:  # not the shape we know: leave the stream alone
        return stream
    stream._iterator = prefetch_iterator(iterator)
    return stream


async def aprefetch_stream(stream: Any) -> Any:
    """:func:`prefetch_stream` for a Stainless ``AsyncStream``."""
    iterator = getattr(stream, "_iterator", None)
    if iterator is None:
        return stream
    stream._iterator = await aprefetch_iterator(iterator)
    return stream


# --- fallback chains -------------------------------------------------------------------------


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


_current: ContextVar[_Call | None] = ContextVar("buttress_llm_call", default=None)
_in_fallback: ContextVar[bool] = ContextVar("buttress_llm_in_fallback", default=False)
_chains: dict[str, tuple[str, ...]] = {}
_clients: dict[tuple[str, bool], Any] = {}
_shapes: dict[str, ChatShape] = {}
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


class Translator(Protocol):
    """Turns the items of a provider's stream (dumped to dicts) into OpenAI chunk dicts."""

    def feed(self, item: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The chunks for one item."""
        ...

    def end(self) -> list[dict[str, Any]]:
        """The chunks after the last item."""
        ...


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


def _dump(item: Any) -> Any:
    dump = getattr(item, "model_dump", None)
    return dump(mode="json", exclude_none=True) if dump is not None else item


def translated_stream(items: Iterable[Any], maker: Translator) -> Iterator[dict[str, Any]]:
    """
    ``chat.completion.chunk`` dicts of an SDK's stream, by *maker*; the first one is read now.

    Reading it sends the request (inside the fallback target's pipeline), so a fallback that
    fails before its first chunk is a failed fallback; closing the result closes *items*.
    """

    def chunks() -> Generator[dict[str, Any]]:
        try:
            for item in items:
                yield from maker.feed(_dump(item))
            yield from maker.end()
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    iterator = chunks()
    try:
        first = next(iterator)
    except StopIteration:
        return iter(())

    def prefetched() -> Iterator[dict[str, Any]]:
        try:
            yield first
            yield from iterator
        finally:
            iterator.close()

    return prefetched()


async def atranslated_stream(
    items: AsyncIterator[Any], maker: Translator
) -> AsyncIterator[dict[str, Any]]:
    """:func:`translated_stream` for an async SDK stream."""

    async def chunks() -> AsyncGenerator[dict[str, Any]]:
        try:
            async for item in items:
                for chunk in maker.feed(_dump(item)):
                    yield chunk
            for chunk in maker.end():
                yield chunk
        finally:
            close = getattr(items, "aclose", None) or getattr(items, "close", None)
            if close is not None:
                await close()

    iterator = chunks()
    try:
        first = await iterator.__anext__()
    except StopAsyncIteration:
        return _aempty()

    async def prefetched() -> AsyncIterator[dict[str, Any]]:
        try:
            yield first
            async for chunk in iterator:
                yield chunk
        finally:
            await iterator.aclose()

    return prefetched()


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
        _in_fallback.reset(token)
    raise _failed(call, exc)


async def _ahandle(call: _Call, exc: BaseException) -> Any:
    assert call.body is not None  # noqa: S101
    token = _in_fallback.set(True)
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
        _in_fallback.reset(token)
    raise _failed(call, exc)


# --- Stainless SDKs: openai, anthropic, groq -------------------------------------------------


@dataclass(frozen=True, slots=True)
class StainlessSDK:
    """What the wrapper of a Stainless-generated SDK's ``request`` needs to know about it."""

    provider: str
    connection_error: Callable[[], type[BaseException]]
    """The SDK's connection error (what a rejection of ours is made compatible with)."""
    timeout_error: Callable[[], type[BaseException]]
    """The SDK's timeout error (what a timeout of ours is made compatible with)."""
    chat_path: str | None = None
    """The URL of OpenAI-shaped chat completions on this SDK's client: eligible for fallback."""


def _bind(
    cast_to: Any, options: Any, *, stream: bool = False, stream_cls: Any = None
) -> tuple[Any, Any, bool, Any]:
    return cast_to, options, stream, stream_cls


def no_sdk_retries(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """
    Wrap a client's ``__init__``: ``max_retries=0`` unless the caller chose a value.

    The SDK's loop would multiply buttress's attempts (4 x 3 = 12 requests per call) and hide
    them from its metrics. An explicit ``max_retries`` is respected: the user asked for it, and
    buttress then wraps the SDK's whole loop as one attempt.
    """
    explicit = "max_retries" in kwargs
    if not explicit:
        kwargs = {**kwargs, "max_retries": 0}
    result = wrapped(*args, **kwargs)
    # A client that refuses attributes keeps the per-request rule (see _attempt_options).
    with contextlib.suppress(Exception):
        instance._buttress_max_retries = "user" if explicit else "buttress"
    # The first client an application builds per provider serves that provider's fallbacks, so
    # chains from the configuration file work without code (register_client() overrides).
    with contextlib.suppress(Exception):
        provider = type(instance).__module__.partition(".")[0]
        is_async = inspect.iscoroutinefunction(getattr(instance, "post", None))
        with _lock:
            _clients.setdefault((provider, is_async), instance)
    return result


def _prepare(sdk: StainlessSDK, instance: Any, options: Any) -> None:
    # One idempotency key for every attempt of the call, as the SDK's own loop does.
    try:
        if options.idempotency_key is None and str(options.method).lower() != "get":
            options.idempotency_key = instance._idempotency_key()
    except Exception:  # noqa: S110 - an SDK without idempotency keys
        pass


def _attempt_options(instance: Any, options: Any) -> Any:
    copy = getattr(options, "model_copy", None) or options.copy
    opts = copy()
    if getattr(instance, "_buttress_max_retries", None) != "user":
        # A client built before the SDK was patched: its max_retries is not known to be the
        # user's choice, so this request goes out once.
        opts.max_retries = 0
    current = opts.timeout if isinstance(opts.timeout, int | float) else None
    if current is None:
        own = getattr(instance, "timeout", None)
        current = own if isinstance(own, int | float) else None
    timeout = tighter_timeout(current)
    if timeout is not None:
        opts.timeout = timeout
    return opts


def _request_body(sdk: StainlessSDK, options: Any) -> tuple[str | None, dict[str, Any] | None]:
    body = getattr(options, "json_data", None)
    if not isinstance(body, Mapping):
        return None, None
    target = target_of(sdk.provider, body.get("model"))
    if target is None or sdk.chat_path is None or getattr(options, "url", None) != sdk.chat_path:
        return target, None
    extra = getattr(options, "extra_json", None)
    merged = {**body, **extra} if isinstance(extra, Mapping) else dict(body)
    return target, merged


def stainless_request(sdk: StainlessSDK) -> Callable[..., Any]:
    """The wrapper of a Stainless ``SyncAPIClient.request``: one pipeline per model call."""

    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if skip():
            return wrapped(*args, **kwargs)
        cast_to, options, stream, stream_cls = _bind(*args, **kwargs)
        target, body = _request_body(sdk, options)
        if target is None:  # no model: not a generation (files, models.list...)
            return wrapped(*args, **kwargs)
        _prepare(sdk, instance, options)
        pipeline = pipeline_for(target)

        def attempt() -> Any:
            opts = _attempt_options(instance, options)
            with inside("http"):
                result = wrapped(cast_to, opts, stream=stream, stream_cls=stream_cls)
                if stream:
                    result = prefetch_stream(result)
            _llm_tokens.after_response(target, result)  # only an answered attempt is charged
            return result

        token = begin_call(target, pipeline, body=body, stream=stream, is_async=False)
        try:
            # The token budget admits the call before the pipeline: a budget refusal is a
            # rejection, not a failed attempt to retry or count against the breaker.
            delay = _llm_tokens.before_call(target, pipeline)
            if delay > 0.0:
                pipeline.context.clock.sleep(delay)
            return pipeline.call(attempt)
        except RejectedError as exc:
            raise compatible_error(exc, sdk.connection_error()) from exc.__cause__
        except PolicyTimeoutError as exc:
            raise compatible_error(exc, sdk.timeout_error()) from exc.__cause__
        finally:
            end_call(token)

    return wrapper


def stainless_arequest(sdk: StainlessSDK) -> Callable[..., Any]:
    """The wrapper of a Stainless ``AsyncAPIClient.request``."""

    async def wrapper(
        wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if skip():
            return await wrapped(*args, **kwargs)
        cast_to, options, stream, stream_cls = _bind(*args, **kwargs)
        target, body = _request_body(sdk, options)
        if target is None:
            return await wrapped(*args, **kwargs)
        _prepare(sdk, instance, options)
        pipeline = pipeline_for(target)

        async def attempt() -> Any:
            opts = _attempt_options(instance, options)
            with inside("http"):
                result = await wrapped(cast_to, opts, stream=stream, stream_cls=stream_cls)
                if stream:
                    result = await aprefetch_stream(result)
            _llm_tokens.after_response(target, result)
            return result

        token = begin_call(target, pipeline, body=body, stream=stream, is_async=True)
        try:
            delay = _llm_tokens.before_call(target, pipeline)
            if delay > 0.0:
                await pipeline.context.clock.asleep(delay)
            return await pipeline.acall(attempt)
        except RejectedError as exc:
            raise compatible_error(exc, sdk.connection_error()) from exc.__cause__
        except PolicyTimeoutError as exc:
            raise compatible_error(exc, sdk.timeout_error()) from exc.__cause__
        finally:
            end_call(token)

    return wrapper
