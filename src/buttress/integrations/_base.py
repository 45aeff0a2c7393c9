"""
What every integration shares: idempotent, reversible patching, and the pass-through rules.

An integration patches one client library with ``wrapt`` so that each logical call runs through
the pipeline of its target; the HTTP clients' entry points, which every request pays for, are
replaced by plain functions instead (:class:`Direct`). Every wrapper starts with
:func:`passthrough`, which is true when:

- OpenTelemetry instrumentation is suppressed (the SDK's own exporters suppress it while they
  export: an OTLP exporter's HTTP request must never be retried or counted by us);
- buttress is switched off (``buttress.testing.set_active(False)``);
- the call is already inside a buttress call of the same kind (a library built on another one,
  requests on urllib3 say, gets one pipeline per logical call, never two).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import logging
import threading
import types
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import wrapt

from .. import _activation
from .._config import CONFIG
from .._exceptions import RejectedError, mixed_class
from .._exceptions import TimeoutError as PolicyTimeoutError
from .._faults import own_fault
from .._http_signals import status_of
from .._pipeline import Pipeline
from .._registry import REGISTRY
from .._shape import APP_TIMEOUT
from .._suppression import suppressed

logger = logging.getLogger("buttress")

_inside: ContextVar[str | None] = ContextVar("buttress_inside", default=None)


def client_call(pipeline: Pipeline, fn: Callable[[], Any]) -> Any:
    """
    Run one client call through *pipeline*, keeping the client's own timeout.

    ``pipeline.call(fn)`` for a zero-code integration: its first attempt runs as the client
    would without buttress (see ``CallShape.app_timeout``).
    """
    return pipeline.shaped(APP_TIMEOUT)(fn, (), {}, 0, None)


async def client_acall(pipeline: Pipeline, fn: Callable[[], Awaitable[Any]]) -> Any:
    """:func:`client_call` for coroutine clients."""
    return await pipeline.ashaped(APP_TIMEOUT)(fn, (), {}, 0, None)


def alive_but_busy(exc: BaseException) -> bool:
    """A 429: the dependency answered and asked to slow down, which ``Retry-After`` paces."""
    return status_of(exc) == 429


def passthrough(kind: str) -> bool:
    """Whether a patched call of *kind* must go straight to the original function."""
    if not CONFIG.active or _inside.get() == kind:
        return True
    return suppressed()


class inside:  # noqa: N801 - used like the function it replaces: `with inside("http"):`
    """
    Mark the current context as running a buttress call of *kind* (see :func:`passthrough`).

    A class rather than a ``@contextmanager`` generator: it runs on every attempt of every
    patched call, and a generator-based context manager costs several times more.
    """

    __slots__ = ("_kind", "_token")

    def __init__(self, kind: str) -> None:
        self._kind = kind

    def __enter__(self) -> None:
        self._token = _inside.set(self._kind)

    def __exit__(self, *_exc: object) -> None:
        _inside.reset(self._token)


def _attribute(owner: Any, name: str) -> Any:
    # The attribute as stored: a class's own __dict__ entry (a staticmethod stays one).
    return owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)


@dataclasses.dataclass(frozen=True, slots=True)
class Direct:
    """
    A patch made as a plain function rather than a ``wrapt`` wrapper.

    ``make(original, integration)`` returns the replacement, a function with the original's
    parameters that calls ``original(self, ...)`` itself and passes straight through unless
    ``integration.armed``. Worth it only where every request pays: a ``wrapt`` bound wrapper is
    built per attribute access and parses its arguments in C (about 4,000 machine instructions
    per ``requests`` call, measured with cachegrind), and it hands the wrapper an ``args`` tuple
    and a ``kwargs`` dict to take apart, where a function's own parameters are bound by the
    interpreter.

    *original* is always callable as an unbound function, ``original(self, *args, **kwargs)``:
    if something else already replaced the attribute with a descriptor of its own, ``make``
    receives a function that binds it first.
    """

    make: Callable[[Callable[..., Any], Integration], Callable[..., Any]]


def _unbound(descriptor: Any) -> Callable[..., Any]:
    # A method-like attribute that is not a plain function (another library's wrapper): call it
    # the way attribute access on an instance would.
    def call(self: Any, /, *args: Any, **kwargs: Any) -> Any:
        return descriptor.__get__(self, type(self))(*args, **kwargs)

    call.__wrapped__ = descriptor  # type: ignore[attr-defined]  # for inspect.signature
    return call


def _still_installed(owner: Any, name: str, installed: Any) -> bool:
    # Whether *installed* is the attribute, or found by following its ``__wrapped__`` chain
    # (wrapt wrappers and functools.wraps functions both expose it).
    current = _attribute(owner, name)
    for _ in range(32):  # a chain is short; a cycle must not hang start-up
        if current is installed:
            return True
        current = getattr(current, "__wrapped__", None)
        if current is None:
            return False
    return False


class Integration:
    """
    One client library's patches: applied once, undone completely.

    ``instrument()`` applies them (a second call does nothing); ``uninstrument()`` undoes every
    one of them.

    Subclasses set :attr:`name` and :attr:`module`, and list ``(module, "Class.method",
    wrapper)`` patches in :meth:`patches`: a ``wrapt`` wrapper, or a :class:`Direct`.

    .. versionadded:: 0.1.0
    """

    name: str = ""
    module: str = ""

    def __init__(self) -> None:
        # Re-entrant: importing the library below fires the post-import hook, which calls
        # instrument() again on the same thread.
        self._lock = threading.RLock()
        self._applied: list[tuple[Any, str, Any, Any]] = []
        # Whether the patches are applied and active: read on every call, by wrapt through
        # _armed() and by Direct patches themselves (see uninstrument()).
        self.armed = False

    @property
    def instrumented(self) -> bool:
        """Whether the patches are applied and active."""
        return self.armed

    def available(self) -> bool:
        """Whether the library can be imported."""
        try:
            importlib.import_module(self.module)
        except ImportError:
            return False
        return True

    def patches(self) -> list[tuple[str, str, Callable[..., Any] | Direct]]:
        """``(module, "Class.attribute", wrapper)`` for each function to wrap."""
        raise NotImplementedError

    def _armed(self) -> Callable[[], bool]:
        # wrapt's ``enabled`` check, made on every call so that uninstrument() also disarms a
        # wrapper that another instrumentation has since wrapped again (we cannot unwrap from
        # the middle of a chain). A partial of the builtin getattr: wrapt's C wrapper calls it
        # without entering a Python frame, where a guarding wrapper function cost one.
        return functools.partial(getattr, self, "armed")

    def instrument(self) -> None:
        """
        Apply the patches (a second call does nothing).

        Raises:
            ModuleNotFoundError: the library is not installed.
        """
        with self._lock:
            if self.armed:
                return
            importlib.import_module(self.module)
            # A patch kept by uninstrument() (something had wrapped it since) is re-armed below,
            # unless it is gone from the attribute's chain: someone put another function there
            # (or the original back). Then it is forgotten and installed anew.
            self._applied = [
                entry for entry in self._applied if _still_installed(entry[0], entry[1], entry[2])
            ]
            present = {(id(owner), method) for owner, method, _i, _o in self._applied}
            for module_name, attribute, wrapper in self.patches():
                module = importlib.import_module(module_name)
                owner_name, _, method = attribute.rpartition(".")
                owner: Any = module
                for part in owner_name.split(".") if owner_name else ():
                    owner = getattr(owner, part)
                if (id(owner), method) in present:
                    continue  # still installed (disarmed by uninstrument): re-armed below
                original = _attribute(owner, method)
                if isinstance(wrapper, Direct):
                    plain = type(original) is types.FunctionType  # not isinstance: proxies pass
                    setattr(
                        owner, method, wrapper.make(original if plain else _unbound(original), self)
                    )
                else:
                    wrapt.wrap_object(
                        owner, method, wrapt.FunctionWrapper, (wrapper, self._armed())
                    )
                self._applied.append((owner, method, _attribute(owner, method), original))
            self.armed = True

    def uninstrument(self) -> None:
        """Restore every patched function (or disarm it, if something wrapped it since)."""
        with self._lock:
            self.armed = False
            kept = []
            for owner, method, installed, original in reversed(self._applied):
                if _attribute(owner, method) is installed:
                    setattr(owner, method, original)
                else:
                    kept.append((owner, method, installed, original))
            self._applied = kept[::-1]

    def __repr__(self) -> str:
        state = "instrumented" if self.instrumented else "not instrumented"
        return f"<{type(self).__name__} {self.name!r} {state}>"


def compatible(error: BaseException, library_error: type[BaseException]) -> BaseException:
    """
    *error* (a rejection or timeout of ours) re-made as a subclass of the library's error too.

    ``except requests.ConnectionError`` in existing code then still catches an open breaker.
    """
    if not isinstance(error, RejectedError | PolicyTimeoutError):
        return error
    mixed = mixed_class(type(error), library_error)
    if mixed is None:  # incompatible layouts: keep ours
        return error
    clone = mixed.__new__(mixed)
    clone.__dict__.update(error.__dict__)
    clone.args = error.args
    clone.__cause__ = error.__cause__
    clone.__traceback__ = error.__traceback__
    return clone


def target_pipeline(
    target: str,
    kind: str,
    failure: Callable[[BaseException], bool],
    *,
    retry_after: Callable[[Any], float | None] | None = None,
    fallback: Any = None,
    breaker_failure: Callable[[BaseException], bool] | None = None,
) -> Any:
    """
    The pipeline of an integration's *target*, built from the active settings on first use.

    Every integration builds its pipelines the same way: the kind's effective policies (template,
    configuration file, quick variables), with the integration's own *failure* predicate deciding
    what is retried and what the breaker counts (results are never failures: integrations turn
    failed responses into exceptions first), optionally its own server-delay reader, a default
    fallback, and *breaker_failure* when the breaker counts less than is retried.
    """
    pipeline = REGISTRY.get(target)
    if pipeline is not None:
        return pipeline

    def build(label: str) -> Pipeline:
        policies = _activation.policies(target, kind)
        retry = policies.retry
        if retry is not None:
            retry = dataclasses.replace(retry, on=failure, on_result=None)
            if retry_after is not None:
                retry = dataclasses.replace(retry, retry_after=retry_after)
        breaker = policies.breaker
        if breaker is not None:
            breaker = dataclasses.replace(
                breaker, failure_on=breaker_failure or failure, failure_on_result=None
            )
        return Pipeline(
            target,
            retry=retry,
            breaker=breaker,
            timeout=policies.timeout,
            bulkhead=policies.bulkhead,
            rate_limit=policies.rate_limit,
            cache=None,  # a response is not cacheable by its target alone
            fallback=policies.fallback if policies.fallback is not None else fallback,
            kind=kind,
            observe=_activation.observing(),
            label=label,
        )

    try:
        return REGISTRY.get_or_create(target, build)
    except Exception:  # the configuration lookup failed: buttress's fault, not the host's
        own_fault(f"building the {kind} pipeline from the settings", target)
        return unprotected(target, kind)


def unprotected(target: str, kind: str) -> Pipeline:
    """
    A pipeline with no policy, for a call whose own pipeline could not be built.

    Not registered: the next call tries the settings again, and mends itself when they do.
    """
    return Pipeline(target, kind=kind)
