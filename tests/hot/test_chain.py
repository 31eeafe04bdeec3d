"""Chain (pipeline/hot/chain.py): the chain state and the append paths, without a flusher."""

from __future__ import annotations

import threading
from pathlib import Path

import orjson
import pytest

from pipeline import merkle
from pipeline.hot import chain as chain_mod
from pipeline.hot.active import SegmentFiles
from pipeline.hot.chain import Chain, Receipt
from pipeline.hot.errors import HotLogError
from pipeline.record import GENESIS_HASH, parse_record

TS = b"2026-12-06T18:00:00.000000Z"


def make_chain(d: Path, max_bytes: int = 1 << 20) -> Chain:
    d.mkdir(parents=True, exist_ok=True)
    return Chain(stream="s", hot_dir=d.parent, files=SegmentFiles(d, "off", 0), segment_max_bytes=max_bytes,
                 now=lambda: TS, seal_extension=None, wake=threading.Event())


def lines(ch: Chain) -> list[bytes]:
    return [line for run in ch.batch.runs for line in run.chunks]


def test_appends_chain_and_queue_in_the_open_batch(tmp_path: Path) -> None:
    ch = make_chain(tmp_path / "s")
    with ch.lock:
        receipts = [ch.append("event", b'{"i":%d}' % i) for i in range(5)]
    assert [r.seq for r in receipts] == [0, 1, 2, 3, 4]
    assert all(isinstance(r, Receipt) and r.generation == 0 for r in receipts)
    recs = [parse_record(line) for line in lines(ch)]
    assert recs[0].prev == GENESIS_HASH
    assert [r.prev for r in recs[1:]] == [r.hash for r in recs[:-1]]
    assert [r.hash for r in recs] == [r.hash for r in receipts]
    assert ch.batch.pending == sum(map(len, lines(ch))) == ch.seg.size  # type: ignore[union-attr]
    assert ch.seq == 5 and ch.prev == recs[-1].hash.encode()


def test_take_swaps_the_batch_and_hashes_what_it_took(tmp_path: Path) -> None:
    ch = make_chain(tmp_path / "s")
    out: list[object] = []
    with ch.lock:
        ch.append_all([b'{"i":%d}' % i for i in range(10)], out, errors_as_results=False)
    assert len(out) == 10
    batch = ch.batch
    taken = ch.take(sync=True)
    assert taken is not None and taken.batch is batch and batch.taken.is_set() and not batch.done.is_set()
    assert ch.batch is not batch and ch.batch.first_seq == 10 and ch.taken is batch
    assert taken.upto == 9
    expected = merkle.CompactRange()
    for line in (line for run in batch.runs for line in run.chunks):
        expected.append(merkle.leaf_hash(line[:-1]))
    assert (taken.candidate.cr_size, taken.candidate.cr_stack) == (expected.size, expected.stack)
    assert all(len(run.leaves) == len(run.chunks) for run in batch.runs)


def test_a_full_segment_is_sealed_and_the_next_one_opened(tmp_path: Path) -> None:
    ch = make_chain(tmp_path / "s", max_bytes=4096 + 1000)
    with ch.lock:
        for i in range(12):
            ch.append("event", orjson.dumps({"i": i, "pad": "x" * 100}))
    kinds = [parse_record(line).kind for line in lines(ch)]
    assert "seal" in kinds
    assert len(ch.pending_seals) >= 1
    sealed = [run for run in ch.batch.runs if run.finalize]
    assert ch.batch.runs[0].finalize and len(sealed) == len(ch.pending_seals)
    last = sealed[-1].after
    assert last is not None and ch.head_due is not None and ch.head_due.next_seq == last.next_seq
    assert ch.seg is not None and ch.seg.first_seq == last.next_seq


def test_rollback_drops_the_queue_wakes_its_waiters_and_needs_a_recovery(tmp_path: Path) -> None:
    ch = make_chain(tmp_path / "s")
    with ch.lock:
        for i in range(3):
            ch.append("event", b'{"i":%d}' % i)
    taken = ch.take(sync=True)
    assert taken is not None
    with ch.lock:
        ch.append("event", b'{"late":1}')
        dropped = ch.batch
        start = ch.snapshot()
        start.next_seq, start.prev, start.cr_size, start.cr_stack = 0, GENESIS_HASH.encode(), 0, []
        start.seg, start.seg_size, start.seg_count = None, 0, 0
        gen = ch.rollback(start, OSError(28, "No space left on device"), taken.batch.runs)
    assert gen == 0 and ch.gen == 1 and ch.seq == 0 and ch.failure is not None
    assert dropped.done.is_set() and dropped.taken.is_set()
    assert [p.name for p, v in ch.abandoned] == [taken.batch.runs[0].seg.name] and ch.abandoned[0][1] == 0
    assert ch.take(sync=True) is None  # nothing to flush until appends resume
    with ch.lock:
        r = ch.append("event", b'{"again":1}')  # first a recovery segment naming the abandoned one
    recs = [parse_record(line) for line in lines(ch)]
    assert [x.kind for x in recs] == ["recovery", "event"] and r.seq == 1 and r.generation == 1
    assert "no space left" in recs[0].data["error"]


def test_closed_chain_refuses_appends(tmp_path: Path) -> None:
    ch = make_chain(tmp_path / "s")
    ch.closed = True
    with ch.lock, pytest.raises(HotLogError, match="closed"):
        ch.append("event", b"{}")


def test_python_and_bound_operations_build_the_same_lines() -> None:
    prefix = b'{"v":1,"stream":"s","seq":'
    fast: list[bytes] = []
    slow: list[bytes] = []
    a = chain_mod.queue_record(prefix, 7, TS, b"event", b"0" * 64, b'{"a":1}', fast, 1 << 20, "seg", 3)
    b = chain_mod._py_queue_record(prefix, 7, TS, b"event", b"0" * 64, b'{"a":1}', slow, 1 << 20, "seg", 3)
    assert a == b and fast == slow
    assert chain_mod._py_queue_record(prefix, 7, TS, b"event", b"0" * 64, b'{"a":1}', [], 10, "seg", 3) is None
    items = [b'{"n":%d}' % i for i in range(50)]
    fast, slow = [], []
    ca = chain_mod.queue_records(prefix, 0, TS, b"0" * 64, items, 5, fast, 2000, 1, "seg", 0)
    cb = chain_mod._py_queue_records(prefix, 0, TS, b"0" * 64, items, 5, slow, 2000, 1, "seg", 0)
    assert ca == cb and fast == slow and 0 < ca[0] < 45  # stopped where the room ended
    s1, s2, t1, t2 = (merkle.CompactRange() for _ in range(4))
    assert chain_mod.hash_lines(fast, 2, s1, t1) == chain_mod._py_hash_lines(slow, 2, s2, t2)
    assert (s1.root(), t1.root()) == (s2.root(), t2.root())


def test_completion_wakes_every_waiter_and_times_out_without_one() -> None:
    done = chain_mod.Completion()
    assert done.wait(0.01) is False and not done.is_set()
    woke: list[bool] = []
    threads = [threading.Thread(target=lambda: woke.append(done.wait(5))) for _ in range(32)]
    for t in threads:
        t.start()
    done.set()
    for t in threads:
        t.join(5)
    assert woke == [True] * 32
    assert done.wait() is True  # after set: at once, no lock left behind


def test_completion_baton_reaches_every_waiter_when_some_time_out() -> None:
    """The baton (each woken waiter wakes the next) must not stop at a waiter that timed out
    or arrived while ``set`` ran: every waiter without a timeout returns, many times over."""
    import random

    rng = random.Random(7)
    for _round in range(200):
        done = chain_mod.Completion()
        woke: list[bool] = []
        timed = [threading.Thread(target=done.wait, args=(rng.choice((0.0, 0.0005, 0.002)),))
                 for _ in range(rng.randrange(0, 6))]
        patient = [threading.Thread(target=lambda: woke.append(done.wait())) for _ in range(rng.randrange(1, 12))]
        everyone = timed + patient
        rng.shuffle(everyone)
        for i, t in enumerate(everyone):
            t.start()
            if i == len(everyone) // 2:
                done.set()  # some waiters arrive after set, racing with the baton
        if not done.is_set():
            done.set()
        for t in everyone:
            t.join(5)
            assert not t.is_alive(), "a waiter without a timeout was never woken"
        assert woke == [True] * len(patient)
        assert not done._waiters  # every queued lock was taken: none left to wake later
