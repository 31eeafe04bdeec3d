"""What the JSON profile (docs/FORMAT.md §1.1) costs on the common path, side by side.

    .venv/bin/python bench/bench_json_profile.py [--events 20000] [--rounds 7] [--records 200000]
        [--baseline-tree /work/main]

1. Ingest: ``Sanitiser.prepare_json_many`` over NDJSON lines of typical events, with the
   profile screen (``strictjson.fast_loads``, the C batch path's ``loads``) against plain
   ``orjson.loads`` (what it did before), alternating rounds in one process; and
   ``prepare_json`` one line at a time (``pipeline append``) with and without the profile.
2. Verify: ``verify_stream`` (the C fast path ``scan_lines`` with duplicate-key, integer-range
   and depth checks) over one stream, in this tree and, when ``--baseline-tree`` is given, in
   that tree (e.g. the main branch before the change), each in its own process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline import strictjson  # noqa: E402
from pipeline.sanitise import Sanitiser  # noqa: E402

FLAT = {"user": "alice", "action": "login", "ip": "10.0.0.1", "ok": True, "ts": "2026-01-01T12:00:00Z",
        "msg": "user logged in from the web console", "n": 12345, "request_id": "a1b2c3d4e5f6"}
NESTED = {"actor": {"id": "u1", "name": "alice", "roles": ["admin", "dev"]}, "target": {"type": "file", "path": "/a"},
          "action": "read", "ok": True, "ctx": {"ip": "10.0.0.1", "ua": "curl/8"}}


def lines(n: int, template: dict[str, object]) -> list[bytes]:
    return [orjson.dumps({**template, "seq_hint": i}) + b"\n" for i in range(n)]


def per_event_us(fn: Callable[[list[bytes]], object], batch: list[bytes], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn(batch)
        times.append(time.perf_counter() - t)
    return statistics.median(times) / len(batch) * 1e6


def ingest(events: int, rounds: int) -> None:
    s = Sanitiser()
    for name, template in (("flat", FLAT), ("nested", NESTED)):
        batch = lines(events, template)
        def old_many(b: list[bytes]) -> object:
            return s._fast_many(b, orjson.loads)  # the batch path before the profile

        def new_many(b: list[bytes]) -> object:
            return s._fast_many(b, strictjson.fast_loads)

        def old_one(b: list[bytes]) -> object:
            return [s.prepare(orjson.loads(x)) for x in b]

        def new_one(b: list[bytes]) -> object:
            return [s.prepare_json(x) for x in b]

        assert old_many(batch) == new_many(batch)
        a = b = c = d = 0.0
        for _ in range(3):  # interleaved, so drift on a shared machine hits both sides alike
            a += per_event_us(old_many, batch, rounds)
            b += per_event_us(new_many, batch, rounds)
            c += per_event_us(old_one, batch, rounds)
            d += per_event_us(new_one, batch, rounds)
        print(f"ingest {name:6s} prepare_json_many: before {a / 3:.2f} µs/event, with profile {b / 3:.2f} "
              f"(+{(b - a) / a * 100:.0f}%); prepare_json: before {c / 3:.2f}, with profile {d / 3:.2f} "
              f"(+{(d - c) / c * 100:.0f}%)")


VERIFY = r"""
import sys, time
from pipeline.verify.chain import verify_stream
best = min((lambda t: (verify_stream(sys.argv[1], workers=1, file_hashes=False), time.perf_counter() - t)[1])(
    time.perf_counter()) for _ in range(5))
print(best)
"""


def verify(records: int, baseline: Path | None) -> None:
    from pipeline.hot.writer import HotLog

    with tempfile.TemporaryDirectory() as tmp:
        log = HotLog(Path(tmp), "bench", heartbeat_interval=0, segment_window=0, durability="os")
        for _ in range(records // 10_000):
            log.append_many([{**FLAT, "i": i} for i in range(10_000)])
        log.close(seal=True)
        trees = [("this tree", REPO)] + ([("baseline", baseline)] if baseline else [])
        best: dict[str, float] = {}
        for _ in range(3):  # alternate the trees, keep each one's best run
            for label, tree in trees:
                env = {**os.environ, "PYTHONPATH": str(tree)}
                out = subprocess.run([sys.executable, "-c", VERIFY, str(Path(tmp) / "bench")], env=env, check=True,
                                     capture_output=True, text=True, cwd=tree).stdout
                best[label] = min(best.get(label, float("inf")), float(out))
        for label, secs in best.items():
            print(f"verify {label:9s}: {records / secs / 1e3:.0f}k records/s ({secs * 1e3:.0f} ms for {records})")
        from pipeline.hot import attr

        for p in Path(tmp, "bench").iterdir():
            attr.clear_protection(p)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--baseline-tree", type=Path, default=None)
    args = ap.parse_args()
    ingest(args.events, args.rounds)
    verify(args.records, args.baseline_tree)


if __name__ == "__main__":
    main()
