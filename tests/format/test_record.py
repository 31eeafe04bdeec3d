"""The record line format: encode/parse round trip, the hash over exact bytes, every rejection."""

from __future__ import annotations

import hashlib
import itertools
import re

import orjson
import pytest

from pipeline.record import (
    GENESIS_HASH,
    HASH_FIELD,
    KEY_ORDER,
    MAX_SEQ,
    TS_RE,
    Kind,
    RecordError,
    UtcClock,
    encode_record,
    parse_record,
    validate_stream_name,
)

TS = b"2026-11-02T10:20:30.123456Z"
PREV = hashlib.sha256(b"previous").hexdigest().encode()


def body_of(line: bytes) -> bytes:
    return line[: line.rindex(HASH_FIELD)]


def forge(body: bytes) -> bytes:
    """A line with a self-consistent hash over an arbitrary body."""
    return body + HASH_FIELD + hashlib.sha256(body).hexdigest().encode() + b'"}\n'


def reason_of(line: bytes) -> str:
    with pytest.raises(RecordError) as ei:
        parse_record(line)
    return ei.value.reason


def sample(seq: int = 7, data: bytes = b'{"user":"alice","n":[1,2.5,null,true]}', kind: str = "event") -> bytes:
    line, _ = encode_record("app.audit", seq, TS, kind, PREV, data)
    return line


# ------------------------------------------------------------------ round trip


@pytest.mark.parametrize("kind", [k.value for k in Kind])
def test_round_trip_every_kind(kind: str) -> None:
    data = orjson.dumps({"user": "alice", "ünï": "€", "n": [1, 2.5, None, True], "o": {}})
    line, digest = encode_record("app.audit", 12345, TS, kind, PREV, data)
    rec = parse_record(line)
    assert rec.stream == "app.audit"
    assert rec.seq == 12345
    assert rec.ts == TS.decode()
    assert rec.kind == kind
    assert rec.prev == PREV.decode()
    assert rec.data == orjson.loads(data)
    assert rec.hash == digest.decode()
    assert rec.line == line
    assert rec.leaf == line[:-1]


def test_line_layout_exact() -> None:
    line, digest = encode_record("s", 0, TS, "event", GENESIS_HASH.encode(), b'{"a":1}')
    expected_body = (
        b'{"v":1,"stream":"s","seq":0,"ts":"2026-11-02T10:20:30.123456Z","kind":"event","prev":"'
        + b"0" * 64
        + b'","data":{"a":1}'
    )
    assert line == expected_body + b',"hash":"' + digest + b'"}\n'
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    assert tuple(orjson.loads(line)) == (*KEY_ORDER, "hash")


def test_hash_covers_exact_bytes_before_hash_field() -> None:
    line = sample()
    rec = parse_record(line)
    assert rec.hash == hashlib.sha256(body_of(line)).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", rec.hash)


def test_two_encodings_of_the_same_object_hash_differently() -> None:
    compact, h1 = encode_record("s", 0, TS, "event", PREV, b'{"a":1,"b":"x"}')
    escaped, h2 = encode_record("s", 0, TS, "event", PREV, b'{"a":1,"b":"\\u0078"}')
    r1, r2 = parse_record(compact), parse_record(escaped)
    assert r1.data == r2.data
    assert h1 != h2
    assert {r1.hash, r2.hash} == {h1.decode(), h2.decode()}
    # whitespace is a third encoding, which the JSON profile refuses (FORMAT §1.1)
    spaced, _ = encode_record("s", 0, TS, "event", PREV, b'{"a": 1, "b": "x"}')
    assert reason_of(spaced) == "bad-json"


def test_genesis() -> None:
    assert GENESIS_HASH == "0" * 64
    line, _ = encode_record("s", 0, TS, "event", GENESIS_HASH.encode(), b"{}")
    assert parse_record(line).prev == GENESIS_HASH


def test_chain_links() -> None:
    prev = GENESIS_HASH.encode()
    recs = []
    for seq in range(5):
        line, prev = encode_record("s", seq, TS, "event", prev, orjson.dumps({"i": seq}))
        recs.append(parse_record(line))
    for a, b in itertools.pairwise(recs):
        assert b.prev == a.hash
        assert b.seq == a.seq + 1


def test_utc_clock_format() -> None:
    clock = UtcClock()
    a = clock.now()
    b = clock.now()
    assert TS_RE.match(a.decode()) and TS_RE.match(b.decode())
    assert b >= a


def test_max_seq_accepted() -> None:
    assert parse_record(sample(seq=MAX_SEQ)).seq == MAX_SEQ


@pytest.mark.parametrize("name", ["a", "A.b-c_d", "0" * 128])
def test_valid_stream_names(name: str) -> None:
    assert validate_stream_name(name) == name


@pytest.mark.parametrize("name", ["", ".hidden", "-x", "a/b", "a b", "é", "a" * 129, "..", "a\n"])
def test_invalid_stream_names(name: str) -> None:
    with pytest.raises(ValueError):
        validate_stream_name(name)


# ------------------------------------------------------------------ rejections


def test_torn_line() -> None:
    line = sample()
    assert reason_of(line[:-1]) == "torn"
    assert reason_of(line[: len(line) // 2]) == "torn"


def test_bad_line_too_short() -> None:
    assert reason_of(b"{}\n") == "bad-line"
    assert reason_of(b"\n") == "bad-line"


def test_bad_line_no_hash_field() -> None:
    line = sample()
    assert reason_of(line.replace(b',"hash":"', b',"hash" :"')) == "bad-line"
    assert reason_of(line[:-3] + b'" }\n') == "bad-line"
    assert reason_of(line[:-3] + b'"}}\n') == "bad-line"


def test_bad_line_hash_not_lowercase_hex() -> None:
    line = sample()
    h = parse_record(line).hash
    assert reason_of(line.replace(h.encode(), h.upper().encode())) == "bad-line"
    assert reason_of(line.replace(h.encode(), b"g" + h[1:].encode())) == "bad-line"


def test_bad_line_embedded_newline_with_valid_hash() -> None:
    body = body_of(sample()).replace(b'"seq":7,', b'"seq":7,\n', 1)
    assert reason_of(forge(body)) == "bad-line"


@pytest.mark.parametrize("pos", [0, 5, 30, 60, 100, 150, 200])
def test_hash_mismatch_on_any_body_byte(pos: int) -> None:
    line = bytearray(sample())
    body_len = len(body_of(bytes(line)))
    pos = pos % body_len
    line[pos] ^= 0x01
    assert reason_of(bytes(line)) == "hash-mismatch"


def test_hash_mismatch_on_hash_field() -> None:
    line = bytearray(sample())
    i = len(line) - 4  # last hex digit of the hash
    line[i] = ord("0") if line[i] != ord("0") else ord("1")
    assert reason_of(bytes(line)) == "hash-mismatch"


def test_bad_json_with_valid_hash() -> None:
    body = body_of(sample()).replace(b'"data":{', b'"data":{,', 1)
    assert reason_of(forge(body)) == "bad-json"


def test_bad_layout_reordered_keys_with_recomputed_hash() -> None:
    body = body_of(sample())
    obj = orjson.loads(body + b"}")
    reordered = {"stream": obj["stream"], "v": 1, **{k: obj[k] for k in KEY_ORDER[2:]}}
    rbody = orjson.dumps(reordered)[:-1]
    assert reason_of(forge(rbody)) == "bad-layout"


def test_bad_json_duplicate_top_level_key() -> None:
    body = body_of(sample(seq=7))
    # the second "seq" wins in orjson, and the key order still looks right: the JSON
    # profile refuses duplicate keys outright (FORMAT §1.1)
    dup = body.replace(b'"seq":7,', b'"seq":7,"seq":8,', 1)
    assert tuple(orjson.loads(dup + b"}")) == KEY_ORDER
    assert reason_of(forge(dup)) == "bad-json"
    # a duplicate "data" key hides the first payload from a parser
    dup_data = body + b',"data":{"other":1}'
    assert reason_of(forge(dup_data)) == "bad-json"
    # a key after data is a layout error
    assert reason_of(forge(body + b',"x":1')) == "bad-layout"


@pytest.mark.parametrize("edit", [(b'"seq":7,', b'"seq": 7,'), (b'{"v":1,', b'{ "v":1,')])
def test_bad_json_whitespace_in_header(edit: tuple[bytes, bytes]) -> None:
    body = body_of(sample())
    assert reason_of(forge(body.replace(edit[0], edit[1], 1))) == "bad-json"


@pytest.mark.parametrize(
    "edit",
    [
        (b'"seq":7,', b'"seq":-0,'),  # another spelling of a number
        (b'"stream":', b'"str\\u0065am":'),  # escaped key
        (b'"stream":"app.audit"', b'"stream":"app\\u002eaudit"'),  # escaped value
        (b'"kind":"event"', b'"kind":"\\u0065vent"'),
    ],
)
def test_bad_layout_non_canonical_header(edit: tuple[bytes, bytes]) -> None:
    body = body_of(sample())
    assert edit[0] in body
    assert reason_of(forge(body.replace(edit[0], edit[1], 1))) == "bad-layout"


def test_bad_layout_extra_or_missing_key() -> None:
    body = body_of(sample())
    assert reason_of(forge(body.replace(b'"kind":"event",', b'"kind":"event","x":1,', 1))) == "bad-layout"
    assert reason_of(forge(body.replace(b'"kind":"event",', b"", 1))) == "bad-layout"


def test_bad_layout_not_an_object() -> None:
    # a JSON array "body" closes with "]" not "}", so it fails JSON or layout, never passes
    assert reason_of(forge(b'["v",1,"stream"')) in {"bad-json", "bad-layout"}


def test_bad_version() -> None:
    body = body_of(sample()).replace(b'{"v":1,', b'{"v":2,', 1)
    assert reason_of(forge(body)) == "bad-version"
    body = body_of(sample()).replace(b'{"v":1,', b'{"v":"1",', 1)
    assert reason_of(forge(body)) == "bad-version"


@pytest.mark.parametrize(
    "old,new",
    [
        (b'"stream":"app.audit"', b'"stream":"app/audit"'),
        (b'"stream":"app.audit"', b'"stream":7'),
        (b'"seq":7', b'"seq":-1'),
        (b'"seq":7', b'"seq":7.0'),
        (b'"seq":7', b'"seq":"7"'),
        (b'"seq":7', b'"seq":true'),
        (b'"seq":7', b'"seq":9223372036854775808'),
        (b'"ts":"2026-11-02T10:20:30.123456Z"', b'"ts":"2026-11-02T10:20:30Z"'),
        (b'"ts":"2026-11-02T10:20:30.123456Z"', b'"ts":"2026-11-02 10:20:30.123456Z"'),
        (b'"ts":"2026-11-02T10:20:30.123456Z"', b'"ts":"2026-11-02T10:20:30.123456+00:00"'),
        (b'"kind":"event"', b'"kind":"Event"'),
        (b'"kind":"event"', b'"kind":"checkpoint"'),
        (b'"prev":"' + PREV + b'"', b'"prev":"' + PREV.upper() + b'"'),
        (b'"prev":"' + PREV + b'"', b'"prev":"' + PREV[:-1] + b'"'),
        (b'"prev":"' + PREV + b'"', b'"prev":null'),
        (b'"data":{"user":"alice","n":[1,2.5,null,true]}', b'"data":[1,2]'),
        (b'"data":{"user":"alice","n":[1,2.5,null,true]}', b'"data":"x"'),
        (b'"data":{"user":"alice","n":[1,2.5,null,true]}', b'"data":null'),
    ],
)
def test_bad_field(old: bytes, new: bytes) -> None:
    body = body_of(sample())
    assert old in body
    assert reason_of(forge(body.replace(old, new, 1))) == "bad-field"


def test_forged_line_with_consistent_hash_parses() -> None:
    """parse_record checks a line alone: a forged but well-formed line passes here and must be
    caught by the chain (prev/seq), which the verifier tests cover."""
    body = body_of(sample()).replace(b'"alice"', b'"mallory"', 1)
    assert parse_record(forge(body)).data["user"] == "mallory"
