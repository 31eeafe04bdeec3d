"""docs/FORMAT.md §4: with the FSS key, a seal without ``fss`` is a finding unless it is older
than forward-secure sealing itself; a backdated ``ts`` cannot exempt a seal that follows one
with ``fss``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.fss import FssSealer
from pipeline.hot.segment import list_segments
from pipeline.hot.writer import HotLog
from pipeline.record import encode_record, parse_record
from tests.hotutil import rewrite


def _stream(hot: Path, *, fss_from: int) -> str:
    """Three sealed segments; seals from index ``fss_from`` on carry fss.  Returns the key."""
    stream_dir = hot / "app"
    stream_dir.mkdir(parents=True)
    key = FssSealer.setup(stream_dir, interval=900, start=int(time.time()) - 60).to_string()
    sealer = FssSealer(stream_dir)
    for i in range(3):
        log = HotLog(hot, "app", heartbeat_interval=0, segment_window=0,
                     seal_extension=sealer if i >= fss_from else None)
        log.append_many([{"seg": i, "n": n} for n in range(3)])
        log.close(seal=True)
    return key


def _strip_fss(seg: Path, ts: bytes | None = None) -> None:
    lines = seg.read_bytes().splitlines(keepends=True)
    r = parse_record(lines[-1])
    data = {k: v for k, v in r.data.items() if k != "fss"}
    lines[-1], _ = encode_record(r.stream, r.seq, ts or r.ts.encode(), r.kind, r.prev.encode(),
                                 json.dumps(data, separators=(",", ":")).encode())
    rewrite(seg, b"".join(lines))


def _verify(hot: Path, key: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main(["verify", "--hot", str(hot), "--json", "--workers", "1", "--fss-key", key])
    doc = json.loads(capsys.readouterr().out)
    reports = doc["streams"] if isinstance(doc, dict) and "streams" in doc else doc
    reasons = [f["reason"] for r in (reports if isinstance(reports, list) else [reports]) for f in r["findings"]]
    return code, reasons


def test_every_seal_sealed_forward_securely_verifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = _stream(tmp_path, fss_from=0)
    assert _verify(tmp_path, key, capsys) == (0, [])


def test_seal_without_fss_after_one_with_fss_is_a_finding_even_backdated(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = _stream(tmp_path, fss_from=0)
    last = list_segments(tmp_path / "app")[-1]
    (tmp_path / "app" / "head.json").unlink()  # the head would flag the re-made seal on its own
    _strip_fss(last, ts=b"2001-01-01T00:00:00.000000Z")  # long before the key's start
    code, reasons = _verify(tmp_path, key, capsys)
    assert code == 1 and reasons == ["fss-invalid"]


def test_seal_without_fss_after_the_start_is_a_finding(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = _stream(tmp_path, fss_from=0)
    (tmp_path / "app" / "head.json").unlink()
    _strip_fss(list_segments(tmp_path / "app")[-1])
    assert _verify(tmp_path, key, capsys) == (1, ["fss-invalid"])


def test_only_seals_older_than_forward_secure_sealing_are_exempt(tmp_path: Path) -> None:
    from pipeline.cli.verify import check_fss
    from pipeline.verify.chain import SegmentScan, StreamReport

    start = 1_800_000_000
    key = FssSealer.setup(tmp_path, interval=900, start=start).to_string()
    sealer = FssSealer(tmp_path, clock=lambda: start + 10.0)

    def stamp(t: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(t))

    def seal(n: int, t: float, with_fss: bool) -> SegmentScan:
        name = f"seg-{n:020d}.jsonl"
        data: dict[str, object] = {"segment": name, "merkle_root": "ab" * 32, "tree_size": 10 * n + 9,
                "tree_root": "cd" * 32}
        if with_fss:
            data["fss"] = sealer(dict(data))
        return SegmentScan(path="", name=name, sealed=True, seal=data, last_ts=stamp(t), last_seq=10 * n + 9)

    report = StreamReport("app", [seal(0, start - 100, False), seal(1, start + 10, True), seal(2, start - 50, False),
                                  seal(3, start + 20, False)])
    check_fss(report, key)
    # seg 0 predates FSS (exempt); seg 2 is backdated after an fss seal; seg 3 is after the start
    assert [(f.segment, f.reason) for f in report.findings] == [
        ("seg-00000000000000000002.jsonl", "fss-invalid"), ("seg-00000000000000000003.jsonl", "fss-invalid")]
