"""One JSON reader for every file the package reads back (artifact and bundle manifests, signatures, tuning
records, model-file metadata, torch.compile cache entries): bounded size and depth, no NaN or Infinity, and one
SerializationError line naming the file, instead of RecursionError or a silently non-finite number."""
from __future__ import annotations

import itertools
import json
import math
import re
from typing import Any

from ..errors import SerializationError

MAX_BYTES = 8 << 20
MAX_DEPTH = 64  # the deepest honest document (a model file's nested modules) is far shallower


def _no_constant(name: str):
    raise ValueError(f"{name} is not a finite number")


def _finite(s: str) -> float:
    x = float(s)
    if not math.isfinite(x):  # 1e400 parses to inf
        raise ValueError(f"{s} is not a finite number")
    return x


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def _depth(text: str) -> int:
    """The deepest nesting of [ and {, counted outside strings (before the parser recurses into it)."""
    steps = [1 if b in "[{" else -1 for b in _BRACKET.findall(_STRING.sub("", text))]
    return max(itertools.accumulate(steps), default=0)


def loads(data: bytes | str, what: str, max_bytes: int = MAX_BYTES, kind: type | None = dict) -> Any:
    """`data` parsed as JSON, or SerializationError naming `what` (the file) and the problem. `kind`: the type
    the document must be (default an object)."""
    if len(data) > max_bytes:
        raise SerializationError(f"{what}: {len(data):,} bytes of JSON, more than the limit {max_bytes:,}")
    try:
        text = data.decode() if isinstance(data, (bytes, bytearray)) else data
    except UnicodeDecodeError as e:
        raise SerializationError(f"{what}: not JSON (not UTF-8: {e})") from None
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth(text) > MAX_DEPTH:
        raise SerializationError(f"{what}: JSON nested more than {MAX_DEPTH} deep")
    try:
        doc = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except (ValueError, RecursionError) as e:
        raise SerializationError(f"{what}: not JSON ({e})") from None
    if kind is not None and not isinstance(doc, kind):
        raise SerializationError(f"{what}: the JSON document must be {'an object' if kind is dict else kind.__name__}"
                                 f", got {type(doc).__name__}")
    return doc
