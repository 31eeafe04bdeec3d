"""A minimal verifier of docs/FORMAT.md §1-§4 and §8, written from that document alone.

It imports nothing from ``pipeline`` (standard library only: ``json`` with hooks for the
JSON profile of §1.1, ``hashlib`` for SHA-256 and the RFC 6962 tree), so that where it and
``pipeline verify`` agree, they agree because the document says one thing, not because
they share code.  ``tests/format/test_independent_verifier.py`` runs both over valid streams and
over every ambiguous or tampered case.  Not covered: recovery records (§5), eviction.

Run: ``python tests/independent_verifier.py <hot>/<stream>`` prints the findings as JSON.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

SUFFIX = 76
MAX_LINE = 33_554_432  # §1 check 2, the newline included
HEX64 = re.compile(r"[0-9a-f]{64}")
STREAM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
TS = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})\.[0-9]{6}Z")
NAME = re.compile(r"seg-([0-9]{20})(?:\.([1-9][0-9]{0,5}))?\.jsonl")
KEYS = ["v", "stream", "seq", "ts", "kind", "prev", "data"]
KINDS = {"event", "seal", "heartbeat", "recovery", "key"}
GENESIS = "0" * 64


class Reject(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason, detail)
        self.reason = reason


# ---------------------------------------------------------------- §1.1 the JSON profile


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > 20:
        raise ValueError("integer out of range")
    n = int(text)
    if not -(2**63) <= n <= 2**64 - 1:
        raise ValueError("integer out of range")
    return n


def _finite(text: str) -> float:
    x = float(text)
    if math.isinf(x):
        raise ValueError("number overflows binary64")
    return x


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _outside_strings(text: str) -> tuple[bool, int]:
    """(whitespace outside strings?, deepest nesting) of a JSON text."""
    depth = deepest = 0
    in_string = escaped = False
    ws = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "}]":
            depth -= 1
        elif ch in " \t\n\r":
            ws = True
    return ws, deepest


def _scalar_values_only(value: Any) -> bool:
    """No lone surrogate in any string (a valid escaped pair is decoded to one character)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return True


def profile_loads(raw: bytes, max_depth: int) -> Any:
    """Parse a compact JSON text within the profile of §1.1, or raise ValueError."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raise ValueError("byte order mark")
    text = raw.decode("utf-8")  # strict: overlongs, encoded surrogates, > U+10FFFF refused
    ws, deepest = _outside_strings(text)
    if ws:
        raise ValueError("whitespace outside strings")
    if deepest > max_depth:
        raise ValueError("too deep")
    value = json.loads(text, object_pairs_hook=_no_duplicates, parse_int=_integer, parse_float=_finite,
                       parse_constant=_refuse_constant)
    if not _scalar_values_only(value):
        raise ValueError("lone surrogate")
    return value


# ---------------------------------------------------------------- §1 one line


def real_time(ts: Any) -> bool:
    if not isinstance(ts, str):
        return False
    m = TS.fullmatch(ts)
    if m is None:
        return False
    try:
        y, mo, d, h, mi, sec = (int(g) for g in m.groups())
        datetime(y, mo, d, h, mi, sec)
    except ValueError:
        return False
    return True


def is_int(v: Any) -> bool:
    return type(v) is int


@dataclass
class Line:
    stream: str
    seq: int
    ts: str
    kind: str
    prev: str
    data: dict[str, Any]
    hash: str
    raw: bytes


def check_line(line: bytes) -> Line:
    if not line.endswith(b"\n"):
        raise Reject("torn")
    tail = line[-SUFFIX:]
    if (len(line) < 78 or len(line) > MAX_LINE or not tail.startswith(b',"hash":"') or not tail.endswith(b'"}\n')
            or not HEX64.fullmatch(tail[9:73].decode("latin-1")) or b"\n" in line[:-SUFFIX]):
        raise Reject("bad-line")
    body = line[:-SUFFIX]
    claimed = tail[9:73].decode()
    if hashlib.sha256(body).hexdigest() != claimed:
        raise Reject("hash-mismatch")
    try:
        obj = profile_loads(body + b"}", 65)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise Reject("bad-json", str(exc)) from None
    if not isinstance(obj, dict) or list(obj) != KEYS:
        raise Reject("bad-layout")
    if not is_int(obj["v"]) or obj["v"] != 1:
        raise Reject("bad-version")
    stream, seq, ts, kind, prev, data = (obj[k] for k in KEYS[1:])
    if (not isinstance(stream, str) or not STREAM.fullmatch(stream) or not is_int(seq) or not 0 <= seq < 2**63
            or not real_time(ts) or kind not in KINDS or not isinstance(prev, str) or not HEX64.fullmatch(prev)
            or not isinstance(data, dict)):
        raise Reject("bad-field")
    header = f'{{"v":1,"stream":"{stream}","seq":{seq},"ts":"{ts}","kind":"{kind}","prev":"{prev}","data":'
    if not body.startswith(header.encode()):
        raise Reject("bad-layout")
    return Line(stream, seq, ts, kind, prev, data, claimed, line)


# ---------------------------------------------------------------- §4 Merkle tree


def leaf(line: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + line[:-1]).digest()


def node(a: bytes, b: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + a + b).digest()


def tree_hash(leaves: list[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node(tree_hash(leaves[:k]), tree_hash(leaves[k:]))


def frontier_append(size: int, frontier: list[bytes], h: bytes) -> tuple[int, list[bytes]]:
    """Add one leaf to a compact range: merge equal-sized perfect subtrees from the right."""
    out = list(frontier)
    out.append(h)
    n = size
    while n & 1:
        right = out.pop()
        left = out.pop()
        out.append(node(left, right))
        n >>= 1
    return size + 1, out


def fold(frontier: list[bytes]) -> bytes:
    if not frontier:
        return hashlib.sha256(b"").digest()
    h = frontier[-1]
    for f in reversed(frontier[:-1]):
        h = node(f, h)
    return h


def hex_list(v: Any) -> list[bytes] | None:
    if not isinstance(v, list) or not all(isinstance(h, str) and HEX64.fullmatch(h) for h in v):
        return None
    return [bytes.fromhex(h) for h in v]


# ---------------------------------------------------------------- §8 segments and stream


@dataclass
class Seg:
    name: str
    first: Line | None = None
    last: Line | None = None
    seal: Line | None = None
    seal_leaf: bytes = b""
    findings: list[tuple[str, str]] = field(default_factory=list)
    torn: bool = False
    size: int = 0
    leaves: list[bytes] = field(default_factory=list)


def order(names: list[str]) -> list[str]:
    keyed = []
    for n in names:
        m = NAME.fullmatch(n)
        if m:
            keyed.append(((int(m.group(1)), int(m.group(2) or 0)), n))
    return [n for _, n in sorted(keyed)]


def scan(path: Path, stream: str) -> Seg:
    seg = Seg(path.name)
    data = path.read_bytes()
    seg.size = len(data)
    lines = data.split(b"\n")
    raw_lines = [x + b"\n" for x in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    leaves: list[bytes] = []
    prev: Line | None = None
    for raw in raw_lines:
        if seg.seal is not None:
            seg.findings.append((seg.name, "after-seal"))
            break
        try:
            rec = check_line(raw)
        except Reject as exc:
            if exc.reason == "torn":
                seg.torn = True
            else:
                seg.findings.append((seg.name, exc.reason))
            break
        if rec.stream != stream:
            seg.findings.append((seg.name, "wrong-stream"))
            break
        if prev is None:
            m = NAME.fullmatch(seg.name)
            if m is None or int(m.group(1)) != rec.seq:
                seg.findings.append((seg.name, "name-mismatch"))
        else:
            if rec.seq != prev.seq + 1:
                seg.findings.append((seg.name, "seq-gap" if rec.seq > prev.seq + 1 else "seq-regression"))
                break
            if rec.prev != prev.hash:
                seg.findings.append((seg.name, "broken-link"))
                break
        if rec.kind == "seal":
            seg.seal, seg.seal_leaf = rec, leaf(rec.raw)
            if not check_seal(seg, rec, leaves, prev):
                break
        else:
            leaves.append(leaf(rec.raw))
            seg.last = rec
        if seg.first is None:
            seg.first = rec
        prev = rec
    if seg.seal is not None and not seg.findings:
        check_frontiers(seg)
    return seg


def check_seal(seg: Seg, seal: Line, leaves: list[bytes], before: Line | None) -> bool:
    d = seal.data
    first = seg.first
    if first is None or before is None:
        seg.findings.append((seg.name, "seal-mismatch"))
        return False
    want = {"segment": seg.name, "first_seq": first.seq, "last_seq": seal.seq - 1, "count": len(leaves),
            "last_hash": seal.prev, "merkle_root": tree_hash(leaves).hex(), "opened": first.ts,
            "tree_size": seal.seq}
    for k, v in want.items():
        if k not in d or type(d[k]) is not type(v) or d[k] != v:
            seg.findings.append((seg.name, "seal-mismatch"))
            return False
    seg.leaves = list(leaves)
    return True


def check_frontiers(seg: Seg) -> None:
    """§4: start_frontier + the segment's leaves = frontier, which folds to tree_root; checked
    once the whole segment is read without a finding (§8 step 5)."""
    assert seg.seal is not None and seg.first is not None
    d = seg.seal.data
    start, end = hex_list(d.get("start_frontier")), hex_list(d.get("frontier"))
    if start is None or end is None or len(start) != bin(seg.first.seq).count("1"):
        seg.findings.append((seg.name, "seal-mismatch"))
        return
    size, fr = seg.first.seq, start
    for h in seg.leaves:
        size, fr = frontier_append(size, fr, h)
    if fr != end or fold(end).hex() != d.get("tree_root"):
        seg.findings.append((seg.name, "seal-mismatch"))


def verify(stream_dir: Path) -> list[tuple[str, str]]:
    """Findings as (segment, reason), scan findings of each segment first, in stream order."""
    stream = stream_dir.name
    names = order([p.name for p in stream_dir.iterdir() if p.is_file()])
    segs = [scan(stream_dir / n, stream) for n in names]
    findings: list[tuple[str, str]] = []
    exp_seq, exp_hash = 0, GENESIS
    prev_seg: Seg | None = None
    for i, s in enumerate(segs):
        findings.extend(s.findings)
        last = i == len(segs) - 1
        if s.first is None:
            if not s.findings and not (last and s.size == 0) and not (last and s.torn):
                findings.append((s.name, "truncated"))
            prev_seg = s
            continue
        if s.first.seq > exp_seq:
            findings.append((s.name, "missing-segment" if prev_seg is not None else "missing-start"))
        elif s.first.seq < exp_seq:
            findings.append((s.name, "seq-regression"))
        elif s.first.prev != exp_hash:
            findings.append((s.name, "broken-link"))
        if (prev_seg is not None and prev_seg.seal is not None and s.seal is not None
                and s.first.seq == prev_seg.seal.seq + 1):
            pf = hex_list(prev_seg.seal.data.get("frontier"))
            cont = frontier_append(prev_seg.seal.seq, pf, prev_seg.seal_leaf)[1] if pf is not None else None
            if cont is None or hex_list(s.seal.data.get("start_frontier")) != cont:
                findings.append((s.name, "seal-mismatch"))
        if s.seal is None and not s.findings and not last:
            findings.append((s.name, "truncated"))
        tail = s.seal or s.last
        if tail is not None:
            exp_seq, exp_hash = tail.seq + 1, tail.hash
        prev_seg = s
    head_path = stream_dir / "head.json"
    if head_path.exists() and segs:
        head = json.loads(head_path.read_bytes())
        if isinstance(head, dict) and is_int(head.get("next_seq")):
            if head["next_seq"] > exp_seq:
                findings.append((segs[-1].name, "missing-tail"))
            elif head["next_seq"] == exp_seq and isinstance(head.get("last_hash"), str) \
                    and head["last_hash"] != exp_hash:
                findings.append((segs[-1].name, "broken-link"))
    return findings


if __name__ == "__main__":
    print(json.dumps(verify(Path(sys.argv[1]))))
