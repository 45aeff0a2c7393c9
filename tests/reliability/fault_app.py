"""An unmodified app for the fault matrix: it makes the calls it is told to, one at a time.

    python fault_app.py FAMILY        (http, db, llm, or several joined by "+")

It never imports buttress: the test starts it with ``BUTTRESS_ENABLED=true`` and a configuration
file, as users do. Each line on stdin is one JSON command; each answer is one line
``FAULT-RESULT {json}`` saying what the call returned or raised, as the app saw it. The app keeps
its clients (a requests Session, httpx clients, a urllib3 PoolManager, an aiohttp session, openai
clients) across calls, as a long-running service does. ``{"op": "quit"}`` ends it.
"""

import asyncio
import importlib
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

FAMILY = sys.argv[1]
IMPORTS = {
    "http": ["requests", "httpx", "urllib3", "aiohttp"],
    "db": ["psycopg", "psycopg2", "asyncpg"],
    "llm": ["openai", "httpx2"],
}
MODULES = {
    name: importlib.import_module(name) for part in FAMILY.split("+") for name in IMPORTS[part]
}
LOOP = asyncio.new_event_loop()
CLIENTS: dict[Any, Any] = {}
PAYLOAD = b'{"order": 1}'


def roots(library: str) -> tuple[tuple[type, ...], tuple[type, ...]]:
    """The library's documented exceptions, and the class a rejection by buttress must be."""
    m = MODULES
    if library == "requests":
        return (m["requests"].RequestException,), (m["requests"].ConnectionError,)
    if library.startswith("httpx"):
        return (m["httpx"].HTTPError,), (m["httpx"].TransportError,)
    if library == "urllib3":
        error = m["urllib3"].exceptions.HTTPError
        return (error,), (error,)
    if library == "aiohttp":
        return (m["aiohttp"].ClientError, asyncio.TimeoutError), (
            m["aiohttp"].ClientConnectionError,
        )
    if library in ("psycopg", "psycopg2"):
        return (m[library].Error,), (m[library].OperationalError,)
    if library == "asyncpg":
        # asyncpg's own: server errors, misuse, and the network's OSError and timeouts.
        exceptions = m["asyncpg"].exceptions
        return (
            exceptions.PostgresError,
            exceptions.InterfaceError,
            OSError,
            asyncio.TimeoutError,
        ), (exceptions.ConnectionDoesNotExistError,)
    # openai: the SDK's errors; a stream cut after its first chunk raises its transport's own.
    return (m["openai"].OpenAIError, m["httpx2"].HTTPError), (m["openai"].APIConnectionError,)


def failed(exc: BaseException, library: str, step: str, start: float) -> dict[str, Any]:
    mro = [f"{c.__module__}.{c.__qualname__}" for c in type(exc).__mro__]
    documented, rejected_as = roots(library)
    own = isinstance(exc, documented)
    if "buttress.RejectedError" in mro:
        own = own and isinstance(exc, rejected_as)
    # psycopg2's error classes are C types: a buttress timeout stays buttress's own (documented).
    if library == "psycopg2" and "buttress.TimeoutError" in mro:
        own = True
    retry_after = getattr(exc, "retry_after", None)
    return {
        "ok": False,
        "retry_after": retry_after if isinstance(retry_after, (int, float)) else None,
        "error": mro[0],
        "mro": mro,
        "library": own,
        "step": step,
        "elapsed": time.monotonic() - start,
    }


def answered(status: int, headers: Any, start: float, chunks: int = 0) -> dict[str, Any]:
    return {
        "ok": True,
        "status": status,
        "rejected": headers.get("x-buttress-rejected") if headers is not None else None,
        "retry_after": headers.get("retry-after") if headers is not None else None,
        "elapsed": time.monotonic() - start,
        "chunks": chunks,
    }


# --------------------------------------------------------------------------- HTTP


async def http_async(command: dict[str, Any]) -> dict[str, Any]:
    """One request of an async client (httpx's AsyncClient, an aiohttp session)."""
    client, method, url = command["client"], command["method"], command["url"]
    limit = float(command["timeout"])
    body = PAYLOAD if method == "POST" else None
    start = time.monotonic()
    try:
        if client == "httpx_async":
            httpx = MODULES["httpx"]
            pool = CLIENTS.get(client) or CLIENTS.setdefault(client, httpx.AsyncClient())
            response = await pool.request(method, url, content=body, timeout=limit)
            return answered(response.status_code, response.headers, start)
        aiohttp = MODULES["aiohttp"]
        session = CLIENTS.get(client) or CLIENTS.setdefault(client, aiohttp.ClientSession())
        timeouts = aiohttp.ClientTimeout(total=None, sock_connect=limit, sock_read=limit)
        async with session.request(method, url, data=body, timeout=timeouts) as reply:
            await reply.read()
            return answered(reply.status, reply.headers, start)
    except Exception as exc:
        return failed(exc, client, "request", start)


def http(command: dict[str, Any]) -> dict[str, Any]:
    client, method, url = command["client"], command["method"], command["url"]
    if client in ("httpx_async", "aiohttp"):
        return LOOP.run_until_complete(http_async(command))
    timeout = float(command["timeout"])
    body = PAYLOAD if method == "POST" else None
    start = time.monotonic()
    try:
        if client == "requests":
            session = CLIENTS.get("requests") or CLIENTS.setdefault(
                "requests", MODULES["requests"].Session()
            )
            response = session.request(method, url, data=body, timeout=timeout)
            return answered(response.status_code, response.headers, start)
        if client == "httpx":
            httpx = MODULES["httpx"]
            sync = CLIENTS.get("httpx") or CLIENTS.setdefault("httpx", httpx.Client())
            response = sync.request(method, url, content=body, timeout=timeout)
            return answered(response.status_code, response.headers, start)
        urllib3 = MODULES["urllib3"]
        pool = CLIENTS.get("urllib3") or CLIENTS.setdefault("urllib3", urllib3.PoolManager())
        response = pool.request(method, url, body=body, timeout=timeout)
        return answered(response.status, response.headers, start)
    except Exception as exc:
        return failed(exc, client, "request", start)


# --------------------------------------------------------------------------- PostgreSQL


async def asyncpg_db(command: dict[str, Any], start: float) -> dict[str, Any]:
    asyncpg = MODULES["asyncpg"]
    action = command["action"]
    dsn = command["dsn"].replace("&gssencmode=disable", "")  # asyncpg has no GSS encryption
    step = "connect"
    conn = None
    try:
        conn = await asyncpg.connect(dsn)
        step = "execute"
        insert = f"INSERT INTO {command.get('table')} (tag) SELECT $1 FROM pg_sleep($2)"
        values = (command.get("tag"), float(command.get("sleep", 0.0)))
        if action == "read":
            await conn.fetchval("SELECT 1")
        elif action == "write":
            await conn.execute(insert, *values)
        else:
            transaction = conn.transaction()
            await transaction.start()
            await conn.execute(insert, *values)
            step = "commit"
            await transaction.commit()
        return answered(0, None, start)
    except Exception as exc:
        return failed(exc, "asyncpg", step, start)
    finally:
        if conn is not None:
            try:
                await conn.close(timeout=5)
            except Exception as exc:  # closing a dead connection must not fail the app
                print(f"close failed: {exc!r}", file=sys.stderr)


def db(command: dict[str, Any]) -> dict[str, Any]:
    driver, action = command["driver"], command["action"]
    if driver == "asyncpg":
        return LOOP.run_until_complete(asyncpg_db(command, time.monotonic()))
    module = MODULES[driver]
    insert = f"INSERT INTO {command.get('table')} (tag) SELECT %s FROM pg_sleep(%s)"
    values = (command.get("tag"), float(command.get("sleep", 0.0)))
    start = time.monotonic()
    step = "connect"
    conn = None
    try:
        conn = module.connect(command["dsn"])
        if action != "write_txn":
            conn.autocommit = True
        step = "execute"
        cursor = conn.cursor()
        if action == "read":
            cursor.execute("SELECT 1")
            cursor.fetchone()
        else:
            cursor.execute(insert, values)
        if action == "write_txn":
            step = "commit"
            conn.commit()
        return answered(0, None, start)
    except Exception as exc:
        return failed(exc, driver, step, start)
    finally:
        if conn is not None:
            try:
                conn.close()
            except Exception as exc:  # closing a dead connection must not fail the app
                print(f"close failed: {exc!r}", file=sys.stderr)


# --------------------------------------------------------------------------- LLM


def llm_client(command: dict[str, Any]) -> Any:
    """One client per retry choice and kind, copied per provider address (sharing its pool)."""
    openai = MODULES["openai"]
    chosen, kind = command.get("max_retries"), command.get("kind", "sync")
    base = CLIENTS.get(("openai", chosen, kind))
    if base is None:
        options: dict[str, Any] = {"api_key": "sk-fault-matrix"}
        if chosen is not None:
            options["max_retries"] = chosen
        made = openai.AsyncOpenAI(**options) if kind == "async" else openai.OpenAI(**options)
        base = CLIENTS.setdefault(("openai", chosen, kind), made)
    key = (command["base_url"], chosen, kind)
    return CLIENTS.get(key) or CLIENTS.setdefault(key, base.copy(base_url=command["base_url"]))


def llm_arguments(command: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": command["model"],
        "messages": [{"role": "user", "content": command.get("prompt", "Hello")}],
        "stream": bool(command.get("stream")),
        "timeout": float(command["timeout"]),
    }


async def llm_async(command: dict[str, Any], start: float) -> dict[str, Any]:
    step = "request"
    try:
        created = await llm_client(command).chat.completions.create(**llm_arguments(command))
        if not command.get("stream"):
            return answered(200, None, start)
        step = "stream"
        chunks = 0
        async for _ in created:
            chunks += 1
        return answered(200, None, start, chunks)
    except Exception as exc:
        return failed(exc, "openai", step, start)


def llm(command: dict[str, Any]) -> dict[str, Any]:
    start = time.monotonic()
    if command.get("kind") == "async":
        return LOOP.run_until_complete(llm_async(command, start))
    step = "request"
    try:
        created = llm_client(command).chat.completions.create(**llm_arguments(command))
        if not command.get("stream"):
            return answered(200, None, start)
        step = "stream"
        chunks = 0
        for _ in created:
            chunks += 1
        return answered(200, None, start, chunks)
    except Exception as exc:
        return failed(exc, "openai", step, start)


def burst(command: dict[str, Any]) -> dict[str, Any]:
    """``count`` GETs at once: threads for a sync client, tasks for an async one."""
    count = int(command["count"])
    single = {**command, "op": "http", "method": "GET"}
    if command["client"] in ("httpx_async", "aiohttp"):

        async def every() -> list[dict[str, Any]]:
            return await asyncio.gather(*(http_async(single) for _ in range(count)))

        results = LOOP.run_until_complete(every())
    else:
        with ThreadPoolExecutor(count) as pool:
            results = list(pool.map(lambda _: http(single), range(count)))
    return {"ok": True, "burst": results}


def stats(_: dict[str, Any]) -> dict[str, Any]:
    """The app's threads and open file descriptors now (Linux)."""
    fd_dir = Path("/proc/self/fd")
    fds = len(list(fd_dir.iterdir())) if fd_dir.is_dir() else -1
    return {"ok": True, "threads": threading.active_count(), "fds": fds}


HANDLERS = {"http": http, "db": db, "llm": llm, "burst": burst, "stats": stats}


def main() -> None:
    facts = {"buttress": "buttress" in sys.modules, **stats({})}
    print("FAULT-READY " + json.dumps(facts), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "quit":
            break
        result = HANDLERS[command["op"]](command)
        print("FAULT-RESULT " + json.dumps(result), flush=True)
    for name in ("httpx_async", "aiohttp"):
        if name in CLIENTS:
            LOOP.run_until_complete(
                CLIENTS[name].aclose() if name == "httpx_async" else CLIENTS[name].close()
            )
    LOOP.close()


main()
