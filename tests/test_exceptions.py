"""buttress's errors survive pickling: process pools and task queues carry exceptions that way."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import pickle

import pytest
import requests

import buttress
from buttress.integrations._base import compatible

ERRORS = [
    buttress.CircuitOpenError(
        "circuit for target 'a:1' is open", target="a:1", retry_after=2.5, last_status=503
    ),
    buttress.BulkheadFullError("bulkhead full", target="a:1", reason="queue_timeout"),
    buttress.RateLimitedError("no token", target="a:1", retry_after=0.1),
    buttress.RetryBudgetExhaustedError("budget spent", target="a:1"),
    buttress.TimeoutError("attempt timeout", target="a:1", timeout=1.0, scope="attempt"),
]


def _same(a: BaseException, b: BaseException) -> bool:
    return type(a) is type(b) and a.args == b.args and a.__dict__ == b.__dict__


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_our_errors_round_trip(error: buttress.ResilienceError) -> None:
    assert _same(pickle.loads(pickle.dumps(error)), error)


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_library_compatible_errors_round_trip(error: buttress.ResilienceError) -> None:
    library = requests.Timeout if isinstance(error, TimeoutError) else requests.ConnectionError
    mixed = compatible(error, library)
    back = pickle.loads(pickle.dumps(mixed))
    assert _same(back, mixed)
    assert isinstance(back, type(error))
    assert isinstance(back, library)  # existing `except requests...` clauses still catch it
    assert str(back) == str(error)


def test_circuit_open_error_carries_the_last_upstream_status() -> None:
    """last_status is keyword-only, None by default, and survives pickling and mixing."""
    plain = buttress.CircuitOpenError("open", target="a:1")
    with_status = buttress.CircuitOpenError("open", target="a:1", last_status=503)
    mixed = pickle.loads(pickle.dumps(compatible(with_status, requests.ConnectionError)))

    assert (None, 503, 503, ("open",), "open") == (
        plain.last_status,
        with_status.last_status,
        mixed.last_status,
        with_status.args,
        str(with_status),
    )
    with pytest.raises(TypeError):
        buttress.CircuitOpenError("open", "a:1", None, None, 503)  # type: ignore[misc]


# Run by exec() in the worker: the test module itself is not importable there.
REJECT_IN_CHILD = """
import buttress, requests
from buttress.integrations._base import compatible
error = buttress.CircuitOpenError("circuit for target 'a:1' is open", target="a:1")
raise compatible(error, requests.ConnectionError)
"""


def test_a_rejection_raised_in_a_worker_process_reaches_the_parent() -> None:
    # A fresh interpreter ("spawn"): the mixed class is rebuilt there and back here by name.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        future = pool.submit(exec, REJECT_IN_CHILD, {})
        with pytest.raises(requests.ConnectionError) as caught:
            future.result(timeout=60)
    assert isinstance(caught.value, buttress.CircuitOpenError)
    assert caught.value.target == "a:1"
    assert caught.value.reason == "circuit_open"
