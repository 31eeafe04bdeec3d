"""Forward-secure seals: evolution, erasure, and the stolen-key-at-epoch-5 attack."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from pipeline import fss
from pipeline.cli import main
from pipeline.fss import FssSealer, FssVerifier, VerificationKey, verify_fss_seal

START = 1_800_000_000
INTERVAL = 900


class Clock:
    def __init__(self) -> None:
        self.t = float(START)

    def __call__(self) -> float:
        return self.t


def seal_data(n: int) -> dict[str, Any]:
    return {"segment": f"seg-{n:020d}.jsonl", "merkle_root": hashlib.sha256(b"m%d" % n).hexdigest(),
            "tree_size": 100 * n, "tree_root": hashlib.sha256(b"t%d" % n).hexdigest()}


def ts(t: float) -> str:
    import time
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".000000Z"


def test_key_evolution_bytes() -> None:
    k0 = bytes(32)
    assert fss.evolve(k0) == hashlib.sha256(b"worm-pipeline fss evolve" + k0).digest()
    assert fss.seal_key0(k0) == hashlib.sha256(b"worm-pipeline fss seal" + k0).digest()


def test_setup_state_mode_and_no_k0_on_disk(tmp_path: Path) -> None:
    vk = FssSealer.setup(tmp_path, interval=INTERVAL, start=START)
    state = tmp_path / "fss" / "state.json"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    text = state.read_text()
    assert vk.k0.hex() not in text
    with pytest.raises(fss.FssError):
        FssSealer.setup(tmp_path)
    assert VerificationKey.from_string(vk.to_string()) == vk


def test_seals_verify_and_keys_are_erased(tmp_path: Path) -> None:
    clock = Clock()
    vk = FssSealer.setup(tmp_path, interval=INTERVAL, start=START)
    sealer = FssSealer(tmp_path, clock=clock)
    seen_keys = set()
    verifier = FssVerifier(vk)
    for n in range(8):
        clock.t = START + n * 400  # two seals in some epochs, none in others
        data = seal_data(n)
        data["fss"] = sealer(dict(data))
        seen_keys.add(json.loads((tmp_path / "fss" / "state.json").read_text())["seal_key"])
        assert verifier.check(data, ts(clock.t)) is None
        assert verify_fss_seal(vk.to_string(), data, ts(clock.t)) is None
        # the key that made this MAC is no longer in the state file
        used = verifier.seal_key(data["fss"]["epoch"], data["fss"]["index"]).hex()
        assert used not in (tmp_path / "fss" / "state.json").read_text()
    assert len(seen_keys) == 8
    assert not list((tmp_path / "fss").glob("*.tmp"))


def test_stolen_key_at_epoch_5_cannot_reseal_epoch_2(tmp_path: Path) -> None:
    clock = Clock()
    vk = FssSealer.setup(tmp_path, interval=INTERVAL, start=START)
    sealer = FssSealer(tmp_path, clock=clock)
    seals = []
    for epoch in range(6):
        clock.t = START + epoch * INTERVAL + 10
        data = seal_data(epoch)
        data["fss"] = sealer(dict(data))
        seals.append((data, ts(clock.t)))
    assert seals[2][0]["fss"]["epoch"] == 2
    # the attacker copies the key file now (epoch 5, after the epoch-5 seal)
    stolen = json.loads((tmp_path / "fss" / "state.json").read_text())
    assert stolen["epoch"] == 5

    # 1. alter segment 2 and recompute its MAC with the only keys the attacker can derive
    forged, forged_ts = dict(seals[2][0]), seals[2][1]
    forged["merkle_root"] = hashlib.sha256(b"evil").hexdigest()
    key = bytes.fromhex(stolen["seal_key"])
    for guess_epoch, guess_index in [(2, 0), (5, 1), (5, 0)]:
        forged["fss"] = {"epoch": guess_epoch, "index": guess_index,
                         "mac": fss.compute_mac(key, guess_epoch, guess_index, forged)}
        problem = verify_fss_seal(vk, forged, forged_ts)
        assert problem is not None, (guess_epoch, guess_index)

    # 2. re-seal with the stolen key under its true position (epoch 5, index 1): the MAC
    #    verifies, but the seal's time lies in epoch 2's window ...
    forged["fss"] = {"epoch": 5, "index": 1, "mac": fss.compute_mac(key, 5, 1, forged)}
    assert "window" in (verify_fss_seal(vk, forged, forged_ts) or "")
    # ... and moving its timestamp into epoch 5 breaks the order with seals 3 and 4
    v = FssVerifier(vk)
    results = [v.check(d, t) for d, t in [seals[0], seals[1], (forged, ts(START + 5 * INTERVAL + 20)),
                                         seals[3]]]
    assert results[:3] == [None, None, None]
    assert results[3] is not None and "does not follow" in results[3]

    # 3. epochs before the theft are beyond reach: the state holds only S(5,1) and K(6)
    k5 = FssVerifier(vk).epoch_key(5)
    assert stolen["next_epoch_key"] == fss.evolve(k5).hex()
    assert all(FssVerifier(vk).epoch_key(e).hex() not in json.dumps(stolen) for e in range(6))


def test_tick_advances_without_seals(tmp_path: Path) -> None:
    clock = Clock()
    vk = FssSealer.setup(tmp_path, interval=INTERVAL, start=START)
    sealer = FssSealer(tmp_path, clock=clock)
    clock.t = START + 3 * INTERVAL
    sealer.tick()
    assert sealer.epoch == 3
    data = seal_data(1)
    data["fss"] = sealer(dict(data))
    assert data["fss"]["epoch"] == 3
    assert verify_fss_seal(vk, data, ts(clock.t)) is None


def test_fss_setup_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fss-setup", "--hot", str(tmp_path), "--stream", "app"]) == 0
    out = capsys.readouterr().out
    key_line = next(line for line in out.splitlines() if line.startswith("fss-v1:"))
    VerificationKey.from_string(key_line)
    assert main(["fss-setup", "--hot", str(tmp_path), "--stream", "app"]) == 2
