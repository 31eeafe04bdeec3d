"""The JSON profile (docs/FORMAT.md §1.1): each case RFC 8259 leaves open has one outcome, the
same in the verifier (Python and the C fast path), in ingest (socket, HTTP, the sanitiser's C
batch path) and in ``pipeline append``."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline._accel import native
from pipeline.format import strictjson
from pipeline.hot.segment import list_segments
from pipeline.hot.writer import HotLog
from pipeline.ingest.server import IngestServer
from pipeline.record import encode_record, parse_record
from pipeline.sanitise import DEFAULT_SANITISER, InvalidEvent, Sanitiser
from pipeline.verify.chain import verify_stream
from tests.hotutil import PYTHON, REPO, records, rewrite
from tests.ingest.test_ingest import post

TS = b"2026-11-02T10:20:30.123456Z"
DEEP64 = b'{"a":' * 63 + b"{}" + b"}" * 63  # 64 levels: the limit
DEEP65 = b'{"a":' * 64 + b"{}" + b"}" * 64

# (name, event bytes as a client sends them, reason ingest refuses it with or None, stored bytes)
INGEST_CASES = [
    ("duplicate-key", b'{"dup":1,"dup":2}', "duplicate-key", None),
    ("duplicate-key-nested", b'{"a":{"b":1,"b":2}}', "duplicate-key", None),
    ("duplicate-key-escaped", b'{"a":1,"\\u0061":2}', "duplicate-key", None),
    ("duplicate-key-spaced", b'{"a" :1, "a" : 2}', "duplicate-key", None),
    ("int-2^64", b'{"n":18446744073709551616}', "int-range", None),
    ("int-below-min", b'{"n":-9223372036854775809}', "int-range", None),
    ("int-huge", b'{"n":' + b"9" * 400 + b"}", "int-range", None),
    ("int-max", b'{"n":18446744073709551615}', None, b'{"n":18446744073709551615}'),
    ("int-min", b'{"n":-9223372036854775808}', None, b'{"n":-9223372036854775808}'),
    ("float-overflow", b'{"x":1e400}', "bad-json", None),
    ("float-underflow", b'{"x":1e-400}', None, b'{"x":0.0}'),
    ("float-spelling", b'{"x":1E2}', None, b'{"x":100.0}'),
    ("lone-high-surrogate", b'{"s":"\\ud800"}', "bad-json", None),
    ("lone-low-surrogate", b'{"s":"\\udc00x"}', "bad-json", None),
    ("encoded-surrogate", b'{"s":"\xed\xa0\x80"}', "bad-json", None),
    ("surrogate-pair", b'{"s":"\\ud83d\\ude00"}', None, '{"s":"\U0001f600"}'.encode()),
    ("depth-64", DEEP64, None, DEEP64),
    ("depth-65", DEEP65, "too-deep", None),
    ("whitespace", b' { "a" : 1 } ', None, b'{"a":1}'),
]


@pytest.mark.parametrize("name,raw,reason,stored", INGEST_CASES, ids=[c[0] for c in INGEST_CASES])
def test_sanitiser_prepare_json(name: str, raw: bytes, reason: str | None, stored: bytes | None) -> None:
    for sanitiser in (DEFAULT_SANITISER, Sanitiser(redact=False)):
        if reason is None:
            assert sanitiser.prepare_json(raw) == stored
            assert sanitiser.prepare_json_many([raw]) == [stored]  # the C batch path when built
        else:
            with pytest.raises(InvalidEvent) as ei:
                sanitiser.prepare_json(raw)
            assert ei.value.reason == reason, ei.value
            [got] = sanitiser.prepare_json_many([raw])
            assert isinstance(got, InvalidEvent) and got.reason == reason


def test_prepare_json_many_mixed_batch_keeps_positions() -> None:
    raws = [c[1] for c in INGEST_CASES]
    out = DEFAULT_SANITISER.prepare_json_many(raws)
    for (name, _raw, reason, stored), got in zip(INGEST_CASES, out, strict=True):
        if reason is None:
            assert got == stored, name
        else:
            assert isinstance(got, InvalidEvent) and got.reason == reason, name


def test_sanitiser_depth_cannot_exceed_the_format() -> None:
    with pytest.raises(ValueError, match="max_depth"):
        Sanitiser(max_depth=strictjson.MAX_DEPTH + 1)
    with pytest.raises(InvalidEvent) as ei:
        Sanitiser(max_depth=3).prepare_json(b'{"a":{"b":{"c":{}}}}')
    assert ei.value.reason == "too-deep"


@pytest.fixture
def log(hot_dir: Path) -> Iterator[HotLog]:
    hl = HotLog(hot_dir, "app", durability="group", heartbeat_interval=0, segment_window=0)
    yield hl
    hl.close()


def test_ingest_socket_and_http_refuse_and_store_as_documented(hot_dir: Path, log: HotLog, tmp_path: Path) -> None:
    body = b"".join(c[1] + b"\n" for c in INGEST_CASES)
    path = tmp_path / "ingest.sock"
    with IngestServer(log, socket_path=path, http_listen="127.0.0.1:0") as srv:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(path))
            s.sendall(body)
            buf = b""
            while buf.count(b"\n") < len(INGEST_CASES):
                chunk = s.recv(65536)
                assert chunk
                buf += chunk
        by_socket = [json.loads(x) for x in buf.splitlines()]
        stored_before = len(records(hot_dir / "app"))
        # HTTP requests are atomic (docs/INGEST.md): a mixed body is refused whole with 422,
        # naming each refused event and its reason, and stores nothing
        status, _h, by_http = post(srv.http_address, body)  # type: ignore[arg-type]
        assert status == 422, by_http
        assert len(records(hot_dir / "app")) == stored_before
        refused = {i: c[2] for i, c in enumerate(INGEST_CASES, start=1) if c[2] is not None}
        assert {e["event"]: e["error"].split(":")[0] for e in by_http["errors"]} == refused
        # each good case alone is stored exactly as the socket stored it
        http_stored = {}
        for name, raw, reason, _want in INGEST_CASES:
            if reason is None:
                status, _h, one = post(srv.http_address, raw + b"\n")  # type: ignore[arg-type]
                assert status == 200 and one["accepted"] == 1, (name, one)
                http_stored[name] = one["last_seq"]
    stored = {r.seq: r for r in records(hot_dir / "app")}
    for (name, _raw, reason, want), ans in zip(INGEST_CASES, by_socket, strict=True):
        if reason is None:
            assert ans["ok"], (name, ans)
            for seq in (ans["seq"], http_stored[name]):
                line = stored[seq].line
                data = line[line.index(b',"data":') + 8 : line.rindex(b',"hash":"')]
                # ingest puts the sender first (docs/FORMAT.md §1.2); the event's bytes follow as sent
                sender_end = data.index(b"},") + 2
                assert data[:sender_end].startswith(b'{"_sender":{"auth":'), name
                assert b"{" + data[sender_end:] == want, name
        else:
            assert not ans["ok"] and ans["error"].startswith(reason + ": "), (name, ans)
    assert verify_stream(hot_dir / "app", workers=1).ok


def test_pipeline_append_refuses_and_stores_as_documented(hot_dir: Path) -> None:
    body = b"".join(c[1] + b"\n" for c in INGEST_CASES)
    proc = subprocess.run([PYTHON, "-m", "pipeline", "append", "--hot", str(hot_dir), "--stream", "app"],
                          input=body, capture_output=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2, proc.stderr  # some lines refused: all or nothing
    refused = [c for c in INGEST_CASES if c[2] is not None]
    errors = proc.stderr.decode().splitlines()
    for name, _raw, reason, _want in refused:
        lineno = next(i for i, c in enumerate(INGEST_CASES, start=1) if c[0] == name)
        assert any(e.startswith(f"pipeline: line {lineno}: invalid event ({reason})") or
                   f"line {lineno}: invalid event ({reason})" in e for e in errors), (name, errors)
    assert not (hot_dir / "app").exists()  # nothing stored
    good = b"".join(c[1] + b"\n" for c in INGEST_CASES if c[2] is None)
    proc = subprocess.run([PYTHON, "-m", "pipeline", "append", "--hot", str(hot_dir), "--stream", "app"],
                          input=good, capture_output=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    datas = [r.line[r.line.index(b',"data":') + 8 : r.line.rindex(b',"hash":"')]
             for r in records(hot_dir / "app") if r.kind == "event"]
    assert datas == [c[3] for c in INGEST_CASES if c[2] is None]
    assert verify_stream(hot_dir / "app", workers=1).ok


# ------------------------------------------------------------------ the verifier

# (name, data bytes of one record, whether the verifier accepts it)
RECORD_CASES = [
    ("plain", b'{"a":1,"b":"x y"}', True),
    ("duplicate-key", b'{"dup":1,"dup":2}', False),
    ("duplicate-key-nested", b'{"a":[{"b":1,"b":2}]}', False),
    ("duplicate-key-escaped", b'{"a":1,"\\u0061":2}', False),
    ("same-key-other-objects", b'{"a":{"a":1},"b":{"a":2}}', True),
    ("whitespace-inside-data", b'{"a": 1}', False),
    ("whitespace-after-data", b'{"a":1} ', False),
    ("tab-inside-data", b'{"a":\t1}', False),
    ("space-in-string", b'{"a":" : "}', True),
    ("lone-surrogate", b'{"s":"\\ud800"}', False),
    ("surrogate-pair", b'{"s":"\\ud83d\\ude00"}', True),
    ("encoded-surrogate", b'{"s":"\xed\xa0\x80"}', False),
    ("int-max", b'{"n":18446744073709551615}', True),
    ("int-min", b'{"n":-9223372036854775808}', True),
    ("int-2^64", b'{"n":18446744073709551616}', False),
    ("int-below-min", b'{"n":-9223372036854775809}', False),
    ("float-overflow", b'{"x":1e400}', False),
    ("float-underflow", b'{"x":1e-400}', True),
    ("big-float-text", b'{"x":123456789012345678901234567890.5}', True),
    ("nan", b'{"x":NaN}', False),
    ("depth-64", DEEP64, True),
    ("depth-65", DEEP65, False),
    ("bom", b'\xef\xbb\xbf{"a":1}', False),
]


C_FAST_PATH_TAKES = {"plain", "same-key-other-objects", "space-in-string", "int-max", "int-min", "big-float-text",
                     "depth-64"}


def write_stream(stream_dir: Path, datas: list[bytes], *, ts: list[bytes] | None = None) -> None:
    """One active segment holding these events, written by encode_record (no seal)."""
    stream_dir.mkdir(parents=True, exist_ok=True)
    prev = b"0" * 64
    out = []
    for i, data in enumerate(datas):
        line, prev = encode_record(stream_dir.name, i, ts[i] if ts else TS, "event", prev, data)
        out.append(line)
    (stream_dir / "seg-00000000000000000000.jsonl").write_bytes(b"".join(out))


@pytest.mark.parametrize("name,data,ok", RECORD_CASES, ids=[c[0] for c in RECORD_CASES])
def test_verifier_outcome(tmp_path: Path, name: str, data: bytes, ok: bool) -> None:
    # the case sits between ordinary records, so the C fast path sees it mid-run
    stream = tmp_path / "app"
    write_stream(stream, [b'{"i":0}', b'{"i":1}', data, b'{"i":3}'])
    rep = verify_stream(stream, workers=1)
    assert rep.ok == ok, [f.to_dict() for f in rep.findings]
    if not ok:
        assert [(f.reason, f.seq) for f in rep.findings] == [("bad-json", 2)]
    if native is not None:
        # the C fast path accepts it only when Python does
        line = (stream / "seg-00000000000000000000.jsonl").read_bytes().splitlines(keepends=True)[2]
        assert native_accepts(line) <= ok
        if name in C_FAST_PATH_TAKES:  # the profile's checks do not push common records off the fast path
            assert native_accepts(line)


def native_accepts(line: bytes) -> bool:
    from pipeline import merkle

    r = parse_record_prefix(line)
    assert native is not None
    out = native.scan_lines(line, 0, b"app", r[0], r[1], None, 0.0, None, merkle.CompactRange(), None)
    return bool(out[2])


def parse_record_prefix(line: bytes) -> tuple[int, bytes]:
    head = orjson.loads(line[: line.index(b',"ts":')] + b"}")
    prev = line[line.index(b'"prev":"') + 8 :][:64]
    return head["seq"], prev


def test_timestamps_out_of_order_are_not_a_finding(tmp_path: Path) -> None:
    stream = tmp_path / "app"
    write_stream(stream, [b'{"i":0}', b'{"i":1}', b'{"i":2}'],
                 ts=[b"2026-11-02T10:20:30.000000Z", b"2026-11-02T10:20:29.000000Z", b"2020-01-01T00:00:00.000000Z"])
    assert verify_stream(stream, workers=1).ok


@pytest.mark.parametrize("ts", [b"2026-02-29T10:00:00.000000Z", b"2026-11-02T24:00:00.000000Z",
                                b"2026-11-02T10:00:60.000000Z", b"0000-01-01T00:00:00.000000Z",
                                b"2026-13-01T00:00:00.000000Z"])
def test_impossible_timestamps_are_bad_field(tmp_path: Path, ts: bytes) -> None:
    stream = tmp_path / "app"
    write_stream(stream, [b'{"i":0}', b'{"i":1}'], ts=[TS, ts])
    rep = verify_stream(stream, workers=1)
    assert [(f.reason, f.seq) for f in rep.findings] == [("bad-field", 1)]


def test_record_naming_another_stream_than_its_directory(tmp_path: Path) -> None:
    write_stream(tmp_path / "other", [b'{"i":0}'])
    (tmp_path / "other").rename(tmp_path / "app")
    rep = verify_stream(tmp_path / "app", workers=1)
    assert [f.reason for f in rep.findings] == ["wrong-stream"]


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
                    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=3), kids, max_size=4),
                    max_leaves=12))
def test_c_screen_agrees_with_the_python_rules(value: object) -> None:
    """profile_ok (C) never accepts what the Python rules refuse, on texts with and without
    duplicates, spaces and big integers."""
    try:
        compact = json.dumps({"v": value}, separators=(",", ":")).encode()
    except ValueError:
        return
    variants = [compact, compact.replace(b":", b": "), compact.replace(b'{"v":', b'{"v":0,"v":')]
    for raw in variants:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        for flag in (False, True):
            try:
                strictjson.loads(raw, compact=flag)
                python_ok = True
            except strictjson.ProfileError:
                python_ok = False
            if native is not None:
                assert native.profile_ok(raw, obj, flag, strictjson.MAX_DEPTH) == python_ok, (raw, flag)


def test_parse_record_and_its_fast_path_accept_the_same_lines() -> None:
    for _name, data, ok in RECORD_CASES:
        line, _ = encode_record("app", 5, TS, "event", b"0" * 64, data)
        try:
            parse_record(line)
            accepted = True
        except ValueError:
            accepted = False
        assert accepted == ok, _name


def test_segment_order_is_first_seq_then_attempt(tmp_path: Path) -> None:
    names = ["seg-00000000000000000006.jsonl", "seg-00000000000000000006.1.jsonl", "seg-00000000000000000006.2.jsonl",
             "seg-00000000000000000000.jsonl", "seg-00000000000000000006.10.jsonl",
             # not segment names: attempt 0, a leading zero, non-ASCII digits
             "seg-00000000000000000006.0.jsonl", "seg-00000000000000000006.01.jsonl",
             "seg-0000000000000000000\u0666.jsonl"]
    for n in names:
        (tmp_path / n).write_bytes(b"")
    assert [p.name for p in list_segments(tmp_path)] == [
        "seg-00000000000000000000.jsonl", "seg-00000000000000000006.jsonl", "seg-00000000000000000006.1.jsonl",
        "seg-00000000000000000006.2.jsonl", "seg-00000000000000000006.10.jsonl"]
    assert sorted(names[:3]) != [p.name for p in list_segments(tmp_path)][1:4]  # byte order differs


def test_duplicate_key_injected_into_a_written_segment(tmp_path: Path) -> None:
    """The verifier judges what the writer cannot produce but an attacker can: a duplicate
    key injected into a real writer's segment and re-chained is found."""
    log = HotLog(tmp_path, "app", heartbeat_interval=0, segment_window=0)
    log.append_many([{"i": i} for i in range(3)])
    log.close(seal=False)
    [seg] = list_segments(tmp_path / "app")
    ls = seg.read_bytes().splitlines(keepends=True)
    r1 = parse_record(ls[1])
    new1, h1 = encode_record("app", 1, r1.ts.encode(), "event", r1.prev.encode(), b'{"i":1,"i":9}')
    r2 = parse_record(ls[2])
    new2, _ = encode_record("app", 2, r2.ts.encode(), "event", h1, b'{"i":2}')
    rewrite(seg, ls[0] + new1 + new2)
    (tmp_path / "app" / "head.json").unlink(missing_ok=True)
    rep = verify_stream(tmp_path / "app", workers=1)
    assert [(f.reason, f.seq) for f in rep.findings] == [("bad-json", 1)]


_HEADER_EDITS = [(b"", b""), (b'"seq":5,', b'"seq": 5,'), (b'"seq":5,', b'"seq":5.0,'), (b'"seq":5,', b'"seq":-5,'),
                 (b'"v":1,', b'"v":1,"v":1,'), (b'"stream":"app"', b'"stream":"a\\u0070p"'),
                 (b'"ts":"2026', b'"ts":"0000'), (b'"kind":"event"', b'"kind":"seal"'), (b'"prev":"0', b'"prev":"A')]


@settings(max_examples=300, deadline=None)
@given(data=st.sampled_from([c[1] for c in RECORD_CASES] + [b'{"a":"\\u00e9","b":[1,{"c":null}]}', b"{}", b"[]",
                                                           b'{"a":1}}', b'{"a":1},"x":{}']),
       edit=st.sampled_from(_HEADER_EDITS))
def test_fast_and_slow_record_parsers_accept_the_same_lines(data: bytes, edit: tuple[bytes, bytes]) -> None:
    """parse_fields (the fast path) accepts exactly the lines the ordered checks of parse_record
    accept, with and without the C screen."""
    from pipeline.format import record

    line, _ = encode_record("app", 5, TS, "event", b"0" * 64, data)
    body = line[: line.rindex(b',"hash":"')].replace(edit[0], edit[1], 1)
    line = body + b',"hash":"' + __import__("hashlib").sha256(body).hexdigest().encode() + b'"}\n'
    for with_c in (True, False):
        with pytest.MonkeyPatch.context() as m:
            if not with_c:
                m.setattr(strictjson, "_native", None)
            fast = record.parse_fields(line) is not None
            m.setattr(record, "parse_fields", lambda _line: None)
            try:
                record.parse_record(line)
                slow = True
            except record.RecordError:
                slow = False
        assert fast == slow, (line, with_c)


@pytest.mark.parametrize("value,reason", [(2**64 - 1, None), (2**64, "int-range"), (-(2**63), None),
                                          (-(2**63) - 1, "int-range"), ("\ud800", "bad-utf8"),
                                          (float("nan"), "not-finite")])
def test_python_objects_follow_the_same_profile(value: object, reason: str | None) -> None:
    """HotLog.append / the logging handler hand dicts to Sanitiser.prepare: the same range,
    the same refusals (FORMAT §1.1, What ingest accepts)."""
    if reason is None:
        out = DEFAULT_SANITISER.prepare({"n": value})
        assert strictjson.loads(out, compact=True) == {"n": value}
    else:
        with pytest.raises(InvalidEvent) as ei:
            DEFAULT_SANITISER.prepare({"n": value})
        assert ei.value.reason == reason
