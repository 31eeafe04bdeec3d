"""The tamper matrix: every kind of change to the hot tier is detected with the right reason,
by ``verify_stream`` and by ``pipeline verify --json``; a clean log has no findings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.cli import main as cli_main
from pipeline.hot import attr
from pipeline.hot.segment import iter_lines, list_segments
from pipeline.hot.writer import HotLog
from pipeline.record import HASH_FIELD, encode_record, parse_record
from pipeline.verify.chain import REASONS, verify_stream
from tests.hotutil import PYTHON, REPO, rewrite

STREAM = "app"
SEALED = 3
PER_SEGMENT = 8


def build(hot: Path, name: str = STREAM, *, seal_last: bool = False, immutable: str | None = None) -> Path:
    """Three sealed segments of 8 events each, then an active segment of 8 events; closed
    without sealing (head.json records the clean close) unless ``seal_last``."""
    log = HotLog(hot, name, heartbeat_interval=0, segment_window=0, immutable=immutable)
    for s in range(SEALED + 1):
        log.append_many([{"seg": s, "i": i, "user": "alice", "amount": 100 + i} for i in range(PER_SEGMENT)])
        if s < SEALED:
            log.seal()
    log.close(seal=seal_last)
    return hot / name


def lines(path: Path) -> list[bytes]:
    return [ln for _o, ln in iter_lines(path)]


def put(path: Path, ls: list[bytes]) -> None:
    rewrite(path, b"".join(ls))


def append_raw(path: Path, data: bytes) -> None:
    attr.clear_protection(path)
    with open(path, "ab") as f:
        f.write(data)


def data_bytes(line: bytes) -> bytes:
    return line[line.index(b',"data":') + 8 : line.rindex(HASH_FIELD)]


def reencode(line: bytes, *, data: bytes | None = None, prev: bytes | None = None,
             seq: int | None = None) -> bytes:
    r = parse_record(line)
    new, _ = encode_record(r.stream, r.seq if seq is None else seq, r.ts.encode(), r.kind,
                           r.prev.encode() if prev is None else prev, data_bytes(line) if data is None else data)
    return new


# ------------------------------------------------------------------ mutations


def flip_at(where: str, seg: int = 1) -> Callable[[list[Path]], None]:
    def mutate(segs: list[Path]) -> None:
        ls = lines(segs[seg])
        i = len(ls) - 1 if where == "seal" else 3
        ln = bytearray(ls[i])
        if where == "data":
            j = ln.index(b'"alice"') + 3
        elif where == "seq":
            j = ln.index(b'"seq":') + 6
        elif where == "prev":
            j = ln.index(b'"prev":"') + 20
        elif where == "hash":
            j = len(ln) - 20
        elif where == "seal":
            j = ln.index(b'"merkle_root":"') + 30
        elif where == "kind":
            j = ln.index(b'"kind":"') + 8
        elif where == "suffix":
            j = len(ln) - 2  # the closing brace
        elif where == "ts":
            j = ln.index(b'"ts":"') + 20
        else:
            raise AssertionError(where)
        old = ln[j]
        if chr(old) in "0123456789abcdef":
            ln[j] = ord("0") if old != ord("0") else ord("1")  # stay hex/digit
        else:
            ln[j] = old ^ 0x01
        ls[i] = bytes(ln)
        put(segs[seg], ls)

    return mutate


def delete_line(seg: int, idx: int) -> Callable[[list[Path]], None]:
    def mutate(segs: list[Path]) -> None:
        ls = lines(segs[seg])
        del ls[idx]
        put(segs[seg], ls)

    return mutate


def duplicate_line(seg: int, idx: int) -> Callable[[list[Path]], None]:
    def mutate(segs: list[Path]) -> None:
        ls = lines(segs[seg])
        ls.insert(idx, ls[idx])
        put(segs[seg], ls)

    return mutate


def swap_lines(seg: int, a: int, b: int) -> Callable[[list[Path]], None]:
    def mutate(segs: list[Path]) -> None:
        ls = lines(segs[seg])
        ls[a], ls[b] = ls[b], ls[a]
        put(segs[seg], ls)

    return mutate


def insert_forged(seg: int, after: int) -> Callable[[list[Path]], None]:
    """A well-formed record with a correct hash, linked to the record before it."""

    def mutate(segs: list[Path]) -> None:
        ls = lines(segs[seg])
        r = parse_record(ls[after])
        forged, _ = encode_record(r.stream, r.seq + 1, r.ts.encode(), "event", r.hash.encode(),
                                  b'{"user":"mallory","amount":1000000}')
        assert parse_record(forged).prev == r.hash
        ls.insert(after + 1, forged)
        put(segs[seg], ls)

    return mutate


def truncate_mid_line(seg: int) -> Callable[[list[Path]], None]:
    def mutate(segs: list[Path]) -> None:
        ls = lines(segs[seg])
        keep = b"".join(ls[:4]) + ls[4][: len(ls[4]) // 2]
        rewrite(segs[seg], keep)

    return mutate


def truncate_at_line(seg: int, n: int = 4) -> Callable[[list[Path]], None]:
    def mutate(segs: list[Path]) -> None:
        put(segs[seg], lines(segs[seg])[:n])

    return mutate


def remove_segment(seg: int) -> Callable[[list[Path]], None]:
    def mutate(segs: list[Path]) -> None:
        attr.clear_protection(segs[seg])
        segs[seg].unlink()

    return mutate


def edit_and_rehash(seg: int, idx: int) -> Callable[[list[Path]], None]:
    def mutate(segs: list[Path]) -> None:
        ls = lines(segs[seg])
        ls[idx] = reencode(ls[idx], data=b'{"user":"mallory","amount":1}')
        assert parse_record(ls[idx])  # self-consistent
        put(segs[seg], ls)

    return mutate


def edit_and_rehash_rest_of_segment(seg: int, idx: int) -> Callable[[list[Path]], None]:
    """Edit one record and recompute the chain of every later record of the segment,
    the seal included (whose fields then no longer describe the segment)."""

    def mutate(segs: list[Path]) -> None:
        ls = lines(segs[seg])
        prev: bytes | None = None
        for i in range(idx, len(ls)):
            data = b'{"user":"mallory","amount":1}' if i == idx else None
            ls[i] = reencode(ls[i], data=data, prev=prev)
            prev = parse_record(ls[i]).hash.encode()
        put(segs[seg], ls)

    return mutate


def append_after_seal(what: str) -> Callable[[list[Path]], None]:
    def mutate(segs: list[Path]) -> None:
        if what == "garbage":
            append_raw(segs[1], b"x")
        elif what == "line":
            # a valid record that continues the chain after the seal
            seal = parse_record(lines(segs[1])[-1])
            forged, _ = encode_record(seal.stream, seal.seq + 1, seal.ts.encode(), "event", seal.hash.encode(),
                                      b'{"late":1}')
            append_raw(segs[1], forged)
        else:
            append_raw(segs[1], lines(segs[2])[0])

    return mutate


@dataclass(frozen=True)
class Case:
    name: str
    mutate: Callable[[list[Path]], None]
    segment: int  # index into the ORIGINAL segment list of where the finding is expected
    reasons: frozenset[str]
    seal_last: bool = False


def case(name: str, mutate: Callable[[list[Path]], None], segment: int, *reasons: str,
         seal_last: bool = False) -> Case:
    assert all(r in REASONS for r in reasons), reasons
    return Case(name, mutate, segment, frozenset(reasons), seal_last)


LAST = SEALED  # index of the active segment
CASES = [
    # flip any byte
    case("flip-data", flip_at("data"), 1, "hash-mismatch"),
    case("flip-seq-digit", flip_at("seq"), 1, "hash-mismatch"),
    case("flip-prev", flip_at("prev"), 1, "hash-mismatch"),
    case("flip-hash-field", flip_at("hash"), 1, "hash-mismatch"),
    case("flip-kind", flip_at("kind"), 1, "hash-mismatch"),
    case("flip-ts", flip_at("ts"), 1, "hash-mismatch"),
    case("flip-in-seal", flip_at("seal"), 1, "hash-mismatch"),
    case("flip-line-suffix", flip_at("suffix"), 1, "bad-line"),
    case("flip-first-segment", flip_at("data", 0), 0, "hash-mismatch"),
    case("flip-active-segment", flip_at("data", LAST), LAST, "hash-mismatch"),
    # delete a line
    case("delete-line", delete_line(1, 3), 1, "seq-gap"),
    case("delete-first-line-of-segment", delete_line(1, 0), 1, "missing-segment", "name-mismatch"),
    case("delete-seal", delete_line(1, -1), 1, "truncated"),
    case("delete-last-line-of-stream", delete_line(LAST, -1), LAST, "missing-tail"),
    case("delete-line-in-active", delete_line(LAST, 2), LAST, "seq-gap"),
    # duplicate a line
    case("duplicate-line", duplicate_line(1, 3), 1, "seq-regression"),
    case("duplicate-last-line-of-stream", duplicate_line(LAST, -1), LAST, "seq-regression"),
    # reorder two lines (the first out-of-place record is a forward jump)
    case("reorder-adjacent", swap_lines(1, 2, 3), 1, "seq-gap", "seq-regression"),
    case("reorder-distant", swap_lines(1, 1, 6), 1, "seq-gap", "seq-regression"),
    case("reorder-in-active", swap_lines(LAST, 0, 1), LAST, "seq-gap", "seq-regression"),
    # insert a forged line with a self-consistent hash
    case("insert-forged", insert_forged(1, 2), 1, "seq-regression"),
    case("insert-forged-active", insert_forged(LAST, 4), LAST, "seq-regression"),
    # truncate a segment
    case("truncate-sealed-mid-line", truncate_mid_line(1), 1, "truncated"),
    case("truncate-sealed-at-line", truncate_at_line(1), 1, "truncated"),
    case("truncate-first-sealed-at-line", truncate_at_line(0, 2), 0, "truncated"),
    case("truncate-active-at-line", truncate_at_line(LAST), LAST, "missing-tail"),
    case("truncate-active-mid-line", truncate_mid_line(LAST), LAST, "missing-tail"),
    case("truncate-to-empty", truncate_at_line(1, 0), 1, "truncated"),
    # remove a segment
    case("remove-first", remove_segment(0), 1, "missing-start"),
    case("remove-middle", remove_segment(1), 2, "missing-segment"),
    case("remove-last-sealed-before-active", remove_segment(2), LAST, "missing-segment"),
    case("remove-last", remove_segment(LAST), 2, "missing-tail"),
    case("remove-last-when-stream-sealed", remove_segment(LAST), 2, "missing-tail", seal_last=True),
    # recompute one record's hash after editing it
    case("rehash-one-record", edit_and_rehash(1, 3), 1, "broken-link"),
    case("rehash-last-before-seal", edit_and_rehash(1, -2), 1, "broken-link"),
    case("rehash-last-record-of-stream", edit_and_rehash(LAST, -1), LAST, "broken-link"),
    case("rehash-seal", edit_and_rehash(1, -1), 1, "seal-mismatch"),
    case("rehash-rest-of-segment", edit_and_rehash_rest_of_segment(1, 3), 1, "seal-mismatch"),
    case("rehash-first-record", edit_and_rehash(2, 0), 2, "broken-link", "seal-mismatch"),
    # append bytes after a seal
    case("after-seal-garbage", append_after_seal("garbage"), 1, "after-seal"),
    case("after-seal-valid-record", append_after_seal("line"), 1, "after-seal"),
    case("after-seal-next-segment-line", append_after_seal("copy"), 1, "after-seal"),
]


def cli_verify(hot: Path, *extra: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = cli_main(["verify", "--hot", str(hot), "--json", "--workers", "1", *extra])
    out = capsys.readouterr().out
    return code, json.loads(out)


def check_report(findings: list[dict[str, Any]], c: Case, seg_names: list[str]) -> None:
    assert findings, f"{c.name}: no finding"
    expected_seg = seg_names[c.segment]
    got = {(f["segment"], f["reason"]) for f in findings}
    assert any((expected_seg, r) in got for r in c.reasons), (c.name, expected_seg, sorted(got))


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_tamper_detected(hot_dir: Path, c: Case, capsys: pytest.CaptureFixture[str]) -> None:
    d = build(hot_dir, seal_last=c.seal_last)
    assert verify_stream(d, workers=1).findings == []
    segs = list_segments(d)
    names = [p.name for p in segs]
    assert len(segs) == SEALED + 1
    c.mutate(segs)

    rep = verify_stream(d, workers=1)
    assert not rep.ok
    check_report([f.to_dict() for f in rep.findings], c, names)

    code, doc = cli_verify(hot_dir, "--stream", STREAM, capsys=capsys)
    assert code == 1
    assert doc["ok"] is False
    (stream_doc,) = doc["streams"]
    check_report(stream_doc["findings"], c, names)
    for f in stream_doc["findings"]:
        assert f["reason"] in REASONS
        assert f["segment"] in names or f["segment"] == ""


def test_clean_log_verifies(hot_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = build(hot_dir)
    rep = verify_stream(d, workers=1)
    assert rep.ok and rep.findings == []
    assert rep.records == (SEALED + 1) * PER_SEGMENT + SEALED
    assert rep.first_seq == 0 and rep.last_seq == rep.records - 1
    code, doc = cli_verify(hot_dir, capsys=capsys)
    assert code == 0 and doc["ok"] is True
    assert doc["streams"][0]["findings"] == []
    statuses = [s["status"] for s in doc["streams"][0]["segments"]]
    assert statuses == ["valid"] * SEALED + ["active"]


def test_cli_subprocess_matrix(tmp_path: Path) -> None:
    """The real command line over one hot directory holding a clean stream and one tampered
    stream per case: exit 1, and every tampered stream reported with its reason."""
    hot = tmp_path / "hot"
    chosen = [c for c in CASES if c.name in {"flip-data", "delete-line", "duplicate-line", "reorder-adjacent",
                                             "insert-forged", "truncate-sealed-mid-line", "remove-middle",
                                             "remove-last", "rehash-one-record", "after-seal-garbage"}]
    names: dict[str, list[str]] = {}
    for c in chosen:
        d = build(hot, c.name, seal_last=c.seal_last, immutable="off")
        segs = list_segments(d)
        names[c.name] = [p.name for p in segs]
        c.mutate(segs)
    build(hot, "clean", immutable="off")

    res = subprocess.run([PYTHON, "-m", "pipeline", "verify", "--hot", str(hot), "--json"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 1, res.stderr
    doc = json.loads(res.stdout)
    by_stream = {s["stream"]: s for s in doc["streams"]}
    assert by_stream["clean"]["ok"] is True and by_stream["clean"]["findings"] == []
    for c in chosen:
        check_report(by_stream[c.name]["findings"], c, names[c.name])

    clean_only = subprocess.run([PYTHON, "-m", "pipeline", "verify", "--hot", str(hot), "--stream", "clean",
                                 "--json"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert clean_only.returncode == 0, clean_only.stdout + clean_only.stderr
    # the human-readable report names the first bad record by segment, seq and reason
    text = subprocess.run([PYTHON, "-m", "pipeline", "verify", "--hot", str(hot), "--stream", "delete-line"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert text.returncode == 1
    assert "seq-gap at seq 13" in text.stdout and names["delete-line"][1] in text.stdout


def test_cli_could_not_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["verify", "--hot", str(tmp_path / "nope")]) == 2
    (tmp_path / "empty").mkdir()
    assert cli_main(["verify", "--hot", str(tmp_path / "empty")]) == 2


def test_every_single_byte_flip_in_a_segment_is_detected(hot_dir: Path) -> None:
    """Exhaustive over one small sealed segment: no byte is outside the hashes' protection."""
    log = HotLog(hot_dir, STREAM, heartbeat_interval=0, segment_window=0, immutable="off")
    log.append({"a": 1})
    log.seal()
    log.append({"b": 2})
    log.close(seal=False)
    d = hot_dir / STREAM
    seg = list_segments(d)[0]
    original = seg.read_bytes()
    assert verify_stream(d, workers=1).ok
    missed = []
    for i in range(len(original)):
        b = bytearray(original)
        b[i] ^= 0x20 if chr(b[i]).isalpha() else 0x01
        seg.write_bytes(bytes(b))
        if verify_stream(d, workers=1).ok:
            missed.append(i)
    seg.write_bytes(original)
    assert missed == [], [original[max(0, i - 10) : i + 10] for i in missed[:5]]


# ------------------------------------------------------------------ property


events_st = st.lists(
    st.dictionaries(st.sampled_from(["user", "action", "n", "note", "tags"]),
                    st.one_of(st.integers(-1000, 10**9), st.text(max_size=20), st.booleans(),
                              st.lists(st.integers(0, 9), max_size=3)),
                    max_size=4),
    min_size=1, max_size=30,
)

mutation_st = st.tuples(
    st.sampled_from(["flip", "delete", "duplicate", "swap", "truncate", "remove", "insert", "append-after-seal"]),
    st.integers(0, 10**6),  # which file
    st.integers(0, 10**9),  # which line / offset
    st.integers(0, 10**9),  # second line
    st.integers(1, 255),  # xor mask
)


def build_random(hot: Path, events: list[dict[str, Any]], seal_every: int, seal_last: bool) -> Path:
    log = HotLog(hot, STREAM, heartbeat_interval=0, segment_window=0, immutable="off", durability="os")
    for i, e in enumerate(events):
        log.append(e)
        if seal_every and (i + 1) % seal_every == 0:
            log.seal()
    log.close(seal=seal_last)
    return hot / STREAM


def apply_mutation(d: Path, m: tuple[str, int, int, int, int]) -> bool:
    """Apply one mutation; False when it cannot apply to this log (hypothesis discards it)."""
    kind, fi, a, b, mask = m
    segs = list_segments(d)
    seg = segs[fi % len(segs)]
    data = seg.read_bytes()
    ls = data.splitlines(keepends=True)
    if kind == "flip":
        buf = bytearray(data)
        buf[a % len(buf)] ^= mask
        seg.write_bytes(bytes(buf))
    elif kind == "delete":
        del ls[a % len(ls)]
        seg.write_bytes(b"".join(ls))
    elif kind == "duplicate":
        i = a % len(ls)
        ls.insert(i, ls[i])
        seg.write_bytes(b"".join(ls))
    elif kind == "swap":
        if len(ls) < 2:
            return False
        i, j = a % len(ls), b % len(ls)
        if i == j:
            j = (i + 1) % len(ls)
        ls[i], ls[j] = ls[j], ls[i]
        seg.write_bytes(b"".join(ls))
    elif kind == "truncate":
        seg.write_bytes(data[: a % len(data)])
    elif kind == "remove":
        seg.unlink()
    elif kind == "insert":
        i = a % len(ls)
        if seg == segs[-1] and i == len(ls) - 1:
            # a well-formed record appended after the newest one extends the chain exactly as
            # the writer would: only signed checkpoints and witnesses can tell (out of scope here)
            return False
        r = parse_record(ls[i])
        forged, _ = encode_record(r.stream, r.seq + 1, r.ts.encode(), "event", r.hash.encode(),
                                  orjson.dumps({"forged": b % 1000}))
        ls.insert(i + 1, forged)
        seg.write_bytes(b"".join(ls))
    elif kind == "append-after-seal":
        if parse_record(ls[-1]).kind != "seal":
            return False
        seg.write_bytes(data + ls[b % len(ls)])
    return True


@settings(max_examples=int(os.environ.get("TAMPER_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(events=events_st, seal_every=st.integers(0, 12), seal_last=st.booleans(), mutation=mutation_st)
def test_property_any_single_mutation_is_detected(events: list[dict[str, Any]], seal_every: int, seal_last: bool,
                                                  mutation: tuple[str, int, int, int, int]) -> None:
    hot = Path(tempfile.mkdtemp(prefix="tamper-prop-"))
    try:
        d = build_random(hot, events, seal_every, seal_last)
        clean = verify_stream(d, workers=1)
        assert clean.findings == []
        if not apply_mutation(d, mutation):
            return
        rep = verify_stream(d, workers=1)
        assert rep.findings, (mutation, [n.message for n in rep.notes])
        assert all(f.reason in REASONS for f in rep.findings)
    finally:
        shutil.rmtree(hot, ignore_errors=True)


@pytest.mark.parametrize("kind", ["seal", "recovery"])
@pytest.mark.parametrize("data", [b"{}", b'{"abandoned":5,"frontier":"zz"}', b'{"abandoned":"seg","frontier":[1]}',
                                  b'{"abandoned":[1,{"segment":7,"valid_bytes":"x"}],"frontier":["00"]}'])
def test_forged_log_records_with_hostile_data_give_findings_not_crashes(hot_dir: Path, kind: str,
                                                                        data: bytes) -> None:
    """Seal and recovery records are read by the verifier; forged ones (hashes recomputed through
    the end of the segment) must be reported, never crash it."""
    d = build(hot_dir)
    segs = list_segments(d)
    target = segs[1] if kind == "seal" else segs[2]
    ls = lines(target)
    idx = len(ls) - 1 if kind == "seal" else 0
    r = parse_record(ls[idx])
    prev: bytes | None = None
    for i in range(idx, len(ls)):
        cur = parse_record(ls[i])
        ls[i], digest = encode_record(cur.stream, cur.seq, cur.ts.encode(), kind if i == idx else cur.kind,
                                      (r.prev.encode() if prev is None else prev),
                                      data if i == idx else data_bytes(ls[i]))
        prev = digest
    put(target, ls)
    rep = verify_stream(d, workers=1)
    assert rep.findings
    assert all(f.reason in REASONS for f in rep.findings)
