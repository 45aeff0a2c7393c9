"""Fixtures for the LLM SDK integration tests: fake providers on 127.0.0.1, real SDKs, drivers.

Each driver makes one logical call with one SDK (sync or async) against :class:`FakeLLM`, and
returns what the caller saw. Async drivers build their client inside ``asyncio.run`` and close it
there, so no connection pool outlives its event loop.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    from tests.support.fake_llm import (
        ANTHROPIC_MESSAGES,
        GROQ_CHAT,
        OPENAI_CHAT,
        FakeLLM,
        gemini_path,
    )
except ModuleNotFoundError:  # pragma: no cover - depends on how pytest was started
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    from tests.support.fake_llm import (
        ANTHROPIC_MESSAGES,
        GROQ_CHAT,
        OPENAI_CHAT,
        FakeLLM,
        gemini_path,
    )

import anthropic
import groq
import openai
from google import genai
from google.genai import errors as genai_errors

from buttress import _activation, integrations
from buttress.integrations import _llm

CANARY_KEY = "sk-canary-9f8e7d6c5b4a39281706f5e4d3c2b1a0"
"""The API key every test client uses: it must never show up in anything buttress produces."""

LLM_CONFIG = """
[defaults.llm]
retry.attempts = 3
retry.backoff = "constant"
retry.backoff_initial = 0.01
retry.budget = false
retry.max_retry_after = 5.0
timeout.attempt = 5.0
timeout.total = 20.0
breaker.window = "count"
breaker.window_size = 100
breaker.minimum_calls = 100
"""
"""``[defaults.llm]`` for these tests: tiny back-off, no retry budget, a breaker that never trips."""

ARMED = ("openai", "anthropic", "groq", "google-genai", "httpx", "aiohttp")


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    """A started fake provider server, stopped after the test; server-side bugs fail the test."""
    with FakeLLM() as server:
        yield server
    if server.errors:
        raise AssertionError(f"the fake provider failed while serving: {server.errors!r}")


@pytest.fixture
def activate(tmp_path: Path) -> Iterator[Callable[..., None]]:
    """
    A factory: ``activate(lines, mode=...)`` switches buttress on with LLM_CONFIG.

    *lines* replace keys of LLM_CONFIG; *mode* is ``BUTTRESS_MODE`` (``enforce`` or ``observe``).
    """
    sdk_checked = _activation._sdk_checked

    def on(extra: str = "", *, mode: str = "enforce") -> None:
        _activation.deactivate()
        path = tmp_path / "buttress.toml"
        lines = {line.split("=")[0].strip(): line for line in LLM_CONFIG.strip().splitlines()}
        lines.update({line.split("=")[0].strip(): line for line in extra.strip().splitlines()})
        path.write_text("\n".join(lines.values()) + "\n")
        environ = {
            "BUTTRESS_ENABLED": "true",
            "BUTTRESS_MODE": mode,
            "BUTTRESS_CONFIG": str(path),
            "BUTTRESS_STRICT": "true",
        }
        assert True is _activation.activate(environ, owns_sdk=False)
        # Post-import hooks are registered once per process: arm the imported SDKs here, as the
        # hook does on first activation (see tests/integrations/conftest.py).
        for name in ARMED:
            integration = integrations.get(name)
            if integration is not None:
                integration.instrument()

    try:
        yield on
    finally:
        _llm.clear_fallbacks()
        _activation.deactivate()
        _activation._sdk_checked = sdk_checked
        integrations.uninstrument_all()


@pytest.fixture
def activated(activate: Callable[[str], None]) -> None:
    """buttress on with LLM_CONFIG, off again afterwards."""
    activate("")


# --- drivers: one logical call with each SDK ---------------------------------------------------


class Driver:
    """One SDK, sync or async: makes one call and reports what the caller saw."""

    name = ""
    provider = ""
    model = ""
    bad_request: type[BaseException] = Exception

    def path(self, *, stream: bool = False) -> str:
        """The path the SDK posts this call to."""
        raise NotImplementedError

    @property
    def target(self) -> str:
        """The buttress target of this driver's calls."""
        return f"{self.provider}/{self.model}"

    def complete(self, server: FakeLLM, **client_options: Any) -> str:
        """One non-streaming call; the generated text."""
        raise NotImplementedError

    def stream(self, server: FakeLLM, seen: list[str], **client_options: Any) -> None:
        """One streaming call, consumed to the end; each item the caller received goes to *seen*."""
        raise NotImplementedError


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


class OpenAIDriver(Driver):
    """``openai.OpenAI().chat.completions.create``."""

    name = "openai"
    provider = "openai"
    model = "gpt-4o-mini"
    bad_request = openai.BadRequestError
    messages = [{"role": "user", "content": "Say hello"}]

    def path(self, *, stream: bool = False) -> str:
        return OPENAI_CHAT

    def client(self, server: FakeLLM, **options: Any) -> Any:
        return openai.OpenAI(api_key=CANARY_KEY, base_url=server.openai_url, **options)

    def complete(self, server, **client_options):
        with self.client(server, **client_options) as client:
            result = client.chat.completions.create(model=self.model, messages=self.messages)
            return result.choices[0].message.content

    def stream(self, server, seen, **client_options):
        with self.client(server, **client_options) as client:
            chunks = client.chat.completions.create(
                model=self.model, messages=self.messages, stream=True
            )
            for chunk in chunks:
                seen.append(chunk.choices[0].delta.content or "")


class AsyncOpenAIDriver(OpenAIDriver):
    """``openai.AsyncOpenAI().chat.completions.create``."""

    name = "openai-async"

    def client(self, server: FakeLLM, **options: Any) -> Any:
        return openai.AsyncOpenAI(api_key=CANARY_KEY, base_url=server.openai_url, **options)

    def complete(self, server, **client_options):
        async def go() -> str:
            async with self.client(server, **client_options) as client:
                result = await client.chat.completions.create(
                    model=self.model, messages=self.messages
                )
                return result.choices[0].message.content

        return _run(go())

    def stream(self, server, seen, **client_options):
        async def go() -> None:
            async with self.client(server, **client_options) as client:
                chunks = await client.chat.completions.create(
                    model=self.model, messages=self.messages, stream=True
                )
                async for chunk in chunks:
                    seen.append(chunk.choices[0].delta.content or "")

        _run(go())


class _Groq:
    """What the groq drivers share: groq speaks OpenAI's wire format under its own path."""

    provider = "groq"
    model = "llama-3.3-70b-versatile"
    bad_request = groq.BadRequestError

    def path(self, *, stream: bool = False) -> str:
        return GROQ_CHAT


class GroqDriver(_Groq, OpenAIDriver):
    """``groq.Groq().chat.completions.create``."""

    name = "groq"

    def client(self, server: FakeLLM, **options: Any) -> Any:
        return groq.Groq(api_key=CANARY_KEY, base_url=server.url, **options)


class AsyncGroqDriver(_Groq, AsyncOpenAIDriver):
    """``groq.AsyncGroq().chat.completions.create``."""

    name = "groq-async"

    def client(self, server: FakeLLM, **options: Any) -> Any:
        return groq.AsyncGroq(api_key=CANARY_KEY, base_url=server.url, **options)


class AnthropicDriver(Driver):
    """``anthropic.Anthropic().messages.create``; a stream's items are its event types."""

    name = "anthropic"
    provider = "anthropic"
    model = "claude-3-5-haiku-latest"
    bad_request = anthropic.BadRequestError
    messages = [{"role": "user", "content": "Say hello"}]

    def path(self, *, stream: bool = False) -> str:
        return ANTHROPIC_MESSAGES

    def client(self, server: FakeLLM, **options: Any) -> Any:
        return anthropic.Anthropic(api_key=CANARY_KEY, base_url=server.url, **options)

    def complete(self, server, **client_options):
        with self.client(server, **client_options) as client:
            result = client.messages.create(model=self.model, max_tokens=64, messages=self.messages)
            return result.content[0].text

    def stream(self, server, seen, **client_options):
        with self.client(server, **client_options) as client:
            events = client.messages.create(
                model=self.model, max_tokens=64, messages=self.messages, stream=True
            )
            for event in events:
                seen.append(event.type)


class AsyncAnthropicDriver(AnthropicDriver):
    """``anthropic.AsyncAnthropic().messages.create``."""

    name = "anthropic-async"

    def client(self, server: FakeLLM, **options: Any) -> Any:
        return anthropic.AsyncAnthropic(api_key=CANARY_KEY, base_url=server.url, **options)

    def complete(self, server, **client_options):
        async def go() -> str:
            async with self.client(server, **client_options) as client:
                result = await client.messages.create(
                    model=self.model, max_tokens=64, messages=self.messages
                )
                return result.content[0].text

        return _run(go())

    def stream(self, server, seen, **client_options):
        async def go() -> None:
            async with self.client(server, **client_options) as client:
                events = await client.messages.create(
                    model=self.model, max_tokens=64, messages=self.messages, stream=True
                )
                async for event in events:
                    seen.append(event.type)

        _run(go())


class GeminiDriver(Driver):
    """``genai.Client().models.generate_content``."""

    name = "gemini"
    provider = "google"
    model = "gemini-2.0-flash"
    bad_request = genai_errors.ClientError

    def path(self, *, stream: bool = False) -> str:
        return gemini_path(self.model, stream=stream)

    def client(self, server: FakeLLM, **options: Any) -> Any:
        http_options = {"base_url": server.url, **options.pop("http_options", {})}
        return genai.Client(api_key=CANARY_KEY, http_options=http_options, **options)

    def complete(self, server, **client_options):
        with self.client(server, **client_options) as client:
            return client.models.generate_content(model=self.model, contents="Say hello").text

    def stream(self, server, seen, **client_options):
        with self.client(server, **client_options) as client:
            for chunk in client.models.generate_content_stream(
                model=self.model, contents="Say hello"
            ):
                seen.append(chunk.text or "")


class AsyncGeminiDriver(GeminiDriver):
    """``genai.Client().aio.models.generate_content`` (over aiohttp)."""

    name = "gemini-async"

    def complete(self, server, **client_options):
        async def go() -> str:
            client = self.client(server, **client_options)
            try:
                result = await client.aio.models.generate_content(
                    model=self.model, contents="Say hello"
                )
                return result.text
            finally:
                await client.aio.aclose()

        return _run(go())

    def stream(self, server, seen, **client_options):
        async def go() -> None:
            client = self.client(server, **client_options)
            try:
                chunks = await client.aio.models.generate_content_stream(
                    model=self.model, contents="Say hello"
                )
                async for chunk in chunks:
                    seen.append(chunk.text or "")
            finally:
                await client.aio.aclose()

        _run(go())


DRIVERS: dict[str, type[Driver]] = {
    d.name: d
    for d in (
        OpenAIDriver,
        AsyncOpenAIDriver,
        GroqDriver,
        AsyncGroqDriver,
        AnthropicDriver,
        AsyncAnthropicDriver,
        GeminiDriver,
        AsyncGeminiDriver,
    )
}


@pytest.fixture(params=list(DRIVERS))
def sdk(request: pytest.FixtureRequest) -> Driver:
    """Each SDK, sync and async, in turn."""
    return DRIVERS[request.param]()
