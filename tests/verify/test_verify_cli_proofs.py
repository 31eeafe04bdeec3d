"""`pipeline verify` with forward-secure seals and directory witnesses, end to end via the CLI."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from pipeline.checkpoint import Signer, write_key_pair
from pipeline.hot import attr
from pipeline.hot.checkpoints import CheckpointEmitter
from pipeline.hot.factory import open_hotlog
from pipeline.hot.segment import list_segments
from pipeline.record import encode_record, parse_record
from pipeline.witness.directory import DirectoryWitness


def cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], input=stdin, capture_output=True, timeout=120)


def verify_json(*args: str) -> tuple[int, dict[str, Any]]:
    p = cli("verify", "--json", *args)
    return p.returncode, orjson.loads(p.stdout) if p.stdout else {}


def reasons(doc: dict[str, Any]) -> set[str]:
    return {f["reason"] for s in doc["streams"] for f in s["findings"]}


def rewrite_event(path: Path, seq: int, new_data: dict[str, Any]) -> None:
    """Alter one event and repair everything a hash chain alone can prove: later hashes,
    links and the seal's roots.  Keeps the old forward-secure MAC, which the attacker
    cannot recompute for an epoch whose key is erased."""
    from pipeline import merkle

    attr.clear_protection(path)
    recs = [parse_record(line) for line in path.read_bytes().splitlines(keepends=True)]
    out: list[bytes] = []
    prev = recs[0].prev.encode()
    seg = merkle.CompactRange()
    for rec in recs:
        data = rec.data
        if rec.seq == seq:
            data = new_data
        if rec.kind == "seal":
            data = dict(data, last_hash=prev.decode(), merkle_root=seg.root().hex())
        line, digest = encode_record(rec.stream, rec.seq, rec.ts.encode(), rec.kind, prev, orjson.dumps(data))
        if rec.kind != "seal":
            seg.append(merkle.leaf_hash(line[:-1]))
        out.append(line)
        prev = digest
    path.write_bytes(b"".join(out))


def test_fss_seals_verify_and_a_rewritten_segment_is_caught(hot_dir: Path) -> None:
    setup = cli("fss-setup", "--hot", str(hot_dir), "--stream", "app")
    assert setup.returncode == 0, setup.stderr
    key = re.search(rb"fss-v1:\d+:\d+:[0-9a-f]{64}", setup.stdout)
    assert key is not None
    vkey = key.group(0).decode()
    for batch in range(3):
        events = b"".join(orjson.dumps({"batch": batch, "i": i}) + b"\n" for i in range(20))
        p = cli("append", "--hot", str(hot_dir), "--stream", "app", "--seal", stdin=events)
        assert p.returncode == 0, p.stderr
    segs = list_segments(hot_dir / "app")
    assert len(segs) == 3
    assert all("fss" in parse_record(s.read_bytes().splitlines(keepends=True)[-1]).data for s in segs)
    code, doc = verify_json("--hot", str(hot_dir), "--fss-key", vkey)
    assert code == 0, doc
    # a single-segment rewrite that repairs every hash and root the chain can check ...
    rewrite_event(segs[0], 3, {"batch": 0, "i": 3, "note": "rewritten"})
    code, doc = verify_json("--hot", str(hot_dir))
    assert code == 1 and reasons(doc) <= {"seal-mismatch", "broken-link"}
    # ... is pinned on the forward-secure MAC of the seal
    code, doc = verify_json("--hot", str(hot_dir), "--fss-key", vkey)
    assert code == 1 and "fss-invalid" in reasons(doc)


def test_bad_fss_key_is_an_error_not_a_verdict(hot_dir: Path) -> None:
    cli("append", "--hot", str(hot_dir), "--stream", "app", "--seal", stdin=b'{"a":1}\n')
    p = cli("verify", "--hot", str(hot_dir), "--fss-key", "fss-v1:nonsense")
    assert p.returncode == 2
    assert b"fss-v1" in p.stderr


def witnessed_log(hot_dir: Path, tmp_path: Path, events: int) -> tuple[Path, Path]:
    """A sealed stream ``app`` of ``events`` events whose checkpoint a directory witness
    holds: (the log's verifier key file, the witness directory)."""
    signer = Signer.generate("example.com/log")
    _key_path, pub_path = write_key_pair(signer, tmp_path / "keys")
    witness_dir = tmp_path / "witness"
    log = open_hotlog(hot_dir, "app", heartbeat_interval=0)
    emitter = CheckpointEmitter(log, hot_dir / "app", signer, tree_store=log.tree_store,  # type: ignore[arg-type]
                                witnesses=[DirectoryWitness(witness_dir)], interval=3600)
    for i in range(events):
        log.append({"i": i}, wait=False)
    log.seal()
    assert emitter.emit(force=True) is not None
    log.close()
    return pub_path, witness_dir


def test_witnessed_checkpoint_catches_a_rebuilt_chain(hot_dir: Path, tmp_path: Path) -> None:
    pub_path, witness_dir = witnessed_log(hot_dir, tmp_path, 50)
    code, doc = verify_json("--hot", str(hot_dir), "--witness-dir", str(witness_dir), "--vkey", str(pub_path))
    assert code == 0, doc
    # rebuild the chain after the witnessed checkpoint: every hash, link and seal consistent
    seg = list_segments(hot_dir / "app")[0]
    rewrite_event(seg, 10, {"i": 10, "tampered": True})
    recs = [parse_record(x) for x in seg.read_bytes().splitlines(keepends=True)]
    assert recs[10].data == {"i": 10, "tampered": True}
    code, doc = verify_json("--hot", str(hot_dir), "--witness-dir", str(witness_dir), "--vkey", str(pub_path))
    assert code == 1 and "witness-mismatch" in reasons(doc)  # the v1 report's reason, kept
    # ... and the registry's precise code and severity beside it (docs/FORMAT.md §8.1)
    witness = [f for s in doc["streams"] for f in s["findings"] if f["reason"] == "witness-mismatch"]
    assert {(f["code"], f["severity"]) for f in witness} == {("witness-root-mismatch", "error")}
    assert all(set(f) >= {"stream", "segment", "reason", "message", "seq", "offset"} for f in witness)


def test_witness_dir_needs_vkey(hot_dir: Path, tmp_path: Path) -> None:
    cli("append", "--hot", str(hot_dir), "--stream", "app", "--seal", stdin=b'{"a":1}\n')
    p = cli("verify", "--hot", str(hot_dir), "--witness-dir", str(tmp_path))
    assert p.returncode == 2 and b"--vkey" in p.stderr


def test_a_witness_with_nothing_for_the_origin_is_no_green(hot_dir: Path, tmp_path: Path) -> None:
    """A witness directory that holds no checkpoint for the origin compared nothing: a wrong
    --origin (the writer's origins are <signing.origin>/<stream>) or an empty witness must
    not pass as a witness check (exit 2, naming what the directory does hold)."""
    pub_path, witness_dir = witnessed_log(hot_dir, tmp_path, 5)
    p = cli("verify", "--hot", str(hot_dir), "--witness-dir", str(witness_dir), "--vkey", str(pub_path),
            "--origin", "typo.example/app")
    assert p.returncode == 2, p.stdout + p.stderr
    assert b"holds no checkpoint for origin 'typo.example/app'" in p.stderr and b"--origin" in p.stderr
    empty = tmp_path / "empty-witness"
    empty.mkdir()
    p = cli("verify", "--hot", str(hot_dir), "--witness-dir", str(empty), "--vkey", str(pub_path))
    assert p.returncode == 2 and b"holds no checkpoint" in p.stderr, p.stderr
