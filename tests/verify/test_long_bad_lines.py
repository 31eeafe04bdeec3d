"""A long line that ends in a newline (what a root attacker appends to the active segment
to turn an unterminated tail, counted in place, into a complete line) is judged on the
mapping, without a copy, when its own bytes already condemn it (it does not end with a
record's hash field, or its bytes do not hash to it): the same finding as for a short such
line, and no memory in proportion to the line."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pipeline import _accel
from pipeline.verify import chain
from pipeline.verify.chain import scan_segment
from tests.hotutil import writable_first_segment
from tests.rss import traced_peak

# over the 1 MiB that is parsed at once, under the format's longest line (32 MiB), whose
# own test is tests/format/test_line_limit.py
BIG = 30 << 20


def _garbage(n: int, suffix: str) -> bytes:
    body = b"x" * n
    if suffix == "none":
        return body + b"\n"
    if suffix == "bad-hex":
        return body + b',"hash":"' + b"Z" * 64 + b'"}\n'
    if suffix == "wrong-hash":
        return body + b',"hash":"' + hashlib.sha256(b"other").hexdigest().encode() + b'"}\n'
    assert suffix == "right-hash"  # the bytes hash to it: judged as before (parsed)
    return body + b',"hash":"' + hashlib.sha256(body).hexdigest().encode() + b'"}\n'


def _judge(seg: Path) -> tuple[list[tuple[str, int | None, int | str | None, str]], int, int, int]:
    scan, peak = traced_peak(lambda: scan_segment(seg, "app"))
    findings = [(f.code, f.seq, f.where, f.message) for f in scan.findings]
    return findings, scan.size, scan.valid_bytes, peak


@pytest.mark.parametrize("native", [True, False], ids=["native", "pure"])
@pytest.mark.parametrize("suffix", ["none", "bad-hex", "wrong-hash"])
def test_a_long_condemned_line_is_judged_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   suffix: str, native: bool) -> None:
    if not native:
        monkeypatch.setattr(chain, "_native", None)
    elif _accel.native is None:
        pytest.skip("the C accelerator is not in use")
    judged = []
    for n in (100, BIG):
        seg = writable_first_segment(tmp_path / f"hot-{n}", sealed=False)
        with seg.open("ab") as f:
            f.write(_garbage(n, suffix))
        findings, size, valid, peak = _judge(seg)
        assert size == seg.stat().st_size
        judged.append((findings, valid))
        if n == BIG:
            # not a copy of the line (old: two); what stays is the seal probe's read of the
            # last line, bounded at 16 MiB (read_last_line reads back up to 4 MiB, doubling)
            assert peak < BIG * 2 // 3, peak
    assert judged[0] == judged[1]
    assert len(judged[0][0]) == 1
    assert judged[0][0][0][0] == ("hash-mismatch" if suffix == "wrong-hash" else "bad-line")


def test_a_long_line_that_hashes_is_still_parsed(tmp_path: Path) -> None:
    seg = writable_first_segment(tmp_path / "hot", sealed=False)
    with seg.open("ab") as f:
        f.write(_garbage(BIG, "right-hash"))
    findings, size, valid, _ = _judge(seg)
    assert [f[0] for f in findings] == ["bad-json"]
    assert size == seg.stat().st_size and valid < size
