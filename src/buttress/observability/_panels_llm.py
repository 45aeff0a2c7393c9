"""
The LLM dashboard's panels (``buttress-llm.json``): targets of kind ``llm``, by model.

One series per provider/model target, with the provider's rate limiting (429s) up front.

The order of the list is the order on the page.
"""

from __future__ import annotations

from ..telemetry import _semconv as sc
from . import _promql as p
from ._panel_spec import RATE, PanelSpec, Query, outcome, row
from ._promql import Selector, agg

_T, _K = sc.ATTR_TARGET, sc.ATTR_KIND
LLM_RATE_LIMIT_ERRORS = "(?i).*(ratelimit|toomanyrequests|429|retryableresponse).*"
"""``error_type`` values that mean "the provider said slow down": SDK RateLimitError classes and
buttress's own RetryableResponse (a retried 429/5xx status from the HTTP integrations)."""


def llm_panels(q: Selector) -> list[PanelSpec]:
    """The LLM view: per provider/model target of kind ``llm``."""
    lm = (f'{_K}="llm"', f'{_T}=~"$target"')
    calls = q.rate(sc.CALLS, RATE, *lm)
    lq = Selector(", ".join(m for m in (q.matchers, *lm) if m))
    return [
        row("LLM providers and models"),
        PanelSpec(
            "timeseries",
            "Calls by model and outcome",
            "Logical LLM calls per second, by target (provider/model) and outcome.",
            (Query(agg("sum", (_T, sc.ATTR_OUTCOME), calls), "{{target}} {{outcome}}"),),
            unit="reqps",
        ),
        PanelSpec(
            "timeseries",
            "p95 latency by model",
            "95th percentile of whole-call duration, retries and waits included.",
            (Query(p.quantile(lq, 0.95, sc.CALL_DURATION, (_T,), RATE), "{{target}}"),),
            unit="s",
        ),
        row("Rate limiting (429s)"),
        PanelSpec(
            "timeseries",
            "429s: retries on rate-limit errors",
            "Retries caused by the provider's rate limiting (RateLimitError, 429 responses), "
            "per target and error type.",
            (
                Query(
                    agg(
                        "sum",
                        (_T, "error_type"),
                        lq.rate(sc.RETRIES, RATE, f'error_type=~"{LLM_RATE_LIMIT_ERRORS}"'),
                    ),
                    "{{target}} {{error_type}}",
                ),
            ),
            unit="ops",
            width=8,
            runbook="buttressretrystorm",
        ),
        PanelSpec(
            "timeseries",
            "Retries by error type",
            "Every retry of LLM calls by error type, for context.",
            (
                Query(
                    agg("sum", (_T, "error_type"), lq.rate(sc.RETRIES, RATE)),
                    "{{target}} {{error_type}}",
                ),
            ),
            unit="ops",
            width=8,
        ),
        PanelSpec(
            "timeseries",
            "Rejections by reason",
            "LLM calls refused before they started: rate_limited is our own client-side limit.",
            (
                Query(
                    agg("sum", (_T, sc.ATTR_REASON), lq.rate(sc.REJECTIONS, RATE)),
                    "{{target}} {{reason}}",
                ),
            ),
            unit="ops",
            width=8,
            runbook="buttressrejectionshigh",
        ),
        PanelSpec(
            "timeseries",
            "Waits asked by servers (p95)",
            "95th percentile of the Retry-After style delays the provider asked for (capped).",
            (
                Query(
                    p.quantile(
                        Selector(", ".join(m for m in (lq.matchers, f'{sc.ATTR_SOURCE}="server"'))),
                        0.95,
                        sc.RETRY_DELAY,
                        (_T,),
                        RATE,
                    ),
                    "{{target}}",
                ),
            ),
            unit="s",
            width=8,
        ),
        PanelSpec(
            "timeseries",
            "Time spent waiting for servers",
            "Seconds per second spent in server-asked retry delays (sampled histogram sum).",
            (
                Query(
                    agg(
                        "sum",
                        (_T,),
                        lq.rate(sc.RETRY_DELAY, RATE, f'{sc.ATTR_SOURCE}="server"', suffix="_sum"),
                    ),
                    "{{target}}",
                ),
            ),
            unit="s",
            width=8,
        ),
        PanelSpec(
            "timeseries",
            "Client-side rate-limit wait p95",
            "95th percentile of the time calls waited for one of our own rate-limit tokens.",
            (Query(p.quantile(lq, 0.95, sc.RATE_LIMIT_WAIT, (_T,), RATE), "{{target}}"),),
            unit="s",
            width=8,
        ),
        row("Fallbacks and tokens"),
        PanelSpec(
            "timeseries",
            "Fallbacks",
            "Calls answered by the fallback (another model, a canned answer), by target and the "
            "error it replaced.",
            (
                Query(
                    agg("sum", (_T,), q.rate(sc.CALLS, RATE, *lm, outcome(("fallback",)))),
                    "{{target}} answered by fallback",
                ),
                Query(
                    agg("sum", (_T, "error_type"), lq.rate(sc.FALLBACKS, RATE)),
                    "{{target}} replaced {{error_type}}",
                ),
            ),
            unit="ops",
            width=16,
        ),
        PanelSpec(
            "text",
            "Tokens",
            content=(
                "**Tokens: not recorded yet.** buttress does not emit a token metric "
                "(see `docs/telemetry.md`); use the `gen_ai.client.token.usage` histogram of "
                "an OpenTelemetry GenAI instrumentation if you have one."
            ),
            width=8,
        ),
    ]
