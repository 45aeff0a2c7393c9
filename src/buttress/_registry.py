"""
The registry of named pipelines ("targets"), bounded so that label cardinality stays bounded.

A target name becomes a metric label, so the number of distinct names must not grow with the
traffic (a URL path or a user id used as a name would create a time series per request). Past
``max_targets`` names, new pipelines still work with their own policies and their own state but
report under the shared name ``other``, and a warning is logged once.

Their own state matters most where the bound is reached: a webhook sender or a crawler calls
thousands of hosts, some of them always down. Folded into one shared pipeline, a few dead hosts
would keep one breaker open for every host past the bound. The integrations' over-the-bound
pipelines are kept per name in a cache of their own (:attr:`Registry.MAX_OVERFLOW` names, then
it restarts), so memory stays bounded too; ``protect()`` hands its caller the pipeline to keep.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import _validate
from ._caches import remember
from .telemetry import _semconv

if TYPE_CHECKING:
    from ._pipeline import Pipeline

logger = logging.getLogger("buttress")

OVERFLOW_TARGET = _semconv.OVERFLOW_TARGET
DEFAULT_MAX_TARGETS = 256


class Registry:
    """
    Named pipelines, at most *max_targets* of them.

    .. versionadded:: 0.1.0
    """

    MAX_OVERFLOW = 1024
    """How many over-the-bound names keep their pipeline (and breaker state) at a time."""

    def __init__(self, max_targets: int = DEFAULT_MAX_TARGETS) -> None:
        # A forked child gets it back free: buttress._fork re-creates the locks of module-level
        # objects such as REGISTRY. The pipelines themselves are kept.
        self._lock = threading.RLock()
        self._pipelines: dict[str, Pipeline] = {}
        # Integrations' pipelines of names past the bound: they report as "other", unlisted.
        self._overflow: dict[str, Pipeline] = {}
        self._max = max_targets
        self._warned = False

    @property
    def max_targets(self) -> int:
        """The bound on distinct target names."""
        return self._max

    def set_max_targets(self, max_targets: int) -> None:
        """Change the bound (existing targets are kept)."""
        _validate.integer("Registry", "max_targets", max_targets, low=1)
        with self._lock:
            self._max = max_targets

    def get(self, name: str) -> Pipeline | None:
        """The pipeline registered under *name*, if any."""
        return self._pipelines.get(name)

    def names(self) -> list[str]:
        """Registered target names, sorted."""
        with self._lock:
            return sorted(self._pipelines)

    def pipelines(self) -> list[Pipeline]:
        """Registered pipelines, sorted by name."""
        with self._lock:
            return [self._pipelines[n] for n in sorted(self._pipelines)]

    def admit_name(self, name: str) -> str:
        """
        The name a new pipeline called *name* reports under: *name*, or ``other`` when full.

        Must be called with the lock held (see :meth:`register`).
        """
        if name in self._pipelines or len(self._pipelines) < self._max:
            return name
        if not self._warned:
            self._warned = True
            logger.warning(
                "buttress: more than %d targets; new targets report as %r. Target names must "
                "be low-cardinality (a host, a database, a provider/model), never a URL path or "
                "an argument. Raise the bound with buttress.configure(max_targets=...)",
                self._max,
                OVERFLOW_TARGET,
            )
        return OVERFLOW_TARGET

    def register(self, name: str, build: Callable[[str], Pipeline], *, replace: bool) -> Pipeline:
        """
        Build and register a pipeline for *name*; *build* receives the name to report under.

        An existing pipeline under *name* is returned when *build*'s result is equivalent to it,
        replaced when *replace* is true, and otherwise an error explains the conflict.
        """
        with self._lock:
            label = self.admit_name(name)
            pipeline = build(label)
            if label == OVERFLOW_TARGET and name != OVERFLOW_TARGET:
                return pipeline  # works, reports as "other", is not listed
            existing = self._pipelines.get(name)
            if existing is not None and not replace:
                if existing.spec == pipeline.spec:
                    return existing
                from ._exceptions import ConfigurationError  # noqa: PLC0415

                raise ConfigurationError(
                    f"protect: target {name!r} is already protected with different policies "
                    f"({existing.spec_repr()}); use another name, or pass replace=True"
                )
            self._pipelines[name] = pipeline
            return pipeline

    def get_or_create(self, name: str, build: Callable[[str], Pipeline]) -> Pipeline:
        """The pipeline for *name*, created by *build* on first use (for integrations)."""
        pipeline = self._pipelines.get(name)
        if pipeline is not None:
            return pipeline
        with self._lock:
            pipeline = self._pipelines.get(name)
            if pipeline is not None:
                return pipeline
            label = self.admit_name(name)
            if label != name:
                pipeline = self._overflow.get(name)
                if pipeline is None:
                    pipeline = remember(self._overflow, name, build(label), self.MAX_OVERFLOW)
                return pipeline
            self._overflow.pop(name, None)  # admitted since (a raised bound, a reset)
            pipeline = build(name)
            self._pipelines[name] = pipeline
            return pipeline

    def overflow_pipelines(self) -> list[Pipeline]:
        """The integrations' pipelines of names past the bound (all labelled ``other``)."""
        with self._lock:
            return list(self._overflow.values())

    def overflow(self, name: str) -> Pipeline | None:
        """The unlisted pipeline an integration uses for *name*, past the bound, if any."""
        return self._overflow.get(name)

    def remove(self, name: str) -> None:
        """Forget *name* (tests, reconfiguration)."""
        with self._lock:
            self._pipelines.pop(name, None)
            self._overflow.pop(name, None)

    def clear(self) -> None:
        """Forget every target."""
        with self._lock:
            self._pipelines.clear()
            self._overflow.clear()
            self._warned = False


REGISTRY = Registry()
