"""Can any writer of issue 21's scheme be at most 25% slower than a clear one?  The budget
against the floor, measured in the same run:

    .venv/bin/python bench/crypto_floor.py [--events N] [--rounds R] [--busy]

1. The budget: the CPU time per event (the whole process, both threads) of group-mode
   ``append(wait=False)`` and ``append_many`` (batches of 200), clear and encrypted, in
   interleaved rounds (median).  Encrypted at most 25% slower means at most clear / 0.75,
   so the encrypted record may add at most a third of the clear record's CPU time.
2. The floor: what the scheme's irreducible per-record work costs through OpenSSL, timed in
   C by ``bench/crypto_floor.c`` (compiled here with ``cc -O2 ... -lcrypto``) for this
   bench's event: two SHA-256 compressions (a one-way chain step and a one-way record key:
   the least any per-record key ratchet with selective disclosure costs), one AEAD call
   under a fresh key (ChaCha20-Poly1305 as the format has it, and AES-256-GCM, the issue's
   other choice), base64 of the ciphertext, and the longer line hashed twice (the record
   hash and the Merkle leaf cover the ciphertext).  No Python, no JSON, no copies, no
   memory management: a real writer does more.

``--busy`` keeps the second core busy with a spinning process for the whole run.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_append import EVENT, busy_second_core, rm_tree  # noqa: E402
from bench_encryption import append_rate, recipient  # noqa: E402

from pipeline.crypt.writer import EncryptionSettings  # noqa: E402
from pipeline.hot.factory import open_hotlog  # noqa: E402
from pipeline.hot.segment import list_segments  # noqa: E402

AAD_LABEL = b"worm-pipeline/event/v1"


def build_floor(out_dir: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        sys.exit("crypto_floor: no C compiler (cc) on PATH; the product's build needs one too")
    exe = out_dir / "crypto_floor"
    subprocess.run([cc, "-O2", "-o", str(exe), str(REPO / "bench" / "crypto_floor.c"), "-lcrypto"], check=True)
    return exe


def record_sizes(base: Path, enc: EncryptionSettings) -> tuple[int, int, int, int]:
    """(plaintext bytes, AAD bytes, clear line bytes, extra line bytes) of this bench's event,
    read from lines the writer wrote (the median event of a segment of each kind)."""
    lines: dict[bool, list[dict[str, object]]] = {}
    raw: dict[bool, list[bytes]] = {}
    for encrypted in (False, True):
        d = Path(tempfile.mkdtemp(prefix="floor-", dir=base))
        with open_hotlog(d, "bench", heartbeat_interval=0, encryption=enc if encrypted else None) as log:
            log.append_many([dict(EVENT, n=i) for i in range(1000)], wait=False)
        body = list_segments(d / "bench")[0].read_bytes().splitlines()
        events = [ln for ln in body if b'"kind":"event"' in ln]
        raw[encrypted] = events
        lines[encrypted] = [json.loads(ln) for ln in events]
        rm_tree(d)
    mid = len(lines[True]) // 2
    rec = lines[True][mid]
    data = rec["data"]
    assert isinstance(data, dict)
    ct = base64.b64decode(data["_enc"]["ct"])
    aad_len = (len(AAD_LABEL) + 1 + len(str(rec["stream"])) + 1 + len("seg-00000000000000000000.jsonl") + 1
               + len(str(rec["seq"])) + 1 + len(str(data["_enc"]["key_seq"])))
    clear_len = statistics.median(len(ln) + 1 for ln in raw[False])
    enc_len = statistics.median(len(ln) + 1 for ln in raw[True])
    return len(ct) - 16, aad_len, int(clear_len), int(enc_len - clear_len)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=40_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--busy", action="store_true", help="spin the second core for the whole run")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-floor-"))
    spinning = contextlib.ExitStack()
    spinning.enter_context(busy_second_core(args.busy))
    try:
        enc = EncryptionSettings((recipient(base),))
        exe = build_floor(base)
        pt_len, aad_len, clear_line, extra = record_sizes(base, enc)
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {args.events} events x {args.rounds} "
              f"rounds, second core {'busy' if args.busy else 'idle'}, load average {os.getloadavg()[0]:.1f}")
        print(f"event: plaintext {pt_len} B, AAD {aad_len} B, line {clear_line} B clear, +{extra} B encrypted")

        cpu: dict[tuple[int, bool], list[float]] = {}
        for _ in range(args.rounds):
            for batch in (0, 200):
                for encrypted in (False, True):
                    _, per_event = append_rate(base, args.events, enc if encrypted else None, batch)
                    cpu.setdefault((batch, encrypted), []).append(per_event)
        out = subprocess.run([str(exe), str(pt_len), str(aad_len), str(clear_line), str(extra)],
                             capture_output=True, text=True, check=True).stdout
        piece = {name: float(value) for name, value in (ln.split() for ln in out.splitlines())}
        hashing = 2 * max(0.0, piece["line-hash-encrypted"] - piece["line-hash-clear"])
        fixed = 2 * piece["compression"] + piece["base64"] + hashing
        print(f"floor pieces (us): 2 compressions {2 * piece['compression']:.3f}, base64 {piece['base64']:.3f}, "
              f"longer line hashed twice {hashing:.3f}, ChaCha20-Poly1305 {piece['chacha20-poly1305']:.3f}, "
              f"AES-256-GCM {piece['aes-256-gcm']:.3f}")
        print()
        print("| path | clear CPU us/event | encrypted | extra now | budget (clear / 3) "
              "| floor, ChaCha20-Poly1305 | floor, AES-256-GCM |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for batch, name in ((0, "append(wait=False)"), (200, "append_many, batches of 200")):
            clear = statistics.median(cpu[(batch, False)])
            sealed = statistics.median(cpu[(batch, True)])
            budget = clear / 3
            chacha = fixed + piece["chacha20-poly1305"]
            aes = fixed + piece["aes-256-gcm"]
            print(f"| {name} | {clear:.2f} | {sealed:.2f} | {sealed - clear:.2f} | {budget:.2f} "
                  f"| {chacha:.2f} ({chacha / budget:.0%} of budget) | {aes:.2f} ({aes / budget:.0%} of budget) |")
    finally:
        spinning.close()
        rm_tree(base)


if __name__ == "__main__":
    main()
