"""
httpx2: the same patches as :mod:`buttress.integrations.httpx`, on pydantic's httpx2.

The openai 3 and anthropic 2 SDKs send through httpx2; their model calls are protected by the
LLM integrations, and their other requests (files, model lists) by this one.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from .httpx import HTTPX2_INTEGRATION as INTEGRATION

__all__ = ["INTEGRATION"]
