"""Validate and sanitise an event before anything is written.

A mistake in an immutable log is permanent, so this stage runs before the record is
built: bad input raises ``InvalidEvent`` (nothing is written), and secret-looking fields
and values are replaced by a marker that does not reveal them (no hash of the value
either: a hash of a low-entropy secret can be brute-forced).

The common case is made cheap: the event is serialised once with orjson and a single
prefilter regex over those bytes decides whether the slower exact walk is needed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson

from pipeline import strictjson
from pipeline._accel import native as _native
from pipeline.errors import PipelineError

DEFAULT_MAX_EVENT_BYTES = 1 << 20
DEFAULT_MAX_DEPTH = 64
REDACTED = "[REDACTED]"

DEFAULT_SECRET_KEYS: tuple[str, ...] = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "authorization",
    "api_key",
    "apikey",
    "api-key",
    "private_key",
    "privatekey",
    "credential",
    "cookie",
    "session_id",
    "client_secret",
)

_ORJSON_OPTS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_OPTION_KWNAMES = ("option",)


class InvalidEvent(PipelineError, ValueError):
    """The event was refused; nothing was written.  ``reason`` is a short code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"invalid event ({reason}): {detail}")
        self.reason = reason
        self.detail = detail
        self.index: int | None = None  # position in a batch, when raised for one

    def diagnostics(self) -> str:
        return f"The event was not written: {self.detail}. Fix the event and send it again."


# --- value detectors ---------------------------------------------------------------------

_AWS_KEY_RE = re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b")
_BEARER_RE = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9\-._~+/]{8,}=*")
_PRIVATE_KEY_RE = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|$)",
    re.DOTALL,
)
# card candidates: 13-19 digits, optionally grouped by single spaces or hyphens, with a
# known issuer prefix (Visa, Mastercard, Amex, Discover, JCB, Diners) so that epoch
# timestamps and ids are not mistaken for cards; then Luhn decides.
_CARD_RE = re.compile(
    r"(?<![\d])(?:4|5[1-5]|2[2-7]|3[47]|3[0689]|6(?:011|5|4[4-9])|35)(?:[ -]?\d){11,17}(?![\d])"
)


# Screening on the serialised event.  AWS key ids start with "A" and one of these.  For card
# numbers the bytes are translated (digits to "0", spaces and hyphens to "-"), separators
# dropped, and a run of 13 digits looked for: a superset of the shapes _CARD_RE matches,
# found with two C-level passes; only then do the issuer-prefix and Luhn checks run.
_AWS_PREFILTER = re.compile(rb"A(?:KIA|SIA|GPA|IDA|ROA|NPA|NVA|IPA)")
_DIGIT_CLASS = bytes(
    0x30 if 0x30 <= b <= 0x39 else 0x2D if b in (0x20, 0x2D) else 0x78 for b in range(256)
)
_THIRTEEN_DIGITS = b"0" * 13
_native_hint = _native.SCREEN_HINT if _native is not None else 0
_native_digits = _native.SCREEN_DIGITS if _native is not None else 0
_native_flat = _native.SCREEN_FLAT if _native is not None else 0


def _bytes_hint(out: bytes) -> bool:
    """Could a value in these serialised bytes need redaction?  (The pure-Python screen; the
    C accelerator's ``screen`` does the first three checks in one pass, tested equal.)"""
    if b"-----BEGIN" in out or _AWS_PREFILTER.search(out) is not None:
        return True
    low = out.lower()  # the credential scheme names match in any letter case
    if b"bearer" in low or b"basic" in low:
        return True
    if _THIRTEEN_DIGITS not in out.translate(_DIGIT_CLASS).replace(b"-", b""):
        return False
    return _card_in(out)


def _card_in(out: bytes) -> bool:
    """Whether a card-number shape with a valid Luhn digit occurs (the exact rule)."""
    for m in _CARD_RE.finditer(out.decode("utf-8", "replace")):
        digits = re.sub(r"[ -]", "", m.group(0))
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            return True
    return False


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i & 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _redact_cards(text: str) -> str:
    def sub(m: re.Match[str]) -> str:
        digits = re.sub(r"[ -]", "", m.group(0))
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            return "[REDACTED:card-number]"
        return m.group(0)

    return _CARD_RE.sub(sub, text)


def redact_value(text: str) -> str:
    """Replace secret-looking parts of one string value."""
    out = _PRIVATE_KEY_RE.sub("[REDACTED:private-key]", text)
    out = _AWS_KEY_RE.sub("[REDACTED:aws-access-key-id]", out)
    out = _BEARER_RE.sub(lambda m: f"{m.group(1)} [REDACTED:credential]", out)
    return _redact_cards(out)


@dataclass(frozen=True)
class Sanitiser:
    """Validation limits and redaction rules.  ``redact=False`` turns redaction off entirely.
    Frozen: the settings are bound into the C fast path when the sanitiser is made."""

    secret_keys: Iterable[str] = DEFAULT_SECRET_KEYS
    redact: bool = True
    redact_values: bool = True
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH
    _keys: tuple[str, ...] = field(init=False, repr=False)
    _key_cache: dict[str, bool] = field(init=False, repr=False)
    _keyset_cache: dict[tuple[str, ...], bool] = field(init=False, repr=False)
    _last_clean: list[tuple[str, ...] | None] = field(init=False, repr=False)
    fast_settings: tuple[Any, ...] | None = field(init=False, repr=False, compare=False)
    fast_prepare: Callable[[Any], bytes | None] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # frozen: the derived state is set once, here
        if not 1 <= self.max_depth <= strictjson.MAX_DEPTH:  # deeper records would not verify
            raise ValueError(f"max_depth must be 1..{strictjson.MAX_DEPTH}, got {self.max_depth}")
        keys = sorted({k.lower() for k in self.secret_keys if k}, key=len, reverse=True)
        setattr_ = object.__setattr__
        setattr_(self, "_keys", tuple(keys))
        setattr_(self, "_key_cache", {})
        setattr_(self, "_keyset_cache", {})
        setattr_(self, "_last_clean", [None])  # the C fast path's last clean key set (identity check)
        # the C accelerator's common case with these settings bound (callers on hot paths use
        # it directly; None from it means "call prepare")
        # (the settings are also handed to the writer's C fast lane, which runs the same check)
        settings = (orjson.dumps, _OPTION_KWNAMES, _ORJSON_OPTS, self.max_event_bytes, self.max_depth,
                    self.redact, self.redact_values, self._keyset_cache, self._last_clean)
        setattr_(self, "fast_settings", settings if _native is not None else None)
        setattr_(self, "fast_prepare", partial(_native.prepare_fast, *settings) if _native is not None else None)

    def is_secret_key(self, key: str) -> bool:
        """Whether a field name looks secret (case-insensitive substring match), cached:
        events of one application reuse a small set of field names."""
        hit = self._key_cache.get(key)
        if hit is None:
            low = key.lower()
            hit = any(k in low for k in self._keys)
            if len(self._key_cache) >= 65536:
                self._key_cache.clear()
            self._key_cache[key] = hit
        return hit

    # -- public ---------------------------------------------------------------------------

    def prepare(self, event: Any) -> bytes:
        """Return the compact JSON bytes to store for ``event``, or raise InvalidEvent."""
        if self.fast_prepare is not None:
            # the common case (a flat, clean event with a known key set) in one C call; None
            # means "decide below", where every rule is applied exactly
            fast = self.fast_prepare(event)
            if type(fast) is bytes:
                return fast
        if not isinstance(event, dict):
            raise InvalidEvent("not-an-object", f"an event must be a JSON object, got {type(event).__name__}")
        try:
            out = orjson.dumps(event, option=_ORJSON_OPTS)
        except orjson.JSONEncodeError as exc:
            raise InvalidEvent(*_classify_encode_error(exc)) from None
        except RecursionError:
            raise InvalidEvent("too-deep", f"nesting deeper than {self.max_depth} levels") from None
        if len(out) > self.max_event_bytes:
            raise InvalidEvent(
                "too-large", f"event is {len(out)} bytes serialised, over the limit of {self.max_event_bytes}"
            )
        # orjson writes NaN/Infinity as null: look for them only when a null is present.
        # Nesting cannot exceed the number of opening brackets, so count those first.
        if _native is not None:
            screened = _native.screen(out)
            if screened & _native.SCREEN_NULL or screened >> _native.SCREEN_SHIFT > self.max_depth:
                self._check_structure(event)
            needs = self.redact and self._needs_redaction_screened(event, out, screened)
        else:
            braces, brackets = out.count(b"{"), out.count(b"[")
            if b"null" in out or braces + brackets > self.max_depth:
                self._check_structure(event)
            needs = self.redact and self._needs_redaction(event, out, braces == 1 and brackets == 0)
        if needs:
            cleaned, changed = self._redact(event)
            if changed:
                out = orjson.dumps(cleaned, option=_ORJSON_OPTS)
        return out

    def prepare_json(self, raw: bytes | str) -> bytes:
        """Validate one NDJSON line (bytes from a socket or stdin) and prepare it."""
        if isinstance(raw, str):
            try:
                raw = raw.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InvalidEvent("bad-utf8", f"lone surrogate in input: {exc.reason}") from None
        if len(raw) > self.max_event_bytes * 2:
            raise InvalidEvent("too-large", f"line is {len(raw)} bytes, over the limit")
        try:
            obj = strictjson.loads(raw)  # the log's JSON profile: docs/FORMAT.md §1.1
        except orjson.JSONDecodeError as exc:
            raise InvalidEvent("bad-json", str(exc)) from None
        except strictjson.ProfileError as exc:
            raise InvalidEvent(exc.reason, exc.detail) from None
        return self.prepare(obj)

    def prepare_json_many(self, raws: list[bytes]) -> list[bytes | InvalidEvent]:
        """``prepare_json`` for each line: its prepared bytes, or the InvalidEvent it raised.
        With the C accelerator the common case is one call for the whole batch."""
        fast = self._fast_many(raws, strictjson.fast_loads)
        out: list[bytes | InvalidEvent] = []
        for raw, done in zip(raws, fast, strict=True):
            if done is None:
                try:
                    done = self.prepare_json(raw)
                except InvalidEvent as exc:
                    out.append(exc)
                    continue
            out.append(done)
        return out

    def prepare_many(self, events: list[Any]) -> list[bytes]:
        """``prepare`` for each event; raises the first InvalidEvent (with its index in
        ``index``).  With the C accelerator the common case is one call for the batch."""
        fast = self._fast_many(events, None)
        if None not in fast:  # the common case: every event took the C path
            return fast  # type: ignore[return-value]
        out: list[bytes] = []
        for i, (event, done) in enumerate(zip(events, fast, strict=True)):
            if done is None:
                try:
                    done = self.prepare(event)
                except InvalidEvent as exc:
                    exc.index = i
                    raise
            out.append(done)
        return out

    def _fast_many(self, items: list[Any], loads: Any) -> list[bytes | None]:
        if _native is None:
            return [None] * len(items)
        fast: list[bytes | None] = _native.prepare_many(
            items, loads, self.max_event_bytes * 2, orjson.dumps, _OPTION_KWNAMES, _ORJSON_OPTS,
            self.max_event_bytes, self.max_depth, self.redact, self.redact_values, self._keyset_cache,
            self._last_clean)
        return fast

    # -- internals ------------------------------------------------------------------------

    def _needs_redaction(self, event: dict[str, Any], out: bytes, flat: bool) -> bool:
        """Could anything need redaction?  No false negatives (the exact rules run only when
        this says yes); false positives only cost time.  Values are screened on the
        serialised bytes with a few C-level scans instead of a Python walk over strings;
        keys through a per-key-set cache.  ``flat``: one object, no arrays (so no nested keys)."""
        if self.redact_values and _bytes_hint(out):
            return True
        if flat and type(event) is dict:
            return self._keyset_secret(event)
        return self._keys_suspect(event, 0)

    def _needs_redaction_screened(self, event: dict[str, Any], out: bytes, screened: int) -> bool:
        """``_needs_redaction`` given the C accelerator's one-pass screen of ``out``."""
        if self.redact_values and (
            screened & _native_hint or (screened & _native_digits and _card_in(out))
        ):
            return True
        if screened & _native_flat and type(event) is dict:
            return self._keyset_secret(event)
        return self._keys_suspect(event, 0)

    def _keyset_secret(self, node: dict[str, Any]) -> bool:
        # events of one application repeat a few key sets: cache the verdict per key set
        keys = tuple(node)
        hit = self._keyset_cache.get(keys)
        if hit is None:
            hit = any(self.is_secret_key(k) for k in keys)
            if len(self._keyset_cache) >= 4096:
                self._keyset_cache.clear()
            self._keyset_cache[keys] = hit
        return hit

    def _keys_suspect(self, node: Any, depth: int) -> bool:
        if depth > 256:
            return True
        if type(node) is dict:
            if self._keyset_secret(node):
                return True
            values: Iterable[Any] = node.values()
        elif type(node) is list or type(node) is tuple:
            values = node
        else:
            return isinstance(node, dict | list | tuple)  # container subclasses: take the exact path
        for v in values:
            t = type(v)
            if t is dict or t is list or t is tuple:
                if self._keys_suspect(v, depth + 1):
                    return True
            elif t is not str and isinstance(v, dict | list | tuple):
                return True
        return False

    def _check_structure(self, event: Any) -> None:
        stack: list[tuple[Any, int]] = [(event, 1)]
        while stack:
            node, depth = stack.pop()
            if isinstance(node, dict):
                if depth > self.max_depth:
                    raise InvalidEvent("too-deep", f"nesting deeper than {self.max_depth} levels")
                stack.extend((v, depth + 1) for v in node.values())
            elif isinstance(node, list | tuple):
                if depth > self.max_depth:
                    raise InvalidEvent("too-deep", f"nesting deeper than {self.max_depth} levels")
                stack.extend((v, depth + 1) for v in node)
            elif isinstance(node, float) and not math.isfinite(node):
                raise InvalidEvent("not-finite", f"{node!r} is not a JSON number (NaN and Infinity are refused)")

    def _redact(self, node: Any) -> tuple[Any, bool]:
        if isinstance(node, dict):
            changed = False
            out: dict[str, Any] = {}
            for k, v in node.items():
                if self.is_secret_key(k):
                    out[k] = REDACTED
                    changed = True
                else:
                    nv, c = self._redact(v)
                    out[k] = nv
                    changed |= c
            return out, changed
        if isinstance(node, list | tuple):
            items = [self._redact(v) for v in node]
            return [v for v, _ in items], any(c for _, c in items)
        if self.redact_values:
            if isinstance(node, str):
                cleaned = redact_value(node)
                return cleaned, cleaned != node
            if isinstance(node, int) and not isinstance(node, bool) and node >= 10**12:
                text = str(node)
                cleaned = _redact_cards(text)
                if cleaned != text:
                    return cleaned, True
        return node, False


def _classify_encode_error(exc: Exception) -> tuple[str, str]:
    msg = str(exc)
    low = msg.lower()
    if "dict key must be str" in low:
        return "non-string-key", "object keys must be strings"
    if "surrogates not allowed" in low or "utf-8" in low:
        return "bad-utf8", "a string contains a lone surrogate or invalid UTF-8"
    if "recursion limit" in low:
        return "too-deep", "nesting is too deep"
    if "integer exceeds" in low:
        return "int-range", "integers must fit in 64 bits"
    if "not json serializable" in low:
        return "not-serialisable", msg.replace("Type is not JSON serializable", "value of type is not JSON")
    return "not-serialisable", msg


DEFAULT_SANITISER = Sanitiser()
