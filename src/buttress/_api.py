"""The explicit API: :func:`protect`, and the few functions around the target registry."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import _validate
from ._clock import Clock
from ._config import CONFIG
from ._exceptions import ConfigurationError
from ._pipeline import Pipeline
from ._registry import REGISTRY
from .policies._bulkhead import Bulkhead
from .policies._cache import Cache
from .policies._circuit_breaker import CircuitBreaker
from .policies._fallback import Fallback
from .policies._rate_limit import RateLimit
from .policies._retry import Retry
from .policies._timeout import Timeout


class _Unset:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicySet:
    """
    A bundle of policies, as returned by :mod:`buttress.templates`.

    Pass it as ``protect(name, template=...)`` and override single policies by keyword
    (``None`` removes one).

    .. versionadded:: 0.1.0
    """

    retry: Retry | None = None
    breaker: CircuitBreaker | None = None
    timeout: Timeout | None = None
    bulkhead: Bulkhead | None = None
    rate_limit: RateLimit | None = None
    cache: Cache | None = None
    fallback: Fallback | None = None


def protect(
    name: str,
    *,
    template: PolicySet | None = None,
    retry: Retry | None = UNSET,
    breaker: CircuitBreaker | None = UNSET,
    timeout: Timeout | None = UNSET,
    bulkhead: Bulkhead | None = UNSET,
    rate_limit: RateLimit | None = UNSET,
    cache: Cache | None = UNSET,
    fallback: Fallback | None = UNSET,
    order: Sequence[str] | None = None,
    kind: str = "function",
    observe: bool = False,
    clock: Clock | None = None,
    random: Callable[[], float] | None = None,
    replace: bool = False,
    critical: bool = False,
    probe: Callable[[], object] | None = None,
) -> Pipeline:
    """
    Create (or fetch) the pipeline of policies for the target *name*.

    Args:
        name: The target: a low-cardinality name such as a host, a database or a
            provider/model. It labels every metric and event.
        template: Start from a :class:`PolicySet` (see :mod:`buttress.templates`).
        retry: The :class:`Retry` policy. Like every policy argument it overrides the
            template's, and ``None`` removes it.
        breaker: The :class:`CircuitBreaker`.
        timeout: The :class:`Timeout` (per attempt and total).
        bulkhead: The :class:`Bulkhead` (concurrency limit with a priority queue).
        rate_limit: The :class:`RateLimit` (token bucket).
        cache: The :class:`Cache` (LRU with TTL, and request dedup).
        fallback: The :class:`Fallback`.
        order: Override the policy order (see ``buttress._order`` for what may change).
        kind: ``function`` (default), ``http``, ``db`` or ``llm``: a metric label.
        observe: Observe mode: record and report every decision, enforce none.
        clock: Inject time (``buttress.testing.FakeClock`` in tests).
        random: Inject the jitter source, returning floats in [0, 1) (drawn once here, to check
            it does).
        replace: Replace an existing target of the same name with different policies.
        critical: The service is unhealthy when this target is (``GET /health`` answers 503).
        probe: A cheap function that exercises the dependency; :func:`buttress.probe` runs it
            through the pipeline on demand (for example after a manual reset).

    Returns:
        The pipeline; protecting the same name again with equal policies returns the same one.

    Raises:
        ConfigurationError: on a bad parameter, or on a name already protected differently.

    .. versionadded:: 0.1.0
    """
    # Checked before the registry sees the name: it is a dictionary key there.
    if not isinstance(name, str) or not name:  # type: ignore[redundant-expr]
        raise ConfigurationError(
            f"protect: name={_validate.shown(name)} is not accepted; expected a non-empty string"
        )
    if template is not None and not isinstance(template, PolicySet):
        raise ConfigurationError(
            f"protect: template={_validate.shown(template)} is not accepted; expected a "
            "buttress.PolicySet (such as buttress.templates.http()) or None"
        )
    _validate.boolean("protect", "replace", replace)
    base = template or PolicySet()

    def build(label: str) -> Pipeline:
        return Pipeline(
            name,
            retry=base.retry if retry is UNSET else retry,
            breaker=base.breaker if breaker is UNSET else breaker,
            timeout=base.timeout if timeout is UNSET else timeout,
            bulkhead=base.bulkhead if bulkhead is UNSET else bulkhead,
            rate_limit=base.rate_limit if rate_limit is UNSET else rate_limit,
            cache=base.cache if cache is UNSET else cache,
            fallback=base.fallback if fallback is UNSET else fallback,
            critical=critical,
            probe=probe,
            order=order,
            kind=kind,
            observe=observe,
            clock=clock,
            random=random,
            label=label,
        )

    return REGISTRY.register(name, build, replace=replace)


def get_target(name: str) -> Pipeline | None:
    """
    The pipeline registered as *name*, or ``None``.

    .. versionadded:: 0.1.0
    """
    return REGISTRY.get(name)


def targets() -> list[str]:
    """
    The names of every registered target, sorted.

    .. versionadded:: 0.1.0
    """
    return REGISTRY.names()


def configure(*, max_targets: int | None = None, propagate_deadlines: bool | None = None) -> None:
    """
    Process-wide settings.

    Args:
        max_targets: The bound on distinct target names (default 256); past it, new targets
            report as ``other``.
        propagate_deadlines: Publish each attempt's deadline so that :func:`buttress.remaining`
            (and client integrations) can read it. Off by default because it costs more than
            the rest of the happy path; the client integrations switch it on.

    .. versionadded:: 0.1.0
    """
    if max_targets is not None:
        _validate.integer("configure", "max_targets", max_targets, low=1)
        REGISTRY.set_max_targets(max_targets)
    if propagate_deadlines is not None:
        CONFIG.propagate_deadlines = _validate.boolean(
            "configure", "propagate_deadlines", propagate_deadlines
        )


def reset_targets() -> None:
    """
    Forget every registered target (for tests and reconfiguration).

    .. versionadded:: 0.1.0
    """
    REGISTRY.clear()
