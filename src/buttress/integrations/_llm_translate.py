"""
Translation of OpenAI-shaped chat completions to Gemini and Anthropic, and of their answers back.

A cross-SDK fallback (``groq/... -> google/...``, ``openai/... -> anthropic/...``) re-issues the
caller's chat-completions body on another provider's SDK, then hands the caller an answer in its
own SDK's shape. This module holds that translation and nothing else: plain dicts in, plain dicts
out, no SDK imported, no I/O, no clock (the caller passes ``created`` and a default ``id``).

**What translates.** ``messages`` with the roles ``system``/``developer`` (leading only),
``user`` and ``assistant``, whose content is a string or a list of ``text`` parts;
``temperature``, ``top_p``, ``max_tokens``/``max_completion_tokens``, ``stop``, ``stream``,
``stream_options.include_usage``, ``n`` of 1 and ``user``. Gemini also takes ``seed``,
``presence_penalty`` and ``frequency_penalty``. Anthropic needs ``max_tokens``: 1024 when the
request gives none; ``user`` becomes its ``metadata.user_id``; a ``temperature`` above 1 (outside
Anthropic's range) is refused.

**What is refused** (:class:`UntranslatableError`; the caller then gets the original error):
any other key with a value (``tools``, ``functions``, ``tool_choice``, ``response_format``,
``logprobs``, ``logit_bias``, ``audio``, ``modalities``...), ``n > 1``, images, audio, files or
any part that is not text, ``tool``/``function`` messages, assistant ``tool_calls``, message
``name`` fields, and system messages after the conversation started. In an answer: a part or
block that is not text (a function call, an image) and a finish reason with no OpenAI
counterpart.

Finish reasons: Gemini ``STOP`` -> ``stop``, ``MAX_TOKENS`` -> ``length``, ``SAFETY`` (and the
other blocking reasons) -> ``content_filter``; Anthropic ``end_turn``/``stop_sequence`` ->
``stop``, ``max_tokens`` -> ``length``, ``refusal`` -> ``content_filter``. Usage: prompt,
completion (thinking included, as OpenAI counts reasoning) and total tokens, plus cached and
reasoning token details when the provider reports them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "ANTHROPIC_DEFAULT_MAX_TOKENS",
    "AnthropicStream",
    "GeminiStream",
    "UntranslatableError",
    "check",
    "from_anthropic",
    "from_gemini",
    "to_anthropic",
    "to_gemini",
]

ANTHROPIC_DEFAULT_MAX_TOKENS = 1024
"""``max_tokens`` sent to Anthropic (where it is required) when the request names none."""

GEMINI = "google"
ANTHROPIC = "anthropic"

_COMMON = frozenset(
    {
        "model",
        "messages",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "stream",
        "stream_options",
        "n",
        "user",
    }
)
_ACCEPTED = {
    GEMINI: _COMMON | {"seed", "presence_penalty", "frequency_penalty"},
    ANTHROPIC: _COMMON,
}

_GEMINI_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
_ANTHROPIC_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "refusal": "content_filter",
}


class UntranslatableError(ValueError):
    """A request or an answer with no faithful counterpart on the other side."""


# --- requests --------------------------------------------------------------------------------


def _given(body: Mapping[str, Any]) -> dict[str, Any]:
    # An explicit None is what the SDKs send for "not set" when the caller passes None.
    return {key: value for key, value in body.items() if value is not None}


def _text(content: Any) -> list[str]:
    """The text pieces of a message's content: a string, or a list of text parts."""
    if isinstance(content, str):
        return [content]
    if isinstance(content, Sequence) and not isinstance(content, bytes):
        pieces: list[str] = []
        for part in content:
            if (
                not isinstance(part, Mapping)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
                or set(_given(part)) - {"type", "text"}
            ):
                raise UntranslatableError("only text content parts translate")
            pieces.append(part["text"])
        return pieces
    raise UntranslatableError("message content must be text")


def _conversation(body: Mapping[str, Any]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """The leading system texts, and the ``(user|assistant, texts)`` turns after them."""
    messages = body.get("messages")
    if not isinstance(messages, Sequence) or isinstance(messages, str | bytes) or not messages:
        raise UntranslatableError("messages must be a non-empty list")
    system: list[str] = []
    turns: list[tuple[str, list[str]]] = []
    for message in messages:
        if not isinstance(message, Mapping):
            raise UntranslatableError("a message must be an object")
        fields = _given(message)
        role = fields.get("role")
        if set(fields) - {"role", "content"}:
            raise UntranslatableError("only a message's role and content translate")
        if role in ("system", "developer"):
            if turns:
                raise UntranslatableError("system messages translate only before the conversation")
            system += _text(fields.get("content"))
        elif role in ("user", "assistant"):
            turns.append((role, _text(fields.get("content"))))
        else:
            raise UntranslatableError(f"messages of role {role!r} do not translate")
    if not turns:
        raise UntranslatableError("no user or assistant message")
    return system, turns


def _stops(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence) and all(isinstance(s, str) for s in value):
        return list(value)
    raise UntranslatableError("stop must be a string or a list of strings")


def _max_tokens(body: Mapping[str, Any]) -> Any:
    return body.get("max_completion_tokens", body.get("max_tokens"))


def check(body: Mapping[str, Any], provider: str) -> dict[str, Any]:
    """The body's keys that carry a value, once known to translate to *provider*; else raises."""
    given = _given(body)
    extra = sorted(set(given) - _ACCEPTED[provider])
    if extra:
        raise UntranslatableError(f"{', '.join(extra)} do not translate to {provider}")
    if given.get("n", 1) != 1:
        raise UntranslatableError("n > 1 does not translate")
    options = given.get("stream_options")
    if options is not None and (
        not isinstance(options, Mapping) or set(_given(options)) - {"include_usage"}
    ):
        raise UntranslatableError("only stream_options.include_usage translates")
    temperature = given.get("temperature", 0)
    if provider == ANTHROPIC and (not isinstance(temperature, int | float) or temperature > 1):
        raise UntranslatableError("Anthropic's temperature stops at 1")
    _conversation(given)
    return given


def include_usage(body: Mapping[str, Any]) -> bool:
    """Whether a stream's caller asked for a last chunk with the usage."""
    options = body.get("stream_options")
    return isinstance(options, Mapping) and bool(options.get("include_usage"))


def to_gemini(body: Mapping[str, Any]) -> dict[str, Any]:
    """
    The keyword arguments of google-genai's ``generate_content`` for an OpenAI chat *body*.

    ``{"model", "contents", "config"}``; the config has only what the body sets.
    """
    given = check(body, GEMINI)
    system, turns = _conversation(given)
    contents = [
        {"role": "model" if role == "assistant" else "user", "parts": [{"text": t} for t in texts]}
        for role, texts in turns
    ]
    config: dict[str, Any] = {}
    if system:
        config["system_instruction"] = "\n\n".join(system)
    for source, name in (
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("seed", "seed"),
        ("presence_penalty", "presence_penalty"),
        ("frequency_penalty", "frequency_penalty"),
    ):
        if source in given:
            config[name] = given[source]
    if _max_tokens(given) is not None:
        config["max_output_tokens"] = _max_tokens(given)
    if "stop" in given:
        config["stop_sequences"] = _stops(given["stop"])
    return {"model": given["model"], "contents": contents, "config": config}


def to_anthropic(body: Mapping[str, Any]) -> dict[str, Any]:
    """
    The keyword arguments of anthropic's ``messages.create`` for an OpenAI chat *body*.

    ``stream`` is left to the sender; ``max_tokens`` is always set (Anthropic requires it).
    """
    given = check(body, ANTHROPIC)
    system, turns = _conversation(given)
    messages = [
        {
            "role": role,
            "content": texts[0]
            if len(texts) == 1
            else [{"type": "text", "text": t} for t in texts],
        }
        for role, texts in turns
    ]
    request: dict[str, Any] = {
        "model": given["model"],
        "messages": messages,
        "max_tokens": _max_tokens(given) or ANTHROPIC_DEFAULT_MAX_TOKENS,
    }
    if system:
        request["system"] = "\n\n".join(system)
    for name in ("temperature", "top_p"):
        if name in given:
            request[name] = given[name]
    if "stop" in given:
        request["stop_sequences"] = _stops(given["stop"])
    if "user" in given:
        request["metadata"] = {"user_id": given["user"]}
    return request


# --- answers ---------------------------------------------------------------------------------


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _usage(prompt: int, completion: int, total: int, cached: int, reasoning: int) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total or prompt + completion,
    }
    if cached:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    if reasoning:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return usage


def gemini_usage(metadata: Any) -> dict[str, Any] | None:
    """OpenAI's ``usage`` from Gemini's ``usage_metadata`` (``None`` without one)."""
    if not isinstance(metadata, Mapping):
        return None
    thoughts = _count(metadata.get("thoughts_token_count"))
    return _usage(
        _count(metadata.get("prompt_token_count")),
        _count(metadata.get("candidates_token_count")) + thoughts,
        _count(metadata.get("total_token_count")),
        _count(metadata.get("cached_content_token_count")),
        thoughts,
    )


def anthropic_usage(usage: Any) -> dict[str, Any] | None:
    """OpenAI's ``usage`` from Anthropic's (cache reads and writes count as prompt tokens)."""
    if not isinstance(usage, Mapping):
        return None
    cached = _count(usage.get("cache_read_input_tokens"))
    prompt = (
        _count(usage.get("input_tokens"))
        + cached
        + _count(usage.get("cache_creation_input_tokens"))
    )
    return _usage(prompt, _count(usage.get("output_tokens")), 0, cached, 0)


def _finish(reason: Any, table: Mapping[str, str]) -> str | None:
    if reason is None:
        return None
    mapped = table.get(str(reason))
    if mapped is None:
        raise UntranslatableError(f"finish reason {reason!r} has no OpenAI counterpart")
    return mapped


def _gemini_candidate(response: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The text and the mapped finish reason of a Gemini response (or stream chunk)."""
    candidates = response.get("candidates") or []
    if not candidates:
        feedback = response.get("prompt_feedback")
        if isinstance(feedback, Mapping) and feedback.get("block_reason"):
            return None, "content_filter"  # the prompt itself was blocked
        raise UntranslatableError("a Gemini answer without candidates")
    candidate = candidates[0]
    content = candidate.get("content") or {}
    pieces: list[str] = []
    for part in content.get("parts") or []:
        if part.get("thought"):
            continue  # thinking is not part of an OpenAI answer
        if set(_given(part)) - {"text", "thought_signature"} or "text" not in part:
            raise UntranslatableError("a Gemini part that is not text")
        pieces.append(part["text"])
    return "".join(pieces), _finish(candidate.get("finish_reason"), _GEMINI_FINISH)


def completion(
    *, chat_id: str, created: int, model: str, content: str | None, finish: str | None, usage: Any
) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` object, as a dict."""
    data: dict[str, Any] = {
        "id": chat_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish or "stop",
                "logprobs": None,
            }
        ],
    }
    if usage is not None:
        data["usage"] = usage
    return data


def from_gemini(
    response: Mapping[str, Any], *, model: str, created: int, chat_id: str
) -> dict[str, Any]:
    """
    An OpenAI ``chat.completion`` dict from a Gemini ``GenerateContentResponse`` dict.

    *response* is the SDK object's ``model_dump(exclude_none=True)`` (snake_case keys);
    *model* names the target that answered; *chat_id* is used when Gemini gives no ``response_id``.
    """
    text, finish = _gemini_candidate(response)
    return completion(
        chat_id=str(response.get("response_id") or chat_id),
        created=created,
        model=model,
        content=text,
        finish=finish,
        usage=gemini_usage(response.get("usage_metadata")),
    )


def _anthropic_text(blocks: Any) -> str:
    pieces: list[str] = []
    for block in blocks or []:
        kind = block.get("type")
        if kind in ("thinking", "redacted_thinking"):
            continue
        if kind != "text":
            raise UntranslatableError(f"an Anthropic {kind!r} block is not text")
        pieces.append(block.get("text", ""))
    return "".join(pieces)


def from_anthropic(message: Mapping[str, Any], *, model: str, created: int) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` dict from an Anthropic ``Message`` dict."""
    return completion(
        chat_id=str(message.get("id") or "msg"),
        created=created,
        model=model,
        content=_anthropic_text(message.get("content")),
        finish=_finish(message.get("stop_reason"), _ANTHROPIC_FINISH),
        usage=anthropic_usage(message.get("usage")),
    )


# --- streams ---------------------------------------------------------------------------------


class _ChunkMaker:
    """OpenAI ``chat.completion.chunk`` dicts of one stream."""

    def __init__(self, *, chat_id: str, created: int, model: str, include_usage: bool) -> None:
        self.id = chat_id
        self.created = created
        self.model = model
        self.include_usage = include_usage
        self.usage: dict[str, Any] | None = None
        self._started = False

    def chunk(self, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        if not self._started:
            delta = {"role": "assistant", **delta}
            self._started = True
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }

    def end(self) -> list[dict[str, Any]]:
        """The last chunk, with the usage and no choices, when the caller asked for it."""
        if not self.include_usage or self.usage is None:
            return []
        last = self.chunk({}, None)
        last["choices"] = []
        last["usage"] = self.usage
        return [last]


class GeminiStream(_ChunkMaker):
    """Turns each Gemini stream chunk (a response dict) into OpenAI chunk dicts."""

    def feed(self, response: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The OpenAI chunks for one Gemini chunk."""
        if response.get("response_id") and not self._started:
            self.id = str(response["response_id"])
        usage = gemini_usage(response.get("usage_metadata"))
        if usage is not None:
            self.usage = usage
        text, finish = _gemini_candidate(response)
        if not text and finish is None and self._started:
            return []
        return [self.chunk({"content": text or ""}, finish)]


class AnthropicStream(_ChunkMaker):
    """Turns Anthropic stream events (dicts with a ``type``) into OpenAI chunk dicts."""

    def feed(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The OpenAI chunks for one Anthropic event."""
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            if message.get("id"):
                self.id = str(message["id"])
            self.usage = anthropic_usage(message.get("usage"))
            return [self.chunk({"content": ""}, None)]
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") not in ("text", "thinking", "redacted_thinking"):
                raise UntranslatableError(f"an Anthropic {block.get('type')!r} block is not text")
            return []
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [self.chunk({"content": delta.get("text", "")}, None)]
            if delta.get("type") in ("thinking_delta", "signature_delta"):
                return []
            raise UntranslatableError(f"an Anthropic {delta.get('type')!r} delta is not text")
        if kind == "message_delta":
            usage = event.get("usage") or {}
            if self.usage is not None and "output_tokens" in usage:
                completion_tokens = _count(usage["output_tokens"])
                self.usage = {
                    **self.usage,
                    "completion_tokens": completion_tokens,
                    "total_tokens": self.usage["prompt_tokens"] + completion_tokens,
                }
            reason = (event.get("delta") or {}).get("stop_reason")
            return [self.chunk({}, _finish(reason, _ANTHROPIC_FINISH))]
        return []  # ping, content_block_stop, message_stop
