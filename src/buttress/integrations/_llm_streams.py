"""
Streams: their first chunk read inside the attempt, and another SDK's stream as OpenAI chunks.

:mod:`._llm` says why a stream is retried only before its first chunk reaches the caller. The
prefetch helpers read that chunk inside the attempt, for a Stainless ``Stream`` (the object is
kept, only its iterator is swapped) or a plain iterator (google-genai).
:func:`translated_stream` does the same for a cross-SDK fallback whose stream is turned into
OpenAI ``chat.completion.chunk`` dicts. Nothing here holds state or knows a pipeline, so the SDK
wrappers and the fallback chains both use it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterable, Iterator, Mapping
from typing import Any, Protocol

__all__ = [
    "Translator",
    "aprefetch_iterator",
    "aprefetch_stream",
    "atranslated_stream",
    "prefetch_iterator",
    "prefetch_stream",
    "translated_stream",
]


def _prepend(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


async def _aprepend(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    try:
        yield first
        async for item in rest:
            yield item
    finally:
        close = getattr(rest, "aclose", None)
        if close is not None:
            await close()


async def _aempty() -> AsyncIterator[Any]:
    return
    yield  # pragma: no cover - makes this an async generator


def prefetch_iterator(iterator: Iterator[Any]) -> Iterator[Any]:
    """Read the first item of *iterator* now; an iterator that yields it, then the rest."""
    try:
        first = next(iterator)
    except StopIteration:
        return iter(())
    return _prepend(first, iterator)


async def aprefetch_iterator(iterator: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """Await the first item of *iterator* now; an async iterator that yields it, then the rest."""
    try:
        first = await iterator.__anext__()
    except StopAsyncIteration:
        return _aempty()
    return _aprepend(first, iterator)


def prefetch_stream(stream: Any) -> Any:
    """
    Read the first event of a Stainless ``Stream`` into it; returns the same stream object.

    The stream's ``_iterator`` (the one generator ``__next__`` and ``__iter__`` both read) is
    replaced by one yielding the event read here first, so the caller's type, ``response``,
    ``close()`` and context manager are the SDK's own.
    """
    iterator = getattr(stream, "_iterator", None)
    if iterator is None:  # not the shape we know: leave the stream alone
        return stream
    stream._iterator = prefetch_iterator(iterator)
    return stream


async def aprefetch_stream(stream: Any) -> Any:
    """:func:`prefetch_stream` for a Stainless ``AsyncStream``."""
    iterator = getattr(stream, "_iterator", None)
    if iterator is None:
        return stream
    stream._iterator = await aprefetch_iterator(iterator)
    return stream


class Translator(Protocol):
    """Turns the items of a provider's stream (dumped to dicts) into OpenAI chunk dicts."""

    def feed(self, item: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The chunks for one item."""
        ...

    def end(self) -> list[dict[str, Any]]:
        """The chunks after the last item."""
        ...


def _dump(item: Any) -> Any:
    dump = getattr(item, "model_dump", None)
    return dump(mode="json", exclude_none=True) if dump is not None else item


def translated_stream(items: Iterable[Any], maker: Translator) -> Iterator[dict[str, Any]]:
    """
    ``chat.completion.chunk`` dicts of an SDK's stream, by *maker*; the first one is read now.

    Reading it sends the request (inside the fallback target's pipeline), so a fallback that
    fails before its first chunk is a failed fallback; closing the result closes *items*.
    """

    def chunks() -> Generator[dict[str, Any]]:
        try:
            for item in items:
                yield from maker.feed(_dump(item))
            yield from maker.end()
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    iterator = chunks()
    try:
        first = next(iterator)
    except StopIteration:
        return iter(())

    def prefetched() -> Iterator[dict[str, Any]]:
        try:
            yield first
            yield from iterator
        finally:
            iterator.close()

    return prefetched()


async def atranslated_stream(
    items: AsyncIterator[Any], maker: Translator
) -> AsyncIterator[dict[str, Any]]:
    """:func:`translated_stream` for an async SDK stream."""

    async def chunks() -> AsyncGenerator[dict[str, Any]]:
        try:
            async for item in items:
                for chunk in maker.feed(_dump(item)):
                    yield chunk
            for chunk in maker.end():
                yield chunk
        finally:
            close = getattr(items, "aclose", None) or getattr(items, "close", None)
            if close is not None:
                await close()

    iterator = chunks()
    try:
        first = await iterator.__anext__()
    except StopAsyncIteration:
        return _aempty()

    async def prefetched() -> AsyncIterator[dict[str, Any]]:
        try:
            yield first
            async for chunk in iterator:
                yield chunk
        finally:
            await iterator.aclose()

    return prefetched()
