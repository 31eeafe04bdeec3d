"""Crash safety: a real writer process killed with SIGKILL at random moments, many times, over
the same hot directory; every acknowledged receipt survives and the chain verifies.  Torn
tails are kept as evidence and explained by recovery records."""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.hot import attr
from pipeline.hot.segment import iter_lines, list_segments, segment_name
from pipeline.hot.writer import HotLog
from pipeline.record import parse_record
from tests.hotutil import PYTHON, REPO, assert_clean, records, run_python, verify

STREAM = "crash"
KILLS_PER_MODE = 30

WRITER = r"""
import os, sys, threading
from pipeline.hot.writer import HotLog
hot, mode, run = sys.argv[1], sys.argv[2], int(sys.argv[3])
log = HotLog(hot, "crash", durability=mode, heartbeat_interval=0.05, segment_window=0,
             segment_max_bytes=16384)
out_lock = threading.Lock()
sys.stdout.write("READY\n"); sys.stdout.flush()

def work(t):
    i = 0
    while True:
        r = log.append({"run": run, "t": t, "i": i, "pad": "x" * (i % 200)})
        # printed only AFTER append returned: this is an acknowledgement
        with out_lock:
            sys.stdout.write(f"{r.seq} {r.hash}\n")
            sys.stdout.flush()
        i += 1

threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(2)]
for th in threads:
    th.start()
threads[0].join()
"""


def run_and_kill(hot: Path, mode: str, run: int, rng: random.Random) -> tuple[dict[int, str], bool]:
    """Start the writer, SIGKILL it at a random moment, return the receipts it acknowledged."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([PYTHON, "-c", WRITER, str(hot), mode, str(run)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=REPO)
    buf = b""
    if rng.random() < 0.2:
        # some kills land during start-up and recovery
        time.sleep(rng.uniform(0.0, 0.5))  # the randomness of the kill moment, not synchronisation
    else:
        # most land while appending: wait for READY (start-up time varies with load), then a random delay
        deadline = time.monotonic() + 120
        assert proc.stdout is not None
        while b"READY\n" not in buf and time.monotonic() < deadline:
            ready_fds, _, _ = select.select([proc.stdout], [], [], 1.0)
            if ready_fds:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                buf += chunk
        time.sleep(rng.uniform(0.0, 0.3))
    proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=30)
    out = buf + out
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, err.decode()[-2000:])
    acked: dict[int, str] = {}
    text = out.decode()
    ready = text.startswith("READY\n")
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n") or line == "READY\n":
            continue  # a receipt line torn by the kill was never fully acknowledged
        seq, h = line.split()
        acked[int(seq)] = h
    return acked, ready


@pytest.mark.parametrize("mode", ["fsync", "group"])
def test_sigkill_at_random_moments_loses_no_acknowledged_receipt(hot_dir: Path, mode: str) -> None:
    rng = random.Random(f"{mode}-{os.getpid()}-{time.time_ns()}")
    acked: dict[int, str] = {}
    started = 0
    for run in range(KILLS_PER_MODE):
        got, ready = run_and_kill(hot_dir, mode, run, rng)
        started += ready
        for seq, h in got.items():
            # a seq acknowledged twice (across runs) must have the same hash: never rolled back
            assert acked.setdefault(seq, h) == h, f"run {run}: seq {seq} re-acknowledged with another hash"
    # under heavy machine load start-up can outlast the wait; a quarter of the runs must append
    assert started >= KILLS_PER_MODE // 4, "the writer rarely got past start-up: kills were too early"
    assert len(acked) > 50

    d = hot_dir / STREAM
    # the files as the crashes left them verify without findings (torn tails are notes)
    assert_clean(d)
    # one more recovery in-process, then a clean close
    with HotLog(hot_dir, STREAM, heartbeat_interval=0, segment_window=0) as log:
        final = log.append({"final": True})
    recs = records(d)
    by_seq = {r.seq: r for r in recs}
    assert sorted(by_seq) == list(range(len(by_seq))), "seqs are not contiguous"
    assert [r.seq for r in recs] == sorted(r.seq for r in recs)  # file order is seq order
    for a, b in itertools.pairwise(recs):
        assert b.prev == a.hash
    missing = [seq for seq in acked if seq not in by_seq]
    assert not missing, f"acknowledged receipts lost: {missing[:10]}"
    changed = [seq for seq, h in acked.items() if by_seq[seq].hash != h]
    assert not changed, f"acknowledged receipts changed: {changed[:10]}"
    assert by_seq[final.seq].data == {"final": True}
    rep = assert_clean(d)
    assert rep.last_seq == final.seq + 1  # the seal written by close()
    kinds = {r.kind for r in recs}
    assert "recovery" in kinds  # recovery ran (unclean shutdowns are recorded)
    # every acknowledged event record is an event of some run, with the payload it was given
    for seq in acked:
        assert by_seq[seq].kind in ("event", "heartbeat")


# ------------------------------------------------------------------ synthetic torn tails


CHILD_APPEND_AND_DIE = """
import os, sys
from pipeline.hot.writer import HotLog
log = HotLog(sys.argv[1], "crash", durability="fsync", heartbeat_interval=0, segment_window=0)
n = int(sys.argv[2])
for i in range(n):
    r = log.append({"i": i})
    print(r.seq, r.hash, r.segment, flush=True)
if sys.argv[3] == "seal":
    log.seal()
os._exit(0)  # no close(): as if the process died
"""


def crash_writer(hot: Path, n: int, seal: bool = False) -> list[tuple[int, str, str]]:
    res = run_python(CHILD_APPEND_AND_DIE, str(hot), str(n), "seal" if seal else "no")
    assert res.returncode == 0, res.stderr
    return [(int(a), b, c) for a, b, c in (ln.split() for ln in res.stdout.splitlines())]


def recovery_records(d: Path) -> list[Any]:
    return [r for r in records(d) if r.kind == "recovery"]


def test_torn_tail_is_kept_and_explained_by_a_recovery_record(hot_dir: Path) -> None:
    receipts = crash_writer(hot_dir, 10)
    d = hot_dir / STREAM
    active = d / receipts[-1][2]
    assert attr.is_append_only(active)
    valid = active.stat().st_size
    partial = b'{"v":1,"stream":"crash","seq":10,"ts":"2026-11-02T10:'
    # a torn write: the append-only attribute still allows appending
    with open(active, "ab") as f:
        f.write(partial)
    rep = assert_clean(d)  # before recovery: a torn tail on the last segment is a note
    assert [n.kind for n in rep.notes] == ["torn-tail"]

    with HotLog(hot_dir, STREAM, heartbeat_interval=0, segment_window=0) as log:
        r = log.append({"after": 1})
        assert log.active_segment != active
    # the torn bytes are still there, byte for byte (evidence), and the file is now immutable
    assert active.read_bytes()[valid:] == partial
    assert attr.is_immutable(active)
    (rec,) = recovery_records(d)
    assert rec.seq == 10 and rec.prev == receipts[-1][1]
    (entry,) = rec.data["abandoned"]
    assert entry == {"segment": active.name, "valid_bytes": valid, "torn_bytes": len(partial),
                     "torn_sha256": hashlib.sha256(partial).hexdigest()}
    assert records(d)[r.seq].data == {"after": 1}
    rep = assert_clean(d)
    recovered = [n for n in rep.notes if n.kind == "recovered"]
    assert [n.segment for n in recovered] == [active.name]
    # every acknowledged receipt is intact
    by_seq = {x.seq: x.hash for x in records(d)}
    assert all(by_seq[s] == h for s, h, _ in receipts)


def test_torn_first_line_of_a_new_segment(hot_dir: Path) -> None:
    """A crash right after a seal, while the first line of the next segment was being written."""
    receipts = crash_writer(hot_dir, 5, seal=True)
    d = hot_dir / STREAM
    next_seq = receipts[-1][0] + 2  # after the seal
    torn = d / segment_name(next_seq)
    torn.write_bytes(b'{"v":1,"stream":"crash","se')
    assert_clean(d)
    with HotLog(hot_dir, STREAM, heartbeat_interval=0, segment_window=0) as log:
        r = log.append({"after": 1})
    assert r.segment == segment_name(next_seq, 1)  # the torn file keeps its name
    assert torn.read_bytes() == b'{"v":1,"stream":"crash","se'
    rep = assert_clean(d)
    assert any(n.kind == "recovered" and n.segment == torn.name for n in rep.notes)
    recs = records(d)
    assert [x.seq for x in recs] == list(range(len(recs)))


def test_torn_tail_changed_after_recovery_is_a_finding(hot_dir: Path) -> None:
    receipts = crash_writer(hot_dir, 4)
    d = hot_dir / STREAM
    active = d / receipts[-1][2]
    with open(active, "ab") as f:
        f.write(b'{"v":1,"stre')
    with HotLog(hot_dir, STREAM, heartbeat_interval=0, segment_window=0) as log:
        log.append({"after": 1})
    assert_clean(d)
    attr.clear_protection(active)
    with open(active, "ab") as f:
        f.write(b"more")
    rep = verify(d)
    assert [f.reason for f in rep.findings] == ["recovery-mismatch"], rep.findings


def test_unclean_shutdown_with_complete_tail_continues_with_recovery_record(hot_dir: Path) -> None:
    receipts = crash_writer(hot_dir, 6)
    d = hot_dir / STREAM
    with HotLog(hot_dir, STREAM, heartbeat_interval=0, segment_window=0) as log:
        r = log.append({"after": 1})
    (rec,) = recovery_records(d)
    assert rec.seq == 6 and rec.data["reason"] == "unclean-shutdown"
    assert r.seq == 7
    assert r.segment == receipts[0][2]  # nothing torn: same segment
    by_seq = {x.seq: x.hash for x in records(d)}
    assert all(by_seq[s] == h for s, h, _ in receipts)
    assert_clean(d)


def test_repeated_recovery_is_stable(hot_dir: Path) -> None:
    """Opening and crashing again and again without appending never loses or rewrites anything."""
    receipts = crash_writer(hot_dir, 3)
    d = hot_dir / STREAM
    with open(d / receipts[-1][2], "ab") as f:
        f.write(b"torn")
    for _ in range(3):
        crash_writer(hot_dir, 0)
    for path in list_segments(d):
        for _o, line in iter_lines(path):
            if line.endswith(b"\n"):
                parse_record(line)
    by_seq = {x.seq: x.hash for x in records(d)}
    assert all(by_seq[s] == h for s, h, _ in receipts)
    assert sorted(by_seq) == list(range(len(by_seq)))
    assert_clean(d)
