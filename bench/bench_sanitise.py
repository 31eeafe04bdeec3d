"""Sanitiser benchmarks (issue 14), side by side in one run, full rule set against redaction off:

1. the sanitiser's CPU cost per event on the ingest path (``prepare_json_many`` over batches
   of 200 NDJSON lines, what the ingest server calls), on the realistic workload
   (../shared/workload/gen_events.py) and on 300-byte flat events;
2. ingest: an ``IngestServer`` on a Unix socket in front of a ``HotLog`` (group commit,
   acknowledgements once durable), fed by a client process keeping 4 batches of 200 in
   flight; per round the acknowledged events per second and the server process's CPU time
   per event (every thread: ingest, sanitising, writing, flushing), in pairs of rounds
   (full and off back to back, order alternating);
3. recall on the secret corpus and false-positive rate on the look-alike corpus
   (tests/redaction_corpus.py);
4. long strings (1 MiB of hex, of base64, of prose, ...; ``--long-only`` runs just this
   part): CPU per event of ``prepare_json_many`` with this tree's sanitiser beside the one of
   ``--old-rev`` (default 74e4d78, before the long-string fix), loaded from git into the same
   process, and whether both stored the same bytes (or this tree redacted more: a trigger
   inside another's match, which the old rules did not see).

The target: the full rule set costs at most 15% of ingest throughput.  The verdict uses the
rules' CPU cost per event (1) against the server's CPU per event with redaction off (2):
the share of ingest capacity the rules take when ingest is CPU-bound.  Wall-clock
throughput pairs are printed beside it; on a shared 2-core machine they swing by 2x from
round to round and cannot resolve a few percent.

    .venv/bin/python bench/bench_sanitise.py [--seconds 2] [--rounds 5] [--events 20000]
                                             [--long-only] [--old-rev 74e4d78]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline._accel import native  # noqa: E402
from pipeline.hot.writer import HotLog  # noqa: E402
from pipeline.ingest.server import IngestServer  # noqa: E402
from pipeline.sanitise import DEFAULT_MAX_EVENT_BYTES, Sanitiser  # noqa: E402

WORKLOAD = REPO.parent.parent / "shared" / "workload" / "gen_events.py"
BATCH = 200
IN_FLIGHT = 4


def realistic_lines(n: int) -> list[bytes]:
    gen = WORKLOAD if WORKLOAD.exists() else Path("/work/shared/workload/gen_events.py")
    out = subprocess.run([sys.executable, str(gen), "-n", str(n)], capture_output=True, check=True).stdout
    return out.splitlines()


def flat_lines(n: int) -> list[bytes]:
    base = {"actor": "svc-orders", "action": "order.update", "resource": "orders/2026/11/000123456",
            "source_ip": "10.20.30.40", "outcome": "success", "detail": "status changed to shipped", "n": 0,
            "pad": ""}
    size = len(orjson.dumps(base))
    lines = []
    for i in range(n):
        ev = dict(base, n=i)
        ev["pad"] = "x" * max(0, 300 - size - len(str(i)))
        lines.append(orjson.dumps(ev))
    assert abs(len(lines[0]) - 300) <= 2
    return lines


def per_event_us(sanitiser: Sanitiser, lines: list[bytes], repeat: int = 3) -> float:
    batches = [lines[i:i + BATCH] for i in range(0, len(lines), BATCH)]
    best = float("inf")
    for _ in range(repeat):  # CPU time of this thread: steadier than wall time on a shared machine
        t0 = time.thread_time()
        for b in batches:
            sanitiser.prepare_json_many(b)
        best = min(best, time.thread_time() - t0)
    return best / len(lines) * 1e6


def client(sock_path: str, lines: list[bytes], seconds: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    batches = [b"".join(x + b"\n" for x in lines[i:i + BATCH]) for i in range(0, len(lines) - BATCH + 1, BATCH)]
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    deadline = time.time() + seconds
    sent = acked = outstanding = got = 0
    buf = b""
    start = time.time()
    while True:
        while outstanding < IN_FLIGHT and time.time() < deadline:
            s.sendall(batches[sent % len(batches)])
            sent += 1
            outstanding += 1
        if outstanding == 0:
            break
        chunk = s.recv(1 << 20)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk
        *done, buf = buf.split(b"\n")
        for _line in done:
            got += 1
            if got == BATCH:
                got = 0
                outstanding -= 1
                acked += BATCH
    s.close()
    out.put((acked / (time.time() - start), acked))


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def ingest_rate(lines: list[bytes], redact: bool, seconds: float) -> tuple[float, float]:
    """(acknowledged events per second, server CPU microseconds per event: every thread of
    this process, i.e. ingest, sanitising, writing, fsync and flushing)."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-sanitise-"))
    try:
        log = HotLog(tmp / "hot", "bench", durability="group", heartbeat_interval=0, segment_window=0,
                     immutable="off", sanitiser=Sanitiser(redact=redact))
        sock = tmp / "ingest.sock"
        srv = IngestServer(log, socket_path=sock).start()
        q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
        p = mp.Process(target=client, args=(str(sock), lines, seconds, q))
        cpu0 = _cpu()
        p.start()
        rate, events = q.get(timeout=seconds + 60)
        cpu = _cpu() - cpu0
        p.join()
        srv.stop(5)
        log.close()
        return float(rate), cpu / max(1, events) * 1e6
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def corpus_quality() -> tuple[float, int, float, int]:
    from tests.redaction_corpus import LOOKALIKE_KEYS, LOOKALIKES, SECRETS, lookalike_placements

    s = Sanitiser()
    hits = total = 0
    for secret in SECRETS:
        for _where, ev in secret.placements():
            total += 1
            out = s.prepare(ev)
            hits += secret.sensitive.encode() not in out and b"[REDACTED:" in out
    fp = cases = 0
    for value in LOOKALIKES:
        for _where, ev in lookalike_placements(value):
            cases += 1
            fp += s.prepare(ev) != orjson.dumps(ev)
    for key in LOOKALIKE_KEYS:
        for ev in ({key: "v-1"}, {"a": {key: 7}}, {"items": [{key: "x"}]}, {"msg": f"{key}=v-1"}):
            cases += 1
            fp += s.prepare(ev) != orjson.dumps(ev)
    return hits / total, total, fp / cases, cases


def old_sanitiser_class(rev: str) -> Any:
    """``Sanitiser`` of pipeline/sanitise.py as of ``rev``, loaded from git beside this tree's
    (the rest of the package is this tree's), or None when git cannot show it."""
    try:
        src = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:pipeline/sanitise.py"], capture_output=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    mod = types.ModuleType("pipeline._sanitise_old")
    mod.__file__ = f"{rev}:pipeline/sanitise.py"
    sys.modules[mod.__name__] = mod
    exec(compile(src, mod.__file__, "exec"), mod.__dict__)  # our own file at another commit
    return mod.Sanitiser


def long_lines() -> dict[str, bytes]:
    """One-event NDJSON lines holding one long string each, at most the default event size."""
    rnd = random.Random(7)
    n = DEFAULT_MAX_EVENT_BYTES - 64
    b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    words = ["the", "request", "from", "upstream", "service", "failed", "after", "three", "retries", "while",
             "cache", "was", "being", "refreshed", "and", "operator", "restarted", "worker", "pool"]
    prose = " ".join(rnd.choice(words) for _ in range(n // 4))[:n]
    hexs = "".join(rnd.choices("0123456789abcdef", k=n))
    cases = {
        "hex, 1 MiB": hexs,
        "base64, 1 MiB": "".join(rnd.choices(b64, k=n)),
        "base64url, 1 MiB": "".join(rnd.choices(b64[:62] + "-_", k=n)),
        "prose, 1 MiB (screen: clean)": prose,
        "prose + 'basic auth', 1 MiB": prose[:n - 20] + " basic auth enabled",
        "hex + a URL with credentials, 64 KiB": hexs[:65536] + " https://u:p@h",
        "64-char hex words + one of every secret, 1 MiB": every_rule(hexs, n),
        "dense triggers (eyJ ), 1 MiB": ("eyJ " * (n // 4))[:n],
        "dense card numbers, 1 MiB": ("4111111111111111 " * (n // 17))[:n],
        "the same between '://' and a last '@', 1 MiB": hidden_every_rule(hexs, n),
        "'://' without '@' (and eyJ), 64 KiB": ("eyJ " + "://" * (65536 // 3))[:65536],
    }
    return {name: orjson.dumps({"msg": text}) for name, text in cases.items()}


def every_rule(hexs: str, n: int) -> str:
    """Hex digests as 64-character words, then one secret of every built-in shape: every
    rule runs over the whole string."""
    from tests.redaction_corpus import SECRETS

    tail = " ".join(dict.fromkeys(secret.text for secret in SECRETS))
    words = " ".join(hexs[i:i + 64] for i in range(0, n, 65))
    return words[:n - 2 * len(tail)] + " " + tail  # (room for the JSON escapes of the PEM lines)


def hidden_every_rule(hexs: str, n: int) -> str:
    """``every_rule`` between a URL and an e-mail address: every trigger but url-credentials'
    lies inside its match, so every rule runs in the second pass (the old rules ran none)."""
    head, tail = "see https://example.com/docs ", " ask me@example.org"
    return head + every_rule(hexs, n - len(head) - len(tail)) + tail


def compare(old: bytes, new: bytes) -> str:
    """"yes" (the same bytes), "more redacted" (every stretch ``new`` keeps between its markers
    lies within one that ``old`` kept) or "NO"."""
    if old == new:
        return "yes"
    marker = re.compile(r"\[REDACTED:[a-z0-9\-]+\]")
    kept = [k for k in marker.split(orjson.loads(old)["msg"]) if k]
    return "more redacted" if all(any(piece in k for k in kept) for piece in marker.split(orjson.loads(new)["msg"])
                                  if piece) else "NO"


def cpu_ms(sanitiser: Any, line: bytes, repeat: int) -> tuple[float, bytes]:
    best, out = float("inf"), b""
    for _ in range(repeat):
        t0 = time.process_time()
        done = sanitiser.prepare_json_many([line])[0]
        best = min(best, time.process_time() - t0)
        if not isinstance(done, bytes):
            raise SystemExit(f"the benchmark's event was refused: {done}")
        out = done
    return best * 1e3, out


def long_strings(old_rev: str, workloads: dict[str, list[bytes]]) -> None:
    old_cls = old_sanitiser_class(old_rev)
    new = Sanitiser()
    old = old_cls() if old_cls is not None else None
    print(f"\nlong strings: CPU per event (prepare_json_many, one event, best of 3), this tree against "
          f"{old_rev if old is not None else '(git show failed: no old figures)'}:")
    print(f"  {'':48s} {'old ms':>9s} {'new ms':>9s} {'speed-up':>9s} {'new MB/s':>9s}  same bytes")
    for name, line in long_lines().items():
        new_ms, new_out = cpu_ms(new, line, 3)
        if old is not None:
            old_ms, old_out = cpu_ms(old, line, 3 if "URL" not in name and "://" not in name else 1)
            print(f"  {name:48s} {old_ms:9.2f} {new_ms:9.2f} {old_ms / max(new_ms, 1e-3):8.1f}x "
                  f"{len(line) / 1e3 / max(new_ms, 1e-3):9.1f}  {compare(old_out, new_out)}")
        else:
            print(f"  {name:48s} {'-':>9s} {new_ms:9.2f} {'-':>9s} {len(line) / 1e3 / max(new_ms, 1e-3):9.1f}")
    if old is not None:
        print("  typical events, CPU per event (batches of 200, best of 3):")
        for name, lines in workloads.items():
            o, n = per_event_us(old, lines), per_event_us(new, lines)
            same = old.prepare_json_many(lines) == new.prepare_json_many(lines)
            print(f"  {name:48s} {o:7.2f} us {n:7.2f} us {o / n:8.2f}x {'':9s}  {'yes' if same else 'NO'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--long-only", action="store_true", help="only the long-string comparison (part 4)")
    ap.add_argument("--old-rev", default="74e4d78", help="the commit whose sanitiser part 4 compares against")
    a = ap.parse_args()
    print(f"C accelerator: {'yes' if native is not None else 'no'}"
          f"{' (PIPELINE_NO_NATIVE)' if os.environ.get('PIPELINE_NO_NATIVE') else ''}; cpus: {os.cpu_count()}")
    workloads = {"realistic (gen_events.py)": realistic_lines(a.events), "300-byte flat": flat_lines(a.events)}
    if a.long_only:
        long_strings(a.old_rev, workloads)
        return
    full, off = Sanitiser(), Sanitiser(redact=False)
    print("\nsanitiser CPU per event, prepare_json_many in batches of 200 (best of 3):")
    added: dict[str, float] = {}
    for name, lines in workloads.items():
        on_us, off_us = per_event_us(full, lines), per_event_us(off, lines)
        added[name] = on_us - off_us
        avg = sum(map(len, lines)) / len(lines)
        print(f"  {name:28s} avg {avg:5.0f} B: full rules {on_us:6.2f} us, redaction off {off_us:6.2f} us, "
              f"rules add {on_us - off_us:5.2f} us/event")
    print(f"\ningest over the Unix socket, {IN_FLIGHT} batches of {BATCH} in flight, {a.seconds:g} s per round, "
          f"{a.rounds} pairs of rounds (medians):")
    for name, lines in workloads.items():
        rates: dict[bool, list[float]] = {True: [], False: []}
        cpus: dict[bool, list[float]] = {True: [], False: []}
        ratios = []
        for r in range(a.rounds):
            pair = {}
            for redact in ((True, False) if r % 2 == 0 else (False, True)):
                pair[redact], cpu = ingest_rate(lines, redact, a.seconds)
                rates[redact].append(pair[redact])
                cpus[redact].append(cpu)
            ratios.append(pair[True] / pair[False])
        on, offr = statistics.median(rates[True]), statistics.median(rates[False])
        cpu_on, cpu_off = statistics.median(cpus[True]), statistics.median(cpus[False])
        share = max(0.0, added[name]) / cpu_off
        print(f"  {name:28s} full rules {on:9,.0f} ev/s, off {offr:9,.0f} ev/s; pairs full/off: "
              f"{', '.join(f'{x:.2f}' for x in ratios)}")
        print(f"  {'':28s} server CPU per event: full {cpu_on:5.2f} us, off {cpu_off:5.2f} us; the rules' "
              f"{max(0.0, added[name]):.2f} us are {share * 100:4.1f}% of it ({'met' if share <= 0.15 else 'NOT met'}:"
              f" <= 15%)")
    recall, n, fpr, m = corpus_quality()
    print(f"\ncorpus: recall {recall * 100:.1f}% of {n} secret placements; "
          f"false positives {fpr * 100:.1f}% of {m} look-alike placements")
    long_strings(a.old_rev, workloads)


if __name__ == "__main__":
    main()
