"""The C accelerator (pipeline/_native.c) against the pure-Python reference it stands in for:
same bytes, same hashes, same verdicts.  Each fast path is checked on generated inputs, and
the writer end to end (a stream written with the accelerator is byte-identical to one
written without it)."""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import _accel, sanitise
from pipeline.crypt import writer as crypt_writer
from pipeline.format import merkle, strictjson
from pipeline.hot import chain as hot_chain
from pipeline.hot import writer as writer_mod
from pipeline.hot.segment import list_segments
from pipeline.hot.writer import HotLog, Receipt
from pipeline.record import GENESIS_HASH, TS_RE, encode_record
from pipeline.sanitise import InvalidEvent, Rules, Sanitiser
from tests.hotutil import needs_native

native = _accel.native


def test_accelerator_is_built() -> None:
    """The install builds pipeline._native (gcc, Python headers and OpenSSL headers are on
    every supported machine).  Without it everything still works, only slower; set
    PIPELINE_NO_NATIVE=1 to run the suite on the pure-Python paths on purpose."""
    if os.environ.get("PIPELINE_NO_NATIVE") == "1":
        assert native is None
        assert "PIPELINE_NO_NATIVE" in _accel.describe()
        return
    assert native is not None, "pipeline._native was not built: install gcc, python3-dev and libssl-dev, reinstall"
    assert _accel.describe().startswith("native")


def test_no_native_env_forces_pure_python() -> None:
    code = "from pipeline import _accel, merkle; print(_accel.native is None, merkle.CompactRange.__module__)"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PIPELINE_NO_NATIVE": "1"},
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "pipeline.format.merkle"]


# --- CompactRange ---------------------------------------------------------------------------

leaf_lists = st.lists(st.binary(min_size=0, max_size=40), min_size=0, max_size=300)


@needs_native
@settings(max_examples=60, deadline=None)
@given(leaves=leaf_lists)
def test_compact_range_matches_python(leaves: list[bytes]) -> None:
    assert native is not None
    c, p = native.CompactRange(), merkle.PyCompactRange()
    for leaf in leaves:
        lh = merkle.leaf_hash(leaf)
        c.append(lh)
        p.append(lh)
        assert (c.size, c.stack, c.root()) == (p.size, p.stack, p.root())
    assert c.root() == merkle.root_from_leaves(leaves)
    copy = c.copy()
    c.append(merkle.leaf_hash(b"more"))
    assert copy.size == len(leaves) and copy.root() == p.root()
    rebuilt = native.CompactRange(p.size, p.stack)
    assert rebuilt.root() == p.root()
    assert pickle.loads(pickle.dumps(copy)).stack == copy.stack


@needs_native
def test_compact_range_refuses_bad_state() -> None:
    assert native is not None
    lh = merkle.leaf_hash(b"x")
    with pytest.raises(ValueError, match="one hash per set bit"):
        native.CompactRange(3, [lh])
    with pytest.raises(ValueError, match="32-byte"):
        native.CompactRange(1, [b"short"])
    with pytest.raises(ValueError, match="32 bytes"):
        native.CompactRange().append(b"short")
    assert native.CompactRange().root() == merkle.EMPTY_ROOT


def test_merkle_uses_the_native_range_when_built() -> None:
    expected = native.CompactRange if native is not None else merkle.PyCompactRange
    assert merkle.CompactRange is expected


# --- record lines -----------------------------------------------------------------------------

hex64 = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
json_objects = st.dictionaries(st.text(max_size=8), st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1),
                                                             st.text(max_size=30), st.booleans()),
                               max_size=6).map(lambda d: orjson.dumps(d))
timestamps = st.integers(min_value=0, max_value=253402300799).map(
    lambda s: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)).encode() + b".%06dZ" % (s % 1000000))


@needs_native
@settings(max_examples=100, deadline=None)
@given(seq=st.integers(min_value=0, max_value=2**63 - 1), ts=timestamps, prev=hex64, data=json_objects,
       kind=st.sampled_from(["event", "heartbeat", "seal", "recovery"]))
def test_append_record_matches_encode_record(seq: int, ts: bytes, prev: str, data: bytes, kind: str) -> None:
    assert native is not None
    line, digest = encode_record("app", seq, ts, kind, prev.encode(), data)
    c1, c2 = native.CompactRange(), native.CompactRange()
    chunks: list[bytes] = []
    leaves: list[bytes] = []
    out = native.append_record(b'{"v":1,"stream":"app","seq":', seq, ts, kind.encode(), prev.encode(), data,
                               c1, c2, chunks, leaves, 1 << 40, Receipt, "seg", 7)
    assert out is not None
    receipt, hash_hex, n = out
    assert chunks == [line] and hash_hex == digest and n == len(line)
    assert receipt == Receipt(seq, digest.decode(), "seg", 7) and type(receipt) is Receipt
    assert leaves == [merkle.leaf_hash(line[:-1])]
    assert c1.root() == c2.root() == merkle.root_from_leaves([line[:-1]])
    # too long for the limit: nothing changes
    assert native.append_record(b'{"v":1,"stream":"app","seq":', seq, ts, kind.encode(), prev.encode(), data,
                                c1, None, chunks, leaves, len(line) - 1, Receipt, "seg", 7) is None
    assert (len(chunks), len(leaves), c1.size) == (1, 1, 1)
    # no Merkle work at all (leaves=None, no ranges): the same line
    plain: list[bytes] = []
    out2 = native.append_record(b'{"v":1,"stream":"app","seq":', seq, ts, kind.encode(), prev.encode(), data,
                                None, None, plain, None, 1 << 40, Receipt, "seg", 7)
    assert out2 is not None and plain == [line] and out2[1] == digest
    with pytest.raises(TypeError):
        native.append_record(b'{"v":1,"stream":"app","seq":', seq, ts, kind.encode(), prev.encode(), data,
                             c1, None, plain, None, 1 << 40, Receipt, "seg", 7)


@needs_native
@settings(max_examples=40, deadline=None)
@given(datas=st.lists(json_objects, min_size=1, max_size=30), room=st.integers(min_value=0, max_value=4000),
       seg_count=st.integers(min_value=0, max_value=2))
def test_append_records_matches_one_at_a_time(datas: list[bytes], room: int, seg_count: int) -> None:
    assert native is not None
    prefix, ts = b'{"v":1,"stream":"app","seq":', b"2026-11-22T00:00:00.000001Z"
    c1, c2 = native.CompactRange(), native.CompactRange()
    chunks: list[bytes] = []
    leaves: list[bytes] = []
    count, added, last, receipts = native.append_records(prefix, 5, ts, b"event", GENESIS_HASH.encode(), datas, 0,
                                                         c1, c2, chunks, leaves, room, seg_count, Receipt, "s", 0)
    # the reference: encode one by one while the segment has room (the first always fits)
    prev, expect, left, held = GENESIS_HASH.encode(), [], room, seg_count
    for i, d in enumerate(datas):
        line, digest = encode_record("app", 5 + i, ts, "event", prev, d)
        if held and len(line) > left:
            break
        expect.append(line)
        prev, left, held = digest, left - len(line), held + 1
    assert chunks == expect and count == len(expect) and added == sum(map(len, expect))
    assert last == prev
    assert [r.seq for r in receipts] == list(range(5, 5 + count))
    assert c1.root() == merkle.root_from_leaves([x[:-1] for x in expect])


@needs_native
def test_utc_now_format() -> None:
    assert native is not None
    ts = native.utc_now()
    assert TS_RE.fullmatch(ts.decode())
    wall = time.time()
    parsed = time.mktime(time.strptime(ts.decode()[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert abs(parsed + int(ts[20:26]) / 1e6 - wall) < 5


# --- sanitiser screening -----------------------------------------------------------------------

screen_bytes = st.lists(st.sampled_from([
    b"a", b"0", b"7", b" ", b"-", b".", b"_", b"/", b"{", b"[", b"null", b"ab:", b"x@", b"q=", b"AKIA", b"ASIA",
    b"A", b"AIza", b"Acc", b"AccountKey", b"AgEIcHlwaS5vcmc", b"bearer", b"BaSiC", b"b", b"-----BEGIN", b"-----",
    b"\xc3\xa9", b"\xe2\x80\x8b",
    b'"', b"n", b"e", b"y", b"J", b"eyJ", b"gh", b"ghp_", b"gho_", b"github_pat_", b"glpat-", b"gl", b"xoxb-", b"xox",
    b"xapp-", b"sk_live_", b"rk_test_", b"k_", b"whsec_", b"c_", b"npm_", b"m_", b"aws", b"AwS", b"w", b"s",
    b"wJalrXUtnFEMI/K7MDENG", b"://", b"@", b"?", b"hooks.slack.com/", b":", b"=", b"password", b"Pass", b"pwd",
    b"token", b"passage", b"sig", b"\\", b"'", b"x" * 30]),
    max_size=40).map(b"".join)
screen_rules = st.sampled_from([
    (), Sanitiser()._c.stems, Sanitiser(rules=Rules(extra_keys=("patient_mrn", "ab", "q")))._c.stems, (b"pass",)])
screen_flags = st.sampled_from([0, 0, sanitise.SCREEN_KV_ANY, sanitise.SCREEN_OPAQUE])


@needs_native
@settings(max_examples=int(os.environ.get("SCREEN_EXAMPLES", "600")), deadline=None)
@given(data=screen_bytes, stems=screen_rules, flags=screen_flags)
def test_screen_matches_python_screening(data: bytes, stems: tuple[bytes, ...], flags: int) -> None:
    """The C screen computes exactly the pure-Python screen's flags, for every rule trigger."""
    assert native is not None
    r = native.screen(data, sanitise._stem_table(s.decode() for s in stems), flags)
    assert r == sanitise._screen_python(data, stems, flags)
    assert bool(r & native.SCREEN_NULL) == (b"null" in data)
    assert r >> native.SCREEN_SHIFT == data.count(b"{") + data.count(b"[")
    assert bool(r & native.SCREEN_FLAT) == (data.count(b"{") == 1 and data.count(b"[") == 0)
    assert native.screen(data) == sanitise._screen_python(data)


card_bytes = st.lists(st.sampled_from([b"4", b"5", b"1", b"3", b"6", b"0", b"7", b"9", b"2", b"35", b"6011", b"64",
                                       b"65", b" ", b".", b"-", b"_", b"/", b"x", b'"', b".0", b"4111111111111111",
                                       b"4111 1111 1111 1111", b"378282246310005", b"5555555555554444"]),
                      max_size=40).map(b"".join)


@needs_native
@settings(max_examples=int(os.environ.get("SCREEN_EXAMPLES", "1500")), deadline=None)
@given(data=card_bytes)
def test_card_check_matches_python(data: bytes) -> None:
    """The C fast path's card check (which lets digit runs that are no card through) is
    exactly sanitise._card_in."""
    assert native is not None
    assert native.card_in(data) == sanitise._card_in(data)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
              st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
              st.sampled_from(["AKIAIOSFODNN7EXAMPLE", "Bearer abcdefgh12345", "4111 1111 1111 1111",
                               "1700000000000", "-----BEGIN PRIVATE KEY-----x", "\ud800", "password=hunter2",
                               "db: postgres://app:pw@db/x", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln",
                               "ghp_" + "a1" * 18, "xoxb-1234567890-abcdefghij", "sk_live_" + "a" * 24,
                               "AIza" + "b" * 35, "npm_" + "c" * 36, "4111.1111.1111.1111", "p\u0430ss: x",
                               "aws wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "passage: ok", "mrn=123"]),
              st.sampled_from([4111111111111111, 4111111111111111.0, 5555555555554444])),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12)
events = st.dictionaries(st.one_of(st.text(max_size=12), st.sampled_from(
    ["password", "Api_Key", "n", "actor", "patient_mrn", "p\u0430ssword", "pass\u200bword", "keep_me",
     "ghp_" + "z9" * 18, "passage"])), json_values, max_size=6)
custom_rules = st.sampled_from([Rules(), Rules(extra_keys=("patient_mrn", "mrn")), Rules(keep=("keep_me",)),
                                Rules(key_patterns=(r"^act",)), Rules(value_patterns=(("mrn-number", r"\d{3}"),)),
                                Rules(disable=("card-number", "kv-secret"))])


def _outcome(s: Sanitiser, event: Any) -> tuple[str, Any]:
    try:
        return "ok", s.prepare(event)
    except InvalidEvent as exc:
        return "invalid", exc.reason


@needs_native
@settings(max_examples=300, deadline=None)
@given(event=events, redact=st.booleans(), rules=custom_rules)
def test_prepare_fast_path_gives_the_python_result(event: dict[str, Any], redact: bool, rules: Rules) -> None:
    """Every rule, built-in and custom: the C fast path and the batch path give exactly
    the pure-Python result (the fast path declines wherever a rule might fire)."""
    with_native = Sanitiser(redact=redact, rules=rules)
    first = _outcome(with_native, event)
    second = _outcome(with_native, event)  # the key-set verdict is cached now: the C path may take it
    many: tuple[str, Any]
    try:
        many = ("ok", with_native.prepare_many([event])[0])
    except InvalidEvent as exc:
        many = ("invalid", exc.reason)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(sanitise, "_native", None)
        reference = _outcome(Sanitiser(redact=redact, rules=rules), event)
    assert first == second == many == reference
    if first[0] == "ok":  # and the NDJSON batch path (ingest), parsing the stored form back
        line = orjson.dumps(event, option=orjson.OPT_PASSTHROUGH_DATETIME)
        with pytest.MonkeyPatch.context() as m:
            m.setattr(sanitise, "_native", None)
            expected = Sanitiser(redact=redact, rules=rules).prepare_json_many([line])
        got = with_native.prepare_json_many([line])
        assert [x if isinstance(x, bytes) else x.reason for x in got] == \
            [x if isinstance(x, bytes) else x.reason for x in expected]


# --- the writer, end to end ---------------------------------------------------------------------


class _Ticks:
    """A deterministic clock: both writers see the same timestamps."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> bytes:
        self.n += 1
        return b"2026-11-22T01:%02d:%02d.%06dZ" % (self.n // 60000 % 60, self.n // 1000 % 60, self.n % 1000000)


def _force_python_writer(m: pytest.MonkeyPatch) -> None:
    """The writer's accelerated operations, each bound once at import, set to their Python
    references (what PIPELINE_NO_NATIVE=1 binds)."""
    m.setattr(hot_chain, "queue_record", hot_chain._py_queue_record)
    m.setattr(hot_chain, "queue_records", hot_chain._py_queue_records)
    m.setattr(hot_chain, "queue_sealed", hot_chain._py_queue_sealed)
    m.setattr(hot_chain, "queue_sealed_record", hot_chain._py_queue_sealed_record)
    m.setattr(hot_chain, "hash_lines", hot_chain._py_hash_lines)
    m.setattr(writer_mod, "_write_chunks", writer_mod._py_write_chunks)
    m.setattr(merkle, "CompactRange", merkle.PyCompactRange)
    m.setattr(crypt_writer, "Ratchet", crypt_writer.PyRatchet)


def _write(tmp: Path, monkeypatch: pytest.MonkeyPatch, use_native: bool) -> list[bytes]:
    with monkeypatch.context() as m:
        if not use_native:
            _force_python_writer(m)
        # no time-window rotation: the fake clock's window is not the real one, and the
        # background thread would seal on its first tick
        log = HotLog(tmp, "app", heartbeat_interval=0, segment_max_bytes=20_000, segment_window=0, immutable="off",
                     clock=_Ticks())
        receipts = [log.append({"i": i, "pad": "x" * (i % 50)}, wait=False) for i in range(150)]
        receipts += log.append_many([{"batch": i} for i in range(300)], wait=False)
        out = log.append_prepared_many([b'{"p":%d}' % i for i in range(100)])
        assert all(isinstance(r, Receipt) for r in out)
        log.seal()
        log.append({"after": "seal"})
        log.close()
        seqs = [r.seq for r in receipts]
        assert seqs == sorted(set(seqs)) and len(seqs) == 450  # rising; seals take the gaps
    return [p.read_bytes() for p in list_segments(tmp / "app")]


@needs_native
def test_writer_output_is_identical_with_and_without_the_accelerator(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    fast = _write(tmp_path / "native", monkeypatch, True)
    slow = _write(tmp_path / "python", monkeypatch, False)
    assert len(fast) > 3  # rotation by size happened, inside append_many too
    # append_many gives a whole batch one timestamp: compare everything but the timestamps
    strip = re.compile(rb'"(?:ts|opened)":"[^"]*"|"(?:hash|prev|last_hash|merkle_root|tree_root)":"[0-9a-f]{64}"'
                       rb'|"(?:start_)?frontier":\[[^\]]*\]')
    assert [strip.sub(b"", s) for s in fast] == [strip.sub(b"", s) for s in slow]
    # and each stream verifies on its own
    from pipeline.verify.chain import verify_stream
    for d in ("native", "python"):
        assert verify_stream(tmp_path / d / "app").ok


@needs_native
def test_writer_output_is_byte_identical_per_event(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def write(d: Path, use_native: bool) -> list[bytes]:
        with monkeypatch.context() as m:
            if not use_native:
                _force_python_writer(m)
            log = HotLog(d, "app", heartbeat_interval=0, segment_max_bytes=20_000, segment_window=0,
                         immutable="off", clock=_Ticks())
            for i in range(400):
                log.append({"i": i, "pad": "y" * (i % 70)}, wait=False)
            log.close()
        return [p.read_bytes() for p in list_segments(d / "app")]

    fast, slow = write(tmp_path / "a", True), write(tmp_path / "b", False)
    assert len(fast) > 3 and fast == slow
    assert hashlib.sha256(b"".join(fast)).digest() == hashlib.sha256(b"".join(slow)).digest()


# --- the verifier's fast path ------------------------------------------------------------------

from pipeline.verify import chain as chain_mod  # noqa: E402
from tests.verify.test_tamper import apply_mutation, build_random, events_st, mutation_st  # noqa: E402


def _report(d: Path, use_native: bool) -> Any:
    with pytest.MonkeyPatch.context() as m:
        if not use_native:
            m.setattr(chain_mod, "_native", None)
            m.setattr(strictjson, "_native", None)  # the JSON profile's C screen too
        rep = chain_mod.verify_stream(d, workers=1)
    return rep


@needs_native
@settings(max_examples=int(os.environ.get("TAMPER_EXAMPLES", "60")), deadline=None)
@given(events=events_st, seal_every=st.integers(0, 12), seal_last=st.booleans(),
       mutation=st.one_of(st.none(), mutation_st))
def test_verify_fast_path_reaches_the_same_report(events: list[dict[str, Any]], seal_every: int, seal_last: bool,
                                                   mutation: tuple[str, int, int, int, int] | None) -> None:
    import shutil
    import tempfile

    hot = Path(tempfile.mkdtemp(prefix="native-verify-"))
    try:
        d = build_random(hot, events, seal_every, seal_last)
        if mutation is not None:
            apply_mutation(d, mutation)
        fast, slow = _report(d, True), _report(d, False)
        assert fast == slow  # every field of every segment scan, every finding and note
    finally:
        shutil.rmtree(hot, ignore_errors=True)


# data parts a forger could write (each record re-hashed and chained, so only the JSON rules
# and the layout decide): some valid JSON objects, some not, some that only orjson decides
data_pieces = [b'{"a":"\\u00e9"}', b'{"a":"\\ud83d\\ude00"}', b'{"a":"\\ud800"}', b'{"a":"\\udc00\\ud800"}',
               b'{"a":1e5}', b'{"a":1E-07}', b'{"a":1e400}', b'{"a":123456789012345678901234567890123456789012}',
               b'{"a": 1}', b' {"a":1}', b'{"a":1} ', b'{"a":[1,2,{"b":null}],"c":{}}', b'{"a":"\xff"}',
               b'{"a":"\xed\xa0\x80"}', b'{"a":"\xf0\x9f\x98\x80"}', b'{"a":"\xc0\xaf"}', b'{"a":01}', b'{"a":-0.0}',
               b"{}", b"[1]", b'{"a":1}{"b":2}', b'{"a":"\t"}', b'{"a":tru}', b'{"a":1,}', b'{"a":"\\x"}',
               b'{"a":"\\/\\b\\f\\n\\r\\t\\"\\\\"}', b'{"a":-}', b'{"a":1.}', b'{"a":.5}', b'{"a":"x\x7f"}',
               b'{"a":' + b"[" * 130 + b"]" * 130 + b"}", b'{"a":{"a":{"a":[true,false,null,0,-1.5e+10]}}}',
               b'{"a":1}\n', b"{\"a\":\"" + "é".encode() * 3 + b"\"}",
               # the JSON profile (FORMAT §1.1): duplicate keys, integer range, depth
               b'{"a":1,"a":2}', b'{"a":{"b":1,"b":1}}', b'{"a":1,"\\u0061":2}', b'{"a":{"a":1},"b":{"a":1}}',
               b'{"ab":1,"ab ":2,"ab\\u0020":3}', b'{"n":18446744073709551615}', b'{"n":18446744073709551616}',
               b'{"n":-9223372036854775808}', b'{"n":-9223372036854775809}', b'{"n":99999999999999999999}',
               b'{"a":' * 63 + b"{}" + b"}" * 63, b'{"a":' * 64 + b"{}" + b"}" * 64,
               b"{" + b",".join(b'"k%d":%d' % (i, i) for i in range(600)) + b"}",
               b"{" + b",".join(b'"k%d":%d' % (i % 599, i) for i in range(600)) + b"}"]


@needs_native
@settings(max_examples=150, deadline=None)
@given(picks=st.lists(st.sampled_from(data_pieces), min_size=1, max_size=6),
       kinds=st.lists(st.sampled_from(["event", "heartbeat", "seal", "recovery"]), min_size=6, max_size=6),
       ts_choice=st.sampled_from([b"2026-11-22T00:00:00.000001Z", b"2026-02-29T00:00:00.000001Z",
                                  b"2024-02-29T23:59:59.999999Z", b"2026-11-22T24:00:00.000000Z",
                                  b"2026-11-22T00:00:60.000000Z", b"1969-12-31T23:59:59.000000Z"]))
def test_verify_fast_path_judges_forged_lines_like_python(picks: list[bytes], kinds: list[str],
                                                          ts_choice: bytes, tmp_path_factory: Any) -> None:
    from pipeline.hot.segment import segment_name

    d = tmp_path_factory.mktemp("forged") / "app"
    d.mkdir()
    first, prev = encode_record("app", 0, b"2026-11-22T00:00:00.000000Z", "event", GENESIS_HASH.encode(), b"{}")
    out = [first]
    for i, data in enumerate(picks, start=1):
        line, prev = encode_record("app", i, ts_choice if i % 2 else b"2026-11-22T00:00:01.000000Z",
                                   kinds[i - 1], prev, data)
        out.append(line)
    (d / segment_name(0)).write_bytes(b"".join(out))
    fast, slow = _report(d, True), _report(d, False)
    assert fast == slow


def _manifest_outcome(path: Path, use_native: bool, chunk: int | None = None) -> Any:
    from pipeline.cold import codec
    from pipeline.format import segment as segment_mod
    from pipeline.record import RecordError

    with pytest.MonkeyPatch.context() as m:
        if not use_native:
            m.setattr(segment_mod, "_native", None)  # build_manifest and the cold scanner share it
        try:
            if chunk is None:
                return segment_mod.build_manifest(path).to_dict()
            scanner = codec.SegmentScanner(path.name)
            data = path.read_bytes()
            for i in range(0, len(data), chunk):
                scanner.feed(data[i : i + chunk])
            out = scanner.finish().to_dict()
            return out
        except RecordError as exc:
            return ("error", exc.reason)


@needs_native
@settings(max_examples=int(os.environ.get("TAMPER_EXAMPLES", "60")), deadline=None)
@given(events=events_st, seal_every=st.integers(0, 12), seal_last=st.booleans(),
       mutation=st.one_of(st.none(), mutation_st), chunk=st.integers(1, 4000))
def test_manifest_fast_paths_reach_the_same_result(events: list[dict[str, Any]], seal_every: int,
                                                    seal_last: bool, mutation: tuple[str, int, int, int, int] | None,
                                                    chunk: int) -> None:
    import shutil
    import tempfile

    hot = Path(tempfile.mkdtemp(prefix="native-manifest-"))
    try:
        d = build_random(hot, events, seal_every, seal_last)
        if mutation is not None:
            apply_mutation(d, mutation)
        for seg in list_segments(d):
            reference = _manifest_outcome(seg, False)
            assert _manifest_outcome(seg, True) == reference
            assert _manifest_outcome(seg, True, chunk) == _manifest_outcome(seg, False, chunk)
    finally:
        shutil.rmtree(hot, ignore_errors=True)


raw_lines = st.one_of(
    events.map(lambda e: orjson.dumps(e) if _dumpable(e) else b"{}"),
    st.sampled_from([b"", b"[1,2]", b'"text"', b"{bad json", b'{"a":NaN}', b'{"a":1e999}', b'{"a":"\\ud800"}',
                     b'{"a":"\xff"}', b'{"password":"x"}', b'{"a":{"b":[1,{"c":null}]}}', b" " * 10,
                     b'{"a":1}' + b" " * 3, b'{"k":"' + b"x" * 5000 + b'"}',
                     # the JSON profile (FORMAT §1.1)
                     b'{"dup":1,"dup":2}', b'{"a" :1,"a":2}', b'{"a":{"b":1,"b":2}}', b'{"a":"\\":","b":1}',
                     b'{"n":18446744073709551616}', b'{"n":-9223372036854775809}', b'{"n":' + b"9" * 400 + b"}",
                     b'{"a":' * 64 + b"{}" + b"}" * 64, b'{"t":"12:00:00","u":"http://x"}']),
)


def _dumpable(e: Any) -> bool:
    try:
        orjson.dumps(e)
        return True
    except (TypeError, orjson.JSONEncodeError):
        return False


@needs_native
@settings(max_examples=200, deadline=None)
@given(raws=st.lists(raw_lines, max_size=8), redact=st.booleans(), max_bytes=st.sampled_from([100, 4096, 1 << 20]))
def test_prepare_json_many_gives_the_python_results(raws: list[bytes], redact: bool, max_bytes: int) -> None:
    def outcomes(s: Sanitiser, items: list[Any]) -> list[Any]:
        return [x if isinstance(x, bytes) else ("invalid", x.reason) for x in items]

    fast = Sanitiser(redact=redact, max_event_bytes=max_bytes)
    first = outcomes(fast, fast.prepare_json_many(raws))
    second = outcomes(fast, fast.prepare_json_many(raws))  # key-set verdicts cached now
    with pytest.MonkeyPatch.context() as m:
        m.setattr(sanitise, "_native", None)
        m.setattr(strictjson, "_native", None)
        slow = Sanitiser(redact=redact, max_event_bytes=max_bytes)
        reference = outcomes(slow, slow.prepare_json_many(raws))
        one_by_one: list[Any] = []
        for raw in raws:
            try:
                one_by_one.append(slow.prepare_json(raw))
            except InvalidEvent as exc:
                one_by_one.append(("invalid", exc.reason))
    assert first == second == reference == one_by_one


@needs_native
@settings(max_examples=40, deadline=None)
@given(batches=st.lists(st.integers(0, 700), min_size=1, max_size=8), store_leaves=st.booleans())
def test_tree_store_append_is_the_same_in_c(batches: list[int], store_leaves: bool, tmp_path_factory: Any) -> None:
    from pipeline.hot import tree as tree_mod

    leaves = [merkle.leaf_hash(b"leaf %d" % i) for i in range(sum(batches))]

    def build(d: Path, use_native: bool) -> tuple[dict[str, bytes], bytes, int]:
        with pytest.MonkeyPatch.context() as m:
            if not use_native:
                m.setattr(tree_mod, "_append_walk", tree_mod._py_append_walk)
            ts = tree_mod.TreeStore(d, store_leaves=store_leaves)
            at = 0
            for k in batches:
                ts.append(leaves[at : at + k])
                at += k
            ts.sync()
            root, size = ts.root(), ts.size
            ts.close()
        files = {p.name: p.read_bytes() for p in sorted((d / "tree").glob("*"))} if (d / "tree").exists() else {}
        return files, root, size

    base = tmp_path_factory.mktemp("trees")
    fast, slow = build(base / "c", True), build(base / "py", False)
    assert fast == slow
    assert fast[1] == merkle.root_from_leaf_hashes(leaves) and fast[2] == len(leaves)


def test_deferred_merkle_under_concurrent_appends_seals_and_rotation(tmp_path: Path) -> None:
    """Leaf hashing happens on the flushing or sealing thread, after the append: with many
    appending threads, explicit seals and size rotation racing, every seal's roots, the
    durable tree head and the tile store must still match the records in seq order."""
    import threading

    from pipeline.hot.tree import TreeStore
    from pipeline.verify.chain import verify_stream

    stream_dir = tmp_path / "app"
    tree = TreeStore(stream_dir)
    log = HotLog(tmp_path, "app", heartbeat_interval=0, segment_max_bytes=64_000, immutable="off",
                 tree_store=tree, group_interval=0.001)
    stop = threading.Event()
    errors: list[BaseException] = []

    def appender(k: int) -> None:
        try:
            for i in range(1500):
                if i % 7 == 0:
                    log.append_many([{"t": k, "i": i, "j": j} for j in range(5)], wait=i % 2 == 0)
                else:
                    log.append({"t": k, "i": i, "pad": "z" * (i % 90)}, wait=i % 50 == 0)
        except BaseException as exc:
            errors.append(exc)

    def sealer() -> None:
        while not stop.is_set():
            log.seal()
            size, root = log.durable_tree_head()
            heads.append((size, root))
            stop.wait(0.003)

    heads: list[tuple[int, bytes]] = []
    threads = [threading.Thread(target=appender, args=(k,)) for k in range(4)]
    seal_thread = threading.Thread(target=sealer)
    for t in [*threads, seal_thread]:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    seal_thread.join()
    log.close()
    assert errors == []
    report = verify_stream(stream_dir, workers=1)
    assert report.ok, report.findings[:3]
    lines = [ln[:-1] for p in list_segments(stream_dir) for ln in p.read_bytes().splitlines(keepends=True)]
    assert tree.size == len(lines) and tree.root() == merkle.root_from_leaves(lines)
    for size, root in heads:  # every durable head ever reported is a prefix of the final tree
        assert root == merkle.root_from_leaves(lines[:size])
    assert len(list_segments(stream_dir)) > 10
