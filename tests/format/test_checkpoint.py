"""Signed notes, checkpoints, cosignatures and key files."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from pipeline.checkpoint import (
    Checkpoint,
    NoteError,
    Signer,
    Verifier,
    add_signature_lines,
    key_id,
    load_signer,
    open_checkpoint,
    open_note,
    write_key_pair,
)
from pipeline.cli import main

# A fixed seed so the bytes below are reproducible; docs/PROOFS.md shows the same example.
SEED = bytes(range(32))


def test_key_strings_round_trip_and_key_id() -> None:
    s = Signer("example.com/worm", 0x01, SEED)
    v = s.verifier()
    assert Verifier.from_string(v.to_string()) == v
    assert Signer.from_string(s.to_string()).verifier() == v
    name, hash16, b64 = v.to_string().split("+", 2)
    raw = base64.b64decode(b64)
    assert raw[0] == 0x01 and len(raw) == 33
    assert int(hash16, 16) == key_id(name, 0x01, raw[1:])
    assert s.to_string().startswith("PRIVATE+KEY+example.com/worm+" + hash16 + "+")
    assert "PRIVATE" not in repr(s) and SEED.hex() not in repr(s)
    with pytest.raises(NoteError):
        Verifier.from_string(v.to_string().replace(hash16, "00000000"))
    with pytest.raises(NoteError):
        Signer.generate("has space")


def test_checkpoint_body_and_signature() -> None:
    s = Signer("example.com/worm", 0x01, SEED)
    cp = Checkpoint("example.com/worm/app", 3, bytes(range(32)))
    assert cp.body() == b"example.com/worm/app\n3\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
    note = cp.sign([s])
    _text, _, sigs = note.partition(b"\n\n")
    assert sigs.decode().startswith("— example.com/worm ")
    got, opened = open_checkpoint(note, [s.verifier()], origin="example.com/worm/app")
    assert got == cp and len(opened.verified) == 1
    assert Checkpoint.parse(cp.body()) == cp
    with pytest.raises(NoteError):
        open_checkpoint(note, [s.verifier()], origin="other")


def test_multiple_and_unknown_signatures() -> None:
    a, b, c = Signer.generate("a.example"), Signer.generate("b.example"), Signer.generate("c.example")
    note = Checkpoint("o", 1, bytes(32)).sign([a, b, c])
    opened = open_note(note, [a.verifier(), b.verifier()])
    assert {s.name for s in opened.verified} == {"a.example", "b.example"}
    assert [s.name for s in opened.unverified] == ["c.example"]
    with pytest.raises(NoteError, match="not signed by any trusted"):
        open_note(note, [Signer.generate("d.example").verifier()])
    # a known key whose signature fails rejects the whole note
    tampered = note.replace(b"\n1\n", b"\n2\n")
    with pytest.raises(NoteError, match="does not verify"):
        open_note(tampered, [a.verifier()])
    # same name, different key: ignored as unknown, not a failure
    imposter = Signer.generate("a.example")
    assert open_note(note, [imposter.verifier(), b.verifier()]).verified[0].name == "b.example"


def test_cosignature() -> None:
    log = Signer.generate("log.example")
    w = Signer.generate("witness.example/w1", cosigner=True)
    cp = Checkpoint("log.example/s", 10, bytes(32))
    note = cp.sign([log])
    line = w.cosignature_line(cp.body(), timestamp=1_700_000_000)
    raw = base64.b64decode(line.split(" ")[2])
    assert len(raw) == 4 + 8 + 64 and raw[4:12] == (1_700_000_000).to_bytes(8, "big")
    cosigned = add_signature_lines(note, [line])
    opened = open_note(cosigned, [log.verifier(), w.verifier()])
    assert opened.cosigned[0][1] == 1_700_000_000
    wv = Verifier.from_string(w.verifier().to_string())
    assert wv.alg == 0x04
    # a cosignature over a different time does not verify
    bad = line.replace(base64.b64encode(raw).decode(),
                       base64.b64encode(raw[:11] + bytes([raw[11] ^ 1]) + raw[12:]).decode())
    with pytest.raises(NoteError):
        open_note(add_signature_lines(note, [bad]), [log.verifier(), w.verifier()])


def test_malformed_notes() -> None:
    s = Signer.generate("x")
    good = Checkpoint("o", 1, bytes(32)).sign([s])
    for bad in [good.replace(b"\n\n", b"\n"), good.replace("—".encode(), b"-"), good + b"\x01",
                good[:-1], b"o\n01\n" + good.split(b"\n", 2)[2]]:
        with pytest.raises(NoteError):
            open_checkpoint(bad, [s.verifier()])


def test_key_files_mode_0600_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen", "--name", "example.com/worm", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    key = tmp_path / "example.com_worm.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "PRIVATE" not in out  # never printed
    signer = load_signer(key)
    assert Verifier.from_string((tmp_path / "example.com_worm.pub").read_text()) == signer.verifier()
    assert main(["keygen", "--name", "example.com/worm", "--out", str(tmp_path)]) == 2  # no overwrite
    os.chmod(key, 0o644)
    with pytest.raises(NoteError, match="chmod 600"):
        load_signer(key)
    monkeypatch.setenv("PIPELINE_SIGNING_KEY", signer.to_string())
    assert load_signer().verifier() == signer.verifier()
    monkeypatch.delenv("PIPELINE_SIGNING_KEY")
    with pytest.raises(NoteError, match="PIPELINE_SIGNING_KEY"):
        load_signer()
    w = Signer.generate("w", cosigner=True)
    k2, _ = write_key_pair(w, tmp_path / "w")
    assert stat.S_IMODE(k2.stat().st_mode) == 0o600
