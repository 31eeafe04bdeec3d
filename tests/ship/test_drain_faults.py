"""The SIGTERM drain honours ``ops.shutdown_grace`` whatever cold storage does (issue 13):
a real ``pipeline run`` process, cold storage down (connection refused) or frozen (a
server that accepts and never answers), exit time measured from the signal."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netutil import free_port
from tests.ship.gate import Gate
from tests.ship.test_sidecar import Sidecar, socket_send

GRACE = 5.0


@pytest.fixture
def frozen() -> Iterator[Gate]:
    g = Gate("127.0.0.1", free_port(), mode="hang")  # accepts, reads, never answers
    yield g
    g.close()


def _drain_time(tmp_path: Path, endpoint: str) -> tuple[float, int, str]:
    sc = Sidecar(tmp_path, endpoint, "bucket-x", hot={"segment_window": "1s"},
                 ops={"shutdown_grace": f"{GRACE:g}s"})
    sc.start()
    try:
        # several sealed segments, so uploads are in flight (stuck) when the signal comes
        for i in range(8):
            acks = socket_send(sc.sock, [{"n": i * 10 + j} for j in range(10)])
            assert all(a["ok"] for a in acks)
            time.sleep(0.3)
        assert sc.proc is not None
        t0 = time.monotonic()
        sc.proc.send_signal(signal.SIGTERM)
        rc = sc.proc.wait(timeout=GRACE + 60)
        return time.monotonic() - t0, rc, sc.log.read_text()
    finally:
        if sc.proc is not None and sc.proc.poll() is None:
            sc.proc.kill()
            sc.proc.wait()


@pytest.mark.slow
def test_drain_honours_the_grace_when_cold_storage_is_down(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    took, rc, log = _drain_time(tmp_path, down)
    assert rc == 0, log[-3000:]
    assert took <= GRACE + 1.0, f"drain took {took:.1f} s on a {GRACE:g} s grace\n{log[-3000:]}"
    assert "Traceback" not in log


@pytest.mark.slow
def test_drain_honours_the_grace_when_cold_storage_hangs(tmp_path: Path, frozen: Gate) -> None:
    took, rc, log = _drain_time(tmp_path, frozen.url)
    assert frozen.requests, "the frozen server was never asked"
    assert "upload(s) in flight" in log, log[-3000:]  # uploads were stuck when the grace ran out
    assert rc == 0, log[-3000:]
    assert took <= GRACE + 1.0, f"drain took {took:.1f} s on a {GRACE:g} s grace\n{log[-3000:]}"
    assert "Traceback" not in log
