"""The writer's side of the format's longest line (docs/FORMAT.md §1, check 2): a log takes
events of at most MAX_EVENT_BYTES, on every way in, so that no record it writes is a line a
verifier rejects unread.  Each refusal names the limit and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config
from pipeline.format.record import MAX_EVENT_BYTES
from pipeline.format.segment import list_segments
from pipeline.hot.writer import HotLog
from pipeline.ingest.server import IngestServer
from pipeline.sanitise import Sanitiser


def test_a_log_refuses_a_sanitiser_that_takes_larger_events(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"at most {MAX_EVENT_BYTES}"):
        HotLog(tmp_path, "app", sanitiser=Sanitiser(max_event_bytes=MAX_EVENT_BYTES + 1), heartbeat_interval=0)
    assert not (tmp_path / "app").exists()
    HotLog(tmp_path, "app", sanitiser=Sanitiser(max_event_bytes=MAX_EVENT_BYTES), heartbeat_interval=0,
           immutable="off").close()


def _prepared(n: int) -> bytes:
    head = b'{"pad":"'
    return head + b"p" * (n - len(head) - 2) + b'"}'


def test_prepared_events_over_the_limit_are_refused_and_nothing_of_the_call_is_written(tmp_path: Path) -> None:
    log = HotLog(tmp_path, "app", heartbeat_interval=0, immutable="off", segment_max_bytes=64 << 20)
    try:
        log.append({"n": 0})
        log.sync()
        seg = list_segments(tmp_path / "app")[-1]
        before = seg.read_bytes()
        with pytest.raises(ValueError, match=f"{MAX_EVENT_BYTES + 1} bytes is over the log's limit"):
            log.append_prepared(_prepared(MAX_EVENT_BYTES + 1))
        with pytest.raises(ValueError, match="over the log's limit"):
            log.append_prepared_many([b'{"n":1}', _prepared(MAX_EVENT_BYTES + 1), b'{"n":2}'])
        log.sync()
        assert seg.read_bytes() == before
        receipt = log.append_prepared(_prepared(MAX_EVENT_BYTES))  # the limit itself is taken
        log.wait_durable(receipt)
    finally:
        log.close()
    assert max(map(len, seg.read_bytes().splitlines())) > MAX_EVENT_BYTES


def test_ingest_refuses_a_larger_event_limit(tmp_path: Path) -> None:
    log = HotLog(tmp_path, "app", heartbeat_interval=0, immutable="off")
    try:
        with pytest.raises(ValueError, match=f"over the log's limit of {MAX_EVENT_BYTES}"):
            IngestServer(log, socket_path=tmp_path / "s", max_request_bytes=64 << 20,
                         max_event_bytes=MAX_EVENT_BYTES + 1)
    finally:
        log.close()


def test_the_configuration_refuses_a_larger_event_limit(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.toml"
    path.write_text(f"""[hot]
dir = "{tmp_path / 'hot'}"

[ingest]
max_request_bytes = 67108864
max_event_bytes = {MAX_EVENT_BYTES + 1}
""")
    with pytest.raises(ConfigError) as e:
        load_config(path, {})
    assert (f"ingest.max_event_bytes: expected an integer from 64 to {MAX_EVENT_BYTES}, got {MAX_EVENT_BYTES + 1}"
            in e.value.problems)
    path.write_text(path.read_text().replace(str(MAX_EVENT_BYTES + 1), str(MAX_EVENT_BYTES)))
    assert load_config(path, {}).ingest.max_event_bytes == MAX_EVENT_BYTES
