"""An independent check of docs/FORMAT.md: ``tests/independent_verifier.py`` (standard library
only, written from §1-§4 and §8 of the document) and ``pipeline verify`` must agree on valid
streams, on every case the JSON profile decides, on type-strict seal fields and on the whole
tamper matrix of tests/verify/test_tamper.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.hot.segment import list_segments
from pipeline.hot.writer import HotLog
from pipeline.record import encode_record, parse_record
from pipeline.verify.chain import verify_stream
from tests import independent_verifier as indep
from tests.format.test_json_profile import RECORD_CASES
from tests.hotutil import rewrite
from tests.verify.test_tamper import CASES, Case, build, lines, put


def both(stream_dir: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    rep = verify_stream(stream_dir, workers=1)
    ours = [(f.segment, f.reason) for f in rep.findings]
    return ours, indep.verify(stream_dir)


def assert_agree(stream_dir: Path, expect_ok: bool | None = None) -> list[tuple[str, str]]:
    ours, theirs = both(stream_dir)
    assert (not ours) == (not theirs), (ours, theirs)
    if expect_ok is not None:
        assert (not ours) == expect_ok, ours
    if ours:
        # the first finding (in stream order, a segment's own lines before its links) is the same
        assert ours[0] == theirs[0], (ours, theirs)
        assert set(ours) == set(theirs), (ours, theirs)
    return ours


def test_valid_streams_agree(tmp_path: Path) -> None:
    assert_agree(build(tmp_path / "a"), True)
    assert_agree(build(tmp_path / "b", seal_last=True), True)
    log = HotLog(tmp_path / "c", "odd", heartbeat_interval=0, segment_window=0)
    log.append_many([{"s": "😀 \u2028 \\ \" /", "n": 18446744073709551615, "m": -9223372036854775808,
                      "f": 1.5e-300, "deep": [[[{"a": [{}]}]]], "e": "", "u": "\u0000\x7f"}] * 3)
    log.seal()
    log.append_many([{"i": i} for i in range(3)])
    log.close(seal=False)
    assert_agree(tmp_path / "c" / "odd", True)


def _rechain_active(stream_dir: Path, index: int, data: bytes | None = None, ts: bytes | None = None) -> None:
    """Replace the data (or ts) of record ``index`` of the active segment and re-chain the records
    after it, as someone rewriting the unsealed file would (hashes all consistent)."""
    seg = list_segments(stream_dir)[-1]
    ls = lines(seg)
    prev = parse_record(ls[index]).prev.encode()
    out = ls[:index]
    for i, ln in enumerate(ls[index:]):
        r = parse_record(ln)
        body = ln[ln.index(b',"data":') + 8 : ln.rindex(b',"hash":"')]
        if i == 0 and data is not None:
            body = data
        stamp = ts if i == 0 and ts is not None else r.ts.encode()
        new, prev = encode_record(r.stream, r.seq, stamp, r.kind, prev, body)
        out.append(new)
    put(seg, out)


@pytest.mark.parametrize("name,data,ok", RECORD_CASES, ids=[c[0] for c in RECORD_CASES])
def test_json_profile_cases_agree(tmp_path: Path, name: str, data: bytes, ok: bool) -> None:
    stream = build(tmp_path)
    _rechain_active(stream, 2, data)
    (stream / "head.json").unlink()  # the head would also see the change: judge the line alone
    ours = assert_agree(stream, ok)
    if not ok:
        assert ours[0][1] == "bad-json"


SEAL_EDITS: list[tuple[str, bytes, bytes]] = [
    ("count-as-float", b'"count":8,', b'"count":8.0,'),
    ("first-seq-as-false", b'"first_seq":0,', b'"first_seq":false,'),
    ("tree-size-exponent", b'"tree_size":8,', b'"tree_size":8e0,'),
    ("segment-escaped", b'"segment":"seg-', b'"segment":"seg\\u002d'),
    ("frontier-upper-case", b'"frontier":["', b'"frontier":["ABCDEF'),  # made upper below
    ("unknown-key-ignored", b'"segment":', b'"x-note":"kept","segment":'),
    ("duplicate-seal-key", b'"count":8,', b'"count":8,"count":8,'),
]


@pytest.mark.parametrize("name,old,new", SEAL_EDITS, ids=[e[0] for e in SEAL_EDITS])
def test_seal_field_types_agree(tmp_path: Path, name: str, old: bytes, new: bytes) -> None:
    log = HotLog(tmp_path, "app", heartbeat_interval=0, segment_window=0)
    log.append_many([{"i": i} for i in range(8)])
    log.close(seal=True)
    stream = tmp_path / "app"
    (stream / "head.json").unlink()
    [seg] = list_segments(stream)
    ls = lines(seg)
    r = parse_record(ls[-1])
    body = ls[-1][ls[-1].index(b',"data":') + 8 : ls[-1].rindex(b',"hash":"')]
    assert old in body, name
    if name == "frontier-upper-case":
        at = body.index(b'"frontier":["') + 13
        body = body[:at] + body[at : at + 64].upper() + body[at + 64 :]
    else:
        body = body.replace(old, new, 1)
    ls[-1], _ = encode_record(r.stream, r.seq, r.ts.encode(), r.kind, r.prev.encode(), body)
    rewrite(seg, b"".join(ls))
    # an escape in a seal string is another spelling of the same value: fields compare as values
    ours = assert_agree(stream, name in ("unknown-key-ignored", "segment-escaped"))
    if ours:
        assert ours[0][1] == ("bad-json" if name == "duplicate-seal-key" else "seal-mismatch")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_tamper_matrix_agrees(tmp_path: Path, case: Case) -> None:
    stream = build(tmp_path, seal_last=case.seal_last)
    case.mutate(list_segments(stream))
    assert_agree(stream, False)


def test_timestamps_agree(tmp_path: Path) -> None:
    stream = build(tmp_path)
    _rechain_active(stream, 3, ts=b"1999-01-01T00:00:00.000000Z")
    (stream / "head.json").unlink()
    assert_agree(stream, True)  # out of order is not a finding (FORMAT §1, Timestamps)
    _rechain_active(stream, 4, ts=b"2026-02-29T00:00:00.000000Z")
    assert assert_agree(stream, False)[0][1] == "bad-field"  # no such day
