"""
The fault matrix (issue 14): HTTP, PostgreSQL and LLM calls of an unmodified app under every fault.

The app (``fault_app.py``) runs in a child process with ``BUTTRESS_ENABLED=true`` and a
configuration file only (2 attempts, a breaker that opens on 3 failures in a row for 0.8 s and
closes after one good probe), as users meet buttress. Every client gets a target of its own
behind a :class:`~tests.reliability.faults.FaultProxy`, for every fault:

- refused, reset mid-response, slow headers, slow body, a 5xx burst, a 429 storm with
  ``Retry-After``, the server killed mid-call, and the reply lost after the server did the work
  (for PostgreSQL: after it committed);

and the test checks, counting at the server:

- the host keeps running: every call comes back, and the app exits 0 without a traceback;
- every outcome is a documented one: a response (the real one, or the one buttress makes for an
  open breaker, marked ``x-buttress-rejected``), or the client library's own exception (a
  rejection by buttress is also the library's documented connection error);
- the breaker opens after the configured failures (nothing reaches the server while it is open)
  and closes after its open duration once the fault is gone; where a failure is documented not
  to count (a 429, a body aiohttp reads after the call returned, a slow but successful
  statement, a stream that failed after its first chunk), it stays closed;
- a non-idempotent request (a POST, an INSERT, a COMMIT, a completion the app chose not to
  retry, a stream already delivering) reaches the server at most once, and a retried one no
  more often than the configured attempts.
"""

from __future__ import annotations

import math
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.reliability.faults import (
    ATTEMPTS,
    CONFIG,
    OPEN_DURATION,
    TRIP_AFTER,
    Cell,
    Fault,
    FaultProxy,
    Host,
    Outcome,
    Tally,
    host,
    pg_error,
)
from tests.reliability.figures import record, scale
from tests.support.fake_llm import OPENAI_CHAT, FakeLLM, error, rate_limited, reply, stream
from tests.support.fault_server import (
    FaultServer,
    Step,
    delay,
    drop,
    ok,
    reset_mid_body,
    retry_after,
    slow_body,
    status,
)

PART = "fault matrix"
ROUNDS = scale(1, 5)
"""Times the whole matrix of a family runs, each round on fresh targets."""
TIMEOUT = 0.15
"""The app's own read timeout in the slow cases, against a server 1 s late."""
NORMAL = 5.0
"""The app's own timeout elsewhere."""
PACE = 0.1
"""The Retry-After of the 429 storms, in seconds."""
FAULTS = (
    "refused",
    "reset mid-response",
    "slow headers",
    "slow body",
    "5xx burst",
    "429 storm",
    "killed mid-call",
    "reply lost",
)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "buttress.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the cell flow


class Scenario(ABC):
    """One client under one fault, on a target of its own."""

    def __init__(self, client: str, fault: str, tally: Tally) -> None:
        self.client = client
        self.fault = fault
        self.verdict: Cell = tally.cell(f"{client} / {fault}")
        self.tripped_at = 0.0
        self.expect_open = True
        self.marker = ""
        """The mark of the last call, for the server to tell its requests apart."""
        self.refused_markers: list[str] = []

    @property
    def where(self) -> str:
        return self.verdict.name

    @abstractmethod
    def fault_on(self) -> None:
        """Start the fault."""

    @abstractmethod
    def fault_off(self) -> None:
        """End the fault."""

    @abstractmethod
    def once(self, app: Host) -> None:
        """The non-idempotent request under the fault, counted at the server."""

    @abstractmethod
    def call(self, app: Host, *, write: bool = False) -> Outcome:
        """One request (a write when *write*), with the app's own settings."""

    @abstractmethod
    def sent(self) -> int:
        """What reached the server so far: requests, or connections to the database."""

    @abstractmethod
    def documented(self, outcome: Outcome) -> bool:
        """Whether *outcome* is one the docs promise for this client."""

    def per_call(self) -> int:
        """At most this many requests reach the server per idempotent call."""
        return ATTEMPTS

    def counts_every_request(self) -> bool:
        """Whether each request the server saw under the fault was one failure to the breaker."""
        return False

    def settle(self, expected: int) -> int:
        """What reached the server, once *expected* arrived or a short wait is over."""
        return self.sent()

    def reached(self, marker: str) -> int | None:
        """Requests of the call marked *marker* the server saw; None: it cannot tell."""
        return None

    def new_marker(self) -> str:
        self.marker = uuid.uuid4().hex[:12]
        return self.marker

    def check(self, what: str, outcome: Outcome) -> None:
        self.verdict.documented(f"{self.where} {what}", outcome, allowed=self.documented(outcome))

    def after_failed_call(self, outcome: Outcome, sent: int) -> None:  # noqa: B027
        """Checks of one call under the fault that was not rejected (the 429's pacing)."""

    def trip(self, app: Host) -> None:
        """Calls under the fault until the breaker rejects one; then nothing reaches the server."""
        outcomes: list[str] = []
        rejected: Outcome | None = None
        for _ in range(6 if self.expect_open else 3):
            before = self.sent()
            outcome = self.call(app)
            sent = self.reached(self.marker)
            if sent is None:
                sent = self.sent() - before
            outcomes.append(outcome.short())
            self.check("call", outcome)
            if outcome.circuit_open:
                rejected = outcome
                self.tripped_at = time.monotonic()
                self.refused_markers.append(self.marker)
                if sent:
                    self.verdict.problem(self.where, "a rejected call reached the server")
                self.check_retry_after(outcome)
                # A request the client gave up on may be read by a starved server a bit later.
                if self.counts_every_request() and self.settle(TRIP_AFTER) != TRIP_AFTER:
                    self.verdict.breaker(
                        self.where,
                        False,
                        f"opened after {self.sent()} failed requests, not {TRIP_AFTER}",
                    )
                break
            if sent > self.per_call():
                self.verdict.problem(self.where, f"one call reached the server {sent} times")
            self.after_failed_call(outcome, sent)
        if not self.expect_open:
            self.tripped_at = time.monotonic()
            self.verdict.breaker(
                self.where, rejected is None, f"opened on failures that do not count: {outcomes}"
            )
            return
        if rejected is None:
            self.verdict.breaker(self.where, False, f"never opened: {outcomes}")
            return
        # While open, a write is refused too, and never sent.
        before = self.sent()
        outcome = self.call(app, write=True)
        self.check("write while open", outcome)
        self.refused_markers.append(self.marker)
        sent = self.reached(self.marker)
        refused = outcome.circuit_open and (
            sent == 0 if sent is not None else self.sent() == before
        )
        self.verdict.breaker(
            self.where, refused, f"opened after {outcomes}, then a write: {outcome.short()}"
        )

    def check_retry_after(self, outcome: Outcome) -> None:
        """A rejection says when to try again: the time left open (a header: whole seconds)."""
        value = outcome.retry_after
        if isinstance(value, str):
            fine = value.isdigit() and 1 <= int(value) <= math.ceil(OPEN_DURATION)
        else:
            fine = value is not None and 0 < value <= OPEN_DURATION
        if not fine:
            self.verdict.problem(self.where, f"rejection with retry_after {value!r}")

    def recover(self, app: Host) -> None:
        """Fault gone, open duration over: the probe goes through and the breaker closes."""
        self.fault_off()
        wait = self.tripped_at + OPEN_DURATION + 0.1 - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        late = [m for m in self.refused_markers if self.reached(m)]
        if late:
            self.verdict.problem(self.where, f"{len(late)} refused calls reached the server")
        results = [self.call(app) for _ in range(2)]
        for outcome in results:
            self.check("call after", outcome)
        fine = all(o.ok and o.status in (0, 200) and o.rejected is None for o in results)
        self.verdict.breaker(self.where, fine, f"did not recover: {[o.short() for o in results]}")

    def close(self) -> None:  # noqa: B027
        """Stop the servers."""


def run_matrix(app: Host, scenarios: Iterator[Scenario]) -> None:
    """Every cell's fault first, then every recovery: one open duration to wait in all."""
    started: list[Scenario] = []
    try:
        for scenario in scenarios:
            started.append(scenario)
            scenario.fault_on()
            scenario.once(app)
            scenario.trip(app)
        for scenario in started:
            scenario.recover(app)
            scenario.verdict.close()
    finally:
        for scenario in started:
            scenario.close()


def finish(app: Host, tally: Tally) -> None:
    """The host ran to the end: its threads did not pile up, exit 0, no traceback."""
    threads, fds = app.stats()
    start_threads, start_fds = app.facts["threads"], app.facts["fds"]
    grew = threads - start_threads
    record(
        PART,
        f"{tally.family}: host threads, descriptors before -> after the matrix",
        f"{start_threads} -> {threads}, {start_fds} -> {fds}",
        "threads +8 at most",
        grew <= 8,
    )
    if grew > 8:
        tally.problems.append(f"the host's threads grew from {start_threads} to {threads}")
    code = app.finish()
    if code != 0:
        tally.problems.append(f"the host app exited {code}:\n{app.stderr[-3000:]}")
    if "Traceback" in app.stderr:
        tally.problems.append(f"a traceback on the host's stderr:\n{app.stderr[-3000:]}")


def report(tally: Tally) -> None:
    """The family's figures, recorded before the assertions."""
    family = tally.family
    record(
        PART,
        f"{family}: faults survived / tried (client x fault x round)",
        f"{tally.survived}/{tally.tried}",
        "all",
        tally.survived == tally.tried and not tally.problems,
    )
    record(
        PART,
        f"{family}: outcomes undocumented / seen",
        f"{len(tally.undocumented)}/{tally.outcomes}",
        "0",
        not tally.undocumented,
    )
    record(
        PART,
        f"{family}: non-idempotent requests seen twice at the server",
        len(tally.duplicates),
        "0",
        not tally.duplicates,
    )
    record(
        PART,
        f"{family}: breaker opened, stayed closed or recovered as configured",
        f"{tally.breaker_ok}/{tally.breaker_checks}",
        "all",
        tally.breaker_ok == tally.breaker_checks,
    )


def verdict(tally: Tally) -> None:
    print("\n".join(tally.trails))  # what each cell saw, under -s
    assert not tally.problems, f"{len(tally.problems)} problems:\n" + "\n".join(tally.problems)
    assert tally.tried > 0


# --------------------------------------------------------------------------- HTTP

HTTP_CLIENTS = ("requests", "httpx", "httpx_async", "urllib3", "aiohttp")
EVERY_REQUEST_FAILS = frozenset(
    {"reset mid-response", "slow headers", "slow body", "5xx burst", "reply lost"}
)
"""Faults under which every request reaches the server and fails: the breaker opens on the
TRIP_AFTER-th request the server sees."""
HTTP_STEPS: dict[str, Step] = {
    "reset mid-response": reset_mid_body(b"partial", declared_length=100),
    "slow headers": delay(1.0, ok()),
    "slow body": slow_body([b"a", b"b", b"c"], interval=1.0),
    "5xx burst": status(503),
    "429 storm": retry_after(429, seconds=PACE),
    "killed mid-call": delay(5.0, ok()),
    "reply lost": drop(),
}


class HttpScenario(Scenario):
    """A client of the family behind a proxy in front of a FaultServer."""

    def __init__(
        self, client: str, fault: str, tally: Tally, *, app_timeout: float | None = None
    ) -> None:
        super().__init__(client, fault, tally)
        self.server: FaultServer = self.make_server().start()
        self.proxy = FaultProxy(self.server.port)
        self.url = f"http://127.0.0.1:{self.proxy.port}"
        if app_timeout is None:
            app_timeout = TIMEOUT if fault.startswith("slow") else NORMAL
        self.timeout = app_timeout
        self.steps = dict(HTTP_STEPS)
        self.healthy: Step = ok()
        self.post_path = "/orders/"

    def make_server(self) -> FaultServer:
        return FaultServer()

    def fault_on(self) -> None:
        if self.fault == "refused":
            self.proxy.refuse()
        else:
            self.server.default = self.steps[self.fault]

    def fault_off(self) -> None:
        self.server.default = self.healthy
        self.proxy.restore()

    def sent(self) -> int:
        return self.server.count()

    def settle(self, expected: int) -> int:
        self.server.wait_for(expected, timeout=2.0)
        return self.sent()

    def command(self, method: str, path: str) -> dict[str, Any]:
        return {
            "op": "http",
            "client": self.client,
            "method": method,
            "url": self.url + path,
            "timeout": self.timeout,
        }

    def call(self, app: Host, *, write: bool = False) -> Outcome:
        path = f"/items?call={self.new_marker()}"
        return app.call(self.command("POST" if write else "GET", path))

    def reached(self, marker: str) -> int | None:
        return sum(1 for r in self.server.requests if r.query == f"call={marker}")

    def documented(self, outcome: Outcome) -> bool:
        if outcome.ok:
            return outcome.rejected in (None, "circuit_open")
        return outcome.library

    def counts_every_request(self) -> bool:
        # aiohttp resends some requests by itself, inside one attempt.
        return self.expect_open and self.fault in EVERY_REQUEST_FAILS and self.client != "aiohttp"

    def per_call(self) -> int:
        # aiohttp resends an idempotent request once by itself on a reset (integrations.md).
        return ATTEMPTS * (2 if self.client == "aiohttp" else 1)

    def once(self, app: Host) -> None:
        path = f"/orders/{uuid.uuid4().hex[:8]}"
        if self.fault == "killed mid-call":
            app.send(self.command("POST", path))
            arrived = self.server.wait_for(1, path, timeout=10)
            self.proxy.kill()  # the server dies with the POST in its hands
            outcome = app.result()
            if not arrived:
                self.verdict.problem(self.where, "the POST never reached the server")
        else:
            outcome = app.call(self.command("POST", path))
        self.check("POST", outcome)
        seen = self.server.count(path)
        self.verdict.at_most_once(f"{self.where} POST", seen)
        if self.fault == "429 storm":
            # Retry-After paces idempotent requests only: the POST gets the real 429, once.
            if outcome.status != 429 or seen != 1:
                self.verdict.problem(self.where, f"POST under 429s: {outcome.short()}, {seen}")
        elif outcome.ok and outcome.status == 200:
            self.verdict.problem(self.where, f"POST succeeded under the fault: {outcome.short()}")

    def after_failed_call(self, outcome: Outcome, sent: int) -> None:
        if self.fault != "429 storm":
            return
        mark = f"call={self.marker}"
        times = [r.received_at for r in self.server.requests if r.query == mark]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        paced = sent == ATTEMPTS and all(gap >= PACE * 0.9 for gap in gaps)
        if outcome.status != 429 or not paced:
            self.verdict.problem(
                self.where, f"429 storm: {outcome.short()}, {sent} requests, gaps {gaps}"
            )

    def close(self) -> None:
        self.proxy.close()
        self.server.stop()
        if self.server.errors:
            self.verdict.problem(self.where, f"the server failed: {self.server.errors}")


def http_scenarios(tally: Tally) -> Iterator[Scenario]:
    for fault in FAULTS:
        for client in HTTP_CLIENTS:
            scenario = HttpScenario(client, fault, tally)
            # A 429 paces, it is not a failure; aiohttp returns before the body is read, so a
            # body fault is the app's to see (integrations.md).
            scenario.expect_open = fault != "429 storm" and not (
                client == "aiohttp" and fault in ("reset mid-response", "slow body")
            )
            yield scenario


@pytest.mark.timeout(scale(150, 1800))
def test_http_fault_matrix(config: Path) -> None:
    """requests, httpx (sync and async), urllib3 and aiohttp under every fault."""
    tally = Tally("HTTP")
    with host("http", config) as app:
        assert app.facts["buttress"], "buttress did not start in the host app"
        for _ in range(ROUNDS):
            run_matrix(app, http_scenarios(tally))
        finish(app, tally)
    report(tally)
    verdict(tally)


BURST = 8
"""Callers at once when the breaker turns half-open."""


@pytest.mark.timeout(scale(60, 600))
def test_half_open_admits_one_probe_among_concurrent_callers(config: Path) -> None:
    """
    The breaker's open time ends while 8 threads (or tasks) call at once, and the dependency is
    back but slow: exactly ``half_open_calls`` (1) probe reaches the server, the 7 others get
    the open breaker's answer at once; after the probe, all 8 go through.
    """
    tally = Tally("HTTP half-open")
    probes: list[int] = []
    with host("http", config) as app:
        assert app.facts["buttress"], "buttress did not start in the host app"
        for _ in range(ROUNDS):
            clients = scale(("requests", "httpx_async"), HTTP_CLIENTS)  # threads, tasks
            scenarios = [HttpScenario(client, "5xx burst", tally) for client in clients]
            try:
                for scenario in scenarios:
                    scenario.fault_on()
                    scenario.trip(app)
                    scenario.server.default = delay(0.5, ok())  # back, slowly
                for scenario in scenarios:
                    wait = scenario.tripped_at + OPEN_DURATION + 0.1 - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    for phase in ("half-open", "closed"):
                        before = scenario.sent()
                        command = {**scenario.command("GET", "/items"), "op": "burst"}
                        burst = [Outcome.of(r) for r in app.call({**command, "count": BURST}).burst]
                        reached = scenario.sent() - before
                        for outcome in burst:
                            scenario.check(f"{phase} burst", outcome)
                        passed = sum(o.ok and o.status == 200 and not o.rejected for o in burst)
                        refused = sum(o.circuit_open for o in burst)
                        if phase == "half-open":
                            probes.append(reached)
                            fine = reached == 1 and passed == 1 and refused == BURST - 1
                        else:
                            fine = reached == BURST and passed == BURST
                        scenario.verdict.breaker(
                            scenario.where,
                            fine,
                            f"{phase}: {reached} reached the server, {passed} passed, "
                            f"{refused} refused",
                        )
                    scenario.verdict.close()
            finally:
                for scenario in scenarios:
                    scenario.close()
        finish(app, tally)
    record(
        PART,
        f"HTTP: probes reaching the server when {BURST} callers meet a half-open breaker",
        f"max {max(probes, default=0)}, min {min(probes, default=0)}",
        "1 (half_open_calls)",
        bool(probes) and set(probes) == {1},
    )
    report(tally)
    verdict(tally)


# --------------------------------------------------------------------------- LLM


class LlmScenario(HttpScenario):
    """The openai SDK against the fake provider, one model (one target) per cell.

    ``chat``: plain completions, retried by buttress (the SDK's own retries are off);
    ``chosen``: a client built with ``max_retries=0`` (the app chose: buttress does not retry);
    ``stream``: streamed completions; ``async ...``: the same through ``AsyncOpenAI``.
    """

    def __init__(
        self, client: str, fault: str, tally: Tally, *, app_timeout: float | None = None
    ) -> None:
        super().__init__(client, fault, tally, app_timeout=app_timeout)
        self.model = f"gpt-fault-{uuid.uuid4().hex[:8]}"
        self.healthy = reply()
        self.steps.update(
            {
                "5xx burst": error(503),
                "429 storm": rate_limited(retry_after=PACE),
                "killed mid-call": delay(5.0, reply()),
            }
        )
        if client.endswith("stream"):
            self.steps["reset mid-response"] = stream(["Hel", "lo", " there"], fail_after=1)
            self.steps["slow body"] = stream(["Hello"], first_delay=1.0)

    def make_server(self) -> FaultServer:
        return FakeLLM()

    def command(self, method: str, path: str) -> dict[str, Any]:
        return {
            "op": "llm",
            "base_url": self.url + "/v1",
            "model": self.model,
            "stream": self.client in ("stream", "async stream"),
            "kind": "async" if self.client.startswith("async") else "sync",
            "timeout": self.timeout,
            "max_retries": 0 if self.client == "chosen" else None,
            "prompt": f"Hello {self.marker}",
        }

    def call(self, app: Host, *, write: bool = False) -> Outcome:
        self.new_marker()
        return app.call(self.command("POST", OPENAI_CHAT))

    def reached(self, marker: str) -> int | None:
        mark = marker.encode()
        return sum(1 for r in self.server.requests if mark in r.body)

    def documented(self, outcome: Outcome) -> bool:
        return outcome.ok or outcome.library

    def per_call(self) -> int:
        return 1 if self.client == "chosen" else ATTEMPTS

    def once(self, app: Host) -> None:
        """A completion under the fault: sent at most once where nothing may resend it."""
        before = self.sent()
        if self.fault == "killed mid-call":
            app.send(self.command("POST", OPENAI_CHAT))
            arrived = self.server.wait_for(before + 1, OPENAI_CHAT, timeout=10)
            self.proxy.kill()
            outcome = app.result()
            if not arrived:
                self.verdict.problem(self.where, "the completion never reached the server")
        else:
            outcome = app.call(self.command("POST", OPENAI_CHAT))
        self.check("completion", outcome)
        seen = self.sent() - before
        delivered = self.client.endswith("stream") and self.fault == "reset mid-response"
        if delivered and outcome.step != "stream":
            self.verdict.problem(self.where, f"the stream did not start: {outcome.short()}")
        if self.client == "chosen" or delivered:
            self.verdict.at_most_once(f"{self.where} completion", seen)
        elif seen > ATTEMPTS:
            self.verdict.problem(self.where, f"a completion was sent {seen} times")
        if self.fault == "reply lost" and self.client == "chat":
            RESENDS.append(seen)
        if outcome.ok:
            self.verdict.problem(self.where, f"completion succeeded under the fault: {outcome}")

    def after_failed_call(self, outcome: Outcome, sent: int) -> None:
        if self.fault != "429 storm" or self.client == "chosen":
            return
        mark = self.marker.encode()
        times = [r.received_at for r in self.server.requests if mark in r.body]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        paced = sent == ATTEMPTS and all(gap >= PACE * 0.9 for gap in gaps)
        if "RateLimitError" not in (outcome.error or "") or not paced:
            self.verdict.problem(
                self.where, f"429 storm: {outcome.short()}, {sent} requests, gaps {gaps}"
            )


LLM_CLIENTS = scale(
    ("chat", "chosen", "async stream"),
    ("chat", "chosen", "stream", "async chat", "async stream"),
)
"""Plain, retries chosen by the app (max_retries=0), streamed; sync and AsyncOpenAI."""
RESENDS: list[int] = []
"""Requests per plain completion whose reply was lost: retried as documented (connection error)."""


def llm_scenarios(tally: Tally) -> Iterator[Scenario]:
    for fault in FAULTS:
        for client in LLM_CLIENTS:
            scenario = LlmScenario(client, fault, tally)
            # A stream that failed after its first chunk was a successful attempt.
            scenario.expect_open = fault != "429 storm" and not (
                client.endswith("stream") and fault == "reset mid-response"
            )
            yield scenario


@pytest.mark.timeout(scale(150, 1800))
def test_llm_fault_matrix(config: Path) -> None:
    """The real openai SDK (plain, with its retries chosen by the app, streamed) under every fault."""
    tally = Tally("LLM")
    RESENDS.clear()
    with host("llm", config) as app:
        assert app.facts["buttress"], "buttress did not start in the host app"
        for _ in range(ROUNDS):
            run_matrix(app, llm_scenarios(tally))
        finish(app, tally)
    report(tally)
    record(
        PART,
        "LLM: requests per completion whose reply was lost (retried: a connection error)",
        f"max {max(RESENDS, default=0)}",
        f"<= {ATTEMPTS} attempts",
        max(RESENDS, default=0) <= ATTEMPTS,
    )
    verdict(tally)


# --------------------------------------------------------------------------- PostgreSQL

STARTING_UP = pg_error("57P03", "the database system is starting up")
ADMIN_SHUTDOWN = pg_error("57P01", "terminating connection due to administrator command")
TOO_MANY = pg_error("53300", "sorry, too many clients already")


class DbScenario(Scenario):
    """psycopg, psycopg2 or asyncpg via a proxy in front of the real PostgreSQL, one table per test.

    Each fault strikes twice: on the INSERT (or its COMMIT) of a write, after the server got it
    where the fault allows, to count the rows it left; then on every connection, to open the
    breaker (connects are retried and counted; statements run once). The database's 5xx is a
    server that is starting up (57P03, and 57P01 on the write), its 429 a server with too many
    clients (53300: PostgreSQL sends no Retry-After). asyncpg prepares a statement before it
    runs it, so a fault on its INSERT strikes the prepare and may leave no row: at most one.
    """

    def __init__(self, client: str, fault: str, tally: Tally, rows: Rows) -> None:
        super().__init__(client, fault, tally)
        self.rows = rows
        self.table = rows.table
        self.proxy = FaultProxy(PG_PORT)
        self.dsn = (
            f"postgresql://root@127.0.0.1:{self.proxy.port}/test?sslmode=disable&gssencmode=disable"
        )
        self.tags: dict[str, int] = {}
        """Tag of each write -> the most rows it may leave."""
        mark = self.table.encode()
        self.write_fault, self.trip_fault, self.action = {
            "refused": (None, None, "write"),
            "reset mid-response": (
                Fault("reset", mark),
                Fault("reset", None, keep=16),
                "write",
            ),
            "slow headers": (
                Fault("delay", mark, seconds=0.5),
                Fault("delay", None, seconds=0.3),
                "write",
            ),
            "slow body": (
                Fault("trickle", mark, keep=4, seconds=0.05),
                Fault("trickle", None, keep=128, seconds=0.05),
                "write",
            ),
            "5xx burst": (
                Fault("answer", mark, reply=ADMIN_SHUTDOWN),
                Fault("answer", None, reply=STARTING_UP),
                "write",
            ),
            "429 storm": (
                Fault("answer", None, reply=TOO_MANY),
                Fault("answer", None, reply=TOO_MANY),
                "write",
            ),
            "killed mid-call": (Fault("watch", mark), None, "write"),
            "reply lost": (
                Fault("swallow", b"COMMIT"),
                Fault("swallow", None),
                "write_txn",
            ),
        }[fault]
        self.expect_open = not fault.startswith("slow")

    def fault_on(self) -> None:
        if self.trip_fault is None:
            self.proxy.refuse()
        else:
            self.proxy.set(self.trip_fault)

    def fault_off(self) -> None:
        self.proxy.restore()

    def sent(self) -> int:
        return self.proxy.accepted

    def command(self, action: str, tag: str = "", sleep: float = 0.0) -> dict[str, Any]:
        return {
            "op": "db",
            "driver": self.client,
            "dsn": self.dsn,
            "action": action,
            "table": self.table,
            "tag": tag,
            "sleep": sleep,
        }

    def tag(self, most: int) -> str:
        tag = uuid.uuid4().hex[:12]
        self.tags[tag] = most
        return tag

    def call(self, app: Host, *, write: bool = False) -> Outcome:
        if write:  # refused while the breaker is open: it may leave no row
            return app.call(self.command("write", self.tag(0)))
        return app.call(self.command("read"))

    def documented(self, outcome: Outcome) -> bool:
        return outcome.ok or outcome.library

    def once(self, app: Host) -> None:
        """A write under the fault; its rows are counted in :meth:`recover`."""
        tag = self.tag(1)
        if self.fault == "refused":
            outcome = app.call(self.command("write", tag))
        elif self.fault == "killed mid-call":
            assert self.write_fault is not None
            self.proxy.restore()
            self.proxy.set(self.write_fault)
            app.send(self.command("write", tag, sleep=0.5))
            if not self.proxy.fired_event.wait(10):
                self.verdict.problem(self.where, "the INSERT never reached the server")
            time.sleep(0.1)
            self.proxy.kill()  # the server dies while the INSERT runs
            outcome = app.result()
        else:
            assert self.write_fault is not None
            self.proxy.set(self.write_fault)
            outcome = app.call(self.command(self.action, tag))
            if not self.proxy.fired:
                self.verdict.problem(self.where, "the fault never fired on the write")
            self.fault_on()
        self.check("write", outcome)
        if outcome.ok != self.fault.startswith("slow"):
            self.verdict.problem(self.where, f"write: {outcome.short()}")

    def recover(self, app: Host) -> None:
        super().recover(app)
        counts = self.rows.counts()
        for tag, most in self.tags.items():
            self.verdict.at_most_once(f"{self.where} write", counts.get(tag, 0), most)

    def close(self) -> None:
        self.proxy.close()


class Rows:
    """A table of its own, and the rows each write left in it, counted on a connection that
    buttress never sees."""

    def __init__(self) -> None:
        from tests.integrations.db.pg import Admin  # noqa: PLC0415 - only when PostgreSQL runs

        self.admin = Admin()
        self.table = f"buttress_faults_{uuid.uuid4().hex[:12]}"
        self.admin.run(f"CREATE TABLE {self.table} (tag text NOT NULL)")

    def counts(self) -> dict[str, int]:
        rows = self.admin.run(f"SELECT tag, count(*) FROM {self.table} GROUP BY tag")
        return {str(tag): int(n) for tag, n in rows}

    def drop(self) -> None:
        self.admin.run(f"DROP TABLE IF EXISTS {self.table}")
        self.admin.close()


PG_PORT = 5432
DB_DRIVERS = scale(("psycopg", "asyncpg"), ("psycopg", "psycopg2", "asyncpg"))
"""psycopg2 runs on the same libpq as psycopg: the short size leaves it to the long one."""


def db_scenarios(tally: Tally, rows: Rows) -> Iterator[Scenario]:
    for fault in FAULTS:
        for driver in DB_DRIVERS:
            yield DbScenario(driver, fault, tally, rows)


@pytest.mark.timeout(scale(150, 1800))
def test_postgresql_fault_matrix(config: Path) -> None:
    """psycopg, asyncpg (and psycopg2 in the long size) against the real PostgreSQL, via the proxy."""
    from tests.integrations.db.pg import unreachable  # noqa: PLC0415

    reason = unreachable()
    if reason is not None:
        pytest.skip(reason)
    rows = Rows()
    tally = Tally("PostgreSQL")
    try:
        with host("db", config) as app:
            assert app.facts["buttress"], "buttress did not start in the host app"
            for _ in range(ROUNDS):
                run_matrix(app, db_scenarios(tally, rows))
            finish(app, tally)
        total = sum(rows.counts().values())
    finally:
        rows.drop()
    report(tally)
    record(PART, "PostgreSQL: rows written under the faults", total)
    verdict(tally)


# --------------------------------------------------------------------------- buttress's timeouts


@pytest.mark.timeout(scale(120, 1800))
def test_slow_servers_under_buttress_attempt_timeout(config: Path) -> None:
    """
    The slow faults again, with the app's own timeouts long (5 s) and buttress's attempt
    timeout short (``BUTTRESS_TIMEOUT_ATTEMPT=0.15``): buttress ends the attempts (async ones
    are cancelled in the middle of the client's read), the app gets its library's timeout
    error, the breaker opens, and the clients' connection pools still work afterwards.
    """
    tally = Tally("HTTP+LLM, buttress attempt timeout")

    def scenarios() -> Iterator[Scenario]:
        for fault in ("slow headers", "slow body"):
            # Short: the clients whose attempts buttress cancels (asyncio).
            for client in scale(("httpx_async", "aiohttp"), HTTP_CLIENTS):
                scenario = HttpScenario(client, fault, tally, app_timeout=NORMAL)
                # aiohttp reads the body after the call returned: no attempt timeout applies.
                scenario.expect_open = not (client == "aiohttp" and fault == "slow body")
                yield scenario
            for client in scale(("stream",), ("chat", "chosen", "stream")):
                yield LlmScenario(client, fault, tally, app_timeout=NORMAL)

    with host("http+llm", config, {"BUTTRESS_TIMEOUT_ATTEMPT": "0.15"}) as app:
        assert app.facts["buttress"], "buttress did not start in the host app"
        for _ in range(ROUNDS):
            run_matrix(app, scenarios())
        finish(app, tally)
    report(tally)
    verdict(tally)
