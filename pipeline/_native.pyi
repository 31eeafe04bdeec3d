# Type stub for the optional C accelerator (pipeline/_native.c).
from collections.abc import Callable, Sequence
from typing import Any

SCREEN_NULL: int
SCREEN_HINT: int
SCREEN_DIGITS: int
SCREEN_FLAT: int
SCREEN_SHIFT: int

class CompactRange:
    def __init__(self, size: int = 0, stack: Sequence[bytes] = ()) -> None: ...
    @property
    def size(self) -> int: ...
    @property
    def stack(self) -> list[bytes]: ...
    def append(self, lh: bytes) -> None: ...
    def root(self) -> bytes: ...
    def copy(self) -> CompactRange: ...

class Ratchet:
    """One key record's chain key in C memory (pipeline.crypt.writer.PyRatchet's twin)."""

    def __init__(self, seed: bytes | bytearray | None, key_seq: int, aad_prefix: bytes) -> None: ...
    def wrap(self, encrypt: Callable[[bytes], bytes], /) -> bytes: ...
    def seal(self, seq: int, plaintext: bytes, head: bytes, /) -> bytes: ...
    def consumed(self, seq: int, /) -> None: ...
    def erase(self) -> None: ...
    def held(self) -> tuple[int, bytes]: ...

def append_record(
    prefix: bytes,
    seq: int,
    ts: bytes,
    kind: bytes,
    prev: bytes,
    data: bytes,
    seg_cr: object,
    stream_cr: object,
    chunks: list[bytes],
    leaves: list[bytes] | None,
    limit: int,
    receipt_type: type,
    segment_name: str,
    generation: int,
    ratchet: Ratchet = ...,
    head: bytes = ...,
    /,
) -> tuple[Any, bytes, int] | None: ...
def utc_now() -> bytes: ...
def write_lines(fd: int, lines: list[bytes], /) -> None: ...
def fsync(fd: int, data_only: bool = False, /) -> None: ...
def screen(data: bytes, stems: bytes = ..., flags: int = ..., /) -> int: ...
def card_in(data: bytes, /) -> bool: ...
def profile_ok(raw: bytes, obj: object, compact: bool, max_depth: int, /) -> bool: ...
def profile_loads(loads: Callable[[bytes], Any], max_depth: int, raw: bytes, /) -> Any: ...
def wire_fields(
    buf: bytes, pos: int, end: int, max_fields: int, /
) -> tuple[list[tuple[int, int, int, int]], int] | None: ...
def pg_insert_row(msg: bytes, names: tuple[str, ...], kinds: bytes, /) -> dict[str, Any] | None: ...
def otlp_event(
    body: bytes, start: int, end: int, resource: dict[str, Any] | None, scope: dict[str, Any] | None, /
) -> dict[str, Any] | None: ...
def scan_lines(
    buf: bytes | memoryview,
    pos: int,
    stream: bytes,
    expected_seq: int,
    prev_hash: bytes,
    prev_ts: float | None,
    max_gap: float,
    max_gap_after: int | None,
    seg_cr: object,
    stream_cr: object,
    /,
) -> tuple[int, int, int, int, bytes, float | None, float, int | None]: ...
def append_records(
    prefix: bytes,
    seq: int,
    ts: bytes,
    kind: bytes,
    prev: bytes,
    datas: list[bytes],
    start: int,
    seg_cr: object,
    stream_cr: object,
    chunks: list[bytes],
    leaves: list[bytes] | None,
    room: int,
    seg_count: int,
    receipt_type: type,
    segment_name: str,
    generation: int,
    ratchet: Ratchet = ...,
    heads: list[bytes] | None = ...,
    /,
) -> tuple[int, int, bytes, list[Any]]: ...
def prepare_fast(
    dumps: Any,
    dumps_kwnames: tuple[str, ...],
    dumps_option: int,
    max_bytes: int,
    max_depth: int,
    box: list[tuple[Any, ...]],  # [(redact, redact_values, keyset_verdicts, last_clean, stems, flags)]
    event: object,
    /,
) -> bytes | None: ...
def prepare_many(
    items: list[Any],
    loads: Any,
    max_line: int,
    dumps: Any,
    dumps_kwnames: tuple[str, ...],
    dumps_option: int,
    max_bytes: int,
    max_depth: int,
    box: list[tuple[Any, ...]],
    /,
) -> list[bytes | None]: ...
def append_collect(cr: CompactRange, leaf_hashes: list[bytes], tile_height: int, /) -> dict[int, list[bytes]]: ...
def hash_lines(lines: list[bytes], start: int, seg_cr: object, stream_cr: object, /) -> list[bytes]: ...
def syslog_events(
    items: Sequence[Sequence[Any]],  # items[i][at]: a frame's bytes; items[i][at + 1]: its framing error or None
    at: int,
    parse: Callable[[bytes], dict[str, Any]],  # the Python reference, for what the C path does not take
    unparsed: Callable[[bytes, str], dict[str, Any]],
    /,
) -> list[dict[str, Any]]: ...
def relp_frames(buf: bytes, pos: int, max_data: int, /) -> tuple[list[tuple[int, str, bytes, None]], int]: ...
def syslog_frames(buf: bytes, pos: int, max_frame: int, /) -> tuple[list[tuple[bytes, None]], int]: ...
