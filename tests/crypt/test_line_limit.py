"""The writer's largest line: an event of MAX_EVENT_BYTES encrypted with its one field also
kept in clear (the clear members, then the base64 of the whole ciphertext: about 7/3 of the
event), and the same event in clear.  Both MUST stay under the format's MAX_LINE_BYTES
(docs/FORMAT.md §1, "The longest line" says under 19 MiB) and verify clean."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.crypt.writer import EncryptionSettings
from pipeline.format.record import MAX_EVENT_BYTES, MAX_LINE_BYTES
from pipeline.format.segment import list_segments
from pipeline.hot.writer import HotLog
from pipeline.sanitise import Sanitiser
from pipeline.verify.chain import verify_stream
from tests.crypt.conftest import AgeKey

LONGEST_STREAM = "s" * 128


def _largest_event() -> dict[str, str]:
    # sanitised JSON of exactly MAX_EVENT_BYTES: {"action":"..."}; every character an
    # escape where JSON needs one would be fewer characters of payload, not more bytes
    return {"action": "w" * (MAX_EVENT_BYTES - len('{"action":""}'))}


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted-clear-field", "clear"])
def test_the_largest_event_makes_a_line_under_the_limit(tmp_path: Path, auditor: AgeKey, encrypted: bool) -> None:
    settings = EncryptionSettings((auditor.recipient,), ("action",)) if encrypted else None
    log = HotLog(tmp_path, LONGEST_STREAM, heartbeat_interval=0, immutable="off", segment_max_bytes=256 << 20,
                 sanitiser=Sanitiser(redact=False, max_event_bytes=MAX_EVENT_BYTES), encryption=settings)
    try:
        log.append(_largest_event())
        log.append(_largest_event())
    finally:
        log.close()
    seg = list_segments(tmp_path / LONGEST_STREAM)[0]
    longest = max(len(line) + 1 for line in seg.read_bytes().splitlines())
    assert longest > MAX_EVENT_BYTES
    assert longest < 19 << 20 < MAX_LINE_BYTES, longest
    if encrypted:
        assert longest > MAX_EVENT_BYTES * 2  # the clear copy and the ciphertext are both there
    report = verify_stream(tmp_path / LONGEST_STREAM)
    assert report.ok and report.findings == [] and report.records >= 3, report.findings
