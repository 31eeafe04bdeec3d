"""AuditLogHandler: Python logging records into the audit log, over the ingest socket or
directly into a HotLog."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.hot.writer import HotLog
from pipeline.ingest import AuditLogError, AuditLogHandler, IngestServer
from tests.hotutil import records, without_sender

STREAM = "app"


@pytest.fixture
def hotlog(hot_dir: Path) -> Iterator[HotLog]:
    log = HotLog(hot_dir, STREAM, durability="group", heartbeat_interval=0, segment_window=0)
    yield log
    log.close()


def events(hot_dir: Path) -> list[dict[str, Any]]:
    return [without_sender(r.data, required=False) for r in records(hot_dir / STREAM) if r.kind == "event"]


def make_logger(name: str, handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return logger


def check_event(ev: dict[str, Any], level: str, logger: str, message: str) -> None:
    assert (ev["level"], ev["logger"], ev["message"]) == (level, logger, message)
    assert ev["ts"].endswith("Z") and ev["ts"][10] == "T" and len(ev["ts"]) == 27


@pytest.mark.parametrize("mode", ["socket", "direct"])
def test_records_become_events(hot_dir: Path, hotlog: HotLog, tmp_path: Path, mode: str) -> None:
    path = tmp_path / "ingest.sock"
    srv = IngestServer(hotlog, socket_path=path).start() if mode == "socket" else None
    handler = AuditLogHandler(socket_path=path) if mode == "socket" else AuditLogHandler(log=hotlog)
    logger = make_logger(f"shop.orders.{mode}", handler)
    try:
        logger.info("order %s placed by %s", 42, "alice",
                    extra={"audit": {"order": 42, "actor": "alice", "card": "4111 1111 1111 1111"}})
        first = handler.last_receipt
        try:
            raise ValueError("payment declined")
        except ValueError:
            logger.exception("charge failed")
        logger.debug("plain")
    finally:
        handler.close()
        if srv is not None:
            srv.stop(5)
    evs = events(hot_dir)
    assert len(evs) == 3
    check_event(evs[0], "INFO", f"shop.orders.{mode}", "order 42 placed by alice")
    assert evs[0]["audit"] == {"order": 42, "actor": "alice", "card": "[REDACTED:card-number]"}
    check_event(evs[1], "ERROR", f"shop.orders.{mode}", "charge failed")
    assert "Traceback" in evs[1]["exception"] and "ValueError: payment declined" in evs[1]["exception"]
    check_event(evs[2], "DEBUG", f"shop.orders.{mode}", "plain")
    assert "audit" not in evs[2] and "exception" not in evs[2]
    # the receipt names the record in the log: durable when the logging call returned
    recs = [r for r in records(hot_dir / STREAM) if r.kind == "event"]
    assert first == {"seq": recs[0].seq, "hash": recs[0].hash}


def test_socket_reconnects_after_server_restart(hot_dir: Path) -> None:
    # a sidecar restart: the old connection is dead, the handler reconnects once
    path = hot_dir.parent / "ingest.sock"
    log = HotLog(hot_dir, STREAM, durability="group", heartbeat_interval=0, segment_window=0)
    handler = AuditLogHandler(socket_path=path, raise_on_error=True)
    logger = make_logger("restart", handler)
    try:
        srv = IngestServer(log, socket_path=path).start()
        logger.warning("before")
        srv.stop(5)
        srv = IngestServer(log, socket_path=path).start()
        logger.warning("after")
        srv.stop(5)
    finally:
        handler.close()
        log.close()
    assert [e["message"] for e in events(hot_dir)] == ["before", "after"]


def test_socket_failure_handle_error_or_raise(hotlog: HotLog, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "nobody.sock"
    handled: list[logging.LogRecord] = []
    quiet = AuditLogHandler(socket_path=path)
    monkeypatch.setattr(quiet, "handleError", handled.append)
    make_logger("down.quiet", quiet).error("lost?")
    assert len(handled) == 1 and handled[0].getMessage() == "lost?"  # logging convention: reported, not raised

    strict = AuditLogHandler(socket_path=path, raise_on_error=True)
    with pytest.raises(AuditLogError, match=r"nobody\.sock"):
        make_logger("down.strict", strict).error("must not be lost")
    quiet.close()
    strict.close()


def test_refused_event_raises_with_reason(hotlog: HotLog, tmp_path: Path) -> None:
    path = tmp_path / "ingest.sock"
    with IngestServer(hotlog, socket_path=path, max_event_bytes=256, max_request_bytes=4096):
        handler = AuditLogHandler(socket_path=path, raise_on_error=True)
        logger = make_logger("refused", handler)
        with pytest.raises(AuditLogError, match="too-large"):
            logger.info("x" * 1000)
        logger.info("small")  # the connection is still in step
        handler.close()
        direct = AuditLogHandler(log=hotlog, raise_on_error=True)
        with pytest.raises(AuditLogError, match=r"not JSON|not-serialisable|not serial"):
            make_logger("refused.direct", direct).info("bad", extra={"audit": {"obj": object()}})


@pytest.mark.parametrize("mode", ["socket", "direct"])
def test_thread_safe(hot_dir: Path, hotlog: HotLog, tmp_path: Path, mode: str) -> None:
    path = tmp_path / "ingest.sock"
    srv = IngestServer(hotlog, socket_path=path).start() if mode == "socket" else None
    handler = (AuditLogHandler(socket_path=path, raise_on_error=True) if mode == "socket"
               else AuditLogHandler(log=hotlog, raise_on_error=True))
    logger = make_logger(f"threads.{mode}", handler)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(60):
                logger.info("t%d", t, extra={"audit": {"t": t, "i": i}})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    handler.close()
    if srv is not None:
        srv.stop(5)
    assert not errors
    evs = events(hot_dir)
    assert len(evs) == 360
    for t in range(6):
        assert [e["audit"]["i"] for e in evs if e["audit"]["t"] == t] == list(range(60))


def test_needs_exactly_one_target(hotlog: HotLog, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        AuditLogHandler()
    with pytest.raises(ValueError):
        AuditLogHandler(socket_path=tmp_path / "s", log=hotlog)
