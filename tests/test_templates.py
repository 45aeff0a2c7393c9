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
from buttress.testing import FakeClock

TEMPLATES = [templates.http, templates.database, templates.llm]


class Response:
    """A response with a status code, as a result a retry predicate inspects."""

    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


# --- the documented values -------------------------------------------------------------------


def test_http_retry():
    """HTTP: 3 attempts, full jitter from 0.5 s to 8 s, transient errors and results, <= 60 s."""
    retry = templates.http().retry

    expected = (
        3,
        exponential(initial=0.5, max=8.0, jitter="full"),
        is_transient,
        is_transient,
        server_delay,
        60.0,
        RetryBudget(drop_floor_after=3),
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
    """HTTP: failure rate 10 % over a 30 s window (at least 100 calls) or 5 in a row, open 5 s."""
    breaker = templates.http().breaker

    expected = (0.1, "time", 30, 100, 5, 5.0, is_transient, is_transient)
    assert expected == (
        breaker.failure_rate_threshold,
        breaker.window,
        breaker.window_size,
        breaker.minimum_calls,
        breaker.consecutive_failures,
        breaker.open_duration,
        breaker.failure_on,
        breaker.failure_on_result,
    )


def test_database_retry():
    """Database: 3 attempts, exponential 50 ms to 1 s, on connection errors only."""
    retry = templates.database().retry

    expected = (
        3,
        exponential(initial=0.05, max=1.0),
        ConnectionError,
        None,
        None,
        RetryBudget(drop_floor_after=3),
    )
    assert expected == (
        retry.attempts,
        retry.backoff,
        retry.on,
        retry.on_result,
        retry.retry_after,
        retry.budget,
    )


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
    """Database: failure rate 50 % over the last 50 calls (at least 20) or 5 in a row, open 15 s."""
    breaker = templates.database().breaker

    expected = (0.5, "count", 50, 20, 5, 15.0, (ConnectionError, PolicyTimeoutError))
    assert expected == (
        breaker.failure_rate_threshold,
        breaker.window,
        breaker.window_size,
        breaker.minimum_calls,
        breaker.consecutive_failures,
        breaker.open_duration,
        breaker.failure_on,
    )


def test_llm_retry():
    """LLM: the SDKs' 3 attempts, 0.5 s doubling to 8 s, on LLM-transient errors, <= 60 s."""
    retry = templates.llm().retry

    expected = (
        3,
        exponential(initial=0.5, max=8.0, jitter="equal"),
        is_transient_llm,
        None,
        server_delay,
        60.0,
        RetryBudget(drop_floor_after=3),
    )
    assert expected == (
        retry.attempts,
        retry.backoff,
        retry.on,
        retry.on_result,
        retry.retry_after,
        retry.max_retry_after,
        retry.budget,
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
    """LLM: 50 % over 60 s (at least 10 calls) or 5 in a row, open 30 s growing x2 up to 5 min."""
    breaker = templates.llm().breaker

    expected = (0.5, "time", 60, 10, 5, 30.0, 2.0, 300.0, is_transient_llm)
    assert expected == (
        breaker.failure_rate_threshold,
        breaker.window,
        breaker.window_size,
        breaker.minimum_calls,
        breaker.consecutive_failures,
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


# --- a dead dependency and a transient one, through each template ----------------------------


class StatusError(Exception):
    """An SDK-style error carrying an HTTP status (what the llm template retries)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status_code = status


def dead_dependency(name: str) -> tuple[object, list[int]]:
    """A function that always fails the way *name*'s template counts as a failure."""
    sent: list[int] = []

    def call() -> object:
        sent.append(1)
        if name == "http":
            return Response(503)  # a returned 503: the http template's on_result
        if name == "llm":
            raise StatusError(503)
        raise ConnectionRefusedError("connection refused")

    return call, sent


@pytest.mark.parametrize("name", ["http", "database", "llm"])
def test_a_dead_dependency_called_30_times_in_a_row_is_left_alone(name):
    """
    30 sequential calls to a dependency that always fails: 5 requests, under 2 s of back-off.

    The breaker opens on the 5th failure in a row whatever its window says, and the budget
    drops its floor once every retry failed, so the second call does not retry into the trip.
    The worst-case jitter (random -> 1) bounds the waiting. Before: 120 requests for http.
    """
    clock = FakeClock()
    guard = buttress.protect(
        "dead", template=getattr(templates, name)(), clock=clock, random=lambda: 0.999
    )
    call, sent = dead_dependency(name)
    start = clock.monotonic()
    outcomes = []
    for _ in range(30):
        try:
            result = guard.call(call)
        except Exception as exc:  # noqa: BLE001 - the test sorts them
            outcomes.append(type(exc).__name__)
        else:
            outcomes.append(f"returned {result.status_code}")  # type: ignore[attr-defined]

    first = {"http": "returned 503", "llm": "StatusError", "database": "ConnectionRefusedError"}
    assert (5, [first[name]] * 2 + ["CircuitOpenError"] * 28) == (len(sent), outcomes)
    assert clock.monotonic() - start < 2.0


@pytest.mark.parametrize("name", ["http", "llm"])
def test_a_transient_failure_still_succeeds(name):
    """503, 503, then 200 on a fresh target: the third attempt's answer reaches the caller."""
    clock = FakeClock()
    guard = buttress.protect("flaky", template=getattr(templates, name)(), clock=clock)
    answers = iter([503, 503, 200])

    def call() -> Response:
        status = next(answers)
        if name == "llm" and status != 200:
            raise StatusError(status)
        return Response(status)

    assert 200 == guard.call(call).status_code


def test_the_open_breaker_reports_the_last_upstream_status():
    """The http template's open breaker carries the 503 that tripped it."""
    guard = buttress.protect("dead", template=templates.http(), clock=FakeClock())
    call, _ = dead_dependency("http")
    guard.call(call)
    guard.call(call)

    with pytest.raises(buttress.CircuitOpenError) as info:
        guard.call(call)

    assert 503 == info.value.last_status


def test_without_the_trigger_the_budget_alone_stops_retrying_every_call():
    """
    With the breaker removed, the budget still stops a slow caller retrying every call.

    Once every retry in the window failed, only 20 % of calls earn a retry: 30 calls make
    far fewer than the 90 requests three attempts each would.
    """
    clock = FakeClock()
    guard = buttress.protect("dead", template=templates.http(), breaker=None, clock=clock)
    call, sent = dead_dependency("http")
    for _ in range(30):
        guard.call(call)
        clock.advance(0.2)

    assert len(sent) <= 40
