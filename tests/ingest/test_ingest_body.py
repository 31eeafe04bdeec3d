"""Request bodies (pipeline/ingest/body.py): framings delimit exactly the values a JSON
parser would see, and decoding is bounded."""

from __future__ import annotations

import gzip
import zlib

import orjson
import pytest
import zstandard

from pipeline.ingest.body import (
    ARRAY,
    CHUNK_EVENTS,
    FORM,
    JSON_SEQ,
    NDJSON,
    BodyError,
    FramingError,
    decode_content,
    framing_for,
    iter_events,
)

TRICKY = [
    {"s": "a},{b", "t": "]", "q": 'say "hi"\\', "u": "\u00e9\u2028"},
    {"nested": {"a": [{"b": "}{"}, [], {}]}, "n": -1.5e3},
    {},
]


def values(body: bytes, framing: str = NDJSON, max_line: int = 1 << 20) -> list[object]:
    return [orjson.loads(raw) for chunk in iter_events(body, framing, max_line) for _n, raw in chunk]


def numbers(body: bytes, framing: str = NDJSON) -> list[int]:
    return [n for chunk in iter_events(body, framing, 1 << 20) for n, _raw in chunk]


def test_ndjson_variants() -> None:
    lines = [orjson.dumps(e) for e in TRICKY]
    assert values(b"\n".join(lines)) == TRICKY  # Vector: no trailing newline
    assert values(b"\r\n".join(lines) + b"\r\n\r\n") == TRICKY
    assert values(b"\n\n  " + b"\n \t\n".join(lines)) == TRICKY
    assert numbers(b'{"a":1}\n\n{"b":2}\n') == [1, 2]  # blank lines are not events


def test_arrays_and_concatenations() -> None:
    encoded = [orjson.dumps(e) for e in TRICKY]
    assert values(b"[" + b",".join(encoded) + b"]") == TRICKY
    assert values(b" [ \n" + b" ,\n ".join(encoded) + b" ] \n") == TRICKY
    assert values(b"[]") == []
    assert values(b"".join(encoded)) == TRICKY  # Fluent Bit json_stream
    assert values(b" ".join(encoded)) == TRICKY
    assert values(b"".join(b"\x1e" + e + b"\n" for e in encoded), JSON_SEQ) == TRICKY
    # a non-object element is delimited (and then refused by the sanitiser, not here)
    assert values(b'[{"a":1},"str",2,[3],null]') == [{"a": 1}, "str", 2, [3], None]


def test_long_line_of_concatenated_objects_is_delimited() -> None:
    body = b"".join(orjson.dumps({"i": i}) for i in range(3000))
    got = values(body, max_line=100)  # longer than max_line: searched for several values
    assert got == [{"i": i} for i in range(3000)]
    assert max(len(chunk) for chunk in iter_events(body, NDJSON, 100)) <= CHUNK_EVENTS


@pytest.mark.parametrize(("body", "event", "detail"), [
    (b'[{"a":1},{"b":2}', 3, "not closed"),
    (b'[{"a":1} {"b":2}]', 2, "expected ','"),
    (b'[{"a":1}] {"b":2}', 2, "content after"),
    (b'[{"a":1},{"b":', 2, "unterminated"),
    (b"[" + b"[" * 600 + b"]" * 600 + b"]", 1, "nesting deeper"),
])
def test_array_framing_errors(body: bytes, event: int, detail: str) -> None:
    with pytest.raises(FramingError) as info:
        values(body)
    assert info.value.event == event and detail in info.value.detail


def test_value_longer_than_the_limit_is_too_large() -> None:
    with pytest.raises(FramingError) as info:
        values(b'[{"s":"' + b"x" * 500 + b'"}]', max_line=100)
    assert info.value.reason == "too-large"


def test_form_is_one_event() -> None:
    got = values(b"name=app&msg=order+%25s&args=%2842%2C%29&levelno=20", FORM)
    assert got == [{"name": "app", "msg": "order %s", "args": "(42,)", "levelno": "20"}]
    with pytest.raises(FramingError, match="repeated"):
        values(b"a=1&a=2", FORM)
    with pytest.raises(FramingError, match="UTF-8"):
        values(b"a=%ff\xff", FORM)


def test_framing_for_content_types() -> None:
    assert framing_for(None) == NDJSON
    assert framing_for("application/json; charset=utf-8") == NDJSON  # arrays are recognised by their "["
    assert framing_for("Application/X-NDJSON") == NDJSON
    assert framing_for("application/json-seq") == JSON_SEQ
    assert framing_for("application/x-www-form-urlencoded") == FORM
    assert framing_for("application/msgpack") is None
    assert ARRAY != NDJSON


def test_decoding_is_bounded() -> None:
    body = b'{"a":1}\n' * 1000
    assert decode_content(gzip.compress(body), "gzip", len(body)) == body
    assert decode_content(gzip.compress(body[:400]) + gzip.compress(body[400:]), "x-gzip", len(body)) == body
    assert decode_content(zlib.compress(body), "deflate", len(body)) == body
    cctx = zstandard.ZstdCompressor()
    assert decode_content(cctx.compress(body[:100]) + cctx.compress(body[100:]), "zstd", len(body)) == body
    assert decode_content(bytearray(body), "identity", len(body)) == body
    for encoding, data in (("gzip", gzip.compress(body)), ("zstd", cctx.compress(body)),
                           ("deflate", zlib.compress(body))):
        with pytest.raises(BodyError) as info:
            decode_content(data, encoding, len(body) - 1)
        assert info.value.status == 413
    for encoding, data in (("gzip", gzip.compress(body)[:-9]), ("gzip", b"not gzip"), ("zstd", b"not zstd"),
                           ("deflate", b"\x00\x01")):
        with pytest.raises(BodyError) as info:
            decode_content(data, encoding, 1 << 20)
        assert info.value.status == 400
    with pytest.raises(BodyError) as info:
        decode_content(body, "br", 1 << 20)
    assert info.value.status == 415
