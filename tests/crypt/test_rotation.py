"""Rotation: recipients change with a reload, from the next segment on; old segments stay
readable with the old identity only.  In the library and in the sidecar (ingest over HTTP
and the socket is encrypted by the log, like it is sanitised), with SIGHUP."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from pipeline.crypt.reader import IdentityError, SegmentReader, load_identities, seal_segment_name
from pipeline.crypt.writer import EncryptionSettings
from pipeline.hot.factory import open_hotlog
from pipeline.hot.segment import list_segments
from tests.crypt.conftest import AgeKey
from tests.hotutil import records
from tests.ship.conftest import make_bucket
from tests.ship.test_sidecar import Sidecar, socket_send


def opened(path: Path, identity: Path) -> list[dict[str, object]]:
    reader = SegmentReader(load_identities(identity))
    return [d for r, d in reader.records(path, seal_segment_name(path)) if r.kind == "event" and d is not None]


def test_rotation_takes_effect_at_the_next_segment(tmp_path: Path, auditor: AgeKey, escrow: AgeKey) -> None:
    hot = tmp_path / "hot"
    with open_hotlog(hot, "app", heartbeat_interval=0, immutable="off",
                     encryption=EncryptionSettings((auditor.recipient,))) as log:
        log.append({"n": 0})
        log.set_encryption(EncryptionSettings((escrow.recipient,)))
        log.append({"n": 1})  # the open segment keeps its recipients
        log.seal()
        log.append({"n": 2})
        log.seal()
        log.set_encryption(None)
        log.append({"n": 3})  # encryption off: clear again, from the next segment
    first, second, _clear = list_segments(hot / "app")
    assert opened(first, auditor.identity_file) == [{"n": 0}, {"n": 1}]
    with pytest.raises(IdentityError, match="not a recipient"):
        opened(first, escrow.identity_file)
    assert opened(second, escrow.identity_file) == [{"n": 2}]
    with pytest.raises(IdentityError):
        opened(second, auditor.identity_file)
    both = tmp_path / "both.key"
    both.write_text(auditor.identity_file.read_text() + escrow.identity_file.read_text())
    assert opened(first, both) + opened(second, both) == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert [r.data for r in records(hot / "app") if r.kind == "event"][-1] == {"n": 3}


@pytest.mark.slow
def test_sidecar_encrypts_ingest_and_rotates_on_sighup(tmp_path: Path, moto_endpoint: str,
                                                       auditor: AgeKey, escrow: AgeKey) -> None:
    sc = Sidecar(tmp_path, moto_endpoint, make_bucket(moto_endpoint),
                 hot={"hot_retention": "1h", "segment_window": "1s"})
    sc.sections["encryption"] = {"recipients": [auditor.recipient], "clear_fields": ["action"]}
    sc.write_config()
    sc.start()
    try:
        code, doc = sc.post([{"action": "login", "user": "alice-secret", "password": "pw-secret"}])
        assert code == 200 and doc["accepted"] == 1
        assert all(a["ok"] for a in socket_send(sc.sock, [{"action": "read", "user": "bob-secret"}]))
        sc.sections["encryption"] = {"recipients": [escrow.recipient]}
        sc.write_config()
        assert sc.proc is not None
        sc.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            sc.post([{"user": "carol-secret"}])
            keys = [r.data for r in records(sc.hot / "app") if r.kind == "key"]
            if keys and keys[-1]["recipients"] == [escrow.recipient]:
                break
            time.sleep(0.3)
        else:
            raise AssertionError("the new recipients never applied:\n" + sc.log.read_text()[-2000:])
    finally:
        assert sc.stop() == 0
    raw = b"".join(p.read_bytes() for p in (sc.hot / "app").glob("seg-*"))
    assert b"-secret" not in raw and b'"action":"login"' in raw  # the clear field stays readable
    events: list[dict[str, object]] = []
    for p in list_segments(sc.hot / "app"):
        kinds = {r.data["recipients"][0] for r in records_of(p) if r.kind == "key"}
        if kinds == {auditor.recipient}:
            events += opened(p, auditor.identity_file)
        elif kinds == {escrow.recipient}:
            events += opened(p, escrow.identity_file)
    for e in events:  # ingested events carry the sidecar's sender field (FORMAT §1.2), encrypted with the rest
        assert isinstance(e.get("_sender"), dict), e
    events = [{k: v for k, v in e.items() if k != "_sender"} for e in events]
    assert events[:2] == [{"action": "login", "user": "alice-secret", "password": "[REDACTED:secret-key]"},
                          {"action": "read", "user": "bob-secret"}]
    assert {"user": "carol-secret"} in events


def records_of(path: Path) -> list:  # type: ignore[type-arg]
    from pipeline.format.record import parse_record

    return [parse_record(ln) for ln in path.read_bytes().splitlines(keepends=True)]


def test_after_rotation_the_new_identity_alone_reads_the_new_segments(tmp_path: Path, auditor: AgeKey,
                                                                      escrow: AgeKey,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from pipeline.cli import main

    hot = tmp_path / "hot"
    with open_hotlog(hot, "app", heartbeat_interval=0, immutable="off",
                     encryption=EncryptionSettings((auditor.recipient,))) as log:
        log.append({"n": 0})
        log.seal()
        log.set_encryption(EncryptionSettings((escrow.recipient,)))
        time.sleep(0.01)  # the new segment's events are strictly later
        target = log.append({"n": 1}).seq
    first_new = next(r for r in records(hot / "app") if r.seq == target)
    capsys.readouterr()
    # the whole log needs both identities ...
    assert main(["decrypt", "--identity", str(escrow.identity_file), "--hot", str(hot)]) == 2
    assert "not a recipient" in capsys.readouterr().err
    # ... a time range after the rotation needs only the new one
    assert main(["decrypt", "--identity", str(escrow.identity_file), "--hot", str(hot), "--from", first_new.ts]) == 0
    assert [json.loads(ln)["data"] for ln in capsys.readouterr().out.splitlines()] == [{"n": 1}]
    assert main(["disclose", "--identity", str(escrow.identity_file), "--hot", str(hot), "--seq", str(target),
                 "--no-proof"]) == 0
    doc = capsys.readouterr().out
    path = tmp_path / "d.json"
    path.write_text(doc)
    assert main(["disclose", "--open", str(path)]) == 0
    assert json.loads(capsys.readouterr().out) == {"n": 1}
