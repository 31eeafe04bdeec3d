"""The witness comparison and the forward-secure seal check of the monitor, on a log written
with checkpoints, a directory witness and forward-secure sealing (tests/test_proofs_cli.run_log)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.checkpoint import Checkpoint, split_note, write_key_pair
from pipeline.fss import FssSealer
from pipeline.hot.checkpoints import CheckpointStore
from pipeline.monitor.config import HotWatch, WitnessWatch
from pipeline.monitor.hot import StreamTrail, TrailState
from pipeline.monitor.witness import WitnessState, WitnessWatcher
from pipeline.witness import escape_origin

ORIGIN = "example.com/worm/app"


def run_log(tmp_path: Path) -> dict[str, Any]:
    """A log with a Merkle tile store, forward-secure seals, a checkpoint per segment and a
    directory witness that accepted each (as `pipeline run` with [signing] writes it)."""
    from pipeline.checkpoint import Signer
    from pipeline.hot.checkpoints import CheckpointEmitter
    from pipeline.hot.tree import TreeStore
    from pipeline.hot.writer import HotLog
    from pipeline.witness.directory import DirectoryWitness

    hot = tmp_path / "hot"
    stream_dir = hot / "app"
    vk = FssSealer.setup(stream_dir)
    signer = Signer.generate("example.com/worm")
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
    log.close()
    em.stop()  # the final checkpoint covers the close
    sizes.append(em.last_size)
    assert not em.errors
    return {"hot": hot, "signer": signer, "vk": vk, "sizes": sizes}


def _watcher(tmp_path: Path, env: dict[str, Any], max_lag: float = 300.0) -> WitnessWatcher:
    signer = env["signer"]
    _key, pub = write_key_pair(signer, tmp_path / "pub")
    opts = WitnessWatch(locations=(f"file://{tmp_path / 'witness'}",), vkey=pub, max_lag=max_lag)
    return WitnessWatcher(opts, env["hot"], WitnessState())


def _forge_witness(tmp_path: Path, env: dict[str, Any], size: int, root: bytes) -> None:
    """The witness's latest note replaced by one the log key signed for another view."""
    note = Checkpoint(ORIGIN, size, root).sign([env["signer"]])
    (tmp_path / "witness" / escape_origin(ORIGIN) / "latest.note").write_bytes(note)


def test_consistent_witness_and_valid_seals_find_nothing(tmp_path: Path) -> None:
    env = run_log(tmp_path)
    found, ok = _watcher(tmp_path, env).check("app")
    assert ok and found == []
    trail = StreamTrail(env["hot"], "app", HotWatch(rescan_active=0, fss_key=env["vk"].to_string()), 0.0,
                        TrailState())
    assert trail.cycle(None).findings == []


def test_fork_rollback_and_rewritten_tree_are_found(tmp_path: Path) -> None:
    env = run_log(tmp_path)
    sizes: list[int] = env["sizes"]
    w = _watcher(tmp_path, env)
    _forge_witness(tmp_path, env, sizes[0], b"\x11" * 32)
    codes = {f.code for f in w.check("app")[0]}
    assert {"checkpoint-fork", "witness-root-mismatch"} <= codes
    _forge_witness(tmp_path, env, sizes[-1] + 10, b"\x22" * 32)
    assert "checkpoint-rollback" in {f.code for f in w.check("app")[0]}
    latest = CheckpointStore(env["hot"] / "app").latest()
    assert latest is not None
    log_cp = Checkpoint.parse(split_note(latest)[0])
    _forge_witness(tmp_path, env, log_cp.size, b"\x33" * 32)
    assert "checkpoint-fork" in {f.code for f in w.check("app")[0]}


def test_witness_behind_for_longer_than_max_lag_is_stale(tmp_path: Path) -> None:
    env = run_log(tmp_path)
    sizes: list[int] = env["sizes"]
    from pipeline.checkpoint import open_checkpoint

    hist = CheckpointStore(env["hot"] / "app").by_size(sizes[0])
    assert hist is not None
    (tmp_path / "witness" / escape_origin(ORIGIN) / "latest.note").write_bytes(hist)
    assert open_checkpoint(hist, [env["signer"].verifier()])[0].size == sizes[0]
    w = _watcher(tmp_path, env, max_lag=0.2)
    assert "witness-stale" not in {f.code for f in w.check("app")[0]}  # behind since now
    import time

    time.sleep(0.3)
    stale = [f for f in w.check("app")[0] if f.code == "witness-stale"]
    assert stale and stale[0].seq == sizes[0] and stale[0].where.startswith("witness:file://")


def test_wrong_forward_secure_key_is_fss_invalid(tmp_path: Path) -> None:
    env = run_log(tmp_path)
    other = FssSealer.setup(tmp_path / "other")
    trail = StreamTrail(env["hot"], "app", HotWatch(rescan_active=0, fss_key=other.to_string()), 0.0,
                        TrailState())
    found = trail.cycle(None).findings
    assert found and {f.code for f in found} == {"fss-invalid"}


def test_a_seal_stripped_of_its_forward_secure_mac_is_fss_invalid(tmp_path: Path) -> None:
    """The newest seal re-written without its MAC (and re-hashed, so the chain holds): once
    forward-secure sealing began, a seal without it is a failure, not an older format."""
    import orjson

    from pipeline.format.record import encode_record, parse_record
    from pipeline.hot import attr
    from pipeline.hot.segment import list_segments

    env = run_log(tmp_path)
    path = list_segments(env["hot"] / "app")[-1]
    lines = path.read_bytes().splitlines(keepends=True)
    seal, before = parse_record(lines[-1]), parse_record(lines[-2])
    assert seal.kind == "seal" and "fss" in seal.data
    data = {k: v for k, v in seal.data.items() if k != "fss"}
    line, _ = encode_record(seal.stream, seal.seq, seal.ts.encode(), seal.kind, before.hash.encode(),
                            orjson.dumps(data))
    attr.clear_protection(path)
    path.write_bytes(b"".join(lines[:-1]) + line)
    trail = StreamTrail(env["hot"], "app", HotWatch(rescan_active=0, fss_key=env["vk"].to_string()), 0.0,
                        TrailState())
    found = trail.cycle(None).findings
    assert [(f.code, f.segment) for f in found] == [("fss-invalid", path.name)], [f.to_dict() for f in found]
