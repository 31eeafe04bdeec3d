"""Bytes a root attacker appends -- after a seal, or as an unterminated tail of the active
segment -- are judged exactly as a short append is, and cost the verifier no memory: they
are counted, never copied out of the mapping (a 300 MB tail after a seal took 630 MB of
RSS, half of it a copy)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hotutil import writable_first_segment

ROOT = Path(__file__).resolve().parents[2]
BIG = 160 << 20

# pipeline verify --json in a child that reports its peak anonymous memory (KiB; sampled,
# RssAnon) on its last stderr line.  Anonymous, not all of RSS: the pages of the mapped
# segment that the scan reads are the page cache's, shared and dropped under pressure.
_CHILD = """
import sys, threading
from pipeline.cli import main

def anon():
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("RssAnon:"))

peak = [anon()]
done = threading.Event()

def sample():
    while not done.wait(0.002):
        peak[0] = max(peak[0], anon())

t = threading.Thread(target=sample, daemon=True)
t.start()
rc = main(["verify", "--hot", sys.argv[1], "--json"])
done.set()
t.join()
print(max(peak[0], anon()), file=sys.stderr)
sys.exit(rc)
"""


def _append(path: Path, n: int, byte: bytes) -> None:
    block = byte * (1 << 20)
    with path.open("ab") as f:
        for _ in range(n >> 20):
            f.write(block)
        f.write(byte * (n & ((1 << 20) - 1)))


def _verify(hot: Path) -> tuple[int, list[tuple[str, str]], int]:
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(hot)], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    doc = json.loads(proc.stdout)
    findings = [(f["code"], f["message"]) for s in doc["streams"] for f in s["findings"]]
    return proc.returncode, findings, int(proc.stderr.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("sealed", [True, False], ids=["after-the-seal", "active-segment-tail"])
def test_a_huge_tail_is_judged_like_a_short_one_in_bounded_memory(tmp_path: Path, sealed: bool) -> None:
    judged = []
    for size in (10, BIG):
        hot = tmp_path / f"hot-{size}"
        _append(writable_first_segment(hot, sealed=sealed), size, b"x")
        rc, findings, peak_kib = _verify(hot)
        judged.append((rc, [(code, msg.replace(str(size), "N")) for code, msg in findings]))
        if size == BIG:
            assert peak_kib < 80 << 10, peak_kib  # well under the tail's 160 MiB
    assert judged[0] == judged[1]
    if sealed:
        assert judged[0][0] == 1 and [c for c, _ in judged[0][1]] == ["after-seal"]
        assert "N bytes follow the seal" in judged[0][1][0][1]
    else:  # the active segment's torn tail: what a crash mid-write leaves, not a finding
        assert judged[0] == (0, [])
