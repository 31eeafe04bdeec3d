"""End to end with a real HotLog: tree store, FSS seals, checkpoints, witness, prove / verify-proof,
and a chain rebuilt after a witnessed checkpoint being caught."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline import merkle
from pipeline.checkpoint import Signer, open_checkpoint
from pipeline.cli import main
from pipeline.fss import FssSealer, FssVerifier
from pipeline.hot.checkpoints import CheckpointEmitter, CheckpointStore
from pipeline.hot.segment import list_segments
from pipeline.hot.tree import TreeStore
from pipeline.hot.writer import HotLog
from pipeline.proofs import verify_against_witnesses
from pipeline.record import GENESIS_HASH, SUFFIX_LEN, encode_record, parse_record
from pipeline.witness.directory import DirectoryWitness

ORIGIN = "example.com/worm/app"


def run_log(tmp_path: Path, keydir: Path) -> dict[str, Any]:
    hot = tmp_path / "hot"
    stream_dir = hot / "app"
    vk = FssSealer.setup(stream_dir)
    assert main(["keygen", "--name", "example.com/worm", "--out", str(keydir)]) == 0
    from pipeline.checkpoint import load_signer
    signer = load_signer(keydir / "example.com_worm.key")
    tree = TreeStore(stream_dir)
    sealer = FssSealer(stream_dir)
    log = HotLog(hot, "app", tree_store=tree, seal_extension=sealer, immutable="off")
    witness = DirectoryWitness(tmp_path / "witness", verifiers=[signer.verifier()])
    em = CheckpointEmitter(log, stream_dir, signer, tree_store=tree, origin=ORIGIN, witnesses=[witness],
                           interval=3600, fss_tick=sealer.tick).start()
    sizes = []
    for batch in range(3):
        for i in range(300 + 50 * batch):
            log.append({"batch": batch, "i": i, "msg": "x" * (i % 40)})
        log.seal()
        em.emit()
        sizes.append(em.last_size)
    for i in range(10):
        log.append({"tail": i})
    log.close()
    em.stop()  # final checkpoint covers the close seal
    sizes.append(em.last_size)
    return {"hot": hot, "stream_dir": stream_dir, "signer": signer, "vk": vk, "witness": witness,
            "sizes": sizes, "tree": tree, "errors": list(em.errors)}


def test_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = run_log(tmp_path, tmp_path / "keys")
    hot, stream_dir, signer = env["hot"], env["stream_dir"], env["signer"]
    assert env["errors"] == []
    pub = str(tmp_path / "keys" / "example.com_worm.pub")
    sizes = env["sizes"]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    capsys.readouterr()

    # the latest checkpoint verifies and matches a tree recomputed from the segments
    assert main(["checkpoint", "--hot", str(hot), "--stream", "app"]) == 0
    note = capsys.readouterr().out.encode()
    cp, _ = open_checkpoint(note, [signer.verifier()], origin=ORIGIN)
    lines = [ln[:-1] for p in list_segments(stream_dir) for ln in p.read_bytes().splitlines(keepends=True)]
    assert cp.size == len(lines) == sizes[-1]
    assert cp.root == merkle.root_from_leaves(lines)

    # inclusion proofs through the CLI, checked offline
    for seq in (0, 17, 255, 256, sizes[0] - 1, cp.size - 1):
        assert main(["prove", "--hot", str(hot), "--stream", "app", "--seq", str(seq)]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["index"] == seq and doc["tree_size"] == cp.size
        assert base64.b64decode(doc["leaf"]) == lines[seq]
        path = tmp_path / f"p{seq}.json"
        path.write_text(json.dumps(doc))
        assert main(["verify-proof", "--vkey", pub, str(path)]) == 0
        assert capsys.readouterr().out.startswith("VALID")
    # against an older checkpoint of an exact size
    assert main(["prove", "--hot", str(hot), "--stream", "app", "--seq", "5", "--size", str(sizes[0])]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["tree_size"] == sizes[0]
    # altered leaf / index / hash / size -> exit 1; unreadable -> exit 2
    mutations: list[Callable[[dict[str, Any]], object]] = [
                   lambda d: d.update(leaf=base64.b64encode(lines[6]).decode()),
                   lambda d: d.update(index=6),
                   lambda d: d["hashes"].__setitem__(0, "00" * 32),
                   lambda d: d.update(tree_size=d["tree_size"] + 1)]
    for mutate in mutations:
        bad = json.loads(json.dumps(doc))
        mutate(bad)
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        assert main(["verify-proof", "--vkey", pub, str(tmp_path / "bad.json")]) == 1
    other = Signer.generate("example.com/worm")
    (tmp_path / "other.pub").write_text(other.verifier().to_string())
    (tmp_path / "good.json").write_text(json.dumps(doc))
    assert main(["verify-proof", "--vkey", str(tmp_path / "other.pub"), str(tmp_path / "good.json")]) == 1
    assert main(["verify-proof", "--vkey", pub, str(tmp_path / "missing.json")]) == 2
    # seq not yet covered by a checkpoint
    assert main(["prove", "--hot", str(hot), "--stream", "app", "--seq", str(cp.size)]) == 2

    # consistency proofs
    capsys.readouterr()
    assert main(["prove", "--hot", str(hot), "--stream", "app", "--from-size", str(sizes[0]),
                 "--to-size", str(sizes[2])]) == 0
    cdoc = json.loads(capsys.readouterr().out)
    assert (cdoc["old_size"], cdoc["size"]) == (sizes[0], sizes[2])
    (tmp_path / "c.json").write_text(json.dumps(cdoc))
    assert main(["verify-proof", "--vkey", pub, str(tmp_path / "c.json")]) == 0
    cdoc["hashes"][-1] = "11" * 32
    (tmp_path / "c.json").write_text(json.dumps(cdoc))
    assert main(["verify-proof", "--vkey", pub, str(tmp_path / "c.json")]) == 1

    # every seal carries a valid forward-secure MAC, in order
    fv = FssVerifier(env["vk"])
    seals = [parse_record(ln + b"\n") for ln in lines if b'"kind":"seal"' in ln]
    assert len(seals) == 4
    for rec in seals:
        assert fv.check(rec.data, rec.ts) is None
        assert rec.data["tree_size"] == rec.seq  # seal covers the leaves before it

    # history of checkpoints; the witness holds every one of them
    assert CheckpointStore(stream_dir).sizes() == sizes
    witnessed = env["witness"].checkpoints(ORIGIN)
    assert len(witnessed) == 4
    assert verify_against_witnesses(stream_dir, witnessed, signer.verifier()) == []


def rebuild_chain(stream_dir: Path, target_seq: int) -> None:
    """The attacker's rewrite: change one event and re-hash every later record, so the hash
    chain alone is valid again."""
    prev = GENESIS_HASH.encode()
    for path in list_segments(stream_dir):
        out = []
        for line in path.read_bytes().splitlines(keepends=True):
            rec = parse_record(line)
            data_json = line[line.index(b',"data":') + 8 : len(line) - SUFFIX_LEN]
            if rec.seq == target_seq:
                data_json = b'{"i":0,"msg":"nothing to see here"}'
            new, prev = encode_record(rec.stream, rec.seq, rec.ts.encode(), rec.kind, prev, data_json)
            out.append(new)
        path.write_bytes(b"".join(out))


def test_rewrite_after_witnessed_checkpoint_is_caught(tmp_path: Path) -> None:
    env = run_log(tmp_path, tmp_path / "keys")
    stream_dir, signer = env["stream_dir"], env["signer"]
    witnessed = env["witness"].checkpoints(ORIGIN)
    rebuild_chain(stream_dir, target_seq=42)
    # the attacker even re-signs a fresh checkpoint with the stolen key: the witness still has the old ones
    findings = verify_against_witnesses(stream_dir, witnessed, signer.verifier())
    assert {f.code for f in findings} == {"witness-root-mismatch"}
    assert {f.seq for f in findings} == set(env["sizes"])  # a checkpoint finding's seq is its tree size
    assert "rewritten after they were witnessed" in findings[0].message

    # and a truncated log is caught too
    segs = list_segments(stream_dir)
    segs[-1].unlink()
    codes = [f.code for f in verify_against_witnesses(stream_dir, witnessed, signer.verifier())]
    assert "witness-ahead" in codes


def test_seal_listener_emits_in_background(tmp_path: Path) -> None:
    hot = tmp_path / "hot"
    tree = TreeStore(hot / "app")
    log = HotLog(hot, "app", tree_store=tree, immutable="off")
    signer = Signer.generate("k")
    em = CheckpointEmitter(log, hot / "app", signer, tree_store=tree, interval=3600).start()
    for i in range(20):
        log.append({"i": i})
    log.seal()
    deadline = time.monotonic() + 10
    while em.last_size != 21 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert em.last_size == 21
    log.close()
    em.stop(final=False)


def test_seal_checkpoint_lands_on_the_seal_even_when_the_thread_runs_late(tmp_path: Path) -> None:
    """The emitter thread may run after more records became durable; the checkpoint it signs
    for a seal must still be the head right after that seal (a segment boundary)."""
    from pipeline.hot.writer import SealInfo

    leaves = [b"leaf %d" % i for i in range(40)]

    class FakeLog:
        stream = "app"

        def __init__(self) -> None:
            self.listeners: list[Any] = []

        def add_seal_listener(self, fn: Any) -> None:
            self.listeners.append(fn)

        def durable_tree_head(self) -> tuple[int, bytes]:
            return 40, merkle.root_from_leaves(leaves)  # the writer has moved on

    fake = FakeLog()
    signer = Signer.generate("k")
    em = CheckpointEmitter(fake, tmp_path / "app", signer, interval=3600)
    em.start()
    seal = SealInfo("app", tmp_path / "seg", 20, 21, merkle.root_from_leaves(leaves[:21]))
    fake.listeners[0](seal)
    deadline = time.monotonic() + 10
    while em.last_size < 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    em.stop(final=False)
    assert em.last_size == 21
    cp, _ = open_checkpoint(CheckpointStore(tmp_path / "app").latest() or b"", [signer.verifier()])
    assert (cp.size, cp.root) == (21, merkle.root_from_leaves(leaves[:21]))
    # an older seal arriving after a newer checkpoint never signs a smaller tree
    assert em._emit_head(21, seal.tree_root_after) is None
    assert em.emit() is not None and em.last_size == 40
