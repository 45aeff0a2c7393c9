"""Fake LLM providers on 127.0.0.1, speaking each provider's wire format, for the real SDKs.

One :class:`FakeLLM` server answers all four providers by path, so a test points each SDK's
``base_url`` at it:

* OpenAI ``/v1/chat/completions`` (``base_url=server.openai_url``) and Groq
  ``/openai/v1/chat/completions`` (``base_url=server.url``): a ``chat.completion`` object, or with
  ``"stream": true`` SSE ``chat.completion.chunk`` events ending with ``data: [DONE]``;
* Anthropic ``/v1/messages`` (``base_url=server.url``): a ``message``, or the SSE event stream
  ``message_start``, ``content_block_start``, ``content_block_delta``... ``message_stop``;
* Gemini ``/{version}/models/{model}:generateContent`` and ``:streamGenerateContent?alt=sse``
  (``http_options={"base_url": server.url}``; google-genai 3.x uses ``v1``, older ``v1beta``).

It is a :class:`~tests.support.fault_server.FaultServer` whose default step answers each path in
its provider's format, so every fault step of that module works too (``reset()``, ``delay()``),
and requests are counted per path (``server.count(path)``) with their receive times
(``server.requests[i].received_at``). LLM-shaped steps, each answering in the format of the path
it is used on:

* ``reply(text="Hello there")``: a success (stream or not, as the request asked);
* ``stream(pieces, first_delay=0.0, interval=0.0, fail_after=None)``: a streamed success whose
  first event waits ``first_delay`` seconds (a slow first token) and which, with ``fail_after=N``,
  closes the connection after N events, mid-body (a mid-stream disconnect);
* ``error(status, headers=None)``: the provider's JSON error body with *status*;
* ``rate_limited(retry_after=None, retry_after_ms=None, headers=None, retry_delay=None)``: a 429
  with those headers (add reset headers with :func:`openai_reset_headers` or
  :func:`anthropic_reset_headers`; Gemini's ``RetryInfo`` body detail with *retry_delay*).

Models are echoed from the request: the response of a request for ``gpt-4o-mini`` names
``gpt-4o-mini``. Nothing is ever sent beyond 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from tests.support.fault_server import Exchange, FaultServer, HeaderPairs, Step

__all__ = [
    "ANTHROPIC_MESSAGES",
    "GROQ_CHAT",
    "OPENAI_CHAT",
    "ErrorReply",
    "FakeLLM",
    "Reply",
    "Stream",
    "anthropic_reset_headers",
    "error",
    "gemini_path",
    "openai_reset_headers",
    "rate_limited",
    "reply",
    "stream",
]

OPENAI_CHAT = "/v1/chat/completions"
GROQ_CHAT = "/openai/v1/chat/completions"
ANTHROPIC_MESSAGES = "/v1/messages"


def gemini_path(model: str, *, stream: bool = False, api_version: str = "v1") -> str:
    """The path (without query) google-genai posts a generation of *model* to (3.x: ``v1``)."""
    method = "streamGenerateContent" if stream else "generateContent"
    return f"/{api_version}/models/{model}:{method}"


def _provider(path: str) -> str:
    if path.endswith("/chat/completions"):
        return "openai"
    if path.endswith("/messages"):
        return "anthropic"
    if ":generateContent" in path or ":streamGenerateContent" in path:
        return "gemini"
    return "unknown"


def _request_json(exchange: Exchange) -> dict[str, Any]:
    try:
        data = json.loads(exchange.request.body or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _model(exchange: Exchange) -> str:
    path = exchange.request.path
    if _provider(path) == "gemini":
        return path.rsplit("/", 1)[-1].split(":", 1)[0]
    return str(_request_json(exchange).get("model", "unknown"))


def _wants_stream(exchange: Exchange) -> bool:
    path = exchange.request.path
    if _provider(path) == "gemini":
        return ":streamGenerateContent" in path
    return bool(_request_json(exchange).get("stream"))


# --------------------------------------------------------------------------- wire formats


def _openai_completion(model: str, text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def _openai_events(model: str, pieces: Iterable[str]) -> Iterator[bytes]:
    for piece in pieces:
        chunk = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": model,
            "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
        }
        yield f"data: {json.dumps(chunk)}\n\n".encode()
    yield b"data: [DONE]\n\n"


def _anthropic_message(model: str, text: str) -> dict[str, Any]:
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 2},
    }


def _sse(event: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _anthropic_events(model: str, pieces: Iterable[str]) -> Iterator[bytes]:
    start = {**_anthropic_message(model, ""), "content": [], "stop_reason": None}
    yield _sse("message_start", {"type": "message_start", "message": start})
    yield _sse(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )
    for piece in pieces:
        yield _sse(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": piece},
            },
        )
    yield _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
    yield _sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 2},
        },
    )
    yield _sse("message_stop", {"type": "message_stop"})


def _gemini_response(model: str, text: str, *, final: bool = True) -> dict[str, Any]:
    candidate: dict[str, Any] = {
        "content": {"role": "model", "parts": [{"text": text}]},
        "index": 0,
    }
    if final:
        candidate["finishReason"] = "STOP"
    return {
        "candidates": [candidate],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5},
        "modelVersion": model,
    }


def _gemini_events(model: str, pieces: Iterable[str]) -> Iterator[bytes]:
    items = list(pieces)
    for i, piece in enumerate(items):
        body = _gemini_response(model, piece, final=i == len(items) - 1)
        yield f"data: {json.dumps(body)}\r\n\r\n".encode()


def _events(exchange: Exchange, pieces: Iterable[str]) -> Iterator[bytes]:
    model = _model(exchange)
    provider = _provider(exchange.request.path)
    if provider == "anthropic":
        return _anthropic_events(model, pieces)
    if provider == "gemini":
        return _gemini_events(model, pieces)
    return _openai_events(model, pieces)


def _complete(exchange: Exchange, text: str) -> dict[str, Any]:
    model = _model(exchange)
    provider = _provider(exchange.request.path)
    if provider == "anthropic":
        return _anthropic_message(model, text)
    if provider == "gemini":
        return _gemini_response(model, text)
    return _openai_completion(model, text)


_GEMINI_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def _error_body(exchange: Exchange, status: int, retry_delay: str | None) -> dict[str, Any]:
    message = f"fake provider error {status}"
    provider = _provider(exchange.request.path)
    if provider == "anthropic":
        kind = "rate_limit_error" if status == 429 else "api_error"
        return {"type": "error", "error": {"type": kind, "message": message}}
    if provider == "gemini":
        body: dict[str, Any] = {
            "code": status,
            "message": message,
            "status": _GEMINI_STATUS.get(status, "UNKNOWN"),
        }
        if retry_delay is not None:
            body["details"] = [
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}
            ]
        return {"error": body}
    return {"error": {"message": message, "type": "fake_error", "param": None, "code": None}}


# --------------------------------------------------------------------------- steps


def _json(exchange: Exchange, status: int, body: Mapping[str, Any], headers: HeaderPairs) -> bool:
    payload = json.dumps(body).encode()
    return exchange.respond(status, payload, (("Content-Type", "application/json"), *headers))


@dataclass(frozen=True)
class Stream(Step):
    """A streamed success: SSE events, optionally late (first token) or cut (mid-stream)."""

    pieces: tuple[str, ...] = ("Hello", " there")
    first_delay: float = 0.0
    interval: float = 0.0
    fail_after: int | None = None
    headers: HeaderPairs = ()

    def run(self, exchange: Exchange) -> bool:
        headers = (("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"))
        exchange.send(exchange.head(200, (*headers, *self.headers), chunked=True))
        for n, event in enumerate(_events(exchange, self.pieces)):
            if self.fail_after is not None and n >= self.fail_after:
                # A mid-stream disconnect: the chunked body ends without its last chunk. A clean
                # close (not a reset) so the events already sent are read first, deterministically.
                exchange.close()
                return False
            if not exchange.wait(self.first_delay if n == 0 else self.interval):
                return False
            exchange.send(f"{len(event):x}\r\n".encode() + event + b"\r\n")
        exchange.send(b"0\r\n\r\n")
        return exchange.keep_alive(self.headers)


@dataclass(frozen=True)
class Reply(Step):
    """A success in the format of the path, streamed when the request asked for a stream."""

    text: str = "Hello there"
    headers: HeaderPairs = ()

    def run(self, exchange: Exchange) -> bool:
        if _wants_stream(exchange):
            head, space, tail = self.text.partition(" ")
            pieces = (head, space + tail) if space else (head,)
            return Stream(pieces, headers=self.headers).run(exchange)
        return _json(exchange, 200, _complete(exchange, self.text), self.headers)


@dataclass(frozen=True)
class ErrorReply(Step):
    """The provider's error body with *status* (and extra headers, e.g. rate-limit ones)."""

    status: int = 500
    headers: HeaderPairs = ()
    retry_delay: str | None = None
    """Gemini only: a ``google.rpc.RetryInfo`` detail with this ``retryDelay`` (``"0.4s"``)."""

    def run(self, exchange: Exchange) -> bool:
        body = _error_body(exchange, self.status, self.retry_delay)
        return _json(exchange, self.status, body, self.headers)


def _pairs(headers: Mapping[str, str] | None) -> HeaderPairs:
    return tuple((str(k), str(v)) for k, v in (headers or {}).items())


def reply(text: str = "Hello there", headers: Mapping[str, str] | None = None) -> Reply:
    """A success (streamed if the request asked for a stream)."""
    return Reply(text, _pairs(headers))


def stream(
    pieces: Iterable[str] = ("Hello", " there"),
    *,
    first_delay: float = 0.0,
    interval: float = 0.0,
    fail_after: int | None = None,
) -> Stream:
    """A streamed success; ``fail_after=N`` closes the connection mid-body after N events."""
    return Stream(tuple(pieces), first_delay, interval, fail_after)


def error(status: int, headers: Mapping[str, str] | None = None) -> ErrorReply:
    """The provider's JSON error with *status*."""
    return ErrorReply(status, _pairs(headers))


def rate_limited(
    *,
    retry_after: float | None = None,
    retry_after_ms: float | None = None,
    headers: Mapping[str, str] | None = None,
    retry_delay: str | None = None,
) -> ErrorReply:
    """A 429 with ``retry-after``/``retry-after-ms``, other *headers*, Gemini's *retry_delay*."""
    extra: dict[str, str] = {}
    if retry_after is not None:
        extra["retry-after"] = f"{retry_after:g}"
    if retry_after_ms is not None:
        extra["retry-after-ms"] = f"{retry_after_ms:g}"
    return ErrorReply(429, _pairs({**extra, **(headers or {})}), retry_delay)


def openai_reset_headers(requests: str = "1s", tokens: str = "6m0s") -> dict[str, str]:
    """OpenAI/Groq rate-limit headers: requests exhausted, resetting after *requests*."""
    return {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": requests,
        "x-ratelimit-limit-tokens": "150000",
        "x-ratelimit-remaining-tokens": "149000",
        "x-ratelimit-reset-tokens": tokens,
    }


def anthropic_reset_headers(seconds: float) -> dict[str, str]:
    """Anthropic rate-limit headers: requests exhausted, resetting *seconds* from now (RFC 3339)."""
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
    return {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": when.isoformat(timespec="milliseconds").replace(
            "+00:00", "Z"
        ),
    }


class FakeLLM(FaultServer):
    """A FaultServer answering OpenAI, Groq, Anthropic and Gemini paths in their formats."""

    def __init__(self) -> None:
        super().__init__(default=Reply())

    @property
    def openai_url(self) -> str:
        """The ``base_url`` of an OpenAI client (``/v1`` included, as the SDK expects)."""
        return f"{self.url}/v1"
