"""Request bodies: content encodings (bounded decompression) and framings (NDJSON, JSON
arrays, concatenated objects, JSON text sequences, HTML form fields).  docs/INGEST.md
specifies what is accepted.

Memory is the reason for the shapes here: a body is never turned into one Python object
per event all at once (10 MiB of ``{}`` lines would be 3.5 million objects, ~15x the body).
``iter_events`` yields events in chunks of at most ``CHUNK_EVENTS`` slices of at most
``CHUNK_BYTES`` of body, so what a caller holds at any time is the body plus one chunk.
"""

from __future__ import annotations

import io
import re
import zlib
from collections.abc import Iterator
from urllib.parse import parse_qsl

import orjson

from pipeline.errors import PipelineError

__all__ = ["CHUNK_BYTES", "CHUNK_EVENTS", "BodyError", "FramingError", "decode_content", "framing_for",
           "iter_events"]

CHUNK_EVENTS = 1024  # events handed to the sanitiser at once (bounds per-event objects alive)
CHUNK_BYTES = 256 << 10  # body bytes split into lines at once
_ZSTD_MAX_WINDOW = 1 << 23  # a zstd frame asking for a larger window is refused (memory)
_MAX_DEPTH = 512  # delimiting stops here; the sanitiser's own limit is lower

# framings
NDJSON = "ndjson"  # whitespace-separated JSON values; NDJSON and Fluent Bit's json_stream are cases of it
ARRAY = "array"  # one JSON array of events
JSON_SEQ = "json-seq"  # RFC 7464: RS before each value
FORM = "form"  # application/x-www-form-urlencoded: one event (Python's logging.handlers.HTTPHandler)

_JSON_TYPES = {
    "application/x-ndjson": NDJSON, "application/ndjson": NDJSON, "application/jsonl": NDJSON,
    "application/x-jsonlines": NDJSON, "application/jsonlines": NDJSON, "text/plain": NDJSON,
    "application/json": NDJSON, "text/json": NDJSON, "application/json-seq": JSON_SEQ,
    "application/x-www-form-urlencoded": FORM,
}

_WS = re.compile(rb"[ \t\r\n]*+")
_WS_RS = re.compile(rb"[ \t\r\n\x1e]*+")
# A flat object (no nested object or array outside strings) in one regex call: the common
# case.  Possessive quantifiers: no backtracking, linear time whatever the input.
_FLAT_OBJECT = re.compile(rb'\{(?:[^"{}\[\]]++|"(?:[^"\\]++|\\.)*+")*+\}', re.S)
_TOKEN = re.compile(rb'"(?:[^"\\]++|\\.)*+"|[\[\]{}]', re.S)
_SCALAR = re.compile(rb'"(?:[^"\\]++|\\.)*+"|[^\s,\[\]{}"\x1e]++', re.S)


class BodyError(PipelineError):
    """The body as a whole cannot be read: ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class FramingError(PipelineError):
    """The body's framing is broken at event ``event`` (1-based); nothing after it can be
    delimited, so reading stops there."""

    def __init__(self, event: int, detail: str) -> None:
        super().__init__(detail)
        self.event = event
        self.detail = detail
        self.reason = "too-large" if detail.startswith("a value over") else (
            "too-deep" if detail.startswith("nesting") else "bad-framing")


# ------------------------------------------------------------------ content encodings


def decode_content(data: bytes | bytearray, encoding: str | None, limit: int) -> bytes:
    """The body with its ``Content-Encoding`` removed, refusing more than ``limit`` bytes of
    output (413) without ever producing more than ``limit + 64 KiB``: a gzip or zstd bomb
    costs no more memory than an honest body at the limit."""
    enc = (encoding or "identity").strip().lower()
    if enc in ("", "identity"):
        return bytes(data)
    if enc in ("gzip", "x-gzip"):
        return _inflate(data, 16 + zlib.MAX_WBITS, limit, "gzip")
    if enc == "deflate":
        return _inflate(data, zlib.MAX_WBITS, limit, "deflate")
    if enc == "zstd":
        return _unzstd(data, limit)
    raise BodyError(415, "unsupported Content-Encoding: send identity, gzip, deflate or zstd")


def _too_large(limit: int) -> BodyError:
    return BodyError(413, f"decompressed body is over the limit of {limit} bytes (max_request_bytes)")


def _inflate(data: bytes | bytearray, wbits: int, limit: int, name: str) -> bytes:
    out = bytearray()
    view = memoryview(data)
    try:
        while True:
            d = zlib.decompressobj(wbits)
            chunk = view
            while True:
                out += d.decompress(chunk, limit + 1 - len(out))
                if len(out) > limit:
                    raise _too_large(limit)
                chunk = memoryview(d.unconsumed_tail)
                if not chunk:
                    break
            if not d.eof:
                raise BodyError(400, f"truncated {name} body")
            rest = d.unused_data
            # gzip allows several members back to back (RFC 1952 2.2); anything else is junk
            if name != "gzip" or not rest.strip(b"\x00"):
                break
            view = memoryview(rest)
    except zlib.error:
        raise BodyError(400, f"body is not valid {name} data") from None
    return bytes(out)


def _unzstd(data: bytes | bytearray, limit: int) -> bytes:
    import zstandard

    try:
        dctx = zstandard.ZstdDecompressor(max_window_size=_ZSTD_MAX_WINDOW)
        with dctx.stream_reader(io.BytesIO(data), read_across_frames=True) as reader:
            out = bytearray()
            while len(out) <= limit:
                chunk = reader.read(min(1 << 20, limit + 1 - len(out)))
                if not chunk:
                    break
                out += chunk
    except zstandard.ZstdError:
        raise BodyError(400, "body is not valid zstd data (or needs a window over 8 MiB)") from None
    if len(out) > limit:
        raise _too_large(limit)
    return bytes(out)


# ------------------------------------------------------------------ framings


def framing_for(content_type: str | None) -> str | None:
    """The framing for a ``Content-Type`` (parameters ignored), None when not accepted.
    No Content-Type: NDJSON."""
    if content_type is None:
        return NDJSON
    ctype = content_type.split(";", 1)[0].strip().lower()
    return _JSON_TYPES.get(ctype) if ctype else NDJSON


def iter_events(body: bytes, framing: str, max_line: int) -> Iterator[list[tuple[int, bytes]]]:
    """Yield ``[(event number from 1, raw JSON text), ...]`` chunks in body order.

    ``max_line``: a line longer than this is searched for several concatenated values
    (Fluent Bit's json_stream puts a whole batch on one line).  Raises FramingError where
    values can no longer be delimited (after yielding everything before it)."""
    if framing == FORM:
        yield [(1, _form_event(body))]
        return
    start = _WS.match(body).end()  # type: ignore[union-attr]
    if framing == NDJSON and body[start:start + 1] == b"[":
        yield from _chunks(_array_values(body, start, max_line))
    elif framing == JSON_SEQ:
        yield from _chunks(_concatenated(body, 0, len(body), 1, max_line, rs=True))
    else:
        yield from _ndjson(body, max_line)


def _chunks(values: Iterator[tuple[int, bytes]]) -> Iterator[list[tuple[int, bytes]]]:
    chunk: list[tuple[int, bytes]] = []
    size = 0
    for item in values:
        chunk.append(item)
        size += len(item[1])
        if len(chunk) >= CHUNK_EVENTS or size >= CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _ndjson(body: bytes, max_line: int) -> Iterator[list[tuple[int, bytes]]]:
    n = 0
    pos = 0
    end = len(body)
    chunk: list[tuple[int, bytes]] = []
    while pos < end:
        stop = body.find(b"\n", min(end, pos + CHUNK_BYTES))
        stop = end if stop < 0 else stop + 1
        for line in body[pos:stop].split(b"\n"):
            raw = line.strip(b" \t\r")
            if not raw:
                continue
            if len(raw) > max_line or _several_values(raw):
                # whole-line values cannot be right: delimit the values inside it
                if chunk:
                    yield chunk
                    chunk = []
                for sub in _chunks(_concatenated(raw, 0, len(raw), n + 1, max_line, rs=False)):
                    n = sub[-1][0]
                    yield sub
                continue
            n += 1
            chunk.append((n, raw))
            if len(chunk) >= CHUNK_EVENTS:
                yield chunk
                chunk = []
        pos = stop
    if chunk:
        yield chunk


def _several_values(raw: bytes) -> bool:
    """Whether a line holds more than one JSON value (json_stream): cheap checks first, the
    parser only when a ``}`` is followed by a ``{`` somewhere."""
    if raw[0:1] != b"{" or b"{" not in raw[1:] or (b"}{" not in raw and b"} {" not in raw):
        return False
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        text = str(exc)  # orjson's wording for a complete value followed by more
        return "after document" in text or "trailing characters" in text
    return False


def _value_end(buf: bytes, pos: int, end: int, max_len: int) -> int | str:
    """End offset of the JSON value starting at ``pos`` (delimiting only: the sanitiser
    parses it), or why it cannot be delimited.  Scans at most ``max_len`` bytes and
    ``_MAX_DEPTH`` levels: longer or deeper values would be refused anyway."""
    end = min(end, pos + max_len + 1)
    c = buf[pos:pos + 1]
    if c == b"{":
        m = _FLAT_OBJECT.match(buf, pos, end)
        if m is not None:
            return m.end()
    if c in (b"{", b"["):
        depth = 0
        for tok in _TOKEN.finditer(buf, pos, end):
            t = tok.group()[0]
            if t in (0x7B, 0x5B):  # { [
                depth += 1
                if depth > _MAX_DEPTH:
                    return f"nesting deeper than {_MAX_DEPTH} levels"
            elif t in (0x7D, 0x5D):  # } ]
                depth -= 1
                if depth == 0:
                    return tok.end()
        return "an unterminated JSON value" if end - pos <= max_len else f"a value over {max_len} bytes"
    m = _SCALAR.match(buf, pos, end)
    return m.end() if m is not None else "not a JSON value"


def _concatenated(buf: bytes, pos: int, end: int, first: int, max_len: int, *, rs: bool) -> Iterator[tuple[int, bytes]]:
    ws = _WS_RS if rs else _WS
    n = first
    pos = ws.match(buf, pos, end).end()  # type: ignore[union-attr]
    while pos < end:
        stop = _value_end(buf, pos, end, max_len)
        if isinstance(stop, str):
            raise FramingError(n, stop)
        yield n, buf[pos:stop]
        n += 1
        nxt = ws.match(buf, stop, end).end()  # type: ignore[union-attr]
        if nxt == stop and nxt < end and buf[nxt:nxt + 1] not in (b"{", b"["):
            raise FramingError(n, "values must be separated by whitespace")
        pos = nxt


def _array_values(buf: bytes, pos: int, max_len: int) -> Iterator[tuple[int, bytes]]:
    end = len(buf)
    pos = _WS.match(buf, pos + 1).end()  # type: ignore[union-attr]
    n = 1
    if buf[pos:pos + 1] == b"]":
        pos += 1
    else:
        while True:
            if pos >= end:
                raise FramingError(n, "the JSON array is not closed")
            stop = _value_end(buf, pos, end, max_len)
            if isinstance(stop, str):
                raise FramingError(n, stop)
            yield n, buf[pos:stop]
            pos = _WS.match(buf, stop).end()  # type: ignore[union-attr]
            sep = buf[pos:pos + 1]
            if not sep:
                raise FramingError(n + 1, "the JSON array is not closed")
            if sep == b"]":
                pos += 1
                break
            if sep != b",":
                raise FramingError(n + 1, "expected ',' or ']' after an array element")
            pos = _WS.match(buf, pos + 1).end()  # type: ignore[union-attr]
            n += 1
    if _WS.match(buf, pos).end() != end:  # type: ignore[union-attr]
        raise FramingError(n + 1, "content after the JSON array")


def _form_event(body: bytes) -> bytes:
    """One event from form fields (what ``logging.handlers.HTTPHandler`` POSTs: the
    LogRecord's attributes, urlencoded): a JSON object of the fields as strings."""
    try:
        pairs = parse_qsl(body.decode("utf-8", "strict"), keep_blank_values=True, strict_parsing=True,
                          errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise FramingError(1, "not valid application/x-www-form-urlencoded UTF-8") from None
    event: dict[str, str] = {}
    for key, value in pairs:
        if key in event:
            raise FramingError(1, "a form field is repeated")
        event[key] = value
    return orjson.dumps(event)
