"""
The host of the secrets test: started with BUTTRESS_ENABLED=true, it calls with canaries.

Run by ``test_secrets.py`` as ``python secrets_child.py OUT.json CANARIES.json``. Every client
library is used as an application would use it, with a canary credential in each place one is
kept (URL user info, query string, headers, cookies, DSNs, API keys), on successes, retried
failures, refused connections and breaker-open rejections. At the end it writes everything
buttress made visible to OUT.json: the spans (from an in-memory exporter on the global SDK
provider), the Prometheus page, the buttress and OpenTelemetry log records at DEBUG, the health
endpoint's answers, the events, and the messages of the errors the calls raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import socket
import sys
import traceback
from pathlib import Path
from typing import Any

# Imported first: the start-up hook has activated buttress already (BUTTRESS_ENABLED=true).
import buttress
from buttress import _activation
from buttress.testing import capture_events

OUT, CANARIES = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text())
C = CANARIES
HOST = "127.0.0.1"

records: list[str] = []


class Keep(logging.Handler):
    """Every record, formatted with its traceback, as a host's log file would hold it."""

    def emit(self, record: logging.LogRecord) -> None:
        records.append(f"{record.name} {record.levelname} {self.format(record)}")


keep = Keep(level=logging.DEBUG)
keep.setFormatter(logging.Formatter("%(message)s"))
for name in ("buttress", "opentelemetry"):
    logging.getLogger(name).addHandler(keep)
    logging.getLogger(name).setLevel(logging.DEBUG)

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from tests.support.fake_llm import FakeLLM, error  # noqa: E402
from tests.support.fault_server import FaultServer, delay, ok, status  # noqa: E402

spans = InMemorySpanExporter()

ours: list[str] = []
"""The messages of buttress's own errors (rejections, timeouts), and of what they carry."""
libraries: list[str] = []
"""The messages of the libraries' own errors (theirs: they may quote the URL they were given)."""


def caught(exc: BaseException) -> None:
    """File the error's text under buttress's or the library's."""
    if isinstance(exc, buttress.ResilienceError):
        texts = [str(exc), repr(exc), *(f"{k}={v!r}" for k, v in vars(exc).items())]
        texts += "".join(traceback.format_exception_only(exc)).splitlines()
        ours.extend(texts)
    else:
        libraries.append(f"{type(exc).__name__}: {exc}")
    # Notes (PEP 678) on any error are buttress's words (a retry cut short by its timeout).
    ours.extend(f"note: {note}" for note in getattr(exc, "__notes__", ()))


def attempt(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - every error is examined, none stops the host
        caught(exc)
        return None


def refused_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def http_calls(server: FaultServer) -> None:
    import aiohttp  # noqa: PLC0415
    import httpx  # noqa: PLC0415
    import requests  # noqa: PLC0415
    import urllib3  # noqa: PLC0415

    server.script("/ok", ok(b"fine"))
    server.script("/down", status(503, b"busy"))
    user = f"http://user:{C['url_password']}@{server.authority}"
    query = f"?api_key={C['query']}&q=1"
    headers = {
        "Authorization": f"Bearer {C['authorization']}",
        "x-api-key": C["x_api_key"],
        "Cookie": f"session={C['cookie']}",
    }
    dead = f"http://user:{C['url_password']}@{HOST}:{refused_port()}/x{query}"

    session = requests.Session()
    server.script("/slow", delay(1.5, ok(b"late")))
    attempt(session.get, f"{user}/slow{query}", headers=headers)  # timed out by buttress
    for path in ("/ok", "/down"):
        attempt(session.get, f"{user}{path}{query}", headers=headers, timeout=5)
        attempt(session.post, f"{user}{path}{query}", headers=headers, data=b"x", timeout=5)
    with httpx.Client(headers=headers, cookies={"session": C["cookie"]}) as client:
        for path in ("/ok", "/down"):
            attempt(client.get, f"{user}{path}{query}")
    pool = urllib3.PoolManager(headers=headers)
    for path in ("/ok", "/down"):
        attempt(pool.request, "GET", f"{user}{path}{query}")

    async def async_calls() -> None:
        async with httpx.AsyncClient(headers=headers) as client:
            try:
                await client.get(f"{user}/slow{query}")  # cut short by the attempt timeout
            except Exception as exc:  # noqa: BLE001
                caught(exc)
            for path in ("/ok", "/down"):
                with contextlib.suppress(Exception):
                    await client.get(f"{user}{path}{query}")
        # aiohttp refuses both user info and an Authorization header: one at a time.
        plain = f"http://{server.authority}"
        async with aiohttp.ClientSession(headers=headers) as session:
            for path in ("/ok", "/down"):
                try:
                    async with session.get(f"{plain}{path}{query}") as response:
                        await response.read()
                except Exception as exc:  # noqa: BLE001
                    caught(exc)
        others = {k: v for k, v in headers.items() if k != "Authorization"}
        async with aiohttp.ClientSession(headers=others) as session:
            for path in ("/ok", "/down"):
                try:
                    async with session.get(f"{user}{path}{query}") as response:
                        await response.read()
                except Exception as exc:  # noqa: BLE001
                    caught(exc)
            for _ in range(8):  # refused until the breaker opens, then rejected
                try:
                    async with session.get(dead) as response:
                        await response.read()
                except Exception as exc:  # noqa: BLE001
                    caught(exc)

    # Refused until the breaker of the dead target opens, then rejected: both messages count.
    for _ in range(8):
        attempt(session.get, dead, headers=headers, timeout=5)
        attempt(pool.request, "GET", dead, retries=False)
    asyncio.run(async_calls())


def db_calls() -> None:
    import psycopg  # noqa: PLC0415
    import psycopg2  # noqa: PLC0415
    import pymysql  # noqa: PLC0415
    import redis  # noqa: PLC0415

    pg = f"postgresql://root:{C['postgres']}@{HOST}:5432/test"  # trust: any password connects
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute("select 1")
        attempt(conn.execute, "selekt 1")
    conn2 = psycopg2.connect(pg)
    conn2.cursor().execute("select 1")
    conn2.close()
    dead_pg = f"postgresql://root:{C['postgres']}@{HOST}:{refused_port()}/test"
    for _ in range(8):
        attempt(psycopg.connect, dead_pg, connect_timeout=2)
        attempt(psycopg2.connect, dead_pg, connect_timeout=2)
    for port in (3306, refused_port()):
        for _ in range(6):
            attempt(
                pymysql.connect,
                host=HOST,
                port=port,
                user="root",
                password=C["mysql"],
                database="test",
                connect_timeout=2,
            )
    for port in (6379, refused_port()):
        client = redis.Redis.from_url(f"redis://:{C['redis']}@{HOST}:{port}/13")
        for _ in range(6):
            attempt(client.get, "buttress-secrets-canary")
        client.close()


def llm_calls() -> None:
    import anthropic  # noqa: PLC0415
    import openai  # noqa: PLC0415

    with FakeLLM() as server:
        key = C["llm_key"]
        server.script("/v1/chat/completions", error(500))
        gpt = openai.OpenAI(api_key=key, base_url=server.openai_url, max_retries=0)
        claude = anthropic.Anthropic(api_key=key, base_url=server.url, max_retries=0)
        for _ in range(2):
            attempt(
                claude.messages.create,
                model="claude-3-5-haiku-latest",
                max_tokens=8,
                messages=[{"role": "user", "content": "hi"}],
            )
        for _ in range(8):  # failing until the breaker opens, then rejected
            attempt(
                gpt.chat.completions.create,
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "hi"}],
            )
        gpt.close()
        claude.close()


def get(port: int, path: str) -> str:
    """An answer of a local server, read with http.client (which buttress does not patch)."""
    connection = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return f"{response.status} {dict(response.getheaders())} {response.read().decode()}"
    finally:
        connection.close()


def main() -> None:
    import requests  # noqa: PLC0415

    assert _activation.is_active(), "BUTTRESS_ENABLED=true did not activate buttress"
    with FaultServer() as server:
        # The first protected call sets up the SDK from the OTEL_* variables (deferred until
        # then, so that an application's own set-up comes first).
        requests.get(f"{server.url}/warm-up", timeout=5)
        provider = trace.get_tracer_provider()
        assert isinstance(provider, TracerProvider), f"zero-code set no SDK provider: {provider!r}"
        provider.add_span_processor(SimpleSpanProcessor(spans))
        tracer = provider.get_tracer("host")
        with capture_events() as events, tracer.start_as_current_span("host request"):
            http_calls(server)
            db_calls()
            llm_calls()
    health_port = int(sys.argv[3])
    prometheus_port = int(sys.argv[4])
    answers = [get(health_port, path) for path in ("/health", "/targets")]
    answers.append(json.dumps(buttress.health().to_dict()))
    metrics = get(prometheus_port, "/metrics")
    provider.force_flush()
    OUT.write_text(
        json.dumps(
            {
                "spans": [span.to_json() for span in spans.get_finished_spans()],
                "span_events": sum(len(s.events) for s in spans.get_finished_spans()),
                "metrics": metrics,
                "logs": records,
                "health": answers,
                "events": [repr(e) for e in events],
                "targets": buttress.targets(),
                "errors": ours,
                "library_errors": libraries,
            }
        )
    )


main()
