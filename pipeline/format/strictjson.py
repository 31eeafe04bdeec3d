"""The JSON profile of the log (docs/FORMAT.md §1.1): one reading of every JSON text.

RFC 8259 leaves duplicate keys, number range and nesting depth to "the implementation",
so two conforming parsers can read one record differently (or one accepts what the other
refuses).  The log fixes each choice, for the records a verifier reads and for the events
ingest accepts as JSON bytes (``Sanitiser.prepare_json``/``prepare_json_many``):

- UTF-8 only (no byte order mark), no lone surrogates (escaped or encoded), no NaN or
  Infinity, numbers with a fraction or exponent finite as IEEE 754 binary64;
- object keys unique within each object (compared after unescaping);
- integers (no fraction, no exponent) in ``[-2**63, 2**64 - 1]``, the range every common
  JSON library holds exactly (orjson, Go, Rust, Java longs): beyond it orjson silently
  turns them into floats, i.e. it would store a different number;
- at most ``MAX_DEPTH`` nested objects/arrays, counting the outermost value as level 1;
- ``compact=True`` (record lines): no insignificant whitespace at all.

``loads`` is orjson (RFC 8259 strict, UTF-8, surrogates, finite numbers, which this module
relies on) plus cheap screens on the raw bytes that prove the other rules in the common
case; only when a screen cannot, an exact check with the standard library parser runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import partial
from typing import Any

import orjson

from pipeline._accel import native as _native
from pipeline.errors import PipelineError

MAX_DEPTH = 64
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1

# an integer literal outside the range has at least 19 digits (2**63 = 9223372036854775808)
_DIGIT_RUN = b"0" * 19
_DIGITS_TO_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else 0x78 for b in range(256))
# whitespace before a colon would hide a key from the '":' count below
_WS_COLON = (b" :", b"\t:", b"\r:", b"\n:")
_WS = (b" ", b"\t", b"\r", b"\n")
# a JSON text (already known to be valid) whose every whitespace byte is inside a string
_COMPACT = re.compile(rb'(?:[^" \t\n\r]++|"(?:[^"\\]++|\\.)*+")*+')


class ProfileError(PipelineError, ValueError):
    """Valid RFC 8259 JSON that the log's profile refuses.  ``reason`` is ``duplicate-key``,
    ``int-range``, ``too-deep`` or ``whitespace``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def loads(raw: bytes, *, compact: bool = False, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``raw`` under the profile.  Raises ``orjson.JSONDecodeError`` for what is not
    RFC 8259 JSON in UTF-8 (or holds a lone surrogate, NaN, or a number that overflows a
    double) and ``ProfileError`` for the rest of the profile."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        _integer_overflow(raw, exc)
        raise
    if _native is not None and _native.profile_ok(raw, obj, compact, max_depth):
        return obj  # the common case, shown in one pass in C; else the rules below decide
    if compact and any(w in raw for w in _WS) and _COMPACT.fullmatch(raw) is None:
        raise ProfileError("whitespace", "whitespace outside strings (records are compact JSON)")
    if raw.count(b"{") + raw.count(b"[") > max_depth:  # nesting cannot exceed the openings
        depth = _depth(obj)
        if depth > max_depth:
            raise ProfileError("too-deep", f"nesting {depth} levels deep, over the limit of {max_depth}")
    if _DIGIT_RUN in raw.translate(_DIGITS_TO_ZERO) or not _keys_unique_screen(raw, obj):
        _exact(raw)
    return obj


# For the sanitiser's C batch path (``prepare_many``'s ``loads``): orjson.loads plus the C
# screen; a ValueError there sends the line to ``Sanitiser.prepare_json`` (and so to ``loads``).
fast_loads: Callable[[bytes], Any] | None = (
    partial(_native.profile_loads, orjson.loads, MAX_DEPTH) if _native is not None else None)


_INTEGER_TOKEN = re.compile(r"-?(?:0|[1-9][0-9]*)(?![0-9.eE])")


def _integer_overflow(raw: bytes, exc: orjson.JSONDecodeError) -> None:
    """orjson reads an integer too long for a double as infinity and refuses it as such; by
    the profile that is an integer out of range (rule 5), so say so."""
    if "infinity" in exc.msg:
        m = _INTEGER_TOKEN.match(raw.decode("utf-8", "replace"), exc.pos)
        if m is not None:
            raise ProfileError("int-range", f"integer of {len(m.group().lstrip('-'))} digits is outside "
                               "[-2^63, 2^64-1]") from None


def _keys_unique_screen(raw: bytes, obj: Any) -> bool:
    """True when the raw bytes prove that no object holds a key twice.  Every key is a
    string followed by ':'; with no whitespace before any ':', each key occurrence is one
    '":' in the bytes (others come only from '\\":' inside strings).  So '":' occurrences
    >= key occurrences >= distinct keys parsed, and equality rules out a duplicate."""
    if any(w in raw for w in _WS_COLON):
        return False
    marks = raw.count(b'":')
    if type(obj) is dict and marks == len(obj):
        return True  # the nested objects, if any, hold no key at all
    return marks == _count_keys(obj)


def _count_keys(obj: Any) -> int:
    n = 0
    stack = [obj]
    while stack:
        node = stack.pop()
        if type(node) is dict:
            n += len(node)
            stack.extend(v for v in node.values() if type(v) is dict or type(v) is list)
        elif type(node) is list:
            stack.extend(v for v in node if type(v) is dict or type(v) is list)
    return n


def _depth(obj: Any) -> int:
    deepest = 0
    stack = [(obj, 1)]
    while stack:
        node, level = stack.pop()
        if type(node) is dict or type(node) is list:
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in (node.values() if type(node) is dict else node))
    return deepest


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ProfileError("duplicate-key", f"key {k!r} appears twice in one object")
        out[k] = v
    return out


def _int_in_range(text: str) -> int:
    digits = len(text) - (text[0] == "-")
    if digits > 20 or not INT_MIN <= (value := int(text)) <= INT_MAX:
        raise ProfileError("int-range", f"integer {text[:40]}{'…' if len(text) > 40 else ''} is outside "
                           "[-2^63, 2^64-1]")
    return value


def _exact(raw: bytes) -> None:
    """The duplicate-key and integer-range rules, exactly (the standard library parser
    with hooks; the text is known to be valid JSON and not too deep for it)."""
    json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_pairs, parse_int=_int_in_range)
