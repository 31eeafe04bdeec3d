"""Disk full: on a tiny tmpfs, append raises a clear ENOSPC error, acknowledged records stay,
the chain stays verifiable, and appends resume once space is freed."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.hot.writer import HotLog, HotLogError, Receipt
from tests.conftest import mounted_tmpfs
from tests.hotutil import assert_clean, records

STREAM = "full"


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "tmpfs", "256k") as mnt:
        yield mnt


def fill_until_enospc(log: HotLog, receipts: list[Receipt], limit: int = 100_000) -> HotLogError:
    for i in range(limit):
        try:
            receipts.append(log.append({"i": i, "pad": "e" * 400}))
        except HotLogError as exc:
            return exc
    raise AssertionError("never hit ENOSPC")


def test_enospc_clear_error_chain_verifiable_and_resumes(tiny_fs: Path) -> None:
    filler = tiny_fs / "filler"
    filler.write_bytes(b"\0" * (96 * 1024))
    hot = tiny_fs / "hot"
    log = HotLog(hot, STREAM, durability="group", heartbeat_interval=0, segment_window=0,
                 segment_max_bytes=48 * 1024)
    try:
        acked: list[Receipt] = []
        err = fill_until_enospc(log, acked)
        assert "no space left" in str(err).lower() and "ENOSPC" in str(err)
        assert isinstance(err.cause, OSError) and err.cause.errno == 28
        assert len(acked) > 20
        d = hot / STREAM
        # every acknowledged receipt is on disk with its hash, and the chain verifies now
        by_seq = {r.seq: r.hash for r in records(d)}
        assert all(by_seq.get(r.seq) == r.hash for r in acked)
        assert_clean(d)
        # still full: appends keep failing cleanly, nothing acknowledged is disturbed
        with pytest.raises(HotLogError):
            log.append({"still": "full", "pad": "f" * 4000})
        assert_clean(d)

        filler.unlink()
        after = [log.append({"after": i}) for i in range(20)]
        sealed = log.seal()
        assert sealed is not None
    finally:
        log.close()
    recs = records(d)
    rec_by_seq = {r.seq: r for r in recs}
    assert sorted(rec_by_seq) == list(range(len(rec_by_seq)))
    for r in [*acked, *after]:
        assert rec_by_seq[r.seq].hash == r.hash
    assert after[0].seq == acked[-1].seq + 2  # the recovery record sits between them
    recovery = rec_by_seq[acked[-1].seq + 1]
    assert recovery.kind == "recovery" and recovery.data["abandoned"]
    assert "no space left" in recovery.data.get("error", "").lower()
    rep = assert_clean(d)
    assert any(n.kind == "recovered" for n in rep.notes) or all(
        e["torn_bytes"] == 0 for e in recovery.data["abandoned"])
    # the CLI agrees
    res = subprocess.run([sys.executable, "-m", "pipeline", "verify", "--hot", str(hot)], capture_output=True,
                         text=True, cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_enospc_in_fsync_mode_reopen_after_free(tiny_fs: Path) -> None:
    filler = tiny_fs / "filler"
    filler.write_bytes(b"\0" * (96 * 1024))
    hot = tiny_fs / "hot"
    acked: list[Receipt] = []
    log = HotLog(hot, STREAM, durability="fsync", heartbeat_interval=0, segment_window=0)
    try:
        err = fill_until_enospc(log, acked)
        assert "no space left" in str(err).lower()
    finally:
        log.close(seal=False)
    filler.unlink()
    with HotLog(hot, STREAM, durability="fsync", heartbeat_interval=0, segment_window=0) as log2:
        more = log2.append({"after": 1})
    by_seq = {r.seq: r.hash for r in records(hot / STREAM)}
    assert all(by_seq[r.seq] == r.hash for r in [*acked, more])
    assert_clean(hot / STREAM)


# ------------------------------------------------------------------ an error answer stays true

BATCH_CHILD = r"""
import sys, time
from pipeline.hot.writer import HotLog, HotLogError
from pipeline.sanitise import DEFAULT_SANITISER
hot, n = sys.argv[1], int(sys.argv[2])
log = HotLog(hot, "full", durability="group", heartbeat_interval=0, segment_window=0,
             segment_max_bytes=8 << 20)
for i in range(20):
    r = log.append({"warm": i})
    print("OK", r.seq, r.hash, flush=True)
# one large request, as ingest makes it: queued under one lock, then one answer per line
items = [DEFAULT_SANITISER.prepare({"req": i, "pad": "q" * 260}) for i in range(n)]
out = log.append_prepared_many(items)
for r in out:
    if isinstance(r, HotLogError):
        print("REFUSED", -1, "-", flush=True)
        continue
    try:
        log.wait_durable(r)
        print("OK", r.seq, r.hash, flush=True)
    except HotLogError as exc:
        print("ERR", r.seq, r.hash, str(exc).replace(" ", "_")[:80], flush=True)
print("ANSWERED", flush=True)
if sys.argv[3] == "live":
    # no crash: the filler is freed by the parent, appends resume (runtime recovery)
    sys.stdin.readline()
    r = log.append({"after": 1})
    print("OK", r.seq, r.hash, flush=True)
    log.close()
    print("CLOSED", flush=True)
else:
    time.sleep(3600)  # killed with SIGKILL by the parent
"""


def _answers(text: str) -> tuple[dict[int, str], dict[int, str]]:
    ok: dict[int, str] = {}
    refused: dict[int, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "OK":
            ok[int(parts[1])] = parts[2]
        elif parts and parts[0] == "ERR":
            refused[int(parts[1])] = parts[2]
    return ok, refused


@pytest.mark.parametrize("crash", ["kill-9", "live"])
def test_records_answered_not_stored_stay_out_after_recovery(tiny_fs: Path, crash: str) -> None:
    """Issue 12: a 1,500-event request hit ENOSPC mid-flush.  Whatever each line was told
    must stay true: after SIGKILL and a restart (start-up recovery) exactly as without a
    crash (runtime recovery): one rule for the valid length, never a refused record kept."""
    import os
    import signal

    from tests.hotutil import PYTHON, REPO

    filler = tiny_fs / "filler"
    filler.write_bytes(b"\0" * (150 * 1024))
    hot = tiny_fs / "hot"
    proc = subprocess.Popen([PYTHON, "-c", BATCH_CHILD, str(hot), "1500", crash], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(REPO)),
                            cwd=REPO, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    text = ""
    while "ANSWERED\n" not in text:
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else ""
        text += line
    ok, refused = _answers(text)
    assert refused, "the request did not hit ENOSPC"
    d = hot / STREAM
    if crash == "kill-9":
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        # still full: start-up cannot write its recovery record and says so; nothing changes
        with pytest.raises(HotLogError, match="no space left"):
            HotLog(hot, STREAM, heartbeat_interval=0, segment_window=0)
        filler.unlink()
        with HotLog(hot, STREAM, heartbeat_interval=0, segment_window=0) as log:
            r = log.append({"after": 1})
        ok[r.seq] = r.hash
    else:
        filler.unlink()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=60)
        assert "CLOSED" in out, err
        ok.update(_answers(out)[0])
    assert_clean(d)
    by_seq = {rec.seq: rec.hash for rec in records_in_chain(d)}
    assert all(by_seq.get(s) == h for s, h in ok.items()), "an acknowledged record was lost"
    kept = [s for s, h in refused.items() if by_seq.get(s) == h]
    assert not kept, f"records answered 'not stored' are in the verified stream: {kept[:10]}"
    # the one rule: every abandoned segment's valid length is where its complete records
    # end; what follows is only an incomplete line
    for rec in records_in_chain(d):
        if rec.kind != "recovery":
            continue
        for e in rec.data["abandoned"]:
            torn = (d / e["segment"]).read_bytes()[e["valid_bytes"]:]
            assert b"\n" not in torn, (e, torn[:200])
    # complete lines a failed write left in the file are durable after an fsync: stored, and
    # answered so (runtime recovery keeps them, as start-up recovery would)
    assert len([s for s in ok if s >= 20]) > 1, "no line of the request was stored: the disk was too full"


def records_in_chain(d: Path) -> list[Any]:
    """The records of the verified stream: each segment's records up to the valid length a
    recovery record gives it (torn ranges are evidence, not part of the stream)."""
    from pipeline.hot.segment import iter_lines, list_segments
    from pipeline.record import RecordError, parse_record

    limits: dict[str, int] = {}
    segs = list_segments(d)
    for path in segs:
        for _off, line in iter_lines(path):
            try:
                first = parse_record(line)
            except RecordError:
                break
            if first.kind == "recovery":
                for e in first.data["abandoned"]:
                    limits[e["segment"]] = e["valid_bytes"]
            break
    out = []
    for path in segs:
        limit = limits.get(path.name)
        for off, line in iter_lines(path):
            if limit is not None and off >= limit:
                break
            try:
                out.append(parse_record(line))
            except RecordError:
                break
    return out
