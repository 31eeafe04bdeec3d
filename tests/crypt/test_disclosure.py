"""Selective disclosure: one record, its inclusion proof under a signed checkpoint, and the
key that opens that record and no other."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from pipeline.checkpoint import load_signer
from pipeline.cli import main
from pipeline.crypt.reader import OpenError, open_disclosed
from pipeline.crypt.writer import EncryptionSettings
from pipeline.hot.checkpoints import CheckpointEmitter
from pipeline.hot.factory import open_hotlog
from pipeline.hot.segment import list_segments
from pipeline.record import parse_record
from pipeline.witness.directory import DirectoryWitness
from tests.crypt.conftest import AgeKey


def test_disclosure_opens_exactly_one_record(tmp_path: Path, auditor: AgeKey,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    hot, keys = tmp_path / "hot", tmp_path / "keys"
    assert main(["keygen", "--name", "example.com/worm", "--out", str(keys)]) == 0
    signer = load_signer(keys / "example.com_worm.key")
    vkey = str(keys / "example.com_worm.pub")
    with open_hotlog(hot, "app", heartbeat_interval=0, immutable="off",
                     encryption=EncryptionSettings((auditor.recipient,))) as log:
        witness = DirectoryWitness(tmp_path / "witness", verifiers=[signer.verifier()])
        em = CheckpointEmitter(log, hot / "app", signer, tree_store=log.tree_store,  # type: ignore[arg-type]
                               witnesses=[witness], interval=3600).start()
        receipts = [log.append({"user": f"u{i}", "action": "login"}) for i in range(12)]
        log.seal()
        receipts += [log.append({"user": f"v{i}"}) for i in range(5)]
        log.seal()
        em.emit()
        em.stop()
    assert list(em.errors) == []
    # integrity without any key: the chain, seals, and the witnessed checkpoints
    assert main(["verify", "--hot", str(hot), "--witness-dir", str(tmp_path / "witness"), "--vkey", vkey]) == 0
    target = receipts[7].seq
    capsys.readouterr()
    assert main(["disclose", "--identity", str(auditor.identity_file), "--hot", str(hot), "--seq",
                 str(target)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["index"] == target and len(bytes.fromhex(doc["disclosure"]["record_key"])) == 32
    path = tmp_path / "disclosure.json"
    path.write_text(json.dumps(doc))

    # the regulator: checks the proof and the checkpoint's signature, then opens the record
    assert main(["disclose", "--open", str(path), "--vkey", vkey]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"user": "u7", "action": "login"}
    assert "included under a signed checkpoint" in captured.err

    # the key opens no other record (same segment or not)
    rkey, segment = doc["disclosure"]["record_key"], doc["disclosure"]["segment"]
    others = [parse_record(ln) for p in list_segments(hot / "app") for ln in p.read_bytes().splitlines(keepends=True)]
    others = [r for r in others if r.kind == "event" and r.seq != target]
    assert len(others) == 16
    for rec in others:
        with pytest.raises(OpenError):
            open_disclosed(rec.line.decode(), segment, rkey)

    # a document whose leaf is another record fails (the proof, and the key)
    other = others[0]
    forged = dict(doc, leaf=base64.b64encode(other.line[:-1]).decode())
    path.write_text(json.dumps(forged))
    assert main(["disclose", "--open", str(path), "--vkey", vkey]) == 1
    assert "INVALID" in capsys.readouterr().out


@pytest.mark.parametrize("content, says", [
    (None, "No such file"),
    ("xx", "is not JSON"),
    ("[1]", "a disclosure document is a JSON object"),
    ("{}", "not a disclosure document"),
])
def test_open_names_what_is_wrong_with_the_document(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     content: str | None, says: str) -> None:
    path = tmp_path / "doc.json"
    if content is not None:
        path.write_text(content)
    assert main(["disclose", "--open", str(path)]) == 2
    err = capsys.readouterr().err
    assert "could not check the disclosure" in err and says in err
