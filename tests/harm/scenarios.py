"""The rows of the harm matrix: what each scenario runs, measures and calls harm.

Each scenario runs one unmodified app (``tests/harm/apps``) in one mode at a time against its
own servers (its own fault server, fake provider, table or key prefix), so the three modes of a
row can run at once. :meth:`Scenario.measure` returns a :class:`Cell`:

- ``facts``: what the app and the servers saw, compared **exactly** between modes (statuses,
  exception types, request counts at the server, rows, session settings);
- ``elapsed``: seconds as the app measured them around its calls (start-up is left out);
- ``notes``: measurements that are only meaningful with buttress on (breaker state, health
  endpoint), never compared with the disabled mode;
- ``summary``: the table cell.

:meth:`Scenario.expect` holds the row's own rules: what the disabled run must show for the
scenario to test anything (a broken baseline is a harness failure, not harm), and what "equal
or better" means for the enabled mode. The rules shared by every row (observe equals disabled,
no crash, no traceback from buttress) are in :mod:`tests.harm.matrix`.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harm.runner import Child, Run, mode_env
from tests.support.fake_llm import OPENAI_CHAT, FakeLLM, rate_limited, reply
from tests.support.fault_server import FaultServer, Step, delay, ok, refused_url, status

__all__ = ["SCENARIOS", "Cell", "Judge", "Scenario"]

PG = {"host": "127.0.0.1", "port": "5432", "dbname": "test", "user": "postgres"}
REDIS = {"host": "127.0.0.1", "port": "6379", "db": "13"}

SLACK = 3.0
"""Seconds any mode may lose to a loaded machine before "not slower" fails."""


def not_slower(seconds: float, baseline: float) -> bool:
    """Generous on purpose: the suite runs on a noisy 2-core machine next to other tests."""
    return seconds <= baseline * 1.5 + SLACK


def short(outcome: str) -> str:
    """``requests.exceptions.ConnectionError`` -> ``ConnectionError``; statuses stay."""
    return outcome.rsplit(".", 1)[-1]


def outcomes_text(outcomes: Sequence[str]) -> str:
    """``503×12 ConnectionError×18``: each distinct outcome once, in order of appearance."""
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[short(outcome)] = counts.get(short(outcome), 0) + 1
    return " ".join(name if n == 1 else f"{name}×{n}" for name, n in counts.items())


def seconds_text(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 100 else f"{seconds:.0f} s"


def unfinished(run: Run) -> str:
    """The cell of a child that printed no result."""
    return f"killed at {run.wall:.0f} s" if run.killed else f"no result (exit {run.returncode})"


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> tuple[int | None, str]:
    """Status and body of a GET, or (None, the error's type) if nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        with contextlib.closing(exc):
            return int(exc.code), exc.read().decode()
    except OSError as exc:
        return None, type(exc).__name__


@dataclass
class Cell:
    """One mode of one scenario, measured."""

    mode: str
    runs: list[Run]
    facts: dict[str, Any]
    elapsed: float | None
    summary: str
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Every run printed a result (the facts are whole)."""
        return all(run.result is not None for run in self.runs)


@dataclass
class Judge:
    """Collects one row's findings: harm (buttress made things worse) or a broken harness."""

    harms: list[str] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)

    def harm(self, reason: str) -> None:
        self.harms.append(reason)

    def baseline(self, ok: bool, reason: str) -> None:
        """A rule about the disabled run: if it fails, the scenario tests nothing."""
        if not ok:
            self.broken.append(f"baseline: {reason}")

    def require(self, ok: bool, reason: str) -> None:
        """A rule about the enabled run: if it fails, buttress did harm."""
        if not ok:
            self.harm(reason)

    def within(self, cell: Cell, limit: float) -> None:
        """*cell*'s calls took at most *limit* seconds, as the app measured them."""
        took = seconds(cell)
        self.require(took <= limit, f"{cell.mode}: {took:.1f} s > {limit:g} s")

    def not_slower(self, cell: Cell, baseline: Cell) -> None:
        """*cell* took no longer than *baseline*, within :func:`not_slower`'s bound."""
        took, before = seconds(cell), seconds(baseline)
        self.require(
            not_slower(took, before),
            f"{cell.mode}: {took:.1f} s, slower than disabled's {before:.1f} s",
        )


def seconds(cell: Cell) -> float:
    """The app's own measure of its calls (a cell without a result took forever)."""
    return cell.elapsed if cell.elapsed is not None else math.inf


class Scenario(ABC):
    """One row: an app, its servers, and what counts as equal or better."""

    name: str
    """A short id (pytest's test id)."""
    title: str
    """The row's label in the table."""
    limit: float = 30.0
    """Seconds a child may run before it is killed (a hang is harm, not a stuck suite)."""
    expected: float = 2.0
    """Rough seconds a row takes when nothing is wrong; the longest rows start first."""
    enabled_env: Mapping[str, str] = {}
    """Extra variables of the enabled and observe modes (never of the disabled mode)."""

    def setup(self, workdir: Path) -> None:  # noqa: B027 - most rows need nothing
        """Prepare what the three modes share (a config file)."""

    @abstractmethod
    def measure(self, mode: str, run_id: str) -> Cell:
        """Run the app once in *mode* against servers of its own."""

    @abstractmethod
    def expect(self, cells: Mapping[str, Cell], judge: Judge) -> None:
        """The row's own rules; only called with complete cells for every mode."""

    def child(
        self, mode: str, app: str, args: Sequence[str], label: str = "", **extra: str
    ) -> Child:
        env = mode_env(mode, {**self.enabled_env, **extra})
        return Child(mode, app, args, env, self.limit, label)


# --------------------------------------------------------------------------- HTTP (requests)


class HttpScenario(Scenario):
    """``app_http.py``: COUNT sequential requests to one scripted path of a fault server."""

    method = "GET"
    count = 1
    app_timeout = "none"

    @abstractmethod
    def steps(self) -> tuple[Step, ...]:
        """The path's script (the last step repeats)."""

    def measure(self, mode: str, run_id: str) -> Cell:
        with FaultServer() as server:
            server.script("/dependency", *self.steps())
            child = self.child(
                mode,
                "app_http.py",
                [self.method, f"{server.url}/dependency", str(self.count), self.app_timeout],
            )
            run = child.finish()
            requests = server.count("/dependency")
        return http_cell(mode, [run], requests)


def http_cell(mode: str, runs: list[Run], requests: int) -> Cell:
    run = runs[0]
    result = run.result or {}
    outcomes: list[str] = result.get("outcomes", [])
    elapsed = result.get("elapsed")
    facts = {"outcomes": result.get("outcomes"), "requests": requests}
    if run.result is None:
        summary = f"{unfinished(run)} · {requests} req"
    else:
        summary = (
            f"{outcomes_text(outcomes)} · {requests} req · {seconds_text(run.result['elapsed'])}"
        )
    return Cell(mode, runs, facts, elapsed, summary, {"families": result.get("families")})


class Transient503(HttpScenario):
    name = "transient-503"
    title = "GET: 503, 503, then 200"
    expected = 6.0

    def steps(self) -> tuple[Step, ...]:
        return (status(503), status(503), ok())

    def expect(self, cells: Mapping[str, Cell], judge: Judge) -> None:
        off, on = cells["disabled"], cells["enabled"]
        judge.baseline(off.facts == {"outcomes": ["503"], "requests": 1}, f"{off.facts}")
        judge.require(
            on.facts["outcomes"] == ["200"],
            f"enabled: the app got {on.facts['outcomes']}, expected 200 after retries",
        )
        judge.require(on.facts["requests"] == 3, f"enabled: {on.facts['requests']} req, not 3")
        judge.within(on, 10.0)


class Post503(HttpScenario):
    name = "post-503"
    title = "POST answered 503"
    method = "POST"

    def steps(self) -> tuple[Step, ...]:
        return (status(503), ok())

    def expect(self, cells: Mapping[str, Cell], judge: Judge) -> None:
        off, on = cells["disabled"], cells["enabled"]
        judge.baseline(off.facts == {"outcomes": ["503"], "requests": 1}, f"{off.facts}")
        judge.require(
            on.facts["requests"] == 1,
            f"enabled: the POST reached the server {on.facts['requests']} times",
        )
        judge.require(
            on.facts["outcomes"] == ["503"], f"enabled: the app got {on.facts['outcomes']}, not 503"
        )
        judge.not_slower(on, off)


class LongCall(HttpScenario):
    name = "long-call"
    title = "GET answered after 12 s, app timeout=20"
    app_timeout = "20"
    limit = 45.0
    expected = 13.0

    def steps(self) -> tuple[Step, ...]:
        return (delay(12.0, ok()),)

    def expect(self, cells: Mapping[str, Cell], judge: Judge) -> None:
        off, on = cells["disabled"], cells["enabled"]
        judge.baseline(off.facts == {"outcomes": ["200"], "requests": 1}, f"{off.facts}")
        judge.require(
            on.facts["outcomes"] == ["200"],
            f"enabled: the app got {on.facts['outcomes']} instead of the 200 it waited for",
        )
        judge.require(on.facts["requests"] == 1, f"enabled: {on.facts['requests']} req, not 1")
        judge.not_slower(on, off)


class AlwaysDown(HttpScenario):
    name = "always-503"
    title = "30 sequential GETs, always 503"
    count = 30
    expected = 10.0

    def steps(self) -> tuple[Step, ...]:
        return (status(503),)

    def expect(self, cells: Mapping[str, Cell], judge: Judge) -> None:
        off, on = cells["disabled"], cells["enabled"]
        judge.baseline(off.facts == {"outcomes": ["503"] * 30, "requests": 30}, f"{off.facts}")
        judge.require(on.facts["requests"] <= 45, f"enabled: {on.facts['requests']} req > 45")
        judge.within(on, 10.0)
        # Each call ends as before (503) or as the rejection shape the app already handles.
        families = on.notes["families"]
        others = {
            short(outcome)
            for outcome, family in zip(on.facts["outcomes"], families, strict=True)
            if outcome != "503" and family != "ConnectionError"
        }
        judge.require(not others, f"enabled: outcomes the app never saw before: {others}")


class Refused(Scenario):
    name = "refused-port"
    title = "GET to a refused port, timeout=5"
    expected = 8.0

    def measure(self, mode: str, run_id: str) -> Cell:
        child = self.child(mode, "app_http.py", ["GET", f"{refused_url()}/x", "1", "5"])
        run = child.finish()
        cell = http_cell(mode, [run], 0)
        cell.facts.pop("requests")  # nothing listens: there is no server to count
        cell.summary = cell.summary.replace(" · 0 req", "")
        return cell

    def expect(self, cells: Mapping[str, Cell], judge: Judge) -> None:
        off, on = cells["disabled"], cells["enabled"]
        judge.baseline(off.notes["families"] == ["ConnectionError"], f"{off.facts}")
        judge.require(
            on.notes["families"] == off.notes["families"],
            f"enabled: {on.facts['outcomes']} is not a {off.notes['families']}",
        )
        judge.within(on, 15.0)


class BusyHealthPort(Scenario):
    """Two workers started together with one BUTTRESS_HEALTH_PORT (gunicorn --workers 2)."""

    name = "busy-health-port"
    title = "2 workers, one BUTTRESS_HEALTH_PORT; 503 then 200"
    expected = 6.0
    workers = 2

    def measure(self, mode: str, run_id: str) -> Cell:
        port = str(free_port())
        with FaultServer() as server:
            paths = [f"/worker-{n}" for n in range(1, self.workers + 1)]
            for path in paths:
                server.script(path, status(503), ok())
            children = [
                self.child(
                    mode,
                    "app_http.py",
                    ["GET", f"{server.url}{path}", "1", "none", "--hold"],
                    label=f"worker {n}",
                    BUTTRESS_HEALTH_PORT=port,
                )
                for n, path in enumerate(paths, 1)
            ]
            try:
                for child in children:  # every worker is up and has its answer
                    child.checkpoint()
                health = (
                    http_get(f"http://127.0.0.1:{port}/health")[0] if mode != "disabled" else None
                )
                runs = [child.finish() for child in children]
            finally:
                for child in children:
                    child.kill()
            requests = {path: server.count(path) for path in paths}
        outcomes = {
            path: (run.result or {}).get("outcomes") for path, run in zip(paths, runs, strict=True)
        }
        facts = {"outcomes": outcomes, "requests": requests}
        elapsed = max(((run.result or {}).get("elapsed") or 0.0) for run in runs)
        parts = []
        for n, run in enumerate(runs, 1):
            shown = outcomes_text(run.result["outcomes"]) if run.result else unfinished(run)
            parts.append(f"w{n} {shown}")
        summary = f"{' '.join(parts)} · {sum(requests.values())} req · {seconds_text(elapsed)}"
        if mode != "disabled":
            summary += f" · /health {health or 'unanswered'}"
        return Cell(mode, runs, facts, elapsed, summary, {"health": health})

    def expect(self, cells: Mapping[str, Cell], judge: Judge) -> None:
        off, on = cells["disabled"], cells["enabled"]
        paths = list(off.facts["outcomes"])
        judge.baseline(
            all(
                off.facts["outcomes"][p] == ["503"] and off.facts["requests"][p] == 1 for p in paths
            ),
            f"{off.facts}",
        )
        for n, path in enumerate(paths, 1):
            judge.require(
                on.facts["outcomes"][path] == ["200"] and on.facts["requests"][path] == 2,
                f"enabled: worker {n} unprotected ({on.facts['outcomes'][path]}, "
                f"{on.facts['requests'][path]} req)",
            )
        judge.within(on, 10.0)
        for mode in ("enabled", "observe"):
            judge.require(
                cells[mode].notes["health"] is not None,
                f"{mode}: nothing answers on BUTTRESS_HEALTH_PORT",
            )


# --------------------------------------------------------------------------- LLM (openai SDK)


class OpenAI429(Scenario):
    name = "openai-429"
    title = "openai SDK: 429 (retry-after-ms) twice, then 200"
    expected = 4.0

    def measure(self, mode: str, run_id: str) -> Cell:
        with FakeLLM() as server:
            limited = rate_limited(retry_after_ms=100)
            server.script(OPENAI_CHAT, limited, limited, reply())
            run = self.child(mode, "app_openai.py", [server.openai_url]).finish()
            requests = server.count(OPENAI_CHAT)
        return http_cell(mode, [run], requests)

    def expect(self, cells: Mapping[str, Cell], judge: Judge) -> None:
        off, on = cells["disabled"], cells["enabled"]
        judge.baseline(off.facts == {"outcomes": ["ok"], "requests": 3}, f"{off.facts}")
        judge.require(
            on.facts["outcomes"] == ["ok"], f"enabled: the app got {on.facts['outcomes']}"
        )
        judge.require(on.facts["requests"] <= 3, f"enabled: {on.facts['requests']} req > 3")
        judge.within(on, 10.0)


# --------------------------------------------------------------------------- PostgreSQL


@contextlib.contextmanager
def pg_admin() -> Iterator[Any]:
    """An autocommit psycopg connection of the test itself (never through buttress)."""
    import psycopg  # noqa: PLC0415 - only the database rows need it

    conninfo = " ".join(f"{key}={value}" for key, value in PG.items())
    with psycopg.connect(conninfo, autocommit=True, application_name="harm-matrix-admin") as conn:
        yield conn


class PgSleep(Scenario):
    """``SELECT pg_sleep(7)``: longer than any database template timeout, inside a transaction."""

    expected = 8.0

    def __init__(self, driver: str) -> None:
        self.driver = driver
        self.name = f"pg-sleep-{driver}"
        self.title = f"{driver}: SELECT pg_sleep(7)"

    def measure(self, mode: str, run_id: str) -> Cell:
        args = [self.driver, PG["host"], PG["port"], PG["dbname"], PG["user"], "7"]
        run = self.child(mode, "app_pg_sleep.py", args).finish()
        result = run.result or {}
        facts = {
            "outcomes": result.get("outcomes"),
            "statement_timeout": result.get("statement_timeout"),
        }
        if run.result is None:
            summary = unfinished(run)
        else:
            summary = (
                f"{outcomes_text(result['outcomes'])} · statement_timeout="
                f"{result['statement_timeout']} · {seconds_text(result['elapsed'])}"
            )
        return Cell(mode, [run], facts, result.get("elapsed"), summary)

    def expect(self, cells: Mapping[str, Cell], judge: Judge) -> None:
        off, on = cells["disabled"], cells["enabled"]
        judge.baseline(off.facts["outcomes"] == ["ok"], f"{off.facts}")
        judge.require(
            on.facts["outcomes"] == ["ok"],
            f"enabled: pg_sleep(7) ended with {on.facts['outcomes']}",
        )
        judge.require(
            on.facts["statement_timeout"] == off.facts["statement_timeout"],
            f"enabled: the session's statement_timeout is {on.facts['statement_timeout']}, "
            f"not the server's {off.facts['statement_timeout']}",
        )
        judge.not_slower(on, off)


BREAKER_CONFIG = textwrap.dedent(
    """\
    # Harm matrix: one lost connection opens a database target's breaker for two minutes.
    [defaults.db]
    breaker.window = "count"
    breaker.window_size = 100
    breaker.minimum_calls = 1
    breaker.failure_rate_threshold = 0.01
    breaker.open_duration = 120.0
    """
)


class CommitRollback(Scenario):
    """COMMIT and ROLLBACK as statements while the target's breaker is open."""

    expected = 3.0

    def __init__(self, driver: str) -> None:
        self.driver = driver
        self.name = f"commit-{driver}"
        self.title = f"{driver}: COMMIT/ROLLBACK statements, breaker open"
        self.enabled_env = {}

    def setup(self, workdir: Path) -> None:
        config = workdir / "breaker.toml"
        config.write_text(BREAKER_CONFIG)
        self.enabled_env = {"BUTTRESS_CONFIG": str(config)}

    def measure(self, mode: str, run_id: str) -> Cell:
        table = f"harm_{run_id}_{self.driver}_{mode}"
        application = f"harm-{run_id}-{self.driver}-{mode}"
        port = str(free_port())
        with pg_admin() as admin:
            admin.execute(f"CREATE TABLE {table} (id integer)")
            try:
                args = [self.driver, *PG.values(), table, application]
                child = self.child(mode, "app_commit.py", args, BUTTRESS_HEALTH_PORT=port)
                try:
                    breaker = None
                    if child.checkpoint() is not None:
                        if mode != "disabled":
                            breaker = pg_breaker_states(port)
                        child.release()
                    rows: list[int] | None = None
                    idle = None
                    if child.checkpoint() is not None:
                        rows = [r[0] for r in admin.execute(f"SELECT id FROM {table} ORDER BY id")]
                        idle = admin.execute(
                            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                            " AND state LIKE 'idle in transaction%%'",
                            (application,),
                        ).fetchone()[0]
                        child.release()
                    run = child.finish()
                finally:
                    child.kill()
            finally:
                admin.execute(f"DROP TABLE IF EXISTS {table}")
        result = run.result or {}
        facts = {"outcomes": result.get("outcomes"), "rows": rows, "idle in transaction": idle}
        if run.result is None:
            summary = unfinished(run)
        else:
            ends = outcomes_text([run.result["outcomes"][step] for step in ("COMMIT", "ROLLBACK")])
            summary = f"COMMIT+ROLLBACK {ends} · rows {rows} · {idle} idle in tx"
        if breaker is not None:
            summary += f" · breaker {'/'.join(sorted(set(breaker.values()))) or 'none'}"
        return Cell(mode, [run], facts, result.get("elapsed"), summary, {"breaker": breaker})

    def expect(self, cells: Mapping[str, Cell], judge: Judge) -> None:
        off, on = cells["disabled"], cells["enabled"]
        expected = {
            "outcomes": {"killed session": "failed", "COMMIT": "ok", "ROLLBACK": "ok"},
            "rows": [1],
            "idle in transaction": 0,
        }
        judge.baseline(off.facts == expected, f"{off.facts}")
        states = on.notes["breaker"] or {}
        judge.baseline(
            "open" in states.values(),
            f"enabled: the breaker never opened ({states}): the scenario proves nothing",
        )
        for step, outcome in off.facts["outcomes"].items():
            theirs = on.facts["outcomes"].get(step)
            judge.require(theirs == outcome, f"enabled: {step} {theirs and short(theirs)}")
        for key in ("rows", "idle in transaction"):
            judge.require(
                on.facts[key] == off.facts[key],
                f"enabled: {key} {on.facts[key]} instead of {off.facts[key]}",
            )
        judge.not_slower(on, off)


def pg_breaker_states(port: str) -> dict[str, str] | None:
    """Breaker state per PostgreSQL target, from the child's own health endpoint."""
    code, body = http_get(f"http://127.0.0.1:{port}/targets")
    if code != 200:
        return None
    return {
        entry["target"]: str(entry["state"])
        for entry in json.loads(body)
        if entry["target"].startswith("postgresql:")
    }


# --------------------------------------------------------------------------- Redis


class RedisBlocking(Scenario):
    name = "redis-blpop"
    title = "redis: INCR×3, GET, BLPOP timeout=7, socket_timeout=20"
    expected = 8.0

    def measure(self, mode: str, run_id: str) -> Cell:
        import redis  # noqa: PLC0415 - only this row needs it

        prefix = f"harm:{run_id}:{mode}"
        client = redis.Redis(host=REDIS["host"], port=int(REDIS["port"]), db=int(REDIS["db"]))
        try:
            args = [REDIS["host"], REDIS["port"], REDIS["db"], prefix, "7", "20"]
            run = self.child(mode, "app_redis.py", args).finish()
            counter = client.get(f"{prefix}:counter")
        finally:
            client.delete(f"{prefix}:counter", f"{prefix}:empty")
            client.close()
        result = run.result or {}
        seen = counter.decode() if isinstance(counter, bytes) else counter
        facts = {"outcomes": result.get("outcomes"), "counter at the server": seen}
        if run.result is None:
            summary = unfinished(run)
        else:
            summary = (
                f"BLPOP {short(result['outcomes'][-1])} · counter {seen} · "
                f"{seconds_text(result['elapsed'])}"
            )
        return Cell(mode, [run], facts, result.get("elapsed"), summary)

    def expect(self, cells: Mapping[str, Cell], judge: Judge) -> None:
        off, on = cells["disabled"], cells["enabled"]
        judge.baseline(
            off.facts == {"outcomes": ["1", "2", "3", "3", "None"], "counter at the server": "3"},
            f"{off.facts}",
        )
        for key in off.facts:
            judge.require(
                on.facts[key] == off.facts[key],
                f"enabled: {key} {on.facts[key]} instead of {off.facts[key]}",
            )
        judge.not_slower(on, off)


SCENARIOS: tuple[Scenario, ...] = (
    Transient503(),
    OpenAI429(),
    Post503(),
    LongCall(),
    PgSleep("psycopg"),
    PgSleep("psycopg2"),
    RedisBlocking(),
    AlwaysDown(),
    Refused(),
    BusyHealthPort(),
    CommitRollback("psycopg"),
    CommitRollback("psycopg2"),
    CommitRollback("asyncpg"),
    CommitRollback("sqlalchemy"),
)


def new_run_id() -> str:
    """A short id that keeps tables, keys and application names of concurrent runs apart."""
    return f"{uuid.uuid4().hex[:8]}{int(time.time()) % 1000:03d}"
