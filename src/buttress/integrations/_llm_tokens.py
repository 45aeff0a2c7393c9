"""
Tokens per minute for LLM targets: a budget debited with the usage each response reports.

``llm.tokens_per_minute`` (and ``llm.tokens_max_wait``) in ``[defaults.llm]`` or a target table
give a ``provider/model`` target a :class:`TokenBudget`: a token bucket refilled at
``tokens_per_minute / 60`` per second and holding at most one minute's worth
(``burst = tokens_per_minute``). It is a :class:`~buttress.policies._rate_limit.RateLimitState`
bound with the target pipeline's :class:`~buttress._context.PolicyContext`, so its waits and
rejections are the rate limit's own events (``RateLimitWaited``, ``CallRejected(reason=
"rate_limited")``) carrying the target and kind ``llm``, on the pipeline's clock.

How a call is charged:

- **Admission** (:func:`before_call`, once per logical call, before the pipeline runs): the call
  takes 1 token and may proceed once the balance, after that token, is not negative. A bucket in
  debt therefore delays calls until the refill has paid the debt back; a call that would have to
  wait longer than ``tokens_max_wait`` (default 0: reject at once, as ``rate_limit.max_wait``)
  or past the call's published deadline raises :class:`~buttress.RateLimitedError` instead.
  The token count of a request is not known before the response, so admission cannot reserve
  it; the 1 token keeps calls whose usage is never reported from being free.
- **Usage** (:func:`after_response`, on the response of the attempt that succeeded): the tokens
  the provider reports (:func:`usage_tokens`) are debited at once, even when that puts the bucket
  in debt. The next calls wait for it. A call's total charge is ``1 + usage``.

Usage absent is "nothing to debit": streams (which report usage in their last chunk, and only
when asked, e.g. openai ``stream_options={"include_usage": True}``), ``with_raw_response``
wrappers and anything of an unknown shape cost their admission token only.

In observe mode nothing waits and nothing is rejected; the bucket keeps its books as if
enforcing, so its ``observed=True`` events are the ones enforcement would have produced.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .. import _activation, _validate
from .._exceptions import ConfigurationError, RateLimitedError
from .._stats import REJECTED
from ..policies._rate_limit import RateLimit, RateLimitState
from ..policies._timeout import remaining

if TYPE_CHECKING:
    from .._context import PolicyContext
    from .._pipeline import Pipeline

__all__ = [
    "TokenBudget",
    "after_response",
    "before_call",
    "budget_for",
    "clear_budgets",
    "usage_tokens",
]

ADMISSION_COST = 1.0
"""Tokens a call takes at admission; its reported usage is debited after the response."""


class _Bucket(RateLimitState):
    """A rate-limit bucket that can also be charged after the fact, without waiting or events."""

    __slots__ = ()

    def debit(self, now: float, cost: float) -> None:
        """Take *cost* tokens at *now*, going into debt if need be (nobody waits here)."""
        with self._lock:
            elapsed = now - self._last
            tokens = self._tokens
            if elapsed > 0:
                tokens = min(self._burst, tokens + elapsed * self._rate)
                self._last = now
            self._tokens = tokens - cost


class TokenBudget:
    """
    The tokens-per-minute budget of one LLM target, bound to its pipeline's context.

    Args:
        tokens_per_minute: Tokens the target may use per minute (> 0, finite); also the bucket
            size, so a quiet target can spend a whole minute's worth at once.
        ctx: The target pipeline's context: target, kind, clock, observe mode, event sink.
        max_wait: Seconds a call may wait for the budget at admission (>= 0).

    Raises:
        ConfigurationError: A parameter is out of range.
    """

    __slots__ = ("_bucket", "context", "max_wait", "tokens_per_minute")

    def __init__(
        self, tokens_per_minute: float, ctx: PolicyContext, *, max_wait: float = 0.0
    ) -> None:
        per_minute = _validate.number(
            "TokenBudget", "tokens_per_minute", tokens_per_minute, low=0, low_inclusive=False
        )
        if per_minute is None or not math.isfinite(per_minute):
            raise ConfigurationError(
                f"TokenBudget: tokens_per_minute={tokens_per_minute!r} is out of range; "
                "expected a finite number > 0"
            )
        limit = RateLimit(
            rate=per_minute / 60.0,
            burst=max(1, math.floor(per_minute)),
            max_wait=max_wait,
        )
        self.tokens_per_minute = per_minute
        self.max_wait = limit.max_wait
        self.context = ctx
        self._bucket = _Bucket(limit, ctx)

    @property
    def available(self) -> float:
        """Tokens in the bucket now; negative while the bucket is in debt."""
        return self._bucket.available

    def admit(self, now: float, deadline: float = math.inf) -> float:
        """
        Take the admission token; returns the seconds the caller must wait before it proceeds.

        Raises:
            RateLimitedError: The wait would exceed ``max_wait`` or reach past *deadline*
                (nothing is taken; a ``CallRejected(reason="rate_limited")`` event was emitted).
        """
        try:
            return self._bucket.acquire(now, deadline, ADMISSION_COST)
        except RateLimitedError as exc:
            target = self.context.target
            retry_after = exc.retry_after
            wait = f"{retry_after:.3g}s" if retry_after is not None else "a while"
            raise RateLimitedError(
                f"buttress: token budget for target {target!r} exhausted: admission in {wait},"
                f" more than the allowed wait (tokens_max_wait={self.max_wait:g}s or the call's"
                f" deadline; tokens_per_minute={self.tokens_per_minute:g})",
                target=target,
                reason="rate_limited",
                retry_after=retry_after,
            ) from None

    def debit(self, tokens: float) -> None:
        """Charge *tokens* of reported usage now; the bucket may go into debt."""
        if tokens > 0:
            self._bucket.debit(self.context.clock.monotonic(), float(tokens))

    def __repr__(self) -> str:
        return (
            f"<TokenBudget target={self.context.target!r}"
            f" tokens={self.available:.0f}/{self.tokens_per_minute:g} per minute"
            f" max_wait={self.max_wait:g}s>"
        )


# --- the budgets of the running process -------------------------------------------------------

_lock = threading.Lock()
_budgets: dict[str, TokenBudget] = {}


def _budget(target: str, ctx: PolicyContext, config: tuple[float, float]) -> TokenBudget:
    per_minute, max_wait = config
    with _lock:
        budget = _budgets.get(target)
        # A rebuilt pipeline (new context) or a changed configuration starts a new bucket.
        if (
            budget is None
            or budget.context is not ctx
            or budget.tokens_per_minute != per_minute
            or budget.max_wait != max_wait
        ):
            budget = _budgets[target] = TokenBudget(per_minute, ctx, max_wait=max_wait)
        return budget


def budget_for(target: str) -> TokenBudget | None:
    """The budget *target* has had since its last :func:`before_call`, if any."""
    return _budgets.get(target)


def clear_budgets() -> None:
    """Forget every budget (tests): the next call of each target starts with a full bucket."""
    with _lock:
        _budgets.clear()


def before_call(target: str, pipeline: Pipeline) -> float:
    """
    Admit one call of the LLM *target* against its token budget.

    Returns the seconds the caller must sleep before running the call (``0.0`` when the budget
    allows it now, or when *target* has no ``llm.tokens_per_minute``), on the pipeline's clock:
    ``pipeline.context.clock.sleep(delay)``, or ``await pipeline.context.clock.asleep(delay)``.
    The admission token is already taken: do not ask again after sleeping.

    Raises:
        RateLimitedError: The budget is in debt for longer than ``llm.tokens_max_wait``, or
            than the deadline published around the call. The pipeline counts it as a rejected
            call.
    """
    config = _activation.llm_tokens(target)
    if config is None:
        if target in _budgets:
            with _lock:
                _budgets.pop(target, None)
        return 0.0
    ctx = pipeline.context
    budget = _budget(target, ctx, config)
    now = ctx.clock.monotonic()
    left = remaining()
    deadline = now + left if left is not None else math.inf
    try:
        return budget.admit(now, deadline)
    except RateLimitedError:
        pipeline.stats.record(REJECTED, now, 0.0)
        raise


def after_response(target: str, response: object) -> int | None:
    """
    Debit the usage *response* reports from *target*'s token budget; never raises.

    Returns the tokens the response reports (see :func:`usage_tokens`), whether or not the
    target has a budget, or ``None`` when it reports none (nothing is debited then).
    """
    tokens = usage_tokens(response)
    if tokens:
        budget = _budgets.get(target)
        if budget is not None:
            with contextlib.suppress(Exception):  # accounting must never break the call
                budget.debit(tokens)
    return tokens


# --- usage of each SDK's response -------------------------------------------------------------

# (attribute holding the usage, its total, the parts summed when the total is absent); the
# first group whose parts are present is summed: names are disjoint between SDKs.
_SHAPES: tuple[tuple[str, str, tuple[tuple[str, ...], ...]], ...] = (
    # openai/groq ChatCompletion.usage (CompletionUsage); openai Responses API Response.usage;
    # anthropic Message.usage: no total, and cache writes count against its input-token limits
    # (cache reads do not).
    (
        "usage",
        "total_tokens",
        (
            ("prompt_tokens", "completion_tokens"),
            ("input_tokens", "output_tokens", "cache_creation_input_tokens"),
        ),
    ),
    # google-genai GenerateContentResponse.usage_metadata
    (
        "usage_metadata",
        "total_token_count",
        (
            (
                "prompt_token_count",
                "candidates_token_count",
                "thoughts_token_count",
                "tool_use_prompt_token_count",
            ),
        ),
    ),
)


def _field(obj: object, name: str) -> object:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _count(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and math.isfinite(value) and value >= 0:
        return round(value)
    return None


def _tokens(response: object) -> int | None:
    for attribute, total_name, groups in _SHAPES:
        usage = _field(response, attribute)
        if usage is None:
            continue
        total = _count(_field(usage, total_name))
        if total is not None:
            return total
        for names in groups:
            counts = [_count(_field(usage, name)) for name in names]
            present = [count for count in counts if count is not None]
            if present:
                return sum(present)
    return None


def usage_tokens(response: object) -> int | None:
    """
    The tokens an LLM response reports having used, or ``None`` when it reports none.

    Duck-typed over the four SDKs (objects or mappings with the same field names):

    - openai and groq ``ChatCompletion``: ``usage.total_tokens`` (else ``prompt_tokens +
      completion_tokens``); the openai Responses API's ``Response.usage.total_tokens`` too;
    - anthropic ``Message``: ``usage.input_tokens + output_tokens`` (+
      ``cache_creation_input_tokens`` when reported);
    - google-genai ``GenerateContentResponse``: ``usage_metadata.total_token_count`` (else
      the sum of its prompt, candidates, thoughts and tool-use prompt counts).

    Never raises: anything else (a stream, a raw response, a mock) is ``None``.
    """
    try:
        return _tokens(response)
    except Exception:
        return None
