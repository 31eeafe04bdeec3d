"""Direct mode's memory from 10,000 to 1,000,000 segments on moto (issue 22).

For each size N, starts bench/moto_populated.py (moto's server in its own process, N real
chained, COMPLIANCE-locked segments with the shipper's metadata, populated inside moto's
process) and runs the real CLI in ANOTHER process over HTTP with real boto3:

    pipeline verify-tier --cold-only --cold s3://... --vkey K --checkpoint NOTE --stream app
                         (--ndjson | --json)

``--checkpoint`` is a checkpoint of the whole stream signed with a key made for the run, so
the run also recomputes a root (one GET).  Measured per run: the verifier process's peak
RSS (``wait4`` on that process alone: moto's memory is not counted), its RSS sampled every
few seconds against the number of output lines so far (so a partial run still shows the
curve), wall time, the segments judged valid, and the requests by operation from the report
(listing pages, HEADs, GETs, other) per segment.  ``--json`` is the in-process report
(``pipeline.verify.tier``), ``--ndjson`` the streaming one (``pipeline.verify.streaming``).

    .venv/bin/python bench/direct_memory.py --sizes 10000,100000 --modes ndjson,json
    .venv/bin/python bench/direct_memory.py --sizes 1000000 --modes ndjson --out /tmp/1m.json

moto answers one request in ~3 ms of CPU and the verifier spends ~2.5 ms per segment, so
on 2 cores a run takes ~5-6 ms per segment: 100,000 segments ~10 min, 1,000,000 ~1.5 h.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class Server:
    """bench/moto_populated.py in a child process; stopped by closing its stdin."""

    def __init__(self, segments: int, log: Path) -> None:
        self.log = log.open("wb")
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "moto_populated.py"), "--segments",
                                      str(segments)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, start_new_session=True, env=_env())
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.stop()
            raise SystemExit(f"moto_populated.py exited before serving; see {log}")
        self.info: dict[str, Any] = json.loads(line)

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _env() -> dict[str, str]:
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1", PYTHONPATH=str(ROOT))
    return env


def _keys(tmp: Path, info: dict[str, Any]) -> tuple[Path, Path]:
    from pipeline.format.checkpoint import Checkpoint, Signer

    signer = Signer.generate("bench")
    vkey, note = tmp / "bench.vkey", tmp / "checkpoint.note"
    vkey.write_text(signer.verifier().to_string() + "\n")
    note.write_bytes(Checkpoint("app", info["tree_size"], bytes.fromhex(info["tree_root"])).sign([signer]))
    return vkey, note


class _Reader(threading.Thread):
    """Drains the verifier's stdout: counts lines, keeps the tail."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.lines = 0
        self.tail = b""

    def run(self) -> None:
        while chunk := self.stream.read(1 << 20):
            self.lines += chunk.count(b"\n")
            self.tail = (self.tail + chunk)[-(1 << 18):]


def _status(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB; (0, 0) once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0, 0
    got = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", text, re.M))
    return int(got.get("VmRSS", 0)), int(got.get("VmHWM", 0))


def run_verifier(info: dict[str, Any], mode: str, workers: int, tmp: Path, every: float,
                 progress: IO[str]) -> dict[str, Any]:
    vkey, note = _keys(tmp, info)
    url = f"s3://{info['bucket']}/{info['prefix']}?endpoint_url={info['endpoint']}&region=us-east-1"
    cmd = [sys.executable, "-m", "pipeline", "verify-tier", "--cold-only", "--cold", url, "--vkey", str(vkey),
           "--checkpoint", str(note), "--stream", "app", "--workers", str(workers), f"--{mode}"]
    err = (tmp / f"verifier-{mode}.err").open("wb")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=_env())
    assert proc.stdout is not None
    reader = _Reader(proc.stdout)
    reader.start()
    samples: list[tuple[float, int, int, int]] = []
    last_print = 0.0
    while True:
        done, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if done:
            break
        rss, hwm = _status(proc.pid)
        t = time.monotonic() - t0
        if rss:
            samples.append((round(t, 1), reader.lines, rss, hwm))
        if t - last_print >= 60:
            last_print = t
            print(f"  [{info['segments']} {mode}] {t:6.0f} s: {reader.lines} lines, RSS {rss / 1024:.1f} MB, "
                  f"peak {hwm / 1024:.1f} MB", file=progress, flush=True)
        time.sleep(every)
    elapsed = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join()
    err.close()
    out: dict[str, Any] = {"segments": info["segments"], "mode": mode, "exit": proc.returncode,
                           "elapsed_s": round(elapsed, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
                           "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
                           "lines": reader.lines, "samples": samples}
    out.update(_report_tail(reader.tail, mode))
    return out


def _report_tail(tail: bytes, mode: str) -> dict[str, Any]:
    """totals and requests from the end of the output (the NDJSON summary line, or the last
    ``totals`` / ``requests`` objects of the JSON report)."""
    text = tail.decode(errors="replace")
    if mode == "ndjson":
        summary = json.loads(text.rstrip("\n").rsplit("\n", 1)[-1])
        return {"totals": summary["totals"], "requests": summary["requests"]}
    blocks = {k: re.findall(rf'"{k}": (\{{[^{{}}]*\}})', text) for k in ("totals", "requests")}
    return {k: json.loads(v[-1]) if v else None for k, v in blocks.items()}


def describe(r: dict[str, Any]) -> str:
    n = r["segments"]
    q = r.get("requests") or {}
    t = r.get("totals") or {}
    per = {k: q.get(k, 0) / n for k in ("total", "list", "head", "get", "other")}
    return (f"{n:>9,} segments  --{r['mode']:<6} exit {r['exit']}  {r['elapsed_s']:7.1f} s "
            f"({n / r['elapsed_s']:.0f}/s, {r['cpu_s'] * 1000 / n:.2f} ms CPU/segment)  "
            f"peak RSS {r['peak_rss_mb']:7.1f} MB  valid {t.get('valid')}  "
            f"requests {q.get('total')} = {q.get('list')} list + {q.get('head')} HEAD + {q.get('get')} GET + "
            f"{q.get('other')} other: {per['total']:.4f}/segment ({per['list']:.4f} list, {per['head']:.4f} HEAD, "
            f"{per['get']:.6f} GET)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000", help="comma-separated segment counts")
    ap.add_argument("--modes", default="ndjson,json", help="ndjson (streaming) and/or json (in-process report)")
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--sample-every", type=float, default=2.0, help="seconds between RSS samples")
    ap.add_argument("--out", type=Path, help="write every result (with the RSS samples) as JSON here")
    args = ap.parse_args()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="direct-memory-") as d:
        tmp = Path(d)
        for n in (int(x) for x in args.sizes.split(",")):
            t = time.monotonic()
            server = Server(n, tmp / f"moto-{n}.log")
            try:
                info = server.info
                print(f"moto: {n:,} segments populated in {info['populate_s']} s ({time.monotonic() - t:.0f} s "
                      f"with startup), moto RSS {info['rss_mb']} MB", flush=True)
                for mode in args.modes.split(","):
                    r = run_verifier(info, mode, args.workers, tmp, args.sample_every, sys.stdout)
                    r["moto_rss_mb"] = info["rss_mb"]
                    results.append(r)
                    print(describe(r), flush=True)
                    if args.out:
                        args.out.write_text(json.dumps(results))
                    if r["exit"] != 0 or (r.get("totals") or {}).get("valid") != n:
                        print(f"  run not clean: see {tmp}/verifier-{mode}.err", flush=True)
                        print((tmp / f"verifier-{mode}.err").read_text()[-2000:], flush=True)
            finally:
                server.stop()
    by_mode: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_mode.setdefault(r["mode"], []).append(r)
    for mode, rs in by_mode.items():
        if len(rs) > 1:
            a, b = rs[0], rs[-1]
            slope = (b["peak_rss_mb"] - a["peak_rss_mb"]) * 1024 * 1024 / (b["segments"] - a["segments"])
            print(f"--{mode}: peak RSS {a['peak_rss_mb']} MB at {a['segments']:,} -> {b['peak_rss_mb']} MB at "
                  f"{b['segments']:,} segments: {slope:.0f} bytes per segment")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
