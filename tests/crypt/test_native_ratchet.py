"""The C ratchet (``pipeline._native.Ratchet``) against its Python twin (``PyRatchet``):
the same data bytes for any seed, seq and plaintext, the same refusals, nothing queued when
sealing fails, and an encrypted stream written with the accelerator byte-identical to one
written without it (what ``PIPELINE_NO_NATIVE=1`` binds)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pyrage
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import _accel
from pipeline.crypt import scheme
from pipeline.crypt import writer as crypt_writer
from pipeline.crypt.reader import SegmentReader, load_identities, seal_segment_name
from pipeline.crypt.writer import EncryptionSettings, PyRatchet
from pipeline.hot import chain as hot_chain
from pipeline.hot.segment import list_segments
from pipeline.hot.writer import HotLog, Receipt
from pipeline.record import GENESIS_HASH
from tests.crypt.conftest import AgeKey
from tests.crypt.test_ratchet_bytes import SEED
from tests.hotutil import needs_native
from tests.test_native import _force_python_writer

native = _accel.native
PREFIX = scheme.aad_prefix("app", "seg-00000000000000000000.jsonl")


def pair(seed: bytes, key_seq: int) -> tuple[Any, PyRatchet]:
    assert native is not None
    return native.Ratchet(seed, key_seq, PREFIX), PyRatchet(seed, key_seq, PREFIX)


@needs_native
@settings(max_examples=80, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), key_seq=st.integers(0, 2**40),
       steps=st.lists(st.tuples(st.integers(1, 5), st.binary(max_size=300), st.booleans(),
                                st.sampled_from([b"{", b'{"action":"x",', b'{"a":{"b":[1]},'])), max_size=12))
def test_seal_matches_python(seed: bytes, key_seq: int, steps: list[tuple[int, bytes, bool, bytes]]) -> None:
    c, p = pair(seed, key_seq)
    seq = key_seq
    for gap, plaintext, consume, head in steps:
        seq += gap
        assert c.seal(seq, plaintext, head) == p.seal(seq, plaintext, head)
        if consume:
            c.consumed(seq)
            p.consumed(seq)
        assert c.held() == p.held()
    c.erase()
    p.erase()
    assert c.held() == p.held() == (1 << 62, bytes(32))


@needs_native
def test_refusals_match_python() -> None:
    c, p = pair(SEED, 10)
    for r in (c, p):
        with pytest.raises(RuntimeError, match=r"the key of seq 10 was already erased \(ratchet at 10\)"):
            r.seal(10, b"{}", b"{")
        r.seal(12, b"{}", b"{")
        r.consumed(12)
        with pytest.raises(RuntimeError, match=r"the key of seq 12 was already erased \(ratchet at 13\)"):
            r.seal(12, b"{}", b"{")
    assert native is not None
    with pytest.raises(ValueError, match="32 bytes"):
        native.Ratchet(SEED[:31], 1, PREFIX)
    with pytest.raises(TypeError):
        c.seal(14, "not bytes", b"{")


def _queue(ratchet: Any, items: list[bytes], heads: Any, start: int = 0) -> tuple[list[bytes], Any]:
    chunks: list[bytes] = []
    out = hot_chain.queue_sealed(b'{"v":1,"stream":"app","seq":', 11, b"2026-12-06T00:00:00.000000Z",
                                 GENESIS_HASH.encode(), items, start, chunks, 1 << 20, "seg", 0, ratchet, heads)
    return chunks, out


@needs_native
def test_a_failing_seal_queues_nothing_for_that_record() -> None:
    """The batch path stops before a record it cannot encrypt: the records before it are
    queued whole, nothing of it is; alone, it raises (the chain then retries it through the
    single-record path, which raises the precise error)."""
    c, _ = pair(SEED, 10)
    chunks, (count, _, _, receipts) = _queue(c, [b'{"a":1}', b'{"a":2}', "not bytes"], None)  # type: ignore[list-item]
    assert count == 2 and len(chunks) == 2 and len(receipts) == 2
    assert all(line.endswith(b'"}\n') for line in chunks)
    assert c.held()[0] == 13  # both queued seqs erased, nothing further
    chunks, (count, _, _, _) = _queue(c, [b'{"a":1}'], None)  # seq 11 again: its key is gone
    assert count == 0 and chunks == []
    with pytest.raises(TypeError):  # a head that is not bytes
        native.append_records(b"p", 13, b"t", b"event", GENESIS_HASH.encode(), [b"{}"], 0, None, None, [], None,  # type: ignore[union-attr]
                              1 << 20, 1, Receipt, "seg", 0, c, ["{"])
    c.erase()
    chunks, (count, _, _, _) = _queue(c, [b'{"a":1}'], None)
    assert count == 0 and chunks == []


@needs_native
def test_batch_path_matches_python_with_heads() -> None:
    items = [b'{"action":"a%d","n":%d}' % (i, i) for i in range(30)]
    heads = [b'{"action":"a%d",' % i for i in range(5, 30)]
    c, p = pair(SEED, 3)
    fast = _queue(c, items, heads, 5)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(hot_chain, "queue_record", hot_chain._py_queue_record)
        slow = hot_chain._py_queue_sealed(b'{"v":1,"stream":"app","seq":', 11, b"2026-12-06T00:00:00.000000Z",
                                          GENESIS_HASH.encode(), items, 5, [], 1 << 20, "seg", 0, p, heads)
    assert fast[1][:3] == slow[:3]
    assert c.held() == p.held()


@needs_native
def test_long_runs_match_python_record_for_record() -> None:
    """Thousands of records through both native paths (one ``append_records`` call per batch,
    and ``append_record`` one at a time) against the Python reference: every plaintext length
    from 0 to 700 bytes (every base64 tail, lines of 1 to 13 SHA-256 blocks), batches of
    varying size, the chain key compared after every call."""
    rng = random.Random(21)
    prefix, ts = b'{"v":1,"stream":"app","seq":', b"2026-12-06T00:00:00.000000Z"
    items = [bytes(rng.getrandbits(8) for _ in range(n)) for n in range(701)] * 3
    c, p = pair(bytes(rng.getrandbits(8) for _ in range(32)), 41)
    seq, prev, i = 42, GENESIS_HASH.encode(), 0
    while i < len(items):
        batch = items[i : i + rng.choice((1, 7, 64, 200))]
        heads = [b'{"n":%d,' % (seq + j) for j in range(len(batch))] if rng.random() < 0.3 else None
        fast: list[bytes] = []
        out = native.append_records(prefix, seq, ts, b"event", prev, batch, 0, None, None, fast, None,  # type: ignore[union-attr]
                                    1 << 30, 1, Receipt, "seg", 0, c, heads)
        with pytest.MonkeyPatch.context() as m:
            m.setattr(hot_chain, "queue_record", hot_chain._py_queue_record)
            slow: list[bytes] = []
            ref = hot_chain._py_queue_sealed(prefix, seq, ts, prev, batch, 0, slow, 1 << 30, "seg", 0, p, heads)
        assert out[0] == ref[0] == len(batch) and out[1:3] == ref[1:3]
        assert fast == slow
        assert c.held() == p.held()
        seq, prev, i = seq + len(batch), bytes(ref[2]), i + len(batch)
    for n in range(0, 701, 3):  # the single-record path, with gaps (skipped seqs)
        seq += 1 + n % 4
        fast, slow = [], []
        one = native.append_record(prefix, seq, ts, b"event", prev, items[n], None, None, fast, None,  # type: ignore[union-attr]
                                   1 << 30, Receipt, "seg", 0, c, b"{")
        want = hot_chain._py_queue_sealed_record(prefix, seq, ts, prev, items[n], slow, 1 << 30, "seg", 0, p, b"{")
        assert one is not None and want is not None and one[1:] == want[1:] and fast == slow
        assert c.held() == p.held()
        prev = want[1]


@needs_native
@pytest.mark.parametrize("room", [10, 600, 1300, 2000])
def test_a_batch_that_does_not_fit_stops_where_the_python_reference_stops(room: int) -> None:
    """Room for none, some or all of the records (the first sealed record is seq 5 after the
    key record at 3): the same lines, and the ratchet left at the same key."""
    items = [b'{"a":%d}' % i for i in range(5)]
    c, p = pair(SEED, 3)
    args = (b'{"v":1,"stream":"app","seq":', 5, b"2026-12-06T00:00:00.000000Z", GENESIS_HASH.encode(), items, 0)
    fast: list[bytes] = []
    slow: list[bytes] = []
    out = hot_chain.queue_sealed(*args, fast, room, "seg", 0, c, None)
    ref = hot_chain._py_queue_sealed(*args, slow, room, "seg", 0, p, None)
    assert out[:3] == ref[:3] and fast == slow
    assert c.held() == p.held()


class _Ticks:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> bytes:
        self.n += 1
        return b"2026-12-06T01:%02d:%02d.%06dZ" % (self.n // 60000 % 60, self.n // 1000 % 60, self.n % 1000000)


def _write(base: Path, recipient: str, use_native: bool, wrapped: dict[bytes, bytes]) -> list[bytes]:
    real_encrypt = pyrage.encrypt

    def same_wrap(seed: bytes, recipients: list[Any]) -> bytes:
        # age draws an ephemeral key (and rage a random-length grease stanza) per wrap: the
        # same wrapped seed in both runs keeps the segments' sizes, and so their bounds, equal
        return wrapped.setdefault(seed, real_encrypt(seed, recipients))

    impl: Any = native.Ratchet if use_native and native is not None else PyRatchet

    def fixed_seed(seed: bytes | None, key_seq: int, aad_prefix: bytes) -> Any:
        return impl(SEED, key_seq, aad_prefix)  # every key record's seed: the same in both runs

    with pytest.MonkeyPatch.context() as m:
        if not use_native:
            _force_python_writer(m)  # what PIPELINE_NO_NATIVE=1 binds
        m.setattr(crypt_writer, "Ratchet", fixed_seed)
        m.setattr(pyrage, "encrypt", same_wrap)
        assert (hot_chain.queue_sealed is hot_chain._py_queue_sealed) is not use_native
        log = HotLog(base, "app", heartbeat_interval=0, segment_max_bytes=20_000, segment_window=0, immutable="off",
                     clock=_Ticks(), encryption=EncryptionSettings((recipient,), ("action",)))
        for i in range(60):
            log.append({"i": i, "action": "login" if i % 3 else "logout", "pad": "x" * (i % 50)}, wait=False)
        log.append_many([{"batch": i, "action": f"b{i}"} for i in range(300)], wait=False)
        log.append_prepared_many([b'{"p":%d}' % i for i in range(100)])
        log.seal()
        log.append({"after": "seal"})
        log.close()
    return [p.read_bytes() for p in list_segments(base / "app")]


@needs_native
def test_encrypted_stream_is_identical_with_and_without_the_accelerator(tmp_path: Path, auditor: AgeKey) -> None:
    wrapped: dict[bytes, bytes] = {}
    fast = _write(tmp_path / "native", auditor.recipient, True, wrapped)
    slow = _write(tmp_path / "python", auditor.recipient, False, wrapped)
    assert len(fast) > 3  # rotated by size, inside append_many too: several key records
    assert fast == slow
    reader = SegmentReader(load_identities(auditor.identity_file))
    for p in list_segments(tmp_path / "native" / "app"):
        events = [d for r, d in reader.records(p, seal_segment_name(p)) if r.kind == "event"]
        assert events and all(d is not None for d in events), f"{p.name} does not open"


@pytest.mark.parametrize("impl", ["native", "python"])
def test_a_fresh_ratchet_hands_its_seed_to_the_wrapper_only(impl: str) -> None:
    """The writer's ratchet draws its own seed; ``wrap`` gives it to age (and the C one wipes
    the temporary afterwards, unless the callee kept it: a kept object is never altered)."""
    if impl == "native" and native is None:
        pytest.skip("C accelerator not built (see test_accelerator_is_built)")
    make: Any = native.Ratchet if impl == "native" and native is not None else PyRatchet
    r, other = make(None, 5, PREFIX), make(None, 5, PREFIX)
    kept: list[bytes] = []
    copies: list[bytes] = []

    def copy(k: bytes) -> bytes:
        copies.append(bytes(bytearray(k)))
        return b"wrapped"

    def keep(k: bytes) -> bytes:
        kept.append(k)
        return b"w"

    assert r.wrap(copy) == b"wrapped"
    assert other.wrap(keep) == b"w"
    seed = copies[0]
    assert len(seed) == 32 and r.held() == (5, seed) and kept[0] == other.held()[1] != seed
    assert r.seal(7, b"{}", b"{") == PyRatchet(seed, 5, PREFIX).seal(7, b"{}", b"{")
    with pytest.raises(RuntimeError, match="wrap"):
        r.wrap(lambda k: b"")
