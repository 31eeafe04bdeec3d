"""The writer's C fast lane (pipeline/_native.c, Lane): the lock HotLog uses, the home of its
chain state, and append()'s common case in one call.

Its safety rule: the fast path runs only while the lane is armed, taking the lock from
Python disarms it, and only HotLog._arm_lane_locked arms it, right before the slow path
lets the lock go.  These tests pin that rule down, the lock semantics threading.Condition
relies on, and that the fast path really carries the common case (the benchmark figure
depends on it).  The bytes it writes are checked against the pure-Python writer in
tests/test_native.py.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline._accel import native
from pipeline.hot.segment import list_segments
from pipeline.hot.writer import HotLog, Receipt
from pipeline.record import GENESIS_HASH
from pipeline.sanitise import Sanitiser
from pipeline.verify.chain import verify_stream
from tests.hotutil import needs_native


def _lane() -> Any:
    assert native is not None
    sanitiser = Sanitiser()
    sanitiser.prepare({"a": 1})  # the key set {"a"} is now known to be clean
    return native.Lane(b'{"v":1,"stream":"s","seq":', Receipt, sanitiser.fast_settings)


@needs_native
def test_lane_behaves_as_a_lock() -> None:
    lane = _lane()
    assert lane.acquire() is True and lane.locked()
    assert lane.acquire(False) is False
    t0 = time.monotonic()
    assert lane.acquire(timeout=0.05) is False
    assert time.monotonic() - t0 >= 0.04
    lane.release()
    assert not lane.locked()
    with pytest.raises(RuntimeError):
        lane.release()
    with lane:
        assert lane.locked()
    assert not lane.locked()
    with pytest.raises(ValueError):
        lane.acquire(False, 1.0)


@needs_native
def test_condition_over_a_lane_hands_over_between_threads() -> None:
    lane = _lane()
    cond = threading.Condition(lane)
    box: list[int] = []

    def producer() -> None:
        for i in range(50):
            with cond:
                box.append(i)
                cond.notify_all()

    t = threading.Thread(target=producer)
    with cond:
        t.start()
        while len(box) < 50:
            assert cond.wait(timeout=5)
    t.join()
    assert box == list(range(50))


@needs_native
def test_other_threads_wait_for_the_lock() -> None:
    lane = _lane()
    order: list[str] = []
    lane.acquire()

    def other() -> None:
        with lane:
            order.append("other")

    t = threading.Thread(target=other)
    t.start()
    time.sleep(0.05)
    order.append("holder")
    lane.release()
    t.join(5)
    assert order == ["holder", "other"]


@needs_native
def test_state_attributes_are_checked() -> None:
    lane = _lane()
    assert lane.seq == 0 and lane.pending == 0 and lane.prev == b"0" * 64
    lane.seq = 7
    lane.prev = b"a" * 64
    lane.pending = 123
    assert (lane.seq, lane.prev, lane.pending) == (7, b"a" * 64, 123)
    with pytest.raises(TypeError):
        lane.prev = b"short"
    with pytest.raises(OverflowError):
        lane.seq = -1
    with pytest.raises(TypeError):
        lane.pending = "1"


@needs_native
def test_arm_needs_the_lock_and_a_started_segment() -> None:
    lane = _lane()
    with pytest.raises(RuntimeError, match="not held"):
        lane.arm([], object(), "seg", 0, 10, 1, 1000)
    lane.acquire()
    with pytest.raises(ValueError):
        lane.arm([], object(), "seg", 0, 10, 0, 1000)
    lane.arm([], object(), "seg", 0, 10, 1, 1000)
    assert lane.armed
    lane.release()
    assert lane.armed  # releasing keeps it armed; taking the lock from Python does not
    assert lane.acquire()
    assert not lane.armed
    lane.release()


@needs_native
def test_a_disarmed_lane_hands_back_the_prepared_event() -> None:
    lane = _lane()
    assert lane.append({"a": 1}) == b'{"a":1}'
    assert lane.seq == 0  # nothing queued
    # an event the sanitiser's Python code must judge: None
    assert lane.append({"b": 1}) is None  # a key set it has not judged yet
    assert lane.append({"a": float("nan")}) is None
    assert lane.append(["not", "an", "object"]) is None


def _log(tmp_path: Path, **kw: Any) -> HotLog:
    return HotLog(tmp_path, "app", heartbeat_interval=0, immutable="off", **kw)


@needs_native
def test_the_common_case_takes_the_fast_path(tmp_path: Path) -> None:
    log = _log(tmp_path, background=False, max_pending_bytes=1 << 30)
    slow_calls = 0
    real = log._append_locked

    def counting(*args: Any, **kwargs: Any) -> Receipt:
        nonlocal slow_calls
        slow_calls += 1
        return real(*args, **kwargs)

    log._append_locked = counting  # type: ignore[method-assign]
    receipts = [log.append({"i": i, "actor": "svc"}, wait=False) for i in range(2000)]
    # the first event opens the segment; one more takes the Python sanitiser (its key set
    # is new to the sanitiser's cache); everything else goes through the lane
    assert slow_calls <= 3
    assert [r.seq for r in receipts] == list(range(2000))
    assert log._lane is not None and log._lane.seq == log.next_seq == 2000
    assert log.last_hash == receipts[-1].hash
    log.close()
    assert verify_stream(tmp_path / "app").ok


@needs_native
def test_taking_the_writer_lock_disarms_and_the_slow_path_rearms(tmp_path: Path) -> None:
    log = _log(tmp_path, background=False)
    lane = log._lane
    assert lane is not None
    log.append({"x": 0}, wait=False)
    assert lane.armed
    with log._lock:
        assert not lane.armed
    log.append({"x": 1}, wait=False)  # the slow path: appends, then arms again
    assert lane.armed
    with log._cond:  # the Condition takes the same lock
        assert not lane.armed
    log.sync()  # a flush takes the lock and hands the queued lines to the writer
    assert not lane.armed
    log.append({"x": 2}, wait=False)
    log.seal()
    assert not lane.armed
    r = log.append({"x": 3}, wait=False)  # first record after the seal: a new segment
    assert lane.armed and r.segment != list_segments(tmp_path / "app")[0].name
    log.close()
    assert not lane.armed
    report = verify_stream(tmp_path / "app")
    assert report.ok and report.records == 6  # four events, one seal, and the closing seal


def test_redaction_and_invalid_events_still_go_through_the_sanitiser(tmp_path: Path) -> None:
    log = _log(tmp_path, background=False)
    for i in range(3):
        log.append({"i": i}, wait=False)
    r = log.append({"user": "ann", "password": "hunter2"}, wait=False)
    from pipeline.sanitise import InvalidEvent

    with pytest.raises(InvalidEvent):
        log.append({"bad": float("inf")}, wait=False)
    log.append({"i": 9}, wait=False)
    log.close()
    lines = b"".join(p.read_bytes() for p in list_segments(tmp_path / "app"))
    assert b"hunter2" not in lines and b'"seq":%d' % r.seq in lines
    assert verify_stream(tmp_path / "app").ok


def test_a_full_segment_rotates_from_the_fast_path(tmp_path: Path) -> None:
    log = _log(tmp_path, background=False, segment_max_bytes=8192)
    receipts = [log.append({"i": i, "pad": "p" * 200}, wait=False) for i in range(200)]
    log.close()
    segments = list_segments(tmp_path / "app")
    assert len(segments) > 5
    assert all(p.stat().st_size <= 8192 for p in segments)
    assert len({r.segment for r in receipts}) == len(segments)
    assert verify_stream(tmp_path / "app").ok


def test_pure_python_writer_keeps_the_same_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.hot import writer as writer_mod

    monkeypatch.setattr(writer_mod, "_native", None)
    log = _log(tmp_path, background=False)
    assert log._lane is None and log._prev == GENESIS_HASH.encode()
    log.append({"i": 1}, wait=False)
    assert log._seq == 1 and log._pending_bytes > 0
    log.close()


def test_queued_events_become_durable_without_anyone_waiting(tmp_path: Path) -> None:
    """append(wait=False) into an idle log wakes the background thread, which otherwise
    sleeps up to a second when nothing is pending: the event is flushed and fsynced within
    about group_interval, not left to the next wait, sync or second."""
    log = _log(tmp_path, segment_window=0)
    time.sleep(0.05)  # the background thread is now in its idle wait (one second)
    log.append({"i": 1}, wait=False)
    deadline = time.monotonic() + 0.6
    while log.durable_tree_head()[0] < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert log.durable_tree_head()[0] == 1
    log.close()


# --- write_lines: the background flush's one GIL-free writev loop ---------------------------


@needs_native
def test_write_lines_writes_everything_in_order(tmp_path: Path) -> None:
    import os

    assert native is not None
    lines = [b"%d:" % i + b"x" * (i % 300) + b"\n" if i % 7 else b"" for i in range(5000)]  # > IOV_MAX
    path = tmp_path / "out"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        native.write_lines(fd, lines)
        native.write_lines(fd, [])
    finally:
        os.close(fd)
    assert path.read_bytes() == b"".join(lines)


@needs_native
def test_write_lines_reports_errors_as_oserror(tmp_path: Path) -> None:
    import errno
    import os

    assert native is not None
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        with pytest.raises(OSError) as exc:
            native.write_lines(fd, [b"a" * 100])
        assert exc.value.errno == errno.ENOSPC
    finally:
        os.close(fd)
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError) as exc:
        native.write_lines(w, [b"x"])
    assert exc.value.errno == errno.EBADF
    with pytest.raises(TypeError):
        native.write_lines(1, ["not bytes"])


# --- a full queue: the appending thread hands over instead of flushing -------------------------


def test_a_full_queue_waits_for_the_background_flush(tmp_path: Path) -> None:
    """With max_pending_bytes reached, the appending thread lets the background thread take
    the queue (its flush swaps it out) instead of hashing, writing and syncing it itself."""
    log = _log(tmp_path, max_pending_bytes=64 * 1024)
    flushed_by: list[str] = []
    real = log._flush

    def recording(*, sync: bool) -> None:
        flushed_by.append(threading.current_thread().name)
        real(sync=sync)

    log._flush = recording  # type: ignore[method-assign]
    receipts = [log.append({"i": i, "pad": "q" * 300}, wait=False) for i in range(3000)]  # ~2 MB
    me = threading.current_thread().name
    assert me not in flushed_by and len(flushed_by) >= 10
    log.wait_durable(receipts[-1], timeout=10)
    log.close()
    report = verify_stream(tmp_path / "app")
    assert report.ok and report.records >= 3000


def test_a_full_queue_is_flushed_here_when_the_background_thread_does_not_come(tmp_path: Path) -> None:
    log = _log(tmp_path, max_pending_bytes=16 * 1024)
    stuck = threading.Event()

    def stuck_tick() -> None:
        stuck.wait(10)

    log._tick = stuck_tick  # type: ignore[method-assign]
    log._wake.set()
    time.sleep(0.05)  # the background thread is now stuck in its tick
    t0 = time.monotonic()
    for i in range(100):  # ~25 KB: past the limit once
        log.append({"i": i, "pad": "s" * 200}, wait=False)
    assert 0.9 <= time.monotonic() - t0 < 4  # one second of waiting, then it flushed itself
    assert log._pending_bytes < 16 * 1024 + 1024
    stuck.set()
    log.close()
    assert verify_stream(tmp_path / "app").ok


def test_without_a_background_thread_the_appender_flushes(tmp_path: Path) -> None:
    log = _log(tmp_path, background=False, max_pending_bytes=16 * 1024)
    for i in range(500):
        log.append({"i": i, "pad": "b" * 200}, wait=False)
        assert log._pending_bytes < 16 * 1024 + 1024
    log.close()
    assert verify_stream(tmp_path / "app").ok


@needs_native
def test_native_fsync(tmp_path: Path) -> None:
    import errno
    import os

    assert native is not None
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    try:
        os.write(fd, b"x")
        native.fsync(fd)
        native.fsync(fd, True)
    finally:
        os.close(fd)
    with pytest.raises(OSError) as exc:
        native.fsync(fd)
    assert exc.value.errno == errno.EBADF


def test_a_busy_log_is_flushed_at_the_group_interval_not_per_append(tmp_path: Path) -> None:
    """Only the first line queued while the background thread is idle wakes it early; under
    a steady stream it flushes (and fsyncs) once per group_interval, not once per handful
    of appends."""
    log = _log(tmp_path, group_interval=0.01)
    flushes = 0
    real = log._flush

    def counting(*, sync: bool) -> None:
        nonlocal flushes
        if threading.current_thread() is not threading.main_thread():
            flushes += 1
        real(sync=sync)

    log._flush = counting  # type: ignore[method-assign]
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < 0.5:
        log.append({"i": i}, wait=False)
        i += 1
    elapsed = time.monotonic() - t0
    log.close()
    assert i > 1000
    assert flushes <= elapsed / 0.01 * 2 + 10, (flushes, i)
