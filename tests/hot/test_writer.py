"""HotLog: receipts, chain across segments, rotation, seals, heartbeats, durability modes,
concurrency, the writer lock, bad input, reopen, and the append-only attribute for real."""

from __future__ import annotations

import errno
import itertools
import json
import os
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline import merkle
from pipeline.hot import attr
from pipeline.hot.segment import iter_lines, list_segments
from pipeline.hot.writer import HotLog, HotLogError, Receipt, WriterLockedError
from pipeline.record import GENESIS_HASH, Kind, parse_record
from pipeline.sanitise import InvalidEvent
from tests.hotutil import (
    FsyncSpy,
    assert_clean,
    records,
    run_python,
    segment_records,
    snapshot_files,
    wait_for,
)

STREAM = "app"


def open_log(hot_dir: Path, **kw: Any) -> HotLog:
    kw.setdefault("heartbeat_interval", 0)
    kw.setdefault("segment_window", 0)
    return HotLog(hot_dir, STREAM, **kw)


def sdir(hot_dir: Path) -> Path:
    return hot_dir / STREAM


def kinds(recs: list[Any]) -> list[str]:
    return [r.kind for r in recs]


# ------------------------------------------------------------------ receipts and chain


def test_receipts_contiguous_from_zero_and_match_the_file(hot_dir: Path) -> None:
    with open_log(hot_dir) as log:
        receipts = [log.append({"i": i}) for i in range(50)]
        receipts += log.append_many([{"i": i} for i in range(50, 80)])
    assert [r.seq for r in receipts] == list(range(80))
    recs = {r.seq: r for r in records(sdir(hot_dir))}
    for r in receipts:
        assert recs[r.seq].hash == r.hash
        assert recs[r.seq].kind == "event"
        assert recs[r.seq].data == {"i": r.seq}
        assert r.segment == list_segments(sdir(hot_dir))[0].name
    assert recs[0].prev == GENESIS_HASH
    assert_clean(sdir(hot_dir))


def test_chain_spans_segments(hot_dir: Path) -> None:
    with open_log(hot_dir, segment_max_bytes=8192) as log:
        for i in range(60):
            log.append({"i": i, "pad": "x" * 200})
    segs = list_segments(sdir(hot_dir))
    assert len(segs) >= 3
    prev_last: str | None = None
    for path in segs:
        recs = segment_records(path)
        assert recs[-1].kind == Kind.SEAL.value
        if prev_last is None:
            assert recs[0].prev == GENESIS_HASH and recs[0].seq == 0
        else:
            assert recs[0].prev == prev_last
        prev_last = recs[-1].hash
    all_recs = records(sdir(hot_dir))
    assert [r.seq for r in all_recs] == list(range(len(all_recs)))
    for a, b in itertools.pairwise(all_recs):
        assert b.prev == a.hash
    assert_clean(sdir(hot_dir))


def test_rotation_by_size_cap(hot_dir: Path) -> None:
    cap = 16384
    with open_log(hot_dir, segment_max_bytes=cap) as log:
        for i in range(200):
            log.append({"i": i, "pad": "y" * 300})
    segs = list_segments(sdir(hot_dir))
    assert len(segs) > 3
    for path in segs:
        assert path.stat().st_size <= cap
        recs = segment_records(path)
        assert recs[-1].kind == "seal"
        assert path.name == f"seg-{recs[0].seq:020d}.jsonl"
    assert_clean(sdir(hot_dir))


def test_rotation_by_time_window(hot_dir: Path) -> None:
    log = open_log(hot_dir, segment_window=1.0)
    try:
        r = log.append({"i": 0})
        first = sdir(hot_dir) / r.segment

        def sealed() -> bool:
            lines = [ln for _o, ln in iter_lines(first)]
            return bool(lines) and parse_record(lines[-1]).kind == "seal"

        wait_for(sealed, timeout=5, what="time-window rotation")
        # the seal line is visible once written; the attribute is set right after its fsync
        wait_for(lambda: attr.is_immutable(first), timeout=5, what="immutable attribute after the seal")
        r2 = log.append({"i": 1})
        assert r2.segment != r.segment
        assert r2.seq == 2  # seq 1 is the seal
    finally:
        log.close()
    assert_clean(sdir(hot_dir))


def test_seal_record_fields(hot_dir: Path) -> None:
    with open_log(hot_dir) as log:
        receipts = [log.append({"i": i}) for i in range(13)]
        sealed = log.seal()
        assert sealed is not None
        assert log.seal() is None  # nothing to seal
        after = log.append({"i": 13})
    recs = segment_records(sealed)
    seal = recs[-1]
    body = recs[:-1]
    assert seal.kind == "seal" and seal.seq == 13
    d = seal.data
    assert d["segment"] == sealed.name
    assert d["count"] == 13
    assert d["first_seq"] == 0 and d["last_seq"] == 12
    assert d["last_hash"] == receipts[-1].hash == seal.prev
    assert d["merkle_root"] == merkle.root_from_leaves([r.leaf for r in body]).hex()
    assert d["opened"] == body[0].ts
    assert d["tree_size"] == 13
    # the next segment links to the seal
    nxt = segment_records(sdir(hot_dir) / after.segment)
    assert nxt[0].prev == seal.hash and nxt[0].seq == 14
    assert_clean(sdir(hot_dir))


def test_heartbeats_when_idle(hot_dir: Path) -> None:
    log = open_log(hot_dir, heartbeat_interval=0.1)
    try:
        log.append({"i": 0})
        wait_for(lambda: kinds(records(sdir(hot_dir))).count("heartbeat") >= 2, timeout=5, what="2 heartbeats")
        r = log.append({"i": 1})
    finally:
        log.close()
    recs = records(sdir(hot_dir))
    hb = [x for x in recs if x.kind == "heartbeat"]
    assert len(hb) >= 2
    assert hb[0].data.get("interval_s") == 0.1
    assert recs[r.seq].data == {"i": 1}
    assert_clean(sdir(hot_dir))


def test_no_heartbeats_when_disabled(hot_dir: Path) -> None:
    with open_log(hot_dir, heartbeat_interval=0) as log:
        log.append({"i": 0})
        log.sync()
    assert "heartbeat" not in kinds(records(sdir(hot_dir)))


# ------------------------------------------------------------------ durability


def end_offset(path: Path, seq: int) -> int:
    for off, line in iter_lines(path):
        if parse_record(line).seq == seq:
            return off + len(line)
    raise AssertionError(f"seq {seq} not in {path}")


@pytest.mark.parametrize("mode", ["fsync", "group"])
def test_durable_modes_fsync_covers_each_acknowledged_append(hot_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                             mode: str) -> None:
    spy = FsyncSpy(monkeypatch)
    with open_log(hot_dir, durability=mode) as log:
        for i in range(25):
            r = log.append({"i": i})
            path = sdir(hot_dir) / r.segment
            # read through another file descriptor right after return: the bytes are there ...
            with open(path, "rb") as f:
                data = f.read()
            rec = [parse_record(ln) for ln in data.splitlines(keepends=True)][-1]
            assert (rec.seq, rec.hash) == (r.seq, r.hash)
            # ... and an fsync of that file covered them before append returned
            assert spy.covered(path, len(data)), (mode, i, spy.calls[-3:])


def test_fsync_mode_one_fsync_per_append(hot_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with open_log(hot_dir, durability="fsync") as log:
        log.append({"warm": 1})
        spy = FsyncSpy(monkeypatch)
        for i in range(10):
            log.append({"i": i})
        assert len([c for c in spy.calls if c[0].endswith(".jsonl")]) >= 10


def test_group_mode_batches_concurrent_appends(hot_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with open_log(hot_dir, durability="group") as log:
        log.append({"warm": 1})
        spy = FsyncSpy(monkeypatch)
        receipts = [log.append({"i": i}, wait=False) for i in range(500)]
        log.wait_durable(receipts[-1], timeout=10)
        seg_syncs = [c for c in spy.calls if c[0].endswith(".jsonl")]
        assert 1 <= len(seg_syncs) < 50
        assert spy.covered(sdir(hot_dir) / receipts[-1].segment, end_offset(sdir(hot_dir) / receipts[-1].segment,
                                                                             receipts[-1].seq))


def test_os_mode_written_within_group_interval_fsynced_within_os_sync_interval(
        hot_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """os mode (README): append returns at once; the background thread writes to the OS every
    group_interval and fsyncs every os_sync_interval."""
    spy = FsyncSpy(monkeypatch)
    with open_log(hot_dir, durability="os", os_sync_interval=0.2) as log:
        receipts = [log.append({"i": i}) for i in range(20)]
        r = receipts[-1]
        path = sdir(hot_dir) / r.segment

        def written() -> bool:
            return path.exists() and any(parse_record(ln).hash == r.hash
                                         for _o, ln in iter_lines(path) if ln.endswith(b"\n"))

        wait_for(written, timeout=2, what="os-mode write")
        log.wait_durable(r, timeout=2)  # in os mode: written to the OS
        end = end_offset(path, r.seq)
        wait_for(lambda: spy.covered(path, end), timeout=3, what="os-mode periodic fsync")
    by_seq = {x.seq: x.hash for x in records(sdir(hot_dir))}
    assert all(by_seq[x.seq] == x.hash for x in receipts)
    assert_clean(sdir(hot_dir))


def test_sync_makes_everything_durable(hot_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with open_log(hot_dir, durability="os", os_sync_interval=3600) as log:
        for i in range(5):
            r = log.append({"i": i})
        spy = FsyncSpy(monkeypatch)
        log.sync()
        path = sdir(hot_dir) / r.segment
        assert spy.covered(path, path.stat().st_size)


# ------------------------------------------------------------------ concurrency and locking


def test_concurrent_appends_from_8_threads(hot_dir: Path) -> None:
    n_threads, per_thread = 8, 250
    results: dict[int, list[Receipt]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_threads)
    log = open_log(hot_dir, segment_max_bytes=64 * 1024)

    def worker(t: int) -> None:
        try:
            barrier.wait()
            out = []
            for i in range(per_thread):
                out.append(log.append({"t": t, "i": i, "pad": "z" * (i % 50)}))
            results[t] = out
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    log.close()
    assert not errors
    recs = records(sdir(hot_dir))
    # every line of every file is one complete record: no interleaved bytes
    for path in list_segments(sdir(hot_dir)):
        for _off, line in iter_lines(path):
            parse_record(line)
    by_seq = {r.seq: r for r in recs}
    assert sorted(by_seq) == list(range(len(recs)))
    seen = set()
    for t, receipts in results.items():
        assert [by_seq[r.seq].data["i"] for r in receipts] == list(range(per_thread))  # per-thread order kept
        for r in receipts:
            assert by_seq[r.seq].hash == r.hash and by_seq[r.seq].data["t"] == t
            seen.add(r.seq)
    assert len(seen) == n_threads * per_thread
    assert_clean(sdir(hot_dir))


def test_second_writer_same_process_is_refused(hot_dir: Path) -> None:
    with open_log(hot_dir) as log:
        log.append({"i": 0})
        with pytest.raises(WriterLockedError) as ei:
            open_log(hot_dir)
        assert "already open by another writer" in str(ei.value)
        assert str(os.getpid()) in str(ei.value)
        log.append({"i": 1})
    # released on close
    with open_log(hot_dir) as log2:
        assert log2.append({"i": 2}).seq >= 2
    assert_clean(sdir(hot_dir))


def test_second_writer_other_process_is_refused(hot_dir: Path) -> None:
    code = (
        "import sys\n"
        "from pipeline.hot.writer import HotLog, WriterLockedError\n"
        "try:\n"
        "    HotLog(sys.argv[1], 'app', heartbeat_interval=0)\n"
        "except WriterLockedError as e:\n"
        "    print('LOCKED', e); sys.exit(3)\n"
        "print('OPENED')\n"
    )
    with open_log(hot_dir) as log:
        log.append({"i": 0})
        before = snapshot_files(sdir(hot_dir))
        res = run_python(code, str(hot_dir))
        assert res.returncode == 3, res.stdout + res.stderr
        assert "LOCKED" in res.stdout and str(os.getpid()) in res.stdout
        assert snapshot_files(sdir(hot_dir)) == before
        log.append({"i": 1})
    assert_clean(sdir(hot_dir))


def test_cli_append_refused_while_writer_holds_lock(hot_dir: Path) -> None:
    import subprocess

    from tests.hotutil import PYTHON, REPO

    with open_log(hot_dir) as log:
        log.append({"i": 0})
        res = subprocess.run([PYTHON, "-m", "pipeline", "append", "--hot", str(hot_dir), "--stream", STREAM],
                             input='{"a":1}\n', capture_output=True, text=True, cwd=REPO, timeout=60)
        assert res.returncode == 2
        assert "another writer" in res.stderr


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "event",
    [
        [1, 2],
        "string",
        {1: "non-string key"},
        {"a": object()},
        {"a": float("nan")},
        {"a": {"b": [float("inf")]}},
        {"a": "\ud800"},
        {"a": {"b": {}}} if False else None,
        {"big": "x" * (1 << 20)},
    ],
)
def test_bad_input_writes_nothing(hot_dir: Path, event: Any) -> None:
    if event is None:
        v: Any = {}
        for _ in range(70):
            v = {"a": v}
        event = v
    with open_log(hot_dir, durability="fsync") as log:
        log.append({"ok": 0})
        before = snapshot_files(sdir(hot_dir))
        seq_before = log.next_seq
        with pytest.raises(InvalidEvent):
            log.append(event)
        with pytest.raises(InvalidEvent):
            log.append_many([{"ok": 1}, event, {"ok": 2}])
        assert log.next_seq == seq_before
        log.sync()
        assert snapshot_files(sdir(hot_dir)) == before
        r = log.append({"ok": 3})
        assert r.seq == seq_before
    assert_clean(sdir(hot_dir))


def test_bad_input_on_empty_log_creates_no_segment(hot_dir: Path) -> None:
    with open_log(hot_dir) as log:
        with pytest.raises(InvalidEvent):
            log.append({"a": float("nan")})
        assert list_segments(sdir(hot_dir)) == []
        assert log.append({"a": 1}).seq == 0


def test_cli_append_rejects_bad_lines_and_keeps_good_ones(hot_dir: Path) -> None:
    import subprocess

    from tests.hotutil import PYTHON, REPO

    stdin = b'{"a":1}\n[1,2]\n{"b":NaN}\n{"c":"\xff"}\n{"d":2}\n'
    res = subprocess.run([PYTHON, "-m", "pipeline", "append", "--hot", str(hot_dir), "--stream", STREAM],
                         input=stdin, capture_output=True, cwd=REPO, timeout=60)
    # all or nothing (a retried script never stores a line twice): exit 2, each bad line named
    assert res.returncode == 2, res.stderr
    assert [ln.split(":")[1].strip() for ln in res.stderr.decode().splitlines()[:3]] == ["line 2", "line 3", "line 4"]
    assert not sdir(hot_dir).exists()


def test_redaction_applies_before_write(hot_dir: Path) -> None:
    with open_log(hot_dir) as log:
        log.append({"user": "alice", "password": "hunter2", "k": "AKIAIOSFODNN7EXAMPLE"})
    raw = b"".join(p.read_bytes() for p in list_segments(sdir(hot_dir)))
    assert b"hunter2" not in raw and b"AKIAIOSFODNN7EXAMPLE" not in raw


# ------------------------------------------------------------------ reopen


@pytest.mark.parametrize("seal", [True, False])
def test_close_and_reopen_continues_chain(hot_dir: Path, seal: bool) -> None:
    with open_log(hot_dir) as log:
        first = [log.append({"i": i}) for i in range(10)]
        log.close(seal=seal)
    with open_log(hot_dir) as log:
        assert log.next_seq == (11 if seal else 10)
        second = [log.append({"i": i}) for i in range(10, 20)]
    with open_log(hot_dir) as log:
        third = log.append({"i": 20})
    recs = records(sdir(hot_dir))
    assert [r.seq for r in recs] == list(range(len(recs)))
    for a, b in itertools.pairwise(recs):
        assert b.prev == a.hash
    by_seq = {r.seq: r for r in recs}
    for r in [*first, *second, third]:
        assert by_seq[r.seq].hash == r.hash
    # a clean close never needs a recovery record
    assert "recovery" not in kinds(recs)
    if not seal:
        assert second[0].segment == first[0].segment  # continued in the same file
    assert_clean(sdir(hot_dir))


# ------------------------------------------------------------------ the OS attribute, for real


def test_active_segment_is_append_only_for_real(hot_dir: Path) -> None:
    with open_log(hot_dir) as log:
        r = log.append({"i": 0})
        path = sdir(hot_dir) / r.segment
        assert attr.is_append_only(path)
        assert log.append_only_active
        size = path.stat().st_size
        for flags in (os.O_WRONLY | os.O_TRUNC, os.O_WRONLY, os.O_RDWR):
            with pytest.raises(PermissionError) as ei:
                os.open(path, flags)
            assert ei.value.errno == errno.EPERM
        with pytest.raises(PermissionError):
            os.truncate(path, 0)
        with pytest.raises(PermissionError):
            path.unlink()
        with pytest.raises(PermissionError):
            path.rename(path.with_name("moved.jsonl"))
        # appending is allowed (which is what the writer does)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        os.close(fd)
        r2 = log.append({"i": 1})
        assert path.stat().st_size > size
        assert r2.segment == r.segment
    assert_clean(sdir(hot_dir))


def test_append_only_attribute_on_a_scratch_file(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    assert not attr.is_append_only(p)
    assert attr.protect_append_only(p) is True
    assert attr.is_append_only(p)
    with open(p, "ab") as f:
        f.write(b"def")
    assert p.read_bytes() == b"abcdef"
    with pytest.raises(PermissionError), open(p, "r+b") as f:
        f.write(b"X")
    with pytest.raises(PermissionError):
        os.truncate(p, 1)
    attr.clear_protection(p)
    assert not attr.is_append_only(p)
    os.truncate(p, 1)


def test_sealed_segments_are_immutable(hot_dir: Path) -> None:
    with open_log(hot_dir) as log:
        log.append({"i": 0})
        path = log.seal()
        assert path is not None
        assert attr.is_immutable(path)
        assert not attr.is_append_only(path)
        content = path.read_bytes()
        for flags in (os.O_WRONLY | os.O_APPEND, os.O_WRONLY | os.O_TRUNC, os.O_RDWR):
            with pytest.raises(PermissionError) as ei:
                os.open(path, flags)
            assert ei.value.errno == errno.EPERM
        with pytest.raises(PermissionError):
            path.unlink()
        with pytest.raises(PermissionError):
            path.rename(path.with_name("x.jsonl"))
        with pytest.raises(PermissionError):
            os.chmod(path, 0o777)
        assert path.read_bytes() == content
        log.append({"i": 1})
    assert_clean(sdir(hot_dir))


def test_platform_support_info_with_capability() -> None:
    info = attr.platform_support_info()
    assert set(info) >= {"platform", "supported", "in_container", "has_capability", "notes"}
    assert info["platform"] == "Linux"
    assert info["supported"] is True
    assert info["has_capability"] is True
    assert isinstance(info["notes"], list)


def test_immutable_policy_off_sets_nothing(hot_dir: Path) -> None:
    with open_log(hot_dir, immutable="off") as log:
        r = log.append({"i": 0})
        path = sdir(hot_dir) / r.segment
        assert not attr.is_append_only(path)
        sealed = log.seal()
        assert sealed is not None and not attr.is_immutable(sealed)
    assert_clean(sdir(hot_dir))


def test_invalid_policy_refused() -> None:
    with pytest.raises(ValueError):
        attr.immutable_policy("sometimes")


# ------------------------------------------------------------------ without CAP_LINUX_IMMUTABLE


CHILD_REQUIRE = """
import sys
from pipeline.hot import attr
from pipeline.hot.writer import HotLog
try:
    HotLog(sys.argv[1], "app", heartbeat_interval=0)
except attr.AppendOnlyError as e:
    print("REFUSED:", e)
    sys.exit(3)
print("STARTED")
"""

CHILD_AUTO = """
import json, sys, warnings
from pipeline.hot import attr
from pipeline.hot.writer import HotLog
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    log = HotLog(sys.argv[1], "app", heartbeat_interval=0, segment_max_bytes=8192)
    receipts = [log.append({"i": i, "pad": "p" * 300}) for i in range(40)]
    active = log.active_segment
    flags = attr.get_flags(active) if active else None
    log.close()
msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
print(json.dumps({"warnings": msgs, "receipts": [[r.seq, r.hash] for r in receipts],
                  "active_flags": flags, "info": attr.platform_support_info()}))
"""


def test_require_refuses_without_capability(hot_dir: Path) -> None:
    res = run_python(CHILD_REQUIRE, str(hot_dir), env={"PIPELINE_HOT_IMMUTABLE": "require"},
                     drop_immutable_cap=True)
    assert res.returncode == 3, res.stdout + res.stderr
    assert "REFUSED" in res.stdout
    assert "CAP_LINUX_IMMUTABLE" in res.stdout and "require" in res.stdout
    assert list_segments(sdir(hot_dir)) == []


def test_require_starts_with_capability(hot_dir: Path) -> None:
    res = run_python(CHILD_REQUIRE, str(hot_dir), env={"PIPELINE_HOT_IMMUTABLE": "require"})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "STARTED" in res.stdout


def test_cli_require_refuses_without_capability(hot_dir: Path) -> None:
    code = "import sys; from pipeline.cli import main; sys.exit(main(sys.argv[1:]))"
    with open_log(hot_dir) as log:  # seal needs an existing stream (it never creates one)
        log.append({"i": 0})
    res = run_python(code, "seal", "--hot", str(hot_dir), "--stream", STREAM,
                     env={"PIPELINE_HOT_IMMUTABLE": "require"}, drop_immutable_cap=True)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "CAP_LINUX_IMMUTABLE" in res.stderr


def test_auto_warns_once_and_writes_verifiable_log_without_capability(hot_dir: Path) -> None:
    res = run_python(CHILD_AUTO, str(hot_dir), env={"PIPELINE_HOT_IMMUTABLE": "auto"}, drop_immutable_cap=True)
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(out["warnings"]) == 1, out["warnings"]
    assert "append-only" in out["warnings"][0] and "PIPELINE_HOT_IMMUTABLE" in out["warnings"][0]
    assert out["active_flags"] is None or not out["active_flags"] & attr.FS_APPEND_FL
    info = out["info"]
    assert info["has_capability"] is False
    assert any("CAP_LINUX_IMMUTABLE" in n for n in info["notes"])
    segs = list_segments(sdir(hot_dir))
    assert len(segs) > 2  # several segments created and sealed, still only one warning
    for p in segs:
        assert not attr.is_append_only(p) and not attr.is_immutable(p)
    by_seq = {r.seq: r.hash for r in records(sdir(hot_dir))}
    for seq, h in out["receipts"]:
        assert by_seq[seq] == h
    assert_clean(sdir(hot_dir))


def test_platform_support_info_without_capability() -> None:
    code = "import json; from pipeline.hot import attr; print(json.dumps(attr.platform_support_info()))"
    res = run_python(code, drop_immutable_cap=True)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["has_capability"] is False
    assert info["supported"] is True


def test_closed_log_refuses_appends(hot_dir: Path) -> None:
    log = open_log(hot_dir)
    log.append({"i": 0})
    log.close()
    with pytest.raises(HotLogError):
        log.append({"i": 1})
    assert orjson.loads((sdir(hot_dir) / "head.json").read_bytes())["next_seq"] == 2
