"""
Which failures a policy handles: exception types, tuples of them, or a predicate.

Retry, CircuitBreaker and Fallback all take the same shape (stamina's ``on=``), compiled once at
construction into a plain ``Callable[[BaseException], bool]`` so the hot path makes one call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

from ._exceptions import ConfigurationError
from ._validate import shown

ExceptionSpec: TypeAlias = (
    type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]
)
"""An exception type, a tuple of types, or a predicate over the raised exception."""

ExceptionPredicate: TypeAlias = Callable[[BaseException], bool]


def compile_exception_spec(owner: str, name: str, spec: object) -> ExceptionPredicate:
    """
    Turn an :data:`ExceptionSpec` into a predicate, validating its shape.

    Raises:
        ConfigurationError: if *spec* is neither a type, a tuple of types nor a callable.
    """
    if isinstance(spec, type) and issubclass(spec, BaseException):
        exc_type = spec
        return lambda exc: isinstance(exc, exc_type)
    if isinstance(spec, tuple):
        if spec and all(isinstance(t, type) and issubclass(t, BaseException) for t in spec):
            types = spec
            return lambda exc: isinstance(exc, types)
        raise ConfigurationError(
            f"{owner}: {name}={shown(spec)} is not accepted; "
            "expected a non-empty tuple of exception types"
        )
    if callable(spec) and not isinstance(spec, type):
        return spec
    raise ConfigurationError(
        f"{owner}: {name}={shown(spec)} is not accepted; expected an exception type, a tuple of "
        "exception types, or a callable taking the exception and returning a bool"
    )


def describe_spec(spec: object) -> str:
    """A short human-readable form of an exception spec, for reprs."""
    if isinstance(spec, type):
        return spec.__qualname__
    if isinstance(spec, tuple):
        return "(" + ", ".join(t.__qualname__ for t in spec) + ")"
    return getattr(spec, "__qualname__", repr(spec))


def error_type(exc: BaseException) -> str:
    """
    The low-cardinality ``error.type`` of an exception: its fully qualified class name.

    Builtins stay short (``ConnectionError``), others carry their module
    (``httpx.ConnectTimeout``), matching OpenTelemetry's ``error.type`` guidance.
    """
    override = getattr(exc, "error_type", None)
    if isinstance(override, str):  # e.g. an HTTP status carried as an exception: "503"
        return override
    cls = type(exc)
    module = cls.__module__
    if module == "builtins":
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"
