"""The monitor's benchmark (issue 19): does `pipeline monitor` keep up with the sidecar's full
ingest rate, at what CPU cost per 10,000 events/s, and how fast does it detect a flipped byte?

    .venv/bin/python bench/monitor.py [--seconds 25] [--clients 2] [--delay 1s]

One run: `pipeline run` (file:// cold, 2 s segments) takes events over its Unix socket from
``--clients`` processes as fast as it acknowledges them (bench_sidecar's client, 4 batches of
200 in flight); `pipeline monitor` trails it (``--delay`` trailing delay, 0.5 s cycles) and sends
alerts to a webhook receiver of the benchmark's own.  While the clients run, a byte is flipped
every ~1.5 s, alternately in the newest record of the active segment (found by the trail) and in
a sealed segment the monitor had already verified (found by its ctime watch); the time from
each flip to the hash-mismatch alert reaching the receiver is the detection latency.  Printed
side by side: the sidecar's ingest rate, the monitor's CPU (utime + stime from /proc over the
ingest window) as % of one core and per 10,000 events/s, its lag when ingest stops and how
long it takes to catch up, and the detection latency p50/p99 against (delay + 5 s).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_sidecar import free_port, rm, run_clients, start_sidecar  # noqa: E402

from pipeline.config import parse_duration  # noqa: E402
from pipeline.hot import attr  # noqa: E402
from pipeline.hot.segment import list_segments  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


class Receiver:
    """Records (arrival time, alert) for every alert the monitor's webhook delivers."""

    def __init__(self) -> None:
        self.got: list[tuple[float, dict[str, Any]]] = []
        self.lock = threading.Lock()
        rec = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                now = time.time()
                with rec.lock:
                    rec.got += [(now, a) for a in body["alerts"]]
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def first(self, segment: str, since: float) -> float | None:
        with self.lock:
            for t, a in self.got:
                if t >= since and a["status"] == "firing" and a["labels"].get("segment") == segment \
                        and a["labels"].get("alertname") == "WormLogTampered":
                    return t
        return None


def flip(path: Path, offset: int) -> None:
    sealed = attr.is_immutable(path)
    attr.clear_protection(path)
    fd = os.open(path, os.O_WRONLY)
    try:
        b = os.pread(os.open(path, os.O_RDONLY), 1, offset)
        os.pwrite(fd, bytes([b[0] ^ 0x01]), offset)
    finally:
        os.close(fd)
    if sealed:
        attr.protect_immutable(path)
    else:
        attr.protect_append_only(path)


def newest_record_offset(path: Path) -> int | None:
    """An offset in the middle of the last complete line (a record just written)."""
    data = path.read_bytes()
    end = data.rfind(b"\n")
    if end <= 0:
        return None
    start = data.rfind(b"\n", 0, end) + 1
    return start + (end - start) // 2


def metric(port: int, name: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name):
                    return float(line.split()[-1])
    except OSError:
        return None
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=25.0)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--delay", default="1s", help="the monitor's trailing delay")
    args = ap.parse_args()
    delay = parse_duration(args.delay)
    base = Path(tempfile.mkdtemp(prefix="bench-monitor-"))
    sidecar = monitor = None
    rec = Receiver()
    try:
        (base / "cold").mkdir()
        sock, ops = base / "ingest.sock", free_port()
        cfg = base / "pipeline.toml"
        cfg.write_text(f"""
[hot]
dir = "{base / 'hot'}"
stream = "bench"
segment_window = "2s"
heartbeat_interval = "10s"
hot_retention = "1h"
high_water_percent = 99
[cold]
url = "file://{base / 'cold'}"
retention_days = 1
[ingest]
socket = "{sock}"
[ops]
listen = "127.0.0.1:{ops}"
""")
        (base / "secret").write_text("bench")
        mport = free_port()
        mcfg = base / "monitor.toml"
        mcfg.write_text(f"""
[monitor]
state_dir = "{base / 'monitor-state'}"
interval = "500ms"
trailing_delay = "{args.delay}"
listen = "127.0.0.1:{mport}"
[hot]
dir = "{base / 'hot'}"
heartbeat_interval = "10s"
[cold]
url = "file://{base / 'cold'}"
retention_days = 1
[webhook]
url = "http://127.0.0.1:{rec.server.server_address[1]}/"
secret_file = "{base / 'secret'}"
""")
        sidecar = start_sidecar(cfg, ops)
        env = dict(os.environ, PYTHONPATH=str(REPO))
        monitor = subprocess.Popen([sys.executable, "-m", "pipeline", "monitor", "--config", str(mcfg)], env=env,
                                   stdout=subprocess.DEVNULL, stderr=open(base / "monitor.log", "wb"))  # noqa: SIM115
        while metric(mport, "worm_monitor_last_cycle_timestamp_seconds") is None:
            assert monitor.poll() is None, (base / "monitor.log").read_text()[-2000:]
            time.sleep(0.1)

        stream_dir = base / "hot" / "bench"
        flips: list[tuple[str, str, float]] = []  # (kind, segment, time)
        stop = threading.Event()

        def flipper() -> None:
            kind = "active"
            time.sleep(4)
            while not stop.wait(1.5) and time.time() < t0 + args.seconds - 4:
                # (no flip in the last seconds: a damaged active segment cannot be followed to
                # its end, so the trail waits for the next segment, which an idle writer opens
                # only at its next heartbeat; that would be measured as lag)
                segs = list_segments(stream_dir)
                if len(segs) < 3:
                    continue
                if kind == "active":
                    target = segs[-1]
                    off = newest_record_offset(target)
                else:
                    target = segs[-3]  # sealed a while ago: verified already
                    off = target.stat().st_size // 2
                if off is None or any(s == target.name for _k, s, _t in flips):
                    continue
                try:
                    flip(target, off)
                except OSError:
                    continue
                flips.append((kind, target.name, time.time()))
                kind = "sealed" if kind == "active" else "active"

        ft = threading.Thread(target=flipper, daemon=True)
        cpu0, t0 = cpu_seconds(monitor.pid), time.time()
        ft.start()
        total, _acks = run_clients(sock, args.clients, args.seconds, in_flight=4)
        wall = time.time() - t0
        cpu = cpu_seconds(monitor.pid) - cpu0
        stop.set()
        ft.join()
        side_cpu = cpu_seconds(sidecar.pid)
        lag_end = metric(mport, "worm_monitor_lag_records")
        t_stop = time.time()
        caught = None
        while time.time() - t_stop < 30:
            lag = metric(mport, "worm_monitor_lag_records")
            if lag is not None and lag <= 0:
                caught = time.time() - t_stop
                break
            time.sleep(0.2)
        time.sleep(delay + 5)
        rate = total / wall
        pct = 100.0 * cpu / wall
        per10k = pct / (rate / 10000.0) if rate else float("nan")
        print(f"sidecar ingest: {total} events in {wall:.1f} s = {rate:,.0f} events/s "
              f"({args.clients} socket clients; sidecar CPU {side_cpu:.1f} s in total)")
        print(f"monitor CPU:    {cpu:.2f} s over {wall:.1f} s = {pct:.1f}% of one core = {per10k:.1f}% per 10,000 "
              f"events/s (target <= 15%)")
        print(f"monitor lag:    {lag_end:.0f} records when ingest stopped; caught up "
              + (f"{caught:.1f} s later" if caught is not None else "NOT within 30 s")
              + f" (trailing delay {delay:g} s)")
        lat: dict[str, list[float]] = {"active": [], "sealed": []}
        missed = []
        for kind, seg, t in flips:
            got = rec.first(seg, t)
            if got is None:
                missed.append((kind, seg))
            else:
                lat[kind].append(got - t)
        every = sorted(lat["active"] + lat["sealed"])

        def pq(xs: list[float], q: float) -> float:
            return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")

        print(f"detection:      {len(every)} of {len(flips)} flipped bytes alerted; p50 {pq(every, .5):.2f} s, "
              f"p99 {pq(every, .99):.2f} s (target <= delay + 5 s = {delay + 5:g} s)")
        for kind in ("active", "sealed"):
            xs = sorted(lat[kind])
            print(f"  {kind:7s} n={len(xs)} p50 {pq(xs, .5):.2f} s max {max(xs) if xs else float('nan'):.2f} s")
        if missed:
            print(f"  NOT detected: {missed}")
            print((base / "monitor.log").read_text()[-3000:])
    finally:
        for p in (monitor, sidecar):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
        rec.server.shutdown()
        rm(base)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
