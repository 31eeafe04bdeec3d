"""Root on the host after sealing: every file the sidecar can read, plus every key the writer
process keeps, opens no event it has acknowledged (docs/ENCRYPTION.md, "Exposure window")."""

from __future__ import annotations

import secrets
from pathlib import Path

from pipeline.crypt import scheme
from pipeline.crypt.reader import SegmentReader, load_identities, seal_segment_name
from pipeline.crypt.writer import EncryptionSettings
from pipeline.hot.factory import open_hotlog
from pipeline.hot.segment import list_segments
from pipeline.record import Record, parse_record
from tests.crypt.conftest import AgeKey


def encrypted_events(stream_dir: Path) -> list[tuple[Record, str]]:
    """(record, segment named by its key record) of every encrypted event on disk."""
    out = []
    for path in list_segments(stream_dir):
        segment_of: dict[int, str] = {}
        for line in path.read_bytes().splitlines(keepends=True):
            rec = parse_record(line)
            if rec.kind == "key":
                segment_of[rec.seq] = rec.data["segment"]
            enc = scheme.enc_member(rec.data) if rec.kind == "event" else None
            if enc is not None:
                out.append((rec, segment_of[enc["key_seq"]]))
    return out


def opens(rec: Record, segment: str, rkey: bytes) -> bool:
    enc = scheme.enc_member(rec.data)
    assert enc is not None
    try:
        scheme.open_payload(rkey, scheme.unb64(enc["ct"], "ct"), scheme.aad(rec.stream, segment, rec.seq,
                                                                            enc["key_seq"]))
    except scheme.PayloadError:
        return False
    return True


def test_root_after_sealing_recovers_no_acknowledged_event(tmp_path: Path, auditor: AgeKey) -> None:
    hot = tmp_path / "hot"
    tokens = [secrets.token_hex(12) for _ in range(60)]
    log = open_hotlog(hot, "app", heartbeat_interval=0, immutable="off",
                      encryption=EncryptionSettings((auditor.recipient,)))
    try:
        for t in tokens[:30]:
            log.append({"user": "alice", "ref": t})
        log.append_many([{"user": "bob", "ref": t} for t in tokens[30:45]])
        sealed_epoch = log._chain._epoch  # the ratchet the writer keeps (C memory, or a bytearray)
        assert sealed_epoch is not None
        log.seal()
        assert sealed_epoch.held_key()[1] == bytes(32), "a sealed segment's chain key must be zeroed"
        for t in tokens[45:]:  # acknowledged, in the still open segment
            log.append({"user": "carol", "ref": t})

        # the attacker's view: every file under the hot directory, and the keys the process keeps
        blob = b"".join(p.read_bytes() for p in hot.rglob("*") if p.is_file())
        held = log._chain.held_keys()
        assert len(held) == 1 and held[0][0] == log.next_seq  # one chain key, for the next seq only
    finally:
        log.close()
    assert log._chain.held_keys() == []  # closing seals: nothing is kept
    for t in tokens:
        assert t.encode() not in blob
    assert b"alice" not in blob and b"carol" not in blob

    records = encrypted_events(hot / "app")
    assert len(records) == len(tokens)
    # everything derivable from what the process held: the held chain key ratcheted forward,
    # used as a chain key, as a record key and as a seed
    candidates: list[bytes] = []
    for _, k in held:
        for _ in range(len(records) + 10):
            candidates += [k, scheme.record_key(k)]
            k = scheme.ratchet_step(k)
    for rec, segment in records:
        assert not any(opens(rec, segment, c) for c in candidates), f"seq {rec.seq} opened by held key material"

    # the auditor, with the identity that never was on the host, reads all of them
    reader = SegmentReader(load_identities(auditor.identity_file))
    seen = [data["ref"] for p in list_segments(hot / "app") for rec, data in reader.records(p, seal_segment_name(p))
            if rec.kind == "event" and data is not None]
    assert seen == tokens
