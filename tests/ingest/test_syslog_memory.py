"""Memory stays bounded whatever a syslog or RELP client sends: over-long frames are cut
at max_syslog_frame and marked, the rest skipped, and a connection that sends faster than
the log stores is paused (docs/INGEST.md §7.1)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.ingest.transport import sidecar, stored_events, wait_for


def _vm_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError(key)


@pytest.mark.slow
def test_huge_frames_cost_no_memory(tmp_path: Path) -> None:
    with sidecar(tmp_path / "hot", syslog="127.0.0.1:0", relp="127.0.0.1:0", max_syslog_frame=65536) as sc:
        base = _vm_kib(sc.proc.pid, "VmRSS")
        chunk = b"x" * (1 << 20)
        with socket.create_connection(("127.0.0.1", sc.port("syslog"))) as s:
            s.sendall(b"<13>" + chunk)  # LF framing without an LF: 64 MiB
            for _ in range(63):
                s.sendall(chunk)
            s.sendall(b"\n%d <13>" % ((64 << 20) + 4))  # an octet-counted frame of 64 MiB
            for _ in range(64):
                s.sendall(chunk)
            s.sendall(b"<13>1 - h a - - - after\n")
            s.shutdown(socket.SHUT_WR)
            while s.recv(1 << 16):
                pass
        with socket.create_connection(("127.0.0.1", sc.port("relp"))) as r:
            offers = b"relp_version=0\nrelp_software=t\ncommands=syslog"
            r.sendall(b"1 open %d %s\n" % (len(offers), offers))
            r.recv(200)
            r.sendall(b"2 syslog %d <13>" % ((32 << 20) + 4))
            for _ in range(32):
                r.sendall(chunk)
            r.sendall(b"\n")
            assert r.recv(100) == b"2 rsp 6 200 OK\n"
        events = wait_for(lambda: (e := stored_events(sc.hot)) and len(e) >= 4 and e, 60, "4 events")
        hwm = _vm_kib(sc.proc.pid, "VmHWM")
    assert [e.get("parse_error", "")[:9] for e in events] == ["too-large", "too-large", "", "too-large"]
    assert all(len(e["raw"]) == 65536 for e in events if "raw" in e)
    assert events[2]["message"] == "after"
    # 160 MiB went through; the server grew by a few frames' worth at most
    assert hwm - base < 40 * 1024, (base, hwm)
