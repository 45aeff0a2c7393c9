"""
What the LLM SDK integrations share: targets, what is retried, streams, and fallback chains.

- **Target** = ``provider/model`` (``openai/gpt-4o-mini``, ``anthropic/claude-3-5-haiku``,
  ``groq/llama-3.3-70b-versatile``, ``google/gemini-2.0-flash``), taken from the call's
  ``model``. Limits, breakers and rate limits differ per model at every provider, so the model
  is the unit that fails together; the host would lump them all. Nothing else from the call
  is ever read into a target, an event, a log record or an error message: no API key, no
  prompt, no output (the SDK's own exceptions pass through unchanged, but buttress adds
  nothing to them).
- **One logical call, one pipeline**. The SDKs send over httpx (groq, google-genai), aiohttp
  (google-genai async) or httpx2 (openai, anthropic); each attempt runs inside
  ``inside("http")``, so the HTTP integrations let the inner request through instead of adding
  a second pipeline keyed by ``host:port``.
- **Who retries: the SDK or buttress, never both** (both would multiply the requests a
  provider sees). In enforce mode, when the application did not choose the SDK's retries,
  buttress turns them off (``max_retries=0``, google-genai ``HttpRetryOptions(attempts=1)``,
  when a client is built) and retries itself, so retries, back-off and ``Retry-After`` are
  buttress's and visible in its metrics. When the application chose them (``max_retries``,
  ``retry_options``, 0 included), the SDK keeps them and buttress runs the call without retries
  of its own (``no_retry()``): the provider sees the requests the application asked for, and
  every other policy still applies. Observe mode changes no client setting: the SDK retries as
  it would without buttress. Whenever the SDK retries by itself, one attempt is its whole loop,
  and :mod:`._llm_sdk_loop` reports each request it retries (to the breaker, and in observe
  mode as the retries buttress would have made).
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
- **Tokens per minute**: ``llm.tokens_per_minute`` gives a target a token budget debited with
  the usage each response reports (``_llm_tokens``).
- **Not done**: no cache of generations.

Where the code is: this module keeps targets, the pipeline of a target and the error mapping,
and re-exports what the integrations and users import. :mod:`._llm_signals` decides what is
retried and when, :mod:`._llm_streams` reads a stream's first chunk (and translates another
SDK's stream), :mod:`._llm_fallback` holds the call in flight and the fallback chains, and
:mod:`._llm_stainless` wraps the Stainless SDKs' ``request``; :mod:`._llm_translate` and
:mod:`._llm_tokens` translate bodies and keep token budgets; :mod:`._llm_sdk_loop` reports the
requests an SDK retries by itself. Imports go one way: signals and
streams, then fallback, then this module, then the Stainless wrappers.
"""

from __future__ import annotations

from typing import Any

from .._pipeline import Pipeline
from ..policies._fallback import Fallback
from ..policies._timeout import remaining
from ._base import alive_but_busy, passthrough, target_pipeline
from ._llm_fallback import (
    ChatShape,
    _fallback_applies,
    _handle_fallback,
    begin_call,
    capture_client,
    clear_fallbacks,
    end_call,
    register_chat_shape,
    register_client,
    set_fallbacks,
)
from ._llm_signals import (
    llm_is_transient,
    llm_server_delay,
    parse_duration,
    register_transport_errors,
    register_transport_modules,
)
from ._llm_streams import (
    aprefetch_iterator,
    atranslated_stream,
    prefetch_iterator,
    translated_stream,
)

# Names defined in the _llm_* modules are re-exported so the integrations and user code keep
# importing the LLM family's shared pieces from this one module.
__all__ = [
    "ChatShape",
    "aprefetch_iterator",
    "atranslated_stream",
    "begin_call",
    "capture_client",
    "clear_fallbacks",
    "compatible_error",
    "end_call",
    "llm_is_transient",
    "llm_server_delay",
    "parse_duration",
    "pipeline_for",
    "prefetch_iterator",
    "register_chat_shape",
    "register_client",
    "register_transport_errors",
    "register_transport_modules",
    "set_fallbacks",
    "skip",
    "target_of",
    "tighter_timeout",
    "translated_stream",
]


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
        breaker_failure=_breaker_failure,
    )
    return pipeline


def _breaker_failure(exc: BaseException) -> bool:
    # What the breaker counts: what is retried, but a 429 (a provider pacing its clients is up;
    # see _http.breaker_failure).
    return llm_is_transient(exc) and not alive_but_busy(exc)


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
