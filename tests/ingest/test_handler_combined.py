"""AuditLogHandler's non-waiting mode from many threads: records combined into one append
by whichever thread is appending (pipeline/ingest/handler.py).  Every record once, each
thread's in its order, a refusal reported to the right place, the queue bounded."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.hot.writer import HotLog, HotLogError
from pipeline.ingest import AuditLogError, AuditLogHandler
from tests.hotutil import records
from tests.ingest.test_handler_wait import logger_for


@pytest.fixture
def hotlog(hot_dir: Path) -> Iterator[HotLog]:
    log = HotLog(hot_dir, "app", heartbeat_interval=0, segment_window=0)
    yield log
    log.close()


def _messages(hot_dir: Path) -> list[str]:
    return [r.data["message"] for r in records(hot_dir / "app") if r.kind == "event"]


def test_sixteen_threads_every_record_once_each_thread_in_order(hot_dir: Path, hotlog: HotLog) -> None:
    handler = AuditLogHandler(log=hotlog, wait=False)
    logger = logger_for(handler, "test.handler.combined")
    combined: list[int] = []
    take = handler._append_queued

    def counting() -> None:  # how many records each combined append took
        combined.append(len(handler._queued))
        take()

    handler._append_queued = counting  # type: ignore[method-assign]
    start = threading.Barrier(16)

    def work(t: int) -> None:
        start.wait()
        for i in range(2000):
            logger.info("t%d %d", t, i)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not handler._queued  # the last appending thread took everything queued behind it
    assert handler._queued_bytes == 0  # and the byte count, kept by many threads, agrees
    handler.flush()
    got = _messages(hot_dir)
    assert len(got) == 32000 and len(set(got)) == 32000
    for t in range(16):
        mine = [int(m.split()[1]) for m in got if m.split()[0] == f"t{t}"]
        assert mine == list(range(2000))
    assert max(combined) > 1  # records of several threads did go into one append


def test_a_record_queued_behind_another_thread_is_stored_by_it(hot_dir: Path, hotlog: HotLog) -> None:
    """The logging call returns while another thread appends; the appending thread takes
    the queued record before it lets go (nothing is stranded in the queue)."""
    handler = AuditLogHandler(log=hotlog, wait=False)
    logger = logger_for(handler, "test.handler.combined.behind")
    handler._append_lock.acquire()  # "another thread" is appending
    try:
        t = threading.Thread(target=lambda: logger.info("queued"))
        t.start()
        t.join(5)
        assert not t.is_alive()  # it did not wait
        assert len(handler._queued) == 1 and _messages(hot_dir) == []
    finally:
        handler._append_lock.release()
    logger.info("next")  # the next call takes the queue first
    handler.flush()
    assert _messages(hot_dir) == ["queued", "next"]


def test_the_queue_is_bounded(hot_dir: Path, hotlog: HotLog, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_QUEUED, a logging call waits for the appending thread and appends the queue
    itself: the queue's memory is bounded whatever the threads do."""
    monkeypatch.setattr("pipeline.ingest.handler.MAX_QUEUED", 50)
    handler = AuditLogHandler(log=hotlog, wait=False)
    logger = logger_for(handler, "test.handler.combined.bound")
    handler._append_lock.acquire()
    def log_200() -> None:
        for i in range(200):
            logger.info("n %d", i)

    t = threading.Thread(target=log_200)
    try:
        t.start()
        deadline = time.monotonic() + 5
        while len(handler._queued) < 51 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        assert t.is_alive() and len(handler._queued) == 51  # blocked at the bound, not growing
    finally:
        handler._append_lock.release()
    t.join(10)
    handler.flush()
    assert _messages(hot_dir) == [f"n {i}" for i in range(200)]


def test_the_queue_is_bounded_in_bytes(hot_dir: Path, hotlog: HotLog, monkeypatch: pytest.MonkeyPatch) -> None:
    """Large records reach MAX_QUEUED_BYTES long before MAX_QUEUED: a logging call waits
    there, so the queue never holds thousands of large events (4,096 of 1 MiB: 4 GiB)."""
    monkeypatch.setattr("pipeline.ingest.handler.MAX_QUEUED_BYTES", 1 << 20)
    handler = AuditLogHandler(log=hotlog, wait=False)
    logger = logger_for(handler, "test.handler.combined.bytes")
    big = "x" * (100 << 10)
    handler._append_lock.acquire()

    def log_40() -> None:
        for i in range(40):
            logger.info("n %d %s", i, big)

    t = threading.Thread(target=log_40)
    try:
        t.start()
        deadline = time.monotonic() + 5
        while handler._queued_bytes <= 1 << 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        # blocked at the first record over the bound, not growing: 11 of ~100 KiB
        assert t.is_alive() and len(handler._queued) == 11 and handler._queued_bytes > 1 << 20
    finally:
        handler._append_lock.release()
    t.join(10)
    handler.flush()
    assert [m.split()[1] for m in _messages(hot_dir)] == [str(i) for i in range(40)]
    assert not handler._queued and handler._queued_bytes == 0


def _refuse_marked(hotlog: HotLog, monkeypatch: pytest.MonkeyPatch) -> None:
    many = hotlog.append_prepared_many
    one = hotlog.append_prepared

    def refusing_many(items: list[bytes]) -> list[Any]:
        out: list[Any] = []
        for item in items:
            out.extend([HotLogError("refused (test)")] if b"REFUSE" in item else many([item]))
        return out

    def refusing_one(data: bytes, *, wait: bool = True) -> Any:
        if b"REFUSE" in data:
            raise HotLogError("refused (test)")
        return one(data, wait=wait)

    monkeypatch.setattr(hotlog, "append_prepared_many", refusing_many)
    monkeypatch.setattr(hotlog, "append_prepared", refusing_one)


def test_a_refusal_of_the_callers_own_record_raises_in_its_call(hotlog: HotLog,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _refuse_marked(hotlog, monkeypatch)
    handler = AuditLogHandler(log=hotlog, wait=False, raise_on_error=True)
    logger = logger_for(handler, "test.handler.combined.own")
    logger.info("fine")
    with pytest.raises(AuditLogError, match="refused"):
        logger.info("REFUSE me")
    handler._append_lock.acquire()  # queued behind "another thread", then appended by its own call
    t_err: list[BaseException] = []

    def log_refused() -> None:
        try:
            logger.info("REFUSE queued")
        except AuditLogError as exc:
            t_err.append(exc)

    t = threading.Thread(target=log_refused)
    t.start()
    t.join(5)
    handler._append_lock.release()
    assert t_err == []  # it returned before its record was appended
    with pytest.raises(AuditLogError, match="refused"):  # appended by this thread: flush reports it
        handler.flush()
    handler.flush()  # reported once


def test_a_refusal_found_by_another_thread_goes_to_handle_error(hotlog: HotLog,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    _refuse_marked(hotlog, monkeypatch)
    handler = AuditLogHandler(log=hotlog, wait=False)
    reported: list[tuple[str, str]] = []

    def handle_error(record: logging.LogRecord) -> None:
        import sys

        reported.append((record.getMessage(), str(sys.exc_info()[1])))

    handler.handleError = handle_error  # type: ignore[method-assign]
    logger = logger_for(handler, "test.handler.combined.other")
    handler._append_lock.acquire()
    t = threading.Thread(target=lambda: logger.info("REFUSE queued"))
    t.start()
    t.join(5)
    handler._append_lock.release()
    logger.info("fine")  # this thread appends both
    assert reported == [("REFUSE queued", "refused (test)")]


def test_a_record_logged_while_this_thread_appends_does_not_deadlock(hot_dir: Path, hotlog: HotLog,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The log itself logs (a warning) while the handler's thread appends, to a logger this
    handler serves, with the queue past its bound and flush() called: the inner calls
    queue and return; the outer append takes the record."""
    monkeypatch.setattr("pipeline.ingest.handler.MAX_QUEUED", 0)
    handler = AuditLogHandler(log=hotlog, wait=False)
    logger = logger_for(handler, "test.handler.combined.reentrant")
    one = hotlog.append_prepared
    inner: list[bool] = []

    def logging_append(data: bytes, *, wait: bool = True) -> Any:
        if not inner:
            inner.append(True)
            logger.warning("inner")  # the log's own warning, back into this handler
            handler.flush()
        return one(data, wait=wait)

    monkeypatch.setattr(hotlog, "append_prepared", logging_append)
    t = threading.Thread(target=lambda: logger.info("outer"))
    t.start()
    t.join(10)
    assert not t.is_alive(), "deadlocked"
    handler.flush()
    assert sorted(_messages(hot_dir)) == ["inner", "outer"]
