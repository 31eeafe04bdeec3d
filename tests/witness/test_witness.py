"""Witnesses: the tlog-witness server over real HTTP, the directory witness and the S3 witness."""

from __future__ import annotations

import hashlib
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline import merkle
from pipeline.checkpoint import Checkpoint, Signer, add_signature_lines, open_note
from pipeline.witness import WitnessError
from pipeline.witness.directory import DirectoryWitness
from pipeline.witness.http import HttpWitness, request_body
from pipeline.witness.server import Trust, WitnessState, make_server

LEAVES = [hashlib.sha256(b"leaf %d" % i).digest() for i in range(64)]
FORKED = LEAVES[:3] + [hashlib.sha256(b"evil %d" % i).digest() for i in range(3, 64)]


def prove_over(leaves: list[bytes]):  # type: ignore[no-untyped-def]
    sub = merkle.subtree_from_leaf_hashes(leaves)
    return lambda old, new: merkle.consistency_proof(old, new, sub)


def cp(leaves: list[bytes], n: int, origin: str = "example.com/worm/app") -> Checkpoint:
    return Checkpoint(origin, n, merkle.root_from_leaf_hashes(leaves[:n]))


@pytest.fixture
def log_key() -> Signer:
    return Signer.generate("example.com/worm")


@pytest.fixture
def witness(tmp_path: Path, log_key: Signer) -> Iterator[tuple[str, Signer, Path]]:
    wkey = Signer.generate("witness.example/w1", cosigner=True)
    state = WitnessState(tmp_path / "wstate", wkey,
                         [Trust(log_key.verifier(), "example.com/worm/app")])
    srv = make_server(state, "127.0.0.1", 0)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", wkey, tmp_path / "wstate"
    finally:
        srv.shutdown()
        srv.server_close()


def post(url: str, body: bytes) -> tuple[int, str, str]:
    req = urllib.request.Request(url + "/add-checkpoint", data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def test_http_witness_cosigns_and_refuses_fork_and_bad_proof(witness: tuple[str, Signer, Path],
                                                             log_key: Signer) -> None:
    url, wkey, state_dir = witness
    c10 = cp(LEAVES, 10)
    n10 = c10.sign([log_key])
    status, _, body = post(url, request_body(0, [], n10))
    assert status == 200
    opened = open_note(add_signature_lines(n10, [body]), [log_key.verifier(), wkey.verifier()])
    assert len(opened.cosigned) == 1
    assert (state_dir / "example.com%2Fworm%2Fapp.note").read_bytes() == n10  # durable state

    # wrong old size -> 409 with the witness's size
    c30 = cp(LEAVES, 30)
    n30 = c30.sign([log_key])
    status, ctype, body = post(url, request_body(0, [], n30))
    assert (status, ctype, body) == (409, "text/x.tlog.size", "10\n")
    # a fork: same old size, proof from the forked history -> 422
    forked = cp(FORKED, 30).sign([log_key])
    status, _, _ = post(url, request_body(10, prove_over(FORKED)(10, 30), forked))
    assert status == 422
    # garbage proof -> 422
    status, _, _ = post(url, request_body(10, [bytes(32)] * 3, n30))
    assert status == 422
    # same size, different root -> 409
    other10 = cp(FORKED, 10)
    other10 = Checkpoint(other10.origin, 10, hashlib.sha256(b"x").digest())
    status, _, _ = post(url, request_body(10, [], other10.sign([log_key])))
    assert status == 409
    # untrusted key -> 403; unknown origin -> 404; malformed -> 400
    assert post(url, request_body(10, prove_over(LEAVES)(10, 30), c30.sign([Signer.generate("x")])))[0] == 403
    assert post(url, request_body(0, [], cp(LEAVES, 5, origin="other").sign([log_key])))[0] == 404
    assert post(url, b"old 01\n\n" + n30)[0] == 400
    assert (state_dir / "refused.log").read_text().count("\n") >= 2

    # the client: learns size 10 from a 409 and sends the right proof
    client = HttpWitness(url, verifiers=[wkey.verifier()])
    lines = client.add_checkpoint(n30, c30, prove_over(LEAVES))
    assert len(lines) == 1
    with pytest.raises(WitnessError) as exc:
        client.add_checkpoint(cp(FORKED, 40).sign([log_key]), cp(FORKED, 40), prove_over(FORKED))
    assert exc.value.status == 422 and exc.value.fork


def test_witness_serve_cli_parses(tmp_path: Path) -> None:
    from pipeline.cli import build_parser
    args = build_parser().parse_args(["witness", "serve", "--dir", str(tmp_path), "--listen", "127.0.0.1:0",
                                      "--key", "w.key", "--trust", "app=log.pub", "--trust", "log2.pub"])
    assert args.trust == ["app=log.pub", "log2.pub"]


def test_directory_witness_refuses_rollback_and_fork(tmp_path: Path, log_key: Signer) -> None:
    w = DirectoryWitness(tmp_path / "w", verifiers=[log_key.verifier()])
    prove = prove_over(LEAVES)
    for n in (5, 17, 40):
        w.add_checkpoint(cp(LEAVES, n).sign([log_key]), cp(LEAVES, n), prove)
    with pytest.raises(WitnessError, match="rollback"):
        w.add_checkpoint(cp(LEAVES, 30).sign([log_key]), cp(LEAVES, 30), prove)
    with pytest.raises(WitnessError, match="FORK") as exc:
        w.add_checkpoint(cp(FORKED, 50).sign([log_key]), cp(FORKED, 50), prove_over(FORKED))
    assert exc.value.fork
    notes = w.checkpoints("example.com/worm/app")
    assert [Checkpoint.parse(n.split(b"\n\n")[0] + b"\n").size for n in notes] == [5, 17, 40]
    latest = w.latest("example.com/worm/app")
    assert latest is not None and latest[0].size == 40


def test_s3_witness_create_only(log_key: Signer) -> None:
    boto3 = pytest.importorskip("boto3")
    server_mod = pytest.importorskip("moto.server")
    srv = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    try:
        host, port = srv.get_host_and_port()
        s3 = boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
        s3.create_bucket(Bucket="witness")
        from pipeline.witness.s3 import S3Witness
        w = S3Witness(s3, "witness", "logs/w1")
        prove = prove_over(LEAVES)
        w.add_checkpoint(cp(LEAVES, 8).sign([log_key]), cp(LEAVES, 8), prove)
        w.add_checkpoint(cp(LEAVES, 20).sign([log_key]), cp(LEAVES, 20), prove)
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="witness")["Contents"]]
        assert keys == ["logs/w1/example.com%2Fworm%2Fapp/00000000000000000008",
                        "logs/w1/example.com%2Fworm%2Fapp/00000000000000000020"]
        with pytest.raises(WitnessError, match="FORK"):
            w.add_checkpoint(cp(FORKED, 30).sign([log_key]), cp(FORKED, 30), prove_over(FORKED))
        with pytest.raises(WitnessError, match="rollback"):
            w.add_checkpoint(cp(LEAVES, 9).sign([log_key]), cp(LEAVES, 9), prove)
        # create-only: an existing size cannot be overwritten with another root
        w2 = S3Witness(s3, "witness", "logs/w1")
        other = Checkpoint("example.com/worm/app", 20, bytes(32))
        with pytest.raises(WitnessError, match="FORK"):
            w2.add_checkpoint(other.sign([log_key]), other, lambda a, b: [])
        assert len(w.checkpoints("example.com/worm/app")) == 2
    finally:
        srv.stop()
