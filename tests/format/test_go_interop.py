"""Interoperability with Go's golang.org/x/mod/sumdb/note and sumdb/tlog.

Needs the Debian packages golang-go and golang-golang-x-mod-dev (the x/mod source under
/usr/share/gocode/src/golang.org/x/mod); tests/go/go.mod points a replace directive there,
so the build is offline (GOPROXY=off).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pipeline import merkle
from pipeline.checkpoint import Checkpoint, Signer
from pipeline.record import GENESIS_HASH, encode_record

pytestmark = pytest.mark.tools  # Go and golang.org/x/mod from Debian

GO_DIR = Path(__file__).resolve().parents[1] / "go"
XMOD = Path("/usr/share/gocode/src/golang.org/x/mod/sumdb/note")


def _build(tmp: Path) -> Path:
    go = shutil.which("go")
    if go is None:
        pytest.fail("go toolchain absent: run tools/install-test-deps.sh (golang-go golang-golang-x-mod-dev)")
    if not XMOD.is_dir():
        pytest.fail("golang.org/x/mod source absent: run tools/install-test-deps.sh (golang-golang-x-mod-dev)")
    env = dict(os.environ, GOFLAGS="-mod=mod", GOPROXY="off", GOPATH=str(tmp / "gopath"),
               GOCACHE=str(tmp / "gocache"), CGO_ENABLED="0")
    out = tmp / "interop"
    subprocess.run([go, "build", "-o", str(out), "./interop"], cwd=GO_DIR, env=env, check=True,
                   capture_output=True, timeout=300)
    return out


def test_go_verifies_checkpoints_and_proofs(tmp_path: Path) -> None:
    binary = _build(tmp_path)
    signer = Signer.generate("example.com/worm")
    prev = GENESIS_HASH.encode()
    leaves = []
    for seq in range(300):
        line, prev = encode_record("app", seq, b"2026-01-01T00:00:00.000000Z", "event", prev, b'{"n":%d}' % seq)
        leaves.append(line[:-1])
    hashes = [merkle.leaf_hash(x) for x in leaves]
    sub = merkle.subtree_from_leaf_hashes(hashes)

    def note(n: int) -> str:
        return Checkpoint("example.com/worm/app", n, merkle.root_from_leaf_hashes(hashes[:n])).sign(
            [signer]).decode()

    import base64
    inclusion: list[dict[str, Any]] = []
    for idx, size in [(0, 1), (0, 300), (5, 7), (255, 256), (256, 300), (299, 300), (100, 129)]:
        inclusion.append({"index": idx, "tree_size": size, "leaf": base64.b64encode(leaves[idx]).decode(),
                          "hashes": [h.hex() for h in merkle.inclusion_proof(idx, size, sub)],
                          "checkpoint": note(size)})
    must_fail = [dict(inclusion[1], leaf=base64.b64encode(leaves[1]).decode()),
                 dict(inclusion[2], hashes=["00" * 32, *inclusion[2]["hashes"][1:]])]
    consistency = []
    for old, new in [(1, 300), (6, 8), (100, 257), (256, 300), (299, 300)]:
        consistency.append({"old_size": old, "size": new,
                            "hashes": [h.hex() for h in merkle.consistency_proof(old, new, sub)],
                            "old_checkpoint": note(old), "checkpoint": note(new)})
    spec = {"vkey": signer.verifier().to_string(), "signer": signer.to_string(),
            "inclusion": inclusion, "consistency": consistency, "must_fail": must_fail}
    path = tmp_path / "input.json"
    path.write_text(json.dumps(spec))
    res = subprocess.run([str(binary), str(path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("ok: 7 inclusion, 5 consistency, 2 rejected")
