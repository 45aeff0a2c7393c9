"""
Load: threads and thousands of asyncio tasks through one shared pipeline against local servers
with faults, some tasks cancelled; exact invariants afterwards and no deadlock (issue 14).

Sync callers are real threads using requests and httpx against a FaultServer that cycles
through 503s, slow answers past the attempt timeout and resets; async callers are tasks using
aiohttp against an asyncio server with the same mix, a share of them cancelled at staggered
moments. Both share one pipeline (retry, breaker, timeouts, a bulkhead smaller than the load and
a rate limit that counts its tokens), so its state is shared by threads and an event loop at
once. Afterwards every call was counted once as what its caller saw, the bulkhead has every
slot back, every admitted call paid one token, the sync server saw exactly the attempts the
callers made, and every thread and task ended within the bound.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator

import aiohttp
import httpx
import pytest
import requests
from tests.reliability._pipelines import CALL_ID, CountingRateLimit, Ledger, Spec, violations
from tests.reliability._servers import AsyncServer, Faults
from tests.reliability._workload import in_threads, one_sync_call
from tests.reliability.figures import record, scale
from tests.support.fault_server import FaultServer

import buttress
from buttress.testing import capture_events

PART = "load"
THREADS = scale(8, 16)
CALLS_PER_THREAD = scale(150, 1500)
TASKS = scale(1000, 10_000)
CANCELLED = TASKS // 20
"""Tasks cancelled while the load runs: one in twenty."""
BOUND = scale(120.0, 900.0)
"""Seconds the whole load must end within; a caller still running then is a deadlock."""
CLIENT_TIMEOUT = 0.15
"""The sync clients' own timeout and the async attempt timeout: below the servers' slow answer."""

SPEC = Spec(
    policies=frozenset({"retry", "breaker", "timeout", "bulkhead", "rate_limit"}),
    inner=frozenset({"breaker"}),
    rate=20_000.0,
)
"""What the invariants need to know of the pipeline below."""

FAILURES = (
    requests.RequestException,
    httpx.TransportError,
    aiohttp.ClientError,
    asyncio.TimeoutError,
    ConnectionError,
)


def server_error(result: object) -> bool:
    """The retry's result predicate: a 5xx answer."""
    return isinstance(result, tuple) and result[0] >= 500  # noqa: PLR2004


def shared_pipeline() -> buttress.Pipeline:
    """The one pipeline every thread and task goes through."""
    return buttress.Pipeline(
        "load",
        retry=buttress.Retry(
            on=(*FAILURES, buttress.TimeoutError),
            attempts=3,
            backoff=buttress.constant(0.005),
            on_result=server_error,
            budget=None,
        ),
        breaker=buttress.CircuitBreaker(
            failure_rate_threshold=0.8, window_size=200, minimum_calls=200, open_duration=0.2
        ),
        timeout=buttress.Timeout(attempt=CLIENT_TIMEOUT, total=3.0),
        bulkhead=buttress.Bulkhead(
            max_concurrent=32, max_queue=TASKS + THREADS, max_wait=BOUND / 2
        ),
        rate_limit=CountingRateLimit(rate=SPEC.rate, burst=500, max_wait=1.0),
        kind="http",
    )


@pytest.fixture
def servers() -> Iterator[tuple[FaultServer, AsyncServer]]:
    """A FaultServer cycling through faults for the threads, an AsyncServer for the tasks."""
    with FaultServer(default=Faults(on=True)) as sync_server, AsyncServer() as async_server:
        async_server.faulty = True
        yield sync_server, async_server


@pytest.mark.timeout(BOUND + 60)
def test_threads_and_tasks_share_one_pipeline_under_faults_and_cancellations(
    servers: tuple[FaultServer, AsyncServer],
) -> None:
    """THREADS threads (requests, httpx) and TASKS tasks (aiohttp), some cancelled, through one
    pipeline: every invariant holds and every caller ends within the bound."""
    sync_server, async_server = servers
    pipeline = shared_pipeline()
    ledger = Ledger(expected=FAILURES)
    local = threading.local()
    clients: list[requests.Session | httpx.Client] = []
    sync_url = sync_server.url + "/load"

    def get(call: int) -> tuple[int, bytes]:
        ledger.attempt(call)
        client = getattr(local, "client", None)
        if client is None:
            index = int(threading.current_thread().name.rpartition("-")[2])
            client = local.client = requests.Session() if index % 2 else httpx.Client()
            clients.append(client)
        answer = client.get(sync_url, timeout=CLIENT_TIMEOUT)
        return answer.status_code, answer.content

    alive: list[str] = []

    def sync_callers() -> None:
        alive.extend(
            in_threads(
                THREADS,
                CALLS_PER_THREAD,
                lambda call: one_sync_call(pipeline, get, call, ledger, server_error),
                first=TASKS,
                bound=BOUND,
            )
        )

    async def async_callers() -> int:
        async with aiohttp.ClientSession(async_server.url) as session:

            async def aget(call: int) -> tuple[int, bytes]:
                ledger.attempt(call)
                async with session.get("/flaky") as answer:
                    return answer.status, await answer.read()

            async def one(call: int) -> None:
                CALL_ID.set(call)
                ledger.start()
                try:
                    result = await pipeline.acall(aget, call)
                except asyncio.CancelledError:
                    ledger.end("cancelled")
                    raise
                except Exception as exc:  # booked; the invariants judge
                    ledger.raised(exc)
                else:
                    ledger.returned(result, server_error)

            tasks = [asyncio.create_task(one(call)) for call in range(TASKS)]
            # Cancel one in twenty at staggered moments while the load runs.
            chosen = random.Random(14).sample(tasks, CANCELLED)
            for task in chosen:
                await asyncio.sleep(0.002)
                task.cancel()
            _, pending = await asyncio.wait(tasks, timeout=BOUND)
            for task in pending:
                task.cancel()
            return len(pending)

    started = time.monotonic()
    with capture_events() as events:
        helper = threading.Thread(target=sync_callers, name="sync-callers", daemon=True)
        helper.start()
        pending = asyncio.run(async_callers())
        helper.join(BOUND)
    elapsed = time.monotonic() - started
    for client in clients:
        client.close()

    problems, checked = violations(pipeline, SPEC, ledger)
    sync_calls = range(TASKS, TASKS + THREADS * CALLS_PER_THREAD)
    sync_attempts = sum(ledger.attempts[c] for c in sync_calls)
    async_attempts = sum(ledger.attempts[c] for c in range(TASKS))
    served_sync, served_async = sync_server.count(), async_server.requests
    checked += 2
    # requests and httpx never resend on their own: the server saw each attempt once. (aiohttp
    # resends a request once when a reused connection turns out closed, so its count is larger.)
    if served_sync != sync_attempts:
        problems.append(f"the sync server saw {served_sync} requests, callers made {sync_attempts}")
    if pending or alive or helper.is_alive():
        problems.append(f"still running after {BOUND:g}s: {pending} tasks, threads {alive}")

    record(PART, "threads held (requests, httpx)", THREADS, f"{THREADS}, none stuck", not alive)
    record(PART, "asyncio tasks held (aiohttp)", TASKS, f"{TASKS}, none stuck", not pending)
    record(PART, "tasks cancelled", ledger.seen["cancelled"])
    record(PART, "calls", ledger.started)
    record(PART, "outcomes", dict(pipeline.stats.by_outcome()))
    record(PART, "attempts made (sync / async)", f"{sync_attempts} / {async_attempts}")
    record(PART, "requests served (sync / async)", f"{served_sync} / {served_async}")
    decisions = Counter(type(event).__name__ for event in list(events))
    record(PART, "decisions seen (events)", dict(sorted(decisions.items())))
    record(PART, "seconds for the whole load", f"{elapsed:.1f}", f"< {BOUND:g} (no deadlock)")
    record(PART, "invariants checked", checked, "all hold", not problems)
    assert [] == problems
    assert ledger.seen["success"] > 0
    assert ledger.seen["cancelled"] > 0
