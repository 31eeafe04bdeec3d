"""AuditLogHandler with log=: the durability wait outside the handler lock (records from
many threads share group commits), and the non-waiting mode."""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline import _accel
from pipeline.hot.writer import HotLog
from pipeline.ingest import AuditLogError, AuditLogHandler
from pipeline.ingest.handler import _rfc3339
from tests.hotutil import FsyncSpy, records


@pytest.fixture
def hotlog(hot_dir: Path) -> Iterator[HotLog]:
    log = HotLog(hot_dir, "app", heartbeat_interval=0, segment_window=0)
    yield log
    log.close()


def logger_for(handler: logging.Handler, name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def test_concurrent_records_share_fsyncs(hot_dir: Path, hotlog: HotLog, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = _accel.fsync

    def slow_fsync(fd: int, data_only: bool = False) -> None:
        calls["n"] += 1
        time.sleep(0.01)
        real(fd, data_only)

    monkeypatch.setattr(_accel, "fsync", slow_fsync)
    handler = AuditLogHandler(log=hotlog, raise_on_error=True)
    logger = logger_for(handler, "test.handler.shared")
    per = 10

    def worker(k: int) -> None:
        for i in range(per):
            logger.info("step", extra={"audit": {"thread": k, "i": i}})

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # one fsync per record would be 160 of them; shared group commits a fraction.  (Counted,
    # not timed: how long 160 records take depends on the machine; speed belongs in bench/.)
    assert calls["n"] < 16 * per / 4, calls["n"]
    events = [r.data for r in records(hot_dir / "app") if r.kind == "event"]
    assert sorted((e["audit"]["thread"], e["audit"]["i"]) for e in events) == \
        [(k, i) for k in range(16) for i in range(per)]


def test_each_waiting_record_is_durable_when_the_call_returns(hotlog: HotLog, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = FsyncSpy(monkeypatch)
    handler = AuditLogHandler(log=hotlog)
    logger = logger_for(handler, "test.handler.durable")
    for i in range(3):
        logger.info("one %d", i)
        seg = hotlog.active_segment
        assert seg is not None and spy.covered(seg, seg.stat().st_size)
    assert handler.last_receipt is not None and handler.last_receipt["seq"] == hotlog.next_seq - 1


def test_non_waiting_mode_returns_before_durability_and_flush_waits(hot_dir: Path, hotlog: HotLog,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    handler = AuditLogHandler(log=hotlog, wait=False)
    logger = logger_for(handler, "test.handler.nowait")
    waited: list[int] = []
    monkeypatch.setattr(hotlog, "wait_durable", lambda r, timeout=None: waited.append(r.seq))
    for i in range(100):
        logger.info("n %d", i)
    assert waited == []  # no record waited
    handler.flush()
    assert handler.last_receipt is not None and waited == [handler.last_receipt["seq"]]
    handler.flush()
    assert len(waited) == 1  # nothing new to wait for


def test_non_waiting_flush_reports_a_record_not_stored(hotlog: HotLog, monkeypatch: pytest.MonkeyPatch) -> None:
    handler = AuditLogHandler(log=hotlog, wait=False, raise_on_error=True)
    logger = logger_for(handler, "test.handler.nowait.fail")
    logger.info("queued")

    def refused(receipt: object, timeout: float | None = None) -> None:
        raise RuntimeError("not stored")

    monkeypatch.setattr(hotlog, "wait_durable", refused)
    with pytest.raises(AuditLogError, match="not stored"):
        handler.flush()


def test_non_waiting_mode_needs_a_log(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="wait=False needs log="):
        AuditLogHandler(socket_path=tmp_path / "s", wait=False)


def test_timestamps_match_datetime() -> None:
    rng = random.Random(15)
    values = [rng.uniform(0, 4e9) for _ in range(20000)]
    values += [int(v) + f for v in values[:200] for f in (0.0, 0.9999995, 0.0000005, 0.5, 0.1234565)]
    for v in values:
        assert _rfc3339(v) == dt.datetime.fromtimestamp(v, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), v


def test_the_handler_lock_is_taken_only_to_format_an_exception(hot_dir: Path, hotlog: HotLog) -> None:
    """The handler lock guards the formatter alone: while another thread holds it, a plain
    record is still stored, and a record with an exception waits for it, then carries the
    formatted traceback."""
    handler = AuditLogHandler(log=hotlog, raise_on_error=True)
    logger = logger_for(handler, "test.handler.lock")
    assert handler.lock is not None
    with handler.lock:
        plain = threading.Thread(target=logger.info, args=("plain",))
        plain.start()
        plain.join(10)
        assert not plain.is_alive()

        def failing() -> None:
            try:
                raise ValueError("boom")
            except ValueError:
                logger.exception("failed")

        formatted = threading.Thread(target=failing)
        formatted.start()
        formatted.join(0.2)
        assert formatted.is_alive()  # waiting for the lock this thread holds
    formatted.join(10)
    assert not formatted.is_alive()
    events = [r.data for r in records(hot_dir / "app") if r.kind == "event"]
    assert [e["message"] for e in events] == ["plain", "failed"]
    assert "ValueError: boom" in events[1]["exception"] and "exception" not in events[0]
