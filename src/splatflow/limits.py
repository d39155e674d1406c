"""Bounded reads for files that come from outside: a size checked before reading, JSON with a size and nesting
limit (Python's parser would otherwise end a 200,000-level document in a RecursionError).

The caller chooses the error class (``InputError`` by default; ``SogError`` for SOG files ...), so every refusal is
a one-line splatflow error with a hint, never a traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from splatflow.errors import InputError, SplatflowError

__all__ = [
    "MAX_JSON_DEPTH", "MAX_REPORT_BYTES", "json_depth", "parse_json", "read_json", "read_limited"
]

MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays/objects accepted in any JSON splatflow reads (reports nest 4-5 levels)."""
MAX_REPORT_BYTES = 16 << 20
"""Largest stage report, manifest or run report read (the biggest real ones are tens of KB)."""

def read_limited(path: str | os.PathLike[str], max_bytes: int, what: str, *,
                 error: type[SplatflowError] = InputError, hint: str | None = None) -> bytes:
    """The bytes of the regular file ``path``, refused (``error``) when it is larger than ``max_bytes`` -- checked
    before reading and again while reading (a file that grows is not read past the limit)."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > max_bytes:
            raise error(f"{what} {p} is {size:,} bytes, more than the {max_bytes:,} accepted",
                        hint=hint or "this is not a file splatflow wrote; check the path")
        with open(p, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"cannot read {what} {p}: {exc.strerror or exc}", hint="check the path and its permissions") \
            from exc
    if len(data) > max_bytes:
        raise error(f"{what} {p} grew past {max_bytes:,} bytes while it was read", hint="read it once it is complete")
    return data


def json_depth(value: Any) -> int:
    """The deepest nesting of lists/dicts in a parsed JSON value (iterative: no recursion)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def parse_json(data: bytes | str, what: str, *, max_bytes: int = MAX_REPORT_BYTES, max_depth: int = MAX_JSON_DEPTH,
               error: type[SplatflowError] = InputError, hint: str | None = None) -> Any:
    """Parse JSON from outside: refused (``error``, one line) when over ``max_bytes``, nested deeper than
    ``max_depth``, not UTF-8 or not valid JSON. NaN/Infinity literals are refused too (not JSON)."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    fix = hint or "give the JSON file splatflow wrote"
    if len(raw) > max_bytes:
        raise error(f"{what} is {len(raw):,} bytes, more than the {max_bytes:,} accepted", hint=fix)
    too_deep = error(f"{what} nests arrays/objects more than {max_depth} levels deep", hint=fix)

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=no_constant)
    except UnicodeDecodeError as exc:
        raise error(f"{what} is not UTF-8 text ({exc.reason} at byte {exc.start})", hint=fix) from None
    except RecursionError:  # the C parser stops at the interpreter's recursion limit: deeper than max_depth
        raise too_deep from None
    except ValueError as exc:
        raise error(f"{what} is not valid JSON ({exc})", hint=fix) from None
    if json_depth(value) > max_depth:
        raise too_deep
    return value


def read_json(path: str | os.PathLike[str], what: str, *, max_bytes: int = MAX_REPORT_BYTES,
              error: type[SplatflowError] = InputError, hint: str | None = None) -> Any:
    """:func:`parse_json` of a local file read with :func:`read_limited`."""
    data = read_limited(path, max_bytes, what, error=error, hint=hint)
    return parse_json(data, f"{what} {path}", max_bytes=max_bytes, error=error, hint=hint)
