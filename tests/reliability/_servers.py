"""Local servers for the load and soak tests: faults that cycle, and an asyncio HTTP server.

:class:`Faults` is a :class:`~tests.support.fault_server.FaultServer` step that answers ``ok``
while switched off and, while on, cycles through a fixed mix of faults (503s, a slow answer, a
reset, a dropped connection), so a steady load meets each of them at a steady rate.
:class:`AsyncServer` is a small HTTP/1.1 keep-alive server on its own event loop in a thread of
its own, for asyncio clients by the thousand (FaultServer holds a thread per connection); it
has the same switchable mix, chosen per request.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from tests.support.fault_server import HOST, Exchange, Step, delay, drop, ok, reset, status

SLOW = 0.3
"""Seconds a slow answer takes: past the attempt timeouts the load and soak pipelines use."""


class Faults(Step):
    """``ok`` while :attr:`on` is false; while true, each request gets the next step of *mix*."""

    def __init__(self, mix: Sequence[Step] | None = None, on: bool = True) -> None:
        self.mix = tuple(mix) if mix is not None else default_mix()
        self.on = on
        self._next = itertools.count()
        self._lock = threading.Lock()

    def run(self, exchange: Exchange) -> bool:
        """Answer as the switch and the mix say."""
        if not self.on:
            return ok().run(exchange)
        with self._lock:
            n = next(self._next)
        return self.mix[n % len(self.mix)].run(exchange)


LOAD_MIX = "ouosocouoo"
"""Four faults in ten answers (letters as in :class:`AsyncServer`): the retries hide most."""
SOAK_MIXES = (("ouocoouoso", "ouosoouoso"), ("uuucuuuusu", "uuuusuuuus"))
"""The soak's fault periods take turns, as (sync server's mix, async server's mix): a flaky
one (four faults in ten: retries, exhausted retries, fallbacks; breakers stay closed) and an
outage (every answer a fault: breakers open, probe and close again once it is over). The async
server never drops a connection here: aiohttp resends on a dropped pooled connection, and which
error it ends with then depends on timing."""


def steps(mix: str) -> tuple[Step, ...]:
    """A mix of letters (as in :class:`AsyncServer`) as FaultServer steps; ``c`` is a reset."""
    answer = {"o": ok(), "u": status(503), "s": delay(SLOW), "c": reset(), "d": drop()}
    return tuple(answer[letter] for letter in mix)


def default_mix() -> tuple[Step, ...]:
    """:data:`LOAD_MIX` as FaultServer steps."""
    return steps(LOAD_MIX)


_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
_UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy"


class AsyncServer:
    """An HTTP/1.1 server on 127.0.0.1 for asyncio clients, on an event loop in its own thread.

    Every request is answered ``200 ok``, or, while :attr:`faulty` is true or on a path that
    starts with ``/flaky``, by the next answer of *mix*, one letter per answer: ``o`` ok, ``u``
    503 (unavailable), ``s`` slow, ``c`` the connection closed without an answer.
    :attr:`requests` counts the requests read.
    """

    def __init__(self, mix: str = LOAD_MIX) -> None:
        self.mix = mix
        self.faulty = False
        self.requests = 0
        self._next = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None
        self.port = 0
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://{HOST}:{self.port}"

    def start(self) -> Self:
        """Start serving; returns once the port is bound."""
        self._thread = threading.Thread(target=self._main, name="async-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("AsyncServer did not start")
        return self

    def stop(self) -> None:
        """Stop serving and close every connection."""
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self._server = await asyncio.start_server(self._handle, HOST, 0, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        async with self._server:
            await self._stopped.wait()
            self._server.close()
            for writer in list(self._writers):
                writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                self.requests += 1  # one loop: no other thread writes it
                path = head.split(b" ", 2)[1]
                if self.faulty or path.startswith(b"/flaky"):
                    answer = self.mix[next(self._next) % len(self.mix)]
                    if answer == "u":
                        writer.write(_UNAVAILABLE)
                    elif answer == "s":
                        await asyncio.sleep(SLOW)
                        writer.write(_OK)
                    elif answer == "c":
                        return  # closed without an answer
                    else:
                        writer.write(_OK)
                else:
                    writer.write(_OK)
                await writer.drain()
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
            ValueError,
        ):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
