"""The exact bytes an encrypted event's ``data`` is written as, pinned.

The expected values were produced by the pure-Python writer (``Epoch.encrypt`` as it was
before the C accelerator took over the per-event work, commit a9001b2) from a fixed seed:
both ratchets -- ``pipeline._native.Ratchet`` and ``PyRatchet`` -- MUST reproduce them byte
for byte, since an independent decryptor (docs/FORMAT.md §11, tests/crypt/test_docs_decryptor.py) reads
what was written years ago.  The ciphertexts are also opened here with ``scheme``'s
reference functions, so a pinned value that was itself wrong could not pass."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import orjson
import pytest

from pipeline import _accel
from pipeline.crypt import scheme, writer
from pipeline.crypt.writer import EncryptionSettings, Epoch

SEED = bytes(range(32))
RECIPIENT = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
STREAM, SEGMENT, KEY_SEQ = "app", "seg-00000000000000000003.jsonl", 7
EVENT_8 = b'{"user":"alice","action":"login"}'
EVENT_11 = b'{"action":"x","n":1,"_sender":"uid:0"}'
EVENT_12 = ('{"big":"%s","action":"\u00e9\u2603"}' % ("y" * 5000)).encode()
EVENT_1000 = b'{"_sender":{"a":[1,2.5,null,true]},"z":"\\"q\\u0000"}'
PLAINTEXTS = {8: EVENT_8, 9: b"{}", 11: EVENT_11, 12: EVENT_12, 1000: EVENT_1000}

CT_8 = b'"_enc":{"key_seq":7,"ct":"nTFb128VABUvTEpWAqLWSWTGR21RtfkB/job2OPOxFXrq+0Lw52zGoqhpKOB+9nyUw=="}}'
CT_9 = b'"_enc":{"key_seq":7,"ct":"HVpIZmWAQW2aE1+4B7MUbjA0"}}'
CT_11 = b'"_enc":{"key_seq":7,"ct":"Cn4X/Oj81+FwTSR/9wvvU5nsDb+jysMILZNpJoiKSLtbaiiu/ayG6tBTyRlwdVDXliK4ITx+"}}'
CT_1000 = (b'"_enc":{"key_seq":7,"ct":"TaYCud6WPrjUIKV6LwNyipUXP9udSyy0NG29l39QXnklYtexbsYkFgRVuG3KwGyEs7KLx0fVxl'
           b'D/Ygxp2ezwrL60ug=="}}')
K_1001 = "2146eee396a2be53adb6a130d0445966dafc5d0ab5b472308809a69ec9d6057b"


@pytest.fixture(params=["native", "python"])
def fixed_seed(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A fixed seed, with each ratchet: the C one (when built) and the Python one."""
    if request.param == "native":
        if _accel.native is None:
            pytest.skip("C accelerator not built (see test_accelerator_is_built)")
        monkeypatch.setattr(writer, "Ratchet", _accel.native.Ratchet)
    else:
        monkeypatch.setattr(writer, "Ratchet", writer.PyRatchet)
    yield


def run_sequence(clear: tuple[str, ...]) -> tuple[list[bytes], tuple[int, bytes]]:
    """A fixed sequence: consecutive seqs, a skipped seq (a heartbeat's), one record encrypted
    twice (it did not fit and is retried in place), a large non-ASCII event and a jump."""
    epoch = Epoch(EncryptionSettings((RECIPIENT,), clear), stream=STREAM, segment=SEGMENT, key_seq=KEY_SEQ,
                  seed=SEED)
    outs = [epoch.encrypt(8, EVENT_8)]
    epoch.consumed(8)
    outs.append(epoch.encrypt(9, b"{}"))
    epoch.consumed(9)
    outs.append(epoch.encrypt(11, EVENT_11))
    outs.append(epoch.encrypt(11, EVENT_11))
    epoch.consumed(11)
    outs.append(epoch.encrypt(12, EVENT_12))
    epoch.consumed(12)
    outs.append(epoch.encrypt(1000, EVENT_1000))
    epoch.consumed(1000)
    held = epoch.held_key()
    epoch.erase()
    return outs, held


def opens(data: bytes, seq: int) -> bytes:
    """The plaintext of an encrypted event's data, by the reference functions of ``scheme``."""
    member = scheme.enc_member(orjson.loads(data))
    assert member is not None and member["key_seq"] == KEY_SEQ
    rkey = scheme.record_key(scheme.chain_key_at(SEED, KEY_SEQ, seq))
    return scheme.open_payload(rkey, scheme.unb64(member["ct"], "ct"), scheme.aad(STREAM, SEGMENT, seq, KEY_SEQ))


def test_encrypted_event_bytes_without_clear_fields(fixed_seed: None) -> None:
    outs, held = run_sequence(())
    assert outs[:4] == [b"{" + CT_8, b"{" + CT_9, b"{" + CT_11, b"{" + CT_11]
    assert outs[5] == b"{" + CT_1000
    assert hashlib.sha256(b"\n".join(outs)).hexdigest() == \
        "00296f9b65cb75603acb9b2a076b7c6c58f387aa585a11f8051df51428a71245"
    assert held == (1001, bytes.fromhex(K_1001))
    for data, seq in zip(outs, (8, 9, 11, 11, 12, 1000), strict=True):
        assert opens(data, seq) == PLAINTEXTS[seq]


def test_encrypted_event_bytes_with_clear_fields(fixed_seed: None) -> None:
    outs, held = run_sequence(("action", "_sender"))
    assert outs[:4] == [b'{"action":"login",' + CT_8, b"{" + CT_9, b'{"action":"x","_sender":"uid:0",' + CT_11,
                        b'{"action":"x","_sender":"uid:0",' + CT_11]
    assert outs[4].startswith('{"action":"\u00e9\u2603","_enc":'.encode())
    assert outs[5] == b'{"_sender":{"a":[1,2.5,null,true]},' + CT_1000
    assert hashlib.sha256(b"\n".join(outs)).hexdigest() == \
        "ee8afe4bba35ae2cd9596a6ac25f39daec3c17d2c19b2e8e3060581aa9ec4049"
    assert held == (1001, bytes.fromhex(K_1001))
    for data, seq in zip(outs, (8, 9, 11, 11, 12, 1000), strict=True):
        assert opens(data, seq) == PLAINTEXTS[seq]


def test_erased_keys_are_refused(fixed_seed: None) -> None:
    epoch = Epoch(EncryptionSettings((RECIPIENT,)), stream=STREAM, segment=SEGMENT, key_seq=KEY_SEQ, seed=SEED)
    epoch.encrypt(9, b"{}")
    epoch.consumed(9)
    with pytest.raises(RuntimeError, match="already erased"):
        epoch.encrypt(9, b"{}")
    with pytest.raises(RuntimeError, match="already erased"):
        epoch.encrypt(KEY_SEQ, b"{}")
    epoch.erase()
    assert epoch.held_key()[1] == bytes(32)
    with pytest.raises(RuntimeError, match="already erased"):
        epoch.encrypt(11, b"{}")
