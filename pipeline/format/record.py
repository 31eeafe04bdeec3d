"""The record line format and its hash chain: the specification in code.

docs/FORMAT.md describes the same bytes in prose; tests/format/test_format_doc.py checks the
worked example in that document against this module.  The line layout is written here
once (``LINE_PREFIX``, ``_HEADER``); the C accelerator's encoder
(``pipeline._native.append_record(s)``) is a binding of ``encode_record`` for lines that
start with ``record_prefix(stream)``.  Record timestamps are parsed here only
(``valid_ts``, ``ts_epoch``).

A record line is one JSON object, UTF-8, terminated by a single ``\\n``::

    {"v":1,"stream":S,"seq":N,"ts":T,"kind":K,"prev":P,"data":D,"hash":H}\\n

with the keys in exactly this order.  ``H`` is the lowercase hex SHA-256 of the line's
bytes from the opening ``{`` up to, and not including, the 9 bytes ``,"hash":"``.  The hash
therefore covers the exact bytes written, and verification never re-serialises JSON.
``P`` is the previous record's ``H`` (the genesis value, 64 zeros, for ``seq`` 0), which
chains records across segment files.
"""

from __future__ import annotations

import calendar
import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson

from pipeline._accel import native
from pipeline.errors import PipelineError
from pipeline.format import strictjson

FORMAT_VERSION = 1
GENESIS_HASH = "0" * 64
HASH_FIELD = b',"hash":"'
DATA_FIELD = b',"data":'
# ,"hash":"  + 64 hex + "}  + \n
SUFFIX_LEN = len(HASH_FIELD) + 64 + 2 + 1
KEY_ORDER = ("v", "stream", "seq", "ts", "kind", "prev", "data")
STREAM_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
HEX64_RE = re.compile(rb"^[0-9a-f]{64}\Z")
TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z\Z", re.ASCII)  # ASCII digits only
# seq is an unsigned integer that fits in 63 bits; JSON integers only, no sign, no leading zero
MAX_SEQ = 2**63 - 1
# data nests at most this deep, data itself being level 1 (the JSON profile, FORMAT §1.1)
MAX_DATA_DEPTH = strictjson.MAX_DEPTH
# The longest record line, its newline included (docs/FORMAT.md §1, check 2): a verifier
# judges a longer line without holding it, so that memory stays bounded whatever a file
# holds.  The writer's largest line (an event at the largest ingest.max_event_bytes,
# encrypted: base64 grows it by 4/3) stays well below it.
MAX_LINE_BYTES = 32 << 20
# The largest event (its sanitised JSON) the writer takes (ingest.max_event_bytes at most).
# Encrypted with every field also kept in clear, an event's line is at most about 7/3 of it
# (the clear members, then the base64 of the whole ciphertext), plus the record's header
# and the encryption's envelope: 8 MiB -> under 19 MiB, below MAX_LINE_BYTES with room.
MAX_EVENT_BYTES = 8 << 20


class Kind(StrEnum):
    """What a record is.  ``event`` carries an application event; the others are the log's own."""

    EVENT = "event"
    SEAL = "seal"
    HEARTBEAT = "heartbeat"
    RECOVERY = "recovery"
    KEY = "key"  # an encrypted stream's wrapped seed (docs/FORMAT.md §11)


KINDS = frozenset(k.value for k in Kind)


class RecordError(PipelineError, ValueError):
    """A line is not a well-formed record.  ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Record:
    """A parsed record line.  ``line`` keeps the exact bytes (with the trailing newline)."""

    stream: str
    seq: int
    ts: str
    kind: str
    prev: str
    data: dict[str, Any]
    hash: str
    line: bytes

    @property
    def leaf(self) -> bytes:
        """The Merkle leaf bytes: the record line without its trailing newline."""
        return self.line[:-1]


# epoch seconds of each "YYYY-MM-DDTHH:MM:SS" seen, None for one that names no real time;
# records of one second share it, so the calendar work runs about once per second of log
_SECONDS: dict[str, int | None] = {}
_UNSEEN = -(1 << 63)  # no second of years 0001-9999 is this far from the epoch


def _second(prefix: str) -> int | None:
    secs = _SECONDS.get(prefix, _UNSEEN)
    if secs != _UNSEEN:
        return secs
    try:
        when = datetime(int(prefix[0:4]), int(prefix[5:7]), int(prefix[8:10]), int(prefix[11:13]),
                        int(prefix[14:16]), int(prefix[17:19]))
        secs = calendar.timegm(when.timetuple())
    except ValueError:
        secs = None
    if len(_SECONDS) > 4096:
        _SECONDS.clear()
    _SECONDS[prefix] = secs
    return secs


def valid_ts(ts: str) -> bool:
    """Whether ``ts`` is ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` naming a real time: a day that exists
    in the proleptic Gregorian calendar (years 0001-9999), hour 00-23, minute and second
    00-59 (no leap second: the writer's clock is POSIX time)."""
    return type(ts) is str and TS_RE.match(ts) is not None and _second(ts[:19]) is not None


def ts_epoch(ts: str) -> float:
    """A record timestamp (``valid_ts``) as POSIX seconds: the one timestamp parser of the
    code base.  Computed as whole seconds plus microseconds / 1e6, exactly as the C
    accelerator's verifier does, so both paths report the same gaps.  ValueError for
    anything ``valid_ts`` refuses."""
    if type(ts) is not str or not TS_RE.match(ts):
        raise ValueError(f"{ts!r} is not a UTC time written YYYY-MM-DDTHH:MM:SS.ffffffZ")
    secs = _second(ts[:19])
    if secs is None:
        raise ValueError(f"{ts!r} names no real time")
    return float(secs) + int(ts[20:26]) / 1e6


def loads_data(data_json: bytes) -> Any:
    """Parse a record's ``data`` bytes under the JSON profile, compact form (FORMAT §1.1).
    Raises ``orjson.JSONDecodeError`` or ``strictjson.ProfileError``."""
    return strictjson.loads(data_json, compact=True, max_depth=MAX_DATA_DEPTH)


def validate_stream_name(name: str) -> str:
    if not isinstance(name, str) or not STREAM_NAME_RE.match(name):
        raise ValueError(
            f"invalid stream name {name!r}: use 1-128 characters from A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit"
        )
    return name


class UtcClock:
    """RFC 3339 UTC timestamps with microseconds, cheaply.

    ``datetime.now().isoformat()`` costs about a microsecond; formatting the seconds part
    once per second and appending the microseconds is several times cheaper on the
    append path.
    """

    __slots__ = ("_prefix", "_sec", "now")

    def __init__(self) -> None:
        self._sec = -1
        self._prefix = b""
        # the C accelerator formats the same bytes from clock_gettime, without the interpreter
        self.now: Callable[[], bytes] = native.utc_now if native is not None else self.now_python

    def now_python(self) -> bytes:
        ns = time.time_ns()
        sec, rem = divmod(ns, 1_000_000_000)
        if sec != self._sec:
            self._sec = sec
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)).encode()
        return b"%s.%06dZ" % (self._prefix, rem // 1000)


# The line layout, once: every line of a stream starts with LINE_PREFIX % stream, then the
# rest of the header, then data, then the hash suffix.
LINE_PREFIX = b'{"v":1,"stream":"%s","seq":'
_HEADER = LINE_PREFIX + b'%d,"ts":"%s","kind":"%s","prev":"%s","data":'
_BODY = _HEADER + b"%s"


def record_prefix(stream: str | bytes) -> bytes:
    """The bytes every record line of ``stream`` starts with, up to the value of ``seq``
    (what the C encoder is given once per stream)."""
    return LINE_PREFIX % (stream.encode() if isinstance(stream, str) else stream)


def encode_record(
    stream: str | bytes, seq: int, ts: bytes, kind: str, prev: bytes, data_json: bytes
) -> tuple[bytes, bytes]:
    """Build one record line.  Returns ``(line, hash_hex)``; both are bytes.

    ``data_json`` must already be the compact JSON serialisation of a JSON object, and
    ``prev`` the previous record's lowercase hex hash.  This is the only definition of the
    line; ``pipeline._native.append_record(s)`` is its accelerated binding.
    """
    sb = stream.encode() if isinstance(stream, str) else stream
    body = _BODY % (sb, seq, ts, kind.encode(), prev, data_json)
    digest = hashlib.sha256(body).hexdigest().encode()
    return body + HASH_FIELD + digest + b'"}\n', digest


# The canonical header, exactly: a line whose body starts with this is in the required
# layout by construction (no escapes, whitespace, duplicate keys or alternative spellings).
_HEADER_RE = re.compile(
    rb'\{"v":1,"stream":"([A-Za-z0-9][A-Za-z0-9._-]{0,127})","seq":(0|[1-9][0-9]{0,18}),'
    rb'"ts":"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z)","kind":"(event|seal|heartbeat|recovery|key)",'
    rb'"prev":"([0-9a-f]{64})","data":'
)

RecordFields = tuple[str, int, str, str, str, dict[str, Any], str]


def overlong(n: int) -> str:
    """What is wrong with a line of ``n`` bytes over ``MAX_LINE_BYTES``."""
    return f"line is {n} bytes, over the format's limit of {MAX_LINE_BYTES} (docs/FORMAT.md §1)"


def parse_fields(line: bytes) -> RecordFields | None:
    """The fast path of ``parse_record`` for verifiers that read millions of lines:
    ``(stream, seq, ts, kind, prev, data, hash)`` for a valid line, or None, in which case
    ``parse_record`` gives the precise reason.  Accepts exactly the lines ``parse_record``
    accepts."""
    n = len(line)
    if n < SUFFIX_LEN + 2 or n > MAX_LINE_BYTES or line[-3:] != b'"}\n':
        return None
    body_end = n - SUFFIX_LEN
    if line[body_end : body_end + 9] != HASH_FIELD:
        return None
    body = line[:body_end]
    claimed = line[body_end + 9 : -3]
    if hashlib.sha256(body).hexdigest().encode() != claimed:
        return None
    m = _HEADER_RE.match(body)
    if m is None or b"\n" in body:
        return None
    seq = int(m.group(2))
    if seq > MAX_SEQ:
        return None
    try:
        data = loads_data(body[m.end() :])
    except (orjson.JSONDecodeError, strictjson.ProfileError):
        return None
    ts = m.group(3).decode()
    if type(data) is not dict or not valid_ts(ts):
        return None
    return (m.group(1).decode(), seq, ts, m.group(4).decode(), m.group(5).decode(), data, claimed.decode())


def parse_record(line: bytes) -> Record:
    """Parse and self-check one record line (with its trailing newline).

    Applies the checks of docs/FORMAT.md §1 in the order given there and raises the reason
    of the first that fails.  Does not check the chain (``prev``) or ``seq`` continuity,
    which need the previous record.  The header (every key before ``data``) must be byte for
    byte what the fields say, which rules out reordering, escapes and alternative number
    spellings; the JSON profile (§1.1) rules out whitespace and duplicate keys anywhere.
    """
    fields = parse_fields(line)
    if fields is not None:
        return Record(*fields, line)
    if not line.endswith(b"\n"):
        raise RecordError("torn", "line has no terminating newline")
    if len(line) < SUFFIX_LEN + 2:
        raise RecordError("bad-line", "line too short to be a record")
    if len(line) > MAX_LINE_BYTES:
        raise RecordError("bad-line", overlong(len(line)))
    body_end = len(line) - SUFFIX_LEN
    if line[body_end : body_end + 9] != HASH_FIELD or line[-3:] != b'"}\n':
        raise RecordError("bad-line", 'line does not end with ,"hash":"<64 hex>"}')
    claimed = line[body_end + 9 : -3]
    if not HEX64_RE.match(claimed):
        raise RecordError("bad-line", "hash field is not 64 lowercase hex digits")
    body = line[:body_end]
    if b"\n" in body:
        raise RecordError("bad-line", "embedded newline")
    if hashlib.sha256(body).hexdigest().encode() != claimed:
        raise RecordError("hash-mismatch", "record hash does not match its bytes")
    try:
        obj = strictjson.loads(body + b"}", compact=True, max_depth=MAX_DATA_DEPTH + 1)
    except orjson.JSONDecodeError as exc:
        raise RecordError("bad-json", str(exc)) from None
    except strictjson.ProfileError as exc:
        raise RecordError("bad-json", f"{exc.detail} (the JSON profile, docs/FORMAT.md §1.1)") from None
    if type(obj) is not dict or tuple(obj) != KEY_ORDER:
        raise RecordError("bad-layout", f"keys must be exactly {', '.join(KEY_ORDER)} in this order")
    stream, seq, ts, kind, prev, data = (obj[k] for k in KEY_ORDER[1:])
    if type(obj["v"]) is not int or obj["v"] != FORMAT_VERSION:
        raise RecordError("bad-version", f"unsupported format version {obj['v']!r}")
    if type(stream) is not str or not STREAM_NAME_RE.match(stream):
        raise RecordError("bad-field", "stream is not a valid stream name")
    if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
        raise RecordError("bad-field", "seq is not an integer in 0..2^63-1")
    if not valid_ts(ts):
        raise RecordError("bad-field", "ts is not a real UTC time written YYYY-MM-DDTHH:MM:SS.ffffffZ")
    if kind not in KINDS:
        raise RecordError("bad-field", f"unknown kind {kind!r}")
    if type(prev) is not str or not HEX64_RE.match(prev.encode()):
        raise RecordError("bad-field", "prev is not 64 lowercase hex digits")
    if type(data) is not dict:
        raise RecordError("bad-field", "data is not a JSON object")
    header = _HEADER % (stream.encode(), seq, ts.encode(), kind.encode(), prev.encode())
    if not body.startswith(header):
        raise RecordError("bad-layout", "record header is not in the canonical layout (escapes or number "
                          "spelling differ from the fields)")
    # unreachable while parse_fields accepts exactly these lines (tests/format/test_record.py checks it)
    return Record(stream, seq, ts, kind, prev, data, claimed.decode(), line)
