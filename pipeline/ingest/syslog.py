"""Syslog messages into events: RFC 6587 framing, RFC 5424 and RFC 3164 parsing.

docs/INGEST.md §7 is the specification of what is stored; in short, one message is one
event::

    {"syslog": "rfc5424", "facility": 4, "severity": 2, "timestamp": "2026-12-06T18:00:00.1Z",
     "hostname": "web1", "app_name": "sshd", "procid": "811", "msgid": "ID47",
     "structured_data": {"origin@32473": {"ip": "10.0.0.1"}}, "message": "..."}

Absent (NILVALUE ``-``) fields are left out.  A message that is not RFC 5424 or RFC 3164
is stored as ``{"syslog": "unparsed", "parse_error": "...", "raw": "..."}``, never
dropped; bytes that are not UTF-8 are kept in ``*_b64`` fields (``raw_b64``,
``message_b64``) so that nothing received is altered.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Sequence
from typing import Any

from pipeline._accel import native
from pipeline.errors import PipelineError

__all__ = ["FrameError", "Framer", "frame_events", "parse_message"]

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_PRI = re.compile(rb"<(\d{1,3})>")
_RFC5424_HEAD = re.compile(rb"([1-9]\d{0,2}) (\S+) (\S+) (\S+) (\S+) (\S+) ")
_RFC5424_TS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})")
_RFC3164_TS = re.compile(rb"(" + b"|".join(m.encode() for m in _MONTHS) + rb") ([ \d]\d) (\d{2}:\d{2}:\d{2}) ")
_TAG = re.compile(rb"([^\s\[\]:]{1,48})(?:\[([^\]\s]{1,128})\])?: ?")
_BOM = b"\xef\xbb\xbf"


def _text(value: bytes, key: str, out: dict[str, Any]) -> None:
    """``out[key]`` = the UTF-8 text, or ``out[key + "_b64"]`` when it is not UTF-8."""
    try:
        out[key] = value.decode("utf-8")
    except UnicodeDecodeError:
        out[key + "_b64"] = base64.b64encode(value).decode("ascii")


def unparsed(raw: bytes, error: str) -> dict[str, Any]:
    out: dict[str, Any] = {"syslog": "unparsed", "parse_error": error}
    _text(raw, "raw", out)
    return out


# the common case in one match: PRI, version 1, header fields of PRINTUSASCII within their
# RFC 5424 lengths, a timestamp or NILVALUE; anything else takes the field-by-field path
# below, which also says what is wrong
_FAST_5424 = re.compile(rb"<(0|[1-9][0-9]{0,2})>1 "
                        rb"(-|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
                        rb"(?:Z|[+-][0-9]{2}:[0-9]{2})) "
                        rb"([!-~]{1,255}) ([!-~]{1,48}) ([!-~]{1,128}) ([!-~]{1,32}) (?=[-\[])")
_HEADER_KEYS = ("timestamp", "hostname", "app_name", "procid", "msgid")


def parse_message(raw: bytes) -> dict[str, Any]:
    """One syslog message (framing removed) as an event; never raises."""
    fast = _FAST_5424.match(raw)
    if fast is not None and int(fast.group(1)) <= 191:
        out = _base("rfc5424", int(fast.group(1)))
        for key, value in zip(_HEADER_KEYS, fast.groups()[1:], strict=True):
            if value != b"-":
                out[key] = value.decode("ascii")
        try:
            return _rfc5424_body(out, raw[fast.end():])
        except ValueError as exc:
            return unparsed(raw, f"RFC 5424: {exc}")
    m = _PRI.match(raw)
    if m is None:
        return unparsed(raw, "no PRI: a syslog message starts with <N>")
    pri = int(m.group(1))
    if pri > 191 or (len(m.group(1)) > 1 and m.group(1)[0:1] == b"0"):
        return unparsed(raw, f"PRI {m.group(1).decode()} out of range (0-191, no leading zeros)")
    rest = raw[m.end():]
    head = _RFC5424_HEAD.match(rest)
    if head is not None and head.group(1) == b"1":
        try:
            return _rfc5424(pri, rest, head)
        except ValueError as exc:
            return unparsed(raw, f"RFC 5424: {exc}")
    return _rfc3164(pri, rest)


def _base(kind: str, pri: int) -> dict[str, Any]:
    return {"syslog": kind, "facility": pri >> 3, "severity": pri & 7}


def _rfc5424(pri: int, rest: bytes, head: re.Match[bytes]) -> dict[str, Any]:
    out = _base("rfc5424", pri)
    ts, host, app, procid, msgid = (g.decode("utf-8", "strict") if g != b"-" else None
                                    for g in head.groups()[1:])
    if ts is not None:
        if not _RFC5424_TS.fullmatch(ts):
            raise ValueError(f"TIMESTAMP is not RFC 3339 ({ts[:40]!r})")
        out["timestamp"] = ts
    for key, value, limit in (("hostname", host, 255), ("app_name", app, 48), ("procid", procid, 128),
                              ("msgid", msgid, 32)):
        if value is not None:
            if len(value) > limit:
                raise ValueError(f"{key.upper().replace('_', '-')} longer than {limit} characters")
            out[key] = value
    return _rfc5424_body(out, rest[head.end():])


def _rfc5424_body(out: dict[str, Any], body: bytes) -> dict[str, Any]:
    """STRUCTURED-DATA [SP MSG] into ``out``."""
    sd, body = _structured_data(body)
    if sd is not None:
        out["structured_data"] = sd
    if body:
        if body[:1] != b" ":
            raise ValueError("no space between STRUCTURED-DATA and MSG")
        msg = body[1:]
        if msg.startswith(_BOM):
            msg = msg[3:]
        _text(msg, "message", out)
    return out


_SD_NAME = rb'[^= \]"\x00-\x20\x7f-\xff]{1,32}'  # PRINTUSASCII except = SP ] "
_SD_VALUE = rb'(?:[^"\\]|\\.)*'  # up to the first " not escaped by a backslash
_SD_ELEMENT = re.compile(rb"\[(" + _SD_NAME + rb")((?: " + _SD_NAME + rb'="' + _SD_VALUE + rb'")*)\]', re.S)
_SD_PARAM = re.compile(rb" (" + _SD_NAME + rb')="(' + _SD_VALUE + rb')"', re.S)
_SD_ESCAPE = re.compile(rb'\\(["\\\]])')


def _structured_data(body: bytes) -> tuple[dict[str, dict[str, Any]] | None, bytes]:
    """(SD-ID -> {PARAM-NAME: value}, the rest).  A name given twice keeps every value, in
    order, as a list.  Escapes ``\\"``, ``\\\\`` and ``\\]`` are resolved; a backslash before
    any other character is kept, as RFC 5424 §6.3.3 says."""
    if body.startswith(b"-"):
        return None, body[1:]
    if not body.startswith(b"["):
        raise ValueError("STRUCTURED-DATA is neither - nor [...]")
    out: dict[str, dict[str, Any]] = {}
    i = 0
    while body[i:i + 1] == b"[":
        m = _SD_ELEMENT.match(body, i)
        if m is None:
            raise ValueError(f"bad SD-ELEMENT at byte {i}")
        params: dict[str, Any] = out.setdefault(m.group(1).decode("ascii"), {})
        for name_b, raw in _SD_PARAM.findall(m.group(2)):
            if b"\\" in raw:
                raw = _SD_ESCAPE.sub(rb"\1", raw)
            try:
                value = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError("PARAM-VALUE is not UTF-8") from None
            name = name_b.decode("ascii")
            prev = params.get(name)
            if prev is None:
                params[name] = value
            elif isinstance(prev, list):
                prev.append(value)
            else:
                params[name] = [prev, value]
        i = m.end()
    return out, body[i:]


def _rfc3164(pri: int, rest: bytes) -> dict[str, Any]:
    """The BSD format as RFC 3164 §4.1 describes it and as devices send it: an optional
    ``Mmm dd hh:mm:ss`` timestamp, a hostname, a ``TAG[PID]:`` and the message.  What
    does not fit those slots stays in ``message``."""
    out = _base("rfc3164", pri)
    m = _RFC3164_TS.match(rest)
    if m is not None:
        out["timestamp"] = m.group(0)[:-1].decode("ascii")
        rest = rest[m.end():]
        # a hostname follows the timestamp, unless the next word is already the tag
        sp = rest.find(b" ")
        word = rest[:sp] if sp > 0 else b""
        if word and not word.endswith(b":") and b"[" not in word:
            _text(word, "hostname", out)
            rest = rest[sp + 1:]
    t = _TAG.match(rest)
    if t is not None:
        _text(t.group(1), "app_name", out)
        if t.group(2) is not None:
            _text(t.group(2), "procid", out)
        rest = rest[t.end():]
    if rest:
        _text(rest, "message", out)
    return out


# bound once: None without the C accelerator (or with PIPELINE_NO_NATIVE=1)
_syslog_frames = native.syslog_frames if native is not None else None
_COPY_LIMIT = 1 << 19  # bytes: Framer.feed gives the C path a copy of a buffer up to this size


class FrameError(PipelineError, ValueError):
    pass


class Framer:
    """RFC 6587 framing of one TCP stream: octet counting (``LEN SP MSG``) when a frame
    starts with a digit, otherwise non-transparent framing ended by LF (a CR before it is
    dropped).  Decided per frame, as rsyslog does.

    ``feed`` returns complete frames as ``(msg, error)``: ``error`` is None for a good
    frame; for a frame over ``max_frame`` bytes it says so and ``msg`` holds its first
    ``max_frame`` bytes (the rest is skipped).  Memory: the buffer never holds more than
    ``max_frame`` plus one read."""

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._skip = 0  # bytes of an over-long octet-counted frame still to drop
        self._skip_to_lf = False  # inside an over-long LF-framed frame

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[tuple[bytes, str | None]]:
        buf = self._buf
        buf += data
        frames: list[tuple[bytes, str | None]] = []
        pos = 0
        n = len(buf)
        # with the C accelerator: the runs of complete frames within max_frame are taken by
        # syslog_frames from a bytes copy of a small buffer (the usual: one read and a
        # partial frame); everything else is decided below, in this loop
        split = _syslog_frames if n <= _COPY_LIMIT else None
        view = bytes(buf) if split is not None else b""
        while pos < n:
            if split is not None and not self._skip and not self._skip_to_lf:
                fast, pos = split(view, pos, self.max_frame)
                frames += fast
                if pos >= n:
                    break
            if self._skip:
                k = min(self._skip, n - pos)
                self._skip -= k
                pos += k
                continue
            if self._skip_to_lf:
                lf = buf.find(b"\n", pos)
                if lf < 0:
                    pos = n
                    break
                self._skip_to_lf = False
                pos = lf + 1
                continue
            c = buf[pos]
            if 0x30 <= c <= 0x39:
                sp = buf.find(b" ", pos, pos + 11)
                if sp < 0:
                    if n - pos >= 11 or not all(0x30 <= b <= 0x39 for b in buf[pos:n]):
                        raise FrameError("octet count is not followed by a space within 10 digits")
                    break
                digits = bytes(buf[pos:sp])
                if not digits.isdigit():
                    raise FrameError("octet count is not a decimal number")
                length = int(digits)
                start = sp + 1
                if length > self.max_frame:
                    have = min(self.max_frame, n - start)
                    if have < self.max_frame:
                        break  # wait for the first max_frame bytes: they are stored
                    frames.append((bytes(buf[start:start + self.max_frame]),
                                   f"too-large: frame of {length} bytes over max_syslog_frame ({self.max_frame}); "
                                   f"the first {self.max_frame} bytes are kept"))
                    self._skip = length - self.max_frame
                    pos = start + self.max_frame
                    continue
                if n - start < length:
                    break
                frames.append((bytes(buf[start:start + length]), None))
                pos = start + length
                continue
            if c in (0x0A, 0x00):  # an empty frame or a stray NUL trailer
                pos += 1
                continue
            lf = buf.find(b"\n", pos)
            if lf < 0:
                if n - pos > self.max_frame:
                    frames.append((bytes(buf[pos:pos + self.max_frame]),
                                   f"too-large: frame without LF within max_syslog_frame ({self.max_frame}) bytes; "
                                   f"the first {self.max_frame} bytes are kept"))
                    self._skip_to_lf = True
                    pos = n
                break
            end = lf - 1 if lf > pos and buf[lf - 1] == 0x0D else lf
            if end - pos > self.max_frame:
                frames.append((bytes(buf[pos:pos + self.max_frame]),
                               f"too-large: frame of {end - pos} bytes over max_syslog_frame ({self.max_frame}); "
                               f"the first {self.max_frame} bytes are kept"))
            else:
                frames.append((bytes(buf[pos:end]), None))
            pos = lf + 1
        del buf[:pos]
        return frames

    def finish(self) -> list[tuple[bytes, str | None]]:
        """At end of stream: a last LF-framed message without its LF is taken; a partial
        octet-counted frame is reported."""
        buf, self._buf = bytes(self._buf), bytearray()
        if not buf or self._skip or self._skip_to_lf:
            return []
        if 0x30 <= buf[0] <= 0x39:
            return [(buf[:self.max_frame], "truncated: the connection closed inside an octet-counted frame")]
        return [(buf.rstrip(b"\r")[:self.max_frame], None)]


def frame_event(msg: bytes, error: str | None) -> dict[str, Any]:
    """The event for one frame from ``Framer.feed``."""
    if error is not None:
        return unparsed(msg, error)
    return parse_message(msg)


def _py_frame_events(items: Sequence[Sequence[Any]], at: int) -> list[dict[str, Any]]:
    return [frame_event(item[at], item[at + 1]) for item in items]


def _native_frame_events(items: Sequence[Sequence[Any]], at: int) -> list[dict[str, Any]]:
    assert native is not None
    # the C parser takes the common RFC 5424 message itself and hands everything else to
    # the Python reference, so both paths give the same events (tests/ingest/test_syslog_differential.py)
    events: list[dict[str, Any]] = native.syslog_events(items, at, parse_message, unparsed)
    return events


# bound once: the C batch parser when the accelerator is loaded (PIPELINE_NO_NATIVE=1: Python)
_frame_events: Callable[[Sequence[Sequence[Any]], int], list[dict[str, Any]]] = \
    _native_frame_events if native is not None else _py_frame_events


def frame_events(items: Sequence[Sequence[Any]], at: int) -> list[dict[str, Any]]:
    """The events for a batch of frames, in order: ``items[i][at]`` is a frame's bytes and
    ``items[i][at + 1]`` its framing error or None (``Framer.feed``'s pairs with ``at=0``,
    ``RelpParser.feed``'s 4-tuples with ``at=2``).  The same as ``frame_event`` on each."""
    return _frame_events(items, at)
