"""A ciphertext moved, swapped or replayed -- even by someone who re-chains every hash -- does
not open; a tampered hot tier is refused before decryption; a wrong identity is refused with a
clear error (exit 2); verify passes without any key."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.cli import main
from pipeline.crypt.reader import OpenError, SegmentReader, load_identities, seal_segment_name
from pipeline.crypt.writer import EncryptionSettings
from pipeline.hot.factory import open_hotlog
from pipeline.hot.segment import list_segments
from pipeline.record import encode_record, parse_record
from tests.crypt.conftest import AgeKey, make_age_key

Data = dict[str, Any]


def write_log(hot: Path, key: AgeKey, *, segments: int = 2, per_segment: int = 6) -> None:
    with open_hotlog(hot, "app", heartbeat_interval=0, immutable="off",
                     encryption=EncryptionSettings((key.recipient,), clear_fields=("action",))) as log:
        for s in range(segments):
            for i in range(per_segment):
                log.append({"action": "read", "user": f"u{s}-{i}"})
            log.seal()


def forge(src: Path, dest_dir: Path, change: Callable[[list[Data]], None]) -> Path:
    """``src`` rewritten by someone who can re-chain: ``change`` edits the records' data, and
    every hash and prev link is recomputed (the seal is kept, only its links move)."""
    recs = [parse_record(line) for line in src.read_bytes().splitlines(keepends=True)]
    datas = [dict(r.data) for r in recs]
    change(datas)
    out, prev = [], recs[0].prev.encode()
    for r, d in zip(recs, datas, strict=True):
        line, prev = encode_record(r.stream, r.seq, r.ts.encode(), r.kind, prev, orjson.dumps(d))
        out.append(line)
    dest = dest_dir / src.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(b"".join(out))
    return dest


def read_all(path: Path, key: AgeKey) -> list[Data]:
    reader = SegmentReader(load_identities(key.identity_file))
    return [d for r, d in reader.records(path, seal_segment_name(path)) if r.kind == "event" and d is not None]


@pytest.fixture
def log_dir(tmp_path: Path, auditor: AgeKey) -> Path:
    hot = tmp_path / "hot"
    write_log(hot, auditor)
    return hot


def events_at(datas: list[Data]) -> list[int]:
    return [i for i, d in enumerate(datas) if "_enc" in d]


def swap(datas: list[Data]) -> None:
    a, b = events_at(datas)[1:3]
    datas[a]["_enc"], datas[b]["_enc"] = datas[b]["_enc"], datas[a]["_enc"]


def replay(datas: list[Data]) -> None:
    a, b = events_at(datas)[1:3]
    datas[b]["_enc"] = dict(datas[a]["_enc"])


def flip(datas: list[Data]) -> None:
    enc = datas[events_at(datas)[0]]["_enc"]
    ct = bytearray(enc["ct"].encode())
    ct[5] = ord("A") if ct[5] != ord("A") else ord("B")
    enc["ct"] = ct.decode()


def wrong_key_seq(datas: list[Data]) -> None:
    datas[events_at(datas)[0]]["_enc"]["key_seq"] += 1


def clear_field(datas: list[Data]) -> None:
    datas[events_at(datas)[0]]["action"] = "delete"


@pytest.mark.parametrize("change", [swap, replay, flip, wrong_key_seq, clear_field])
def test_rechained_tampering_does_not_open(log_dir: Path, tmp_path: Path, auditor: AgeKey,
                                           change: Callable[[list[Data]], None]) -> None:
    seg = list_segments(log_dir / "app")[0]
    assert len(read_all(seg, auditor)) == 6  # the untouched segment opens
    forged = forge(seg, tmp_path / "forged", change)
    with pytest.raises(OpenError):
        read_all(forged, auditor)


def test_ciphertext_moved_to_another_segment_does_not_open(log_dir: Path, tmp_path: Path, auditor: AgeKey) -> None:
    first, second = list_segments(log_dir / "app")
    theirs = [parse_record(ln).data for ln in second.read_bytes().splitlines(keepends=True)]

    def move(datas: list[Data]) -> None:
        # the same position relative to its key record, so only the seed and segment differ
        mine, other = events_at(datas), [i for i, d in enumerate(theirs) if "_enc" in d]
        enc = dict(theirs[other[0]]["_enc"])
        enc["key_seq"] = datas[mine[0]]["_enc"]["key_seq"]
        datas[mine[0]]["_enc"] = enc

    with pytest.raises(OpenError):
        read_all(forge(first, tmp_path / "forged", move), auditor)


def test_tampered_hot_tier_is_refused_before_decrypting(log_dir: Path, auditor: AgeKey,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "--hot", str(log_dir)]) == 0  # no key needed
    seg = list_segments(log_dir / "app")[0]
    raw = bytearray(seg.read_bytes())
    at = raw.index(b'"ct":"') + 10
    raw[at] = ord("A") if raw[at] != ord("A") else ord("B")
    seg.write_bytes(bytes(raw))
    capsys.readouterr()
    assert main(["decrypt", "--identity", str(auditor.identity_file), "--hot", str(log_dir)]) == 1
    out = capsys.readouterr()
    assert out.out == "" and "nothing was decrypted" in out.err


def test_wrong_identity_is_refused_with_a_clear_error(log_dir: Path, tmp_path: Path, auditor: AgeKey,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    other = make_age_key(tmp_path / "other.key")
    capsys.readouterr()
    assert main(["decrypt", "--identity", str(other.identity_file), "--hot", str(log_dir)]) == 2
    err = capsys.readouterr().err
    assert "not a recipient" in err and auditor.recipient in err and other.recipient in err
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key\n")
    assert main(["decrypt", "--identity", str(garbage), "--hot", str(log_dir)]) == 2
    assert "not an age X25519 identity" in capsys.readouterr().err
    assert main(["decrypt", "--identity", str(tmp_path / "missing.key"), "--hot", str(log_dir)]) == 2


def test_decrypt_filters_and_reads_exported_files(log_dir: Path, tmp_path: Path, auditor: AgeKey,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    exported = tmp_path / "exported"
    exported.mkdir()
    for p in list_segments(log_dir / "app"):
        shutil.copy(p, exported / p.name)
    capsys.readouterr()
    files = [str(p) for p in sorted(exported.iterdir())]
    assert main(["decrypt", "--identity", str(auditor.identity_file), *files, "--match", "user=u1-3"]) == 0
    lines = [orjson.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert [ln["data"] for ln in lines] == [{"action": "read", "user": "u1-3"}]
    assert main(["decrypt", "--identity", str(auditor.identity_file), *files, "--from", "2000-01-01",
                 "--to", "2001-01-01"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["decrypt", "--identity", str(auditor.identity_file), files[1]]) == 0  # a later segment alone
    assert len(capsys.readouterr().out.splitlines()) == 6


def test_forging_without_a_change_still_opens(log_dir: Path, tmp_path: Path, auditor: AgeKey) -> None:
    """The forger's re-chaining alone breaks nothing: the failures above are the ciphertext's."""
    seg = list_segments(log_dir / "app")[0]
    assert read_all(forge(seg, tmp_path / "forged", lambda datas: None), auditor) == read_all(seg, auditor)


def test_export_with_identity_from_the_hot_tier(log_dir: Path, tmp_path: Path, auditor: AgeKey,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["export", "--hot", str(log_dir), "--identity", str(auditor.identity_file)]) == 0
    lines = [orjson.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert [ln["data"]["user"] for ln in lines] == [f"u{s}-{i}" for s in range(2) for i in range(6)]
    other = make_age_key(tmp_path / "other.key")
    assert main(["export", "--hot", str(log_dir), "--identity", str(other.identity_file)]) == 2
    assert "not a recipient" in capsys.readouterr().err
    # without an identity, export still streams the verified (encrypted) records
    assert main(["export", "--hot", str(log_dir), "--match", "action=read"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 12


def test_the_independent_verifier_accepts_an_encrypted_log(log_dir: Path) -> None:
    """Written from FORMAT §1-§4 and §8 alone, without a key: the key records and ciphertext
    are ordinary records to it."""
    from tests.independent_verifier import verify

    assert verify(log_dir / "app") == []


def test_decrypt_says_how_many_events_it_opened_and_names_a_directory(
        tmp_path: Path, auditor: AgeKey, capsys: pytest.CaptureFixture[str]) -> None:
    """A stream written in clear before encryption was turned on passes through: the summary
    says how many events were opened and how many were stored in clear, not "decrypted" for
    all.  A directory given as a segment file is named as one (exit 2)."""
    hot = tmp_path / "hot"
    with open_hotlog(hot, "app", heartbeat_interval=0, immutable="off") as log:
        log.append_many([{"user": "before"}, {"user": "before"}])
        log.seal()
    with open_hotlog(hot, "app", heartbeat_interval=0, immutable="off",
                     encryption=EncryptionSettings((auditor.recipient,))) as log:
        log.append_many([{"user": f"after-{i}"} for i in range(3)])
    capsys.readouterr()
    assert main(["decrypt", "--identity", str(auditor.identity_file), "--hot", str(hot)]) == 0
    out, err = capsys.readouterr()
    assert [orjson.loads(ln)["data"]["user"] for ln in out.splitlines()] == ["before"] * 2 + [
        f"after-{i}" for i in range(3)]
    assert "5 event(s): 3 decrypted, 2 stored in clear" in err
    assert main(["decrypt", "--identity", str(auditor.identity_file), str(hot)]) == 2
    assert f"{hot}: a directory, not a segment file (for a hot tier: --hot {hot})" in capsys.readouterr().err
