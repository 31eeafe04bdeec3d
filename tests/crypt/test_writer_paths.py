"""The writer's less common paths with encryption on: a restart into an unsealed segment
(a second key record in the same segment), a segment rolled over by size in the middle of
``append_many``, and heartbeats between events (the ratchet steps over their seqs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.crypt.reader import SegmentReader, load_identities, seal_segment_name
from pipeline.crypt.writer import EncryptionSettings
from pipeline.hot.factory import open_hotlog
from pipeline.hot.segment import list_segments
from tests.crypt.conftest import AgeKey
from tests.hotutil import records, wait_for


def all_events(stream_dir: Path, key: AgeKey) -> list[dict[str, object]]:
    reader = SegmentReader(load_identities(key.identity_file))
    return [d for p in list_segments(stream_dir) for r, d in reader.records(p, seal_segment_name(p))
            if r.kind == "event" and d is not None]


def test_restart_into_an_unsealed_segment_starts_a_new_key_record(tmp_path: Path, auditor: AgeKey) -> None:
    hot = tmp_path / "hot"
    enc = EncryptionSettings((auditor.recipient,))
    log = open_hotlog(hot, "app", heartbeat_interval=0, immutable="off", encryption=enc)
    log.append({"n": 0})
    log.append({"n": 1})
    log.close(seal=False)
    with open_hotlog(hot, "app", heartbeat_interval=0, immutable="off", encryption=enc) as log:
        log.append({"n": 2})
    segs = list_segments(hot / "app")
    assert len(segs) == 1
    assert [r.kind for r in records(hot / "app")].count("key") == 2
    assert all_events(hot / "app", auditor) == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert main(["verify", "--hot", str(hot)]) == 0


def test_size_rollover_in_append_many_and_heartbeats(tmp_path: Path, auditor: AgeKey) -> None:
    hot = tmp_path / "hot"
    events = [{"n": i, "pad": "x" * 200} for i in range(120)]
    with open_hotlog(hot, "app", heartbeat_interval=0.05, segment_max_bytes=8192, immutable="off",
                     encryption=EncryptionSettings((auditor.recipient,))) as log:
        log.append_many(events[:100])
        # heartbeats between events: seqs the ratchet steps over (waited for: a sleep of a few
        # heartbeat intervals may pass without the writer's thread getting to one on a loaded host)
        wait_for(lambda: "heartbeat" in [r.kind for r in records(hot / "app")], timeout=30, what="a heartbeat")
        for e in events[100:]:
            log.append(e)
    kinds = [r.kind for r in records(hot / "app")]
    assert "heartbeat" in kinds and len(list_segments(hot / "app")) > 5
    assert all_events(hot / "app", auditor) == events
    assert main(["verify", "--hot", str(hot)]) == 0


def test_a_writer_opened_without_settings_keeps_encrypting(tmp_path: Path, auditor: AgeKey,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The stream remembers its recipients: ``pipeline append`` without ``--config`` and a
    script's ``open_log`` without options still encrypt; ``set_encryption(None)`` stops it."""
    import io
    import sys

    hot = tmp_path / "hot"
    with open_hotlog(hot, "app", heartbeat_interval=0, immutable="off",
                     encryption=EncryptionSettings((auditor.recipient,))) as log:
        log.append({"n": 0})
    with open_hotlog(hot, "app", heartbeat_interval=0, immutable="off") as log:
        assert log.encryption is not None and log.encryption.recipients == (auditor.recipient,)
        log.append({"n": 1})
    stdin = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(b'{"n": 2}\n'))
    try:
        assert main(["append", "--hot", str(hot), "--stream", "app"]) == 0
    finally:
        sys.stdin = stdin
    with open_hotlog(hot, "app", heartbeat_interval=0, immutable="off") as log:
        log.set_encryption(None)
        log.append({"n": 3})  # the open segment keeps its recipients
        log.seal()
        log.append({"n": 4})
    stored = [r.data for r in records(hot / "app") if r.kind == "event"]
    assert all("_enc" in d for d in stored[:4]) and stored[4] == {"n": 4}
    assert all_events(hot / "app", auditor) == [{"n": i} for i in range(5)]
    assert not (hot / "app" / "encryption.json").exists()
