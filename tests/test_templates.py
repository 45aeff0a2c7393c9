# House style writes assertions as `expected == actual`; ruff's SIM300 calls that Yoda style.
# ruff: noqa: SIM300

"""Tests for the ready-made policy sets in buttress.templates and their use with protect()."""

from __future__ import annotations

import pytest

import buttress
from buttress import templates
from buttress._exceptions import TimeoutError as PolicyTimeoutError
from buttress._http_signals import is_transient, is_transient_llm, server_delay
from buttress.policies._backoff import exponential
from buttress.policies._bulkhead import Bulkhead
from buttress.policies._retry_budget import RetryBudget
from buttress.policies._timeout import Timeout

TEMPLATES = [templates.http, templates.database, templates.llm]


class Response:
    """A response with a status code, as a result a retry predicate inspects."""

    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


# --- the documented values -------------------------------------------------------------------


def test_http_retry():
    """HTTP: 4 attempts, full jitter from 2 s, transient errors and results, Retry-After <= 60 s."""
    retry = templates.http().retry

    expected = (
        4,
        exponential(initial=2.0, max=30.0, jitter="full"),
        is_transient,
        is_transient,
        server_delay,
        60.0,
        RetryBudget(),
        None,
    )
    assert expected == (
        retry.attempts,
        retry.backoff,
        retry.on,
        retry.on_result,
        retry.retry_after,
        retry.max_retry_after,
        retry.budget,
        retry.deadline,
    )


def test_http_timeout_and_bulkhead():
    """HTTP: attempt timeout 10 s, total 30 s; 1000 concurrent calls and no queue."""
    policies = templates.http()

    assert (Timeout(attempt=10.0, total=30.0), 1000, 0) == (
        policies.timeout,
        policies.bulkhead.max_concurrent,
        policies.bulkhead.max_queue,
    )


def test_http_breaker():
    """HTTP: failure rate 10 % over a 30 s window, at least 100 calls, open 5 s."""
    breaker = templates.http().breaker

    expected = (0.1, "time", 30, 100, 5.0, is_transient, is_transient)
    assert expected == (
        breaker.failure_rate_threshold,
        breaker.window,
        breaker.window_size,
        breaker.minimum_calls,
        breaker.open_duration,
        breaker.failure_on,
        breaker.failure_on_result,
    )


def test_database_retry():
    """Database: 3 attempts, exponential 50 ms to 1 s, on connection errors only."""
    retry = templates.database().retry

    expected = (3, exponential(initial=0.05, max=1.0), ConnectionError, None, None)
    assert expected == (retry.attempts, retry.backoff, retry.on, retry.on_result, retry.retry_after)


def test_database_timeout_and_bulkhead():
    """Database: attempt timeout 5 s, total 15 s; 20 concurrent, 50 queued for up to 2 s."""
    policies = templates.database()

    assert (
        Timeout(attempt=5.0, total=15.0),
        Bulkhead(max_concurrent=20, max_queue=50, max_wait=2.0),
    ) == (
        policies.timeout,
        policies.bulkhead,
    )


def test_database_breaker():
    """Database: failure rate 50 % over the last 50 calls (at least 20), open 15 s."""
    breaker = templates.database().breaker

    expected = (0.5, "count", 50, 20, 15.0, (ConnectionError, PolicyTimeoutError))
    assert expected == (
        breaker.failure_rate_threshold,
        breaker.window,
        breaker.window_size,
        breaker.minimum_calls,
        breaker.open_duration,
        breaker.failure_on,
    )


def test_llm_retry():
    """LLM: 4 attempts, exponential 1 s to 30 s on LLM-transient errors, Retry-After up to 60 s."""
    retry = templates.llm().retry

    expected = (4, exponential(initial=1.0, max=30.0), is_transient_llm, None, server_delay, 60.0)
    assert expected == (
        retry.attempts,
        retry.backoff,
        retry.on,
        retry.on_result,
        retry.retry_after,
        retry.max_retry_after,
    )


def test_llm_timeout_and_bulkhead():
    """LLM: attempt timeout 120 s, total 300 s; 16 concurrent, 64 queued for up to 30 s."""
    policies = templates.llm()

    assert (
        Timeout(attempt=120.0, total=300.0),
        Bulkhead(max_concurrent=16, max_queue=64, max_wait=30.0),
    ) == (
        policies.timeout,
        policies.bulkhead,
    )


def test_llm_breaker():
    """LLM: 50 % over 60 s (at least 10 calls), open 30 s growing x2 up to 5 minutes."""
    breaker = templates.llm().breaker

    expected = (0.5, "time", 60, 10, 30.0, 2.0, 300.0, is_transient_llm)
    assert expected == (
        breaker.failure_rate_threshold,
        breaker.window,
        breaker.window_size,
        breaker.minimum_calls,
        breaker.open_duration,
        breaker.open_duration_multiplier,
        breaker.max_open_duration,
        breaker.failure_on,
    )


@pytest.mark.parametrize("template", TEMPLATES)
def test_templates_set_no_rate_limit_cache_or_fallback(template):
    """Templates leave rate limits, caching and fallbacks to the user."""
    policies = template()

    assert (None, None, None) == (policies.rate_limit, policies.cache, policies.fallback)


# --- what the template predicates retry ------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (ConnectionResetError(), True),
        (PolicyTimeoutError("slow", target="t", timeout=10.0, scope="attempt"), True),
        (ValueError("bug"), False),
        (buttress.CircuitOpenError("open", target="t"), False),
    ],
)
def test_http_retries_transient_errors_only(outcome, expected):
    """The HTTP template retries connection errors and timeouts, never bugs or rejections."""
    state = templates.http().retry.bind(buttress._context.PolicyContext(target="t"))

    assert expected == state.is_retryable(outcome)


@pytest.mark.parametrize(
    ("status", "expected"), [(200, False), (404, False), (429, True), (503, True)]
)
def test_http_retries_transient_responses(status, expected):
    """The HTTP template retries 429 and 5xx responses returned as results."""
    assert expected == templates.http().retry.on_result(Response(status))


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [(ConnectionRefusedError(), True), (TimeoutError(), False), (ValueError(), False)],
)
def test_database_retries_connection_errors_only(outcome, expected):
    """The database template never retries a timeout: the statement may have run."""
    state = templates.database().retry.bind(buttress._context.PolicyContext(target="db"))

    assert expected == state.is_retryable(outcome)


# --- fresh, equal, independent ---------------------------------------------------------------


@pytest.mark.parametrize("template", TEMPLATES)
def test_each_call_returns_a_fresh_equal_policy_set(template):
    """Every call builds a new PolicySet equal to the previous one."""
    first, second = template(), template()

    assert (True, False) == (first == second, first is second)


@pytest.mark.parametrize("template", TEMPLATES)
def test_policy_sets_are_immutable(template):
    """A template's PolicySet cannot be modified in place (override through protect instead)."""
    policies = template()

    with pytest.raises(AttributeError):
        policies.retry = None


def test_templates_differ():
    """The three templates are three different policy sets."""
    assert 3 == len({repr(t()) for t in TEMPLATES})


def test_template_public_names():
    """buttress.templates exports the three templates and aliases for the predicates."""
    assert (["database", "http", "llm"], is_transient, is_transient_llm, server_delay) == (
        sorted(templates.__all__),
        templates.is_transient_http,
        templates.is_transient_llm_error,
        templates.retry_after,
    )


# --- protect(template=...) -------------------------------------------------------------------


def test_protect_with_the_http_template_and_no_bulkhead():
    """The documented example: the HTTP template with its bulkhead removed."""
    guard = buttress.protect(
        "api.example.com:443", template=templates.http(), kind="http", bulkhead=None
    )

    assert (None, "http", ("timeout", "retry", "breaker", "attempt_timeout")) == (
        guard.bulkhead,
        guard.kind,
        guard.describe(),
    )


@pytest.mark.parametrize("template", TEMPLATES)
def test_protect_uses_every_policy_of_the_template(template):
    """Without overrides the pipeline runs the template's retry, breaker, timeout and bulkhead."""
    policies = template()
    guard = buttress.protect("dep", template=policies)

    expected = (
        policies.retry,
        policies.breaker,
        policies.timeout,
        policies.bulkhead,
        ("bulkhead", "timeout", "retry", "breaker", "attempt_timeout"),
    )
    assert expected == (
        guard.retry.config,
        guard.breaker.config,
        guard.timeout_config,
        guard.bulkhead.config,
        guard.describe(),
    )


def test_protect_overrides_one_policy_and_keeps_the_rest():
    """A keyword policy replaces the template's; the others stay."""
    policies = templates.llm()
    retry = buttress.Retry(on=ConnectionError, attempts=2)

    guard = buttress.protect("openai/gpt", template=policies, kind="llm", retry=retry)

    assert (retry, policies.timeout, policies.bulkhead, policies.breaker) == (
        guard.retry.config,
        guard.timeout_config,
        guard.bulkhead.config,
        guard.breaker.config,
    )


@pytest.mark.parametrize("removed", ["retry", "breaker", "timeout", "bulkhead"])
def test_protect_none_removes_a_template_policy(removed):
    """Passing None for a policy removes it from the template's pipeline."""
    guard = buttress.protect("pg", template=templates.database(), **{removed: None})
    attribute = {"timeout": "timeout_config"}.get(removed, removed)

    assert getattr(guard, attribute) is None


def test_protect_adds_a_fallback_to_a_template():
    """Policies the template lacks can be added by keyword."""
    guard = buttress.protect(
        "pg", template=templates.database(), fallback=buttress.Fallback(value=None)
    )

    assert "fallback" == guard.describe()[0]


def test_protecting_again_with_a_fresh_template_returns_the_same_pipeline():
    """Equal templates make protect() idempotent for a target."""
    first = buttress.protect("api", template=templates.http(), kind="http")

    second = buttress.protect("api", template=templates.http(), kind="http")

    assert first is second


def test_protecting_again_with_another_template_is_an_error():
    """A target protected with one template cannot silently switch to another."""
    buttress.protect("api", template=templates.http())

    with pytest.raises(buttress.ConfigurationError) as info:
        buttress.protect("api", template=templates.llm())

    assert "target 'api' is already protected with different policies" in str(info.value)


def test_pipelines_from_one_template_share_no_state():
    """Two targets built from the same PolicySet get their own breaker, budget and bulkhead."""
    policies = templates.http()
    first = buttress.protect("a", template=policies)
    second = buttress.protect("b", template=policies)

    assert (False, False, False) == (
        first.breaker is second.breaker,
        first.retry.budget is second.retry.budget,
        first.bulkhead is second.bulkhead,
    )
