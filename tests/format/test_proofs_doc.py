"""The worked example in docs/PROOFS.md is recomputed here from the code and must appear verbatim."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from pipeline import fss, merkle
from pipeline.checkpoint import Checkpoint, Signer
from pipeline.record import GENESIS_HASH, encode_record
from pipeline.witness.http import request_body


def example() -> dict[str, Any]:
    out: dict[str, Any] = {}
    signer = Signer("example.com/worm", 0x01, bytes(range(32)))
    witness = Signer("witness.example/w1", 0x04, bytes(range(32, 64)))
    out["vkey"] = signer.verifier().to_string()
    out["skey"] = signer.to_string()
    out["wvkey"] = witness.verifier().to_string()
    prev = GENESIS_HASH.encode()
    lines = []
    for seq in range(3):
        line, prev = encode_record("app", seq, b"2026-01-01T00:00:0%d.000000Z" % seq, "event", prev,
                                   b'{"user":"alice","n":%d}' % seq)
        lines.append(line[:-1])
    out["lines"] = b"\n".join(lines).decode()
    hashes = [merkle.leaf_hash(x) for x in lines]
    sub = merkle.subtree_from_leaf_hashes(hashes)
    cp3 = Checkpoint("example.com/worm/app", 3, merkle.root_from_leaf_hashes(hashes))
    note3 = cp3.sign([signer])
    out["note3"] = note3.decode()
    proof = {"index": 1, "tree_size": 3, "leaf": base64.b64encode(lines[1]).decode(),
             "hashes": [h.hex() for h in merkle.inclusion_proof(1, 3, sub)], "checkpoint": note3.decode()}
    out["inclusion"] = json.dumps(proof, indent=2)
    cons = merkle.consistency_proof(2, 3, sub)
    out["witness_request"] = request_body(2, cons, note3).decode()
    out["cosig"] = witness.cosignature_line(cp3.body(), timestamp=1767225600).rstrip("\n")
    k0 = bytes(32)
    seal = {"merkle_root": hashlib.sha256(b"segment").hexdigest(), "tree_root": cp3.root.hex(), "tree_size": 3}
    sk = fss.seal_key0(fss.evolve(fss.evolve(k0)))  # epoch 2, index 0
    out["fss_key"] = fss.VerificationKey(1767225600, 900, k0).to_string()
    out["fss_seal_key"] = sk.hex()
    out["fss_msg"] = fss.mac_message(2, 0, seal).hex()
    out["fss_mac"] = fss.compute_mac(sk, 2, 0, seal)
    out["fss_seal"] = json.dumps(seal)
    return out


def test_worked_example_matches_doc() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "PROOFS.md").read_text()
    for key, value in example().items():
        assert value.rstrip("\n") in doc, f"docs/PROOFS.md is out of date for {key}"


def test_example_verifies() -> None:
    from pipeline.checkpoint import Verifier
    from pipeline.proofs import verify_proof_document

    ex = example()
    assert verify_proof_document(json.loads(ex["inclusion"]), [Verifier.from_string(ex["vkey"])]) is None
