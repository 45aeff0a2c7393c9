"""
A tiny deterministic YAML writer for the generated rule and config files.

The generators only emit dicts, lists, strings, numbers, booleans and None; writing them here
keeps ``buttress alerts`` free of a PyYAML dependency and byte-stable: keys sorted, two-space
indent, every string single-quoted (no escapes to read in PromQL; JSON-quoted if it holds control
characters), one line per scalar.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def dump(value: Mapping[str, Any], *, header: str = "") -> str:
    """*value* as YAML text, after *header* lines rendered as comments."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    lines.extend(_block(value, 0))
    return "\n".join(lines) + "\n"


def _is_block(value: Any) -> bool:
    return isinstance(value, Mapping | list | tuple) and len(value) > 0


def _key(key: str) -> str:
    return key if _PLAIN_KEY.fullmatch(key) else json.dumps(key)


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        if value.isprintable():
            return "'" + value.replace("'", "''") + "'"
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, Sequence):
        return "[]"
    raise TypeError(f"cannot write {type(value).__name__} as YAML")


def _block(value: Any, indent: int) -> list[str]:
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(value, Mapping):
        for key in sorted(value):
            item = value[key]
            if _is_block(item):
                lines.append(f"{pad}{_key(key)}:")
                lines.extend(_block(item, indent + 1))
            else:
                lines.append(f"{pad}{_key(key)}: {_scalar(item)}")
        return lines
    for item in value:
        if _is_block(item):
            nested = _block(item, indent + 1)
            lines.append(f"{pad}- {nested[0].lstrip()}")
            lines.extend(nested[1:])
        else:
            lines.append(f"{pad}- {_scalar(item)}")
    return lines
