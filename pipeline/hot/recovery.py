"""Start-up recovery: rebuild a stream's chain state from disk, explain an unclean tail.

The chain continues from one of two anchors (docs/FORMAT.md §6): the newest seal still on
disk when every segment after it is there too, else ``head.json`` (rewritten after every
seal and every recovery, so it stays valid once the shipper has evicted the segments before
it).  The segments from the anchor on are replayed; the valid length of each is the end of
the last complete record that continues the chain (§5, the same rule the flusher applies
after a failed write).  A torn or orphaned segment is abandoned and named by a recovery
record at the start of a new segment; an intact tail after an unclean shutdown is continued
in place, after a recovery record saying so.

Also here: the ``head.json`` the writer stores for an anchor (``stream_head``); the file's
format, reading and atomic writing are ``pipeline.format.layout``'s (``StreamHead``,
``read_head``, ``write_head``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from pathlib import Path

from pipeline.format import attr, merkle
from pipeline.format.layout import HEAD_FILE, HeadError, StreamHead, read_head, write_head
from pipeline.format.record import MAX_LINE_BYTES, Kind, RecordError, parse_record
from pipeline.format.segment import iter_lines, list_segments, parse_segment_name, read_first_record, read_last_line
from pipeline.hot.active import Segment, SegmentFiles
from pipeline.hot.chain import Anchor, Chain, TreeStoreLike
from pipeline.hot.errors import HotLogError

# HEAD_FILE, write_head and read_first_record are pipeline.format's, re-exported for old imports
__all__ = ["HEAD_FILE", "Recovery", "head_dict", "read_first_record", "stream_head", "write_head"]


def stream_head(stream: str, at: Anchor, *, segment: Segment | None = None, clean: bool = False) -> StreamHead:
    """The stream head (docs/FORMAT.md §6): the chain state ``at`` a seq, plus where the
    segment that continues from there starts when it is already open (a clean close)."""
    head = StreamHead(stream, at.next_seq, at.prev.decode(), at.cr_size, tuple(at.stack), closed_cleanly=clean)
    if segment is None:
        return head
    return dataclasses.replace(head, segment=segment.name, segment_first_seq=segment.first_seq,
                               segment_first_prev=segment.first_prev.decode(),
                               segment_start_frontier=tuple(segment.start_frontier))


head_dict = stream_head  # its name before the head became a StreamHead, for old imports


class Recovery:
    """Brings a fresh ``Chain`` to the state the stream directory holds.  ``store_head``
    writes a head (returns False after logging a failure); ``flush_now`` makes a queued
    recovery record durable or raises."""

    def __init__(self, chain: Chain, files: SegmentFiles, *, tree: TreeStoreLike | None,
                 store_head: Callable[[StreamHead], bool], flush_now: Callable[[], None]) -> None:
        self.chain = chain
        self.files = files
        self.dir = files.dir
        self.stream = chain.stream
        self.tree = tree
        self._store_head = store_head
        self._flush_now = flush_now
        self._replay_start: tuple[list[bytes], bytes] = ([], b"")

    def run(self) -> None:
        chain = self.chain
        segments = list_segments(self.dir)
        head = self.read_head()
        seal_idx, seal_anchor = self._newest_seal(segments)
        head_anchor = self._head_anchor(head)
        after_seal = segments[seal_idx + 1:]
        firsts = [(parse_segment_name(p.name) or (0, 0))[0] for p in after_seal]
        if head_anchor is not None and head is not None and head.closed_cleanly \
                and head.segment_first_seq is None and any(f < head_anchor.next_seq for f in firsts):
            # written by an older version at a clean close: its next_seq may lie inside the
            # open segment, which is on disk and is replayed instead
            head_anchor = None
        if seal_anchor is not None and firsts and firsts[0] == seal_anchor.next_seq:
            anchor: Anchor | None = seal_anchor  # every segment after the newest seal is here
        elif head_anchor is not None and (seal_anchor is None or head_anchor.next_seq >= seal_anchor.next_seq):
            anchor = head_anchor  # the segments before where the head points were evicted
        else:
            anchor = seal_anchor
        start = 0
        if anchor is not None:
            chain.seq, chain.prev = anchor.next_seq, anchor.prev
            chain.cr = merkle.CompactRange(anchor.cr_size, anchor.stack)
            start = anchor.next_seq
            if anchor is seal_anchor and (head_anchor is None or head_anchor.next_seq < anchor.next_seq):
                # the seal reached the disk but the process died before head.json followed
                self._store_head(stream_head(self.stream, anchor))
        tail = [p for p, f in zip(after_seal, firsts, strict=True) if f >= start]
        if tail:
            first = (parse_segment_name(tail[0].name) or (0, 0))[0]
            if first != start:
                where = (f"{HEAD_FILE} and the newest seal say the chain continues at seq {start}"
                         if anchor is not None else f"there is no sealed segment or {HEAD_FILE} to continue from")
                raise HotLogError(
                    f"stream {self.stream!r} in {chain.hot_dir}: {tail[0].name} starts at seq {first} but {where}: "
                    "refusing to guess the chain; restore the missing segments")
        if head is not None and head.closed_cleanly:
            # the flag holds only while no writer has the stream open (docs/FORMAT.md §6)
            self._store_head(dataclasses.replace(head, closed_cleanly=False))
        if not tail:
            self._sync_tree_store(segments)
            return
        self._replay_tail(tail, segments, head)

    def _replay_tail(self, tail: list[Path], segments: list[Path], head: StreamHead | None) -> None:
        chain = self.chain
        # a recovery record at the start of a segment says where earlier abandoned segments
        # stop being valid; honour it instead of re-deriving from the bytes
        explained: dict[str, int] = {}
        for path in tail:
            first_rec = read_first_record(path)
            if first_rec is not None and first_rec.kind == Kind.RECOVERY.value:
                for e in first_rec.data.get("abandoned", []):
                    if isinstance(e, dict) and isinstance(e.get("valid_bytes"), int):
                        explained[str(e.get("segment"))] = e["valid_bytes"]
        # replay unsealed segments after the anchor (normally just one, after a crash)
        last_valid_seg: Path | None = None
        last_valid_seg_state: tuple[int, int, merkle.CompactRange, str, list[bytes], bytes] | None = None
        for path in tail:
            if last_valid_seg is not None and last_valid_seg_state is not None:
                # an unsealed segment followed by another one: the crash came after the next
                # segment file was created but before the seal reached the disk.  It can no
                # longer be continued or sealed in place, so the recovery record must name it.
                chain.abandoned.append((last_valid_seg, last_valid_seg_state[0]))
                last_valid_seg = None
            valid_bytes, count, seg_cr, first_ts = self._replay(path, explained.get(path.name))
            seg_start_frontier, seg_start_prev = self._replay_start
            size = path.stat().st_size
            if size != valid_bytes or count == 0:
                # (an empty file: created just before the crash; the recovery removes it)
                chain.abandoned.append((path, valid_bytes))
                last_valid_seg = None
            else:
                last_valid_seg = path
                last_valid_seg_state = (valid_bytes, count, seg_cr, first_ts, seg_start_frontier, seg_start_prev)
            # segments explained by a recovery record at the start of this one are settled
            self._drop_explained(path)
        self._sync_tree_store(segments)
        if last_valid_seg is not None and last_valid_seg == tail[-1] and not chain.abandoned:
            # clean tail after an unclean shutdown: continue in the same segment
            assert last_valid_seg_state is not None
            valid_bytes, count, seg_cr, first_ts, seg_start_frontier, seg_start_prev = last_valid_seg_state
            chain.seg = self.files.reopen(last_valid_seg, first_seq=chain.seq - count, first_ts=first_ts,
                                          start_frontier=seg_start_frontier, size=valid_bytes, count=count,
                                          cr=seg_cr, first_prev=seg_start_prev)
            if head is not None and head.closed_cleanly and head.next_seq == chain.seq \
                    and head.last_hash.encode() == chain.prev:
                return  # closed cleanly: nothing to explain
            chain.append_own(Kind.RECOVERY.value, {"reason": "unclean-shutdown", "abandoned": []}, chain.seg)
            self._flush_now()
            return
        if chain.abandoned:
            chain.start_recovery_segment("unclean-shutdown")
            self._flush_now()

    def _replay(self, path: Path, limit: int | None) -> tuple[int, int, merkle.CompactRange, str]:
        """Advance the chain state over the records of ``path`` that continue it: the one rule
        for the valid length V of a segment (docs/FORMAT.md §5) is the end of the last
        complete record that continues the chain (bounded by a recovery record that already
        named the segment).  Returns (V, records, segment tree, first ts); where the segment
        starts (frontier, prev) is left in ``self._replay_start``."""
        chain = self.chain
        self._replay_start = (chain.cr.stack, chain.prev)
        valid_bytes = count = 0
        seg_cr = merkle.CompactRange()
        first_ts = ""
        # (a line over the format's limit ends the records: not held, whatever its size)
        for offset, line in iter_lines(path, max_line=MAX_LINE_BYTES):
            if limit is not None and offset >= limit:
                break
            try:
                rec = parse_record(line)
            except RecordError:
                break
            if rec.seq != chain.seq or rec.prev.encode() != chain.prev or rec.stream != self.stream:
                break
            if rec.kind == Kind.SEAL.value:
                break  # a seal here would have been found as the anchor: bytes follow it
            lh = merkle.leaf_hash(rec.leaf)
            seg_cr.append(lh)
            chain.cr.append(lh)
            chain.seq += 1
            chain.prev = rec.hash.encode()
            count += 1
            first_ts = first_ts or rec.ts
            valid_bytes = offset + len(line)
        return valid_bytes, count, seg_cr, first_ts

    def _drop_explained(self, path: Path) -> None:
        first = read_first_record(path)
        if first is None or first.kind != Kind.RECOVERY.value:
            return
        named = {e.get("segment") for e in first.data.get("abandoned", []) if isinstance(e, dict)}
        self.chain.abandoned = [(p, v) for p, v in self.chain.abandoned if p.name not in named or p == path]

    def _sync_tree_store(self, segments: list[Path]) -> None:
        tree = self.tree
        if tree is None:
            return
        have = tree.size
        want = self.chain.cr.size
        if have > want:
            tree.truncate(want)
        elif have < want:
            batch: list[bytes] = []
            for path in segments:
                for _off, line in iter_lines(path, max_line=MAX_LINE_BYTES):
                    if not line.endswith(b"\n"):
                        break
                    try:
                        rec = parse_record(line)
                    except RecordError:
                        break
                    if have <= rec.seq < want:
                        batch.append(merkle.leaf_hash(rec.leaf))
                        if len(batch) >= 65536:
                            tree.append(batch)
                            batch = []
            if batch:
                tree.append(batch)
            tree.sync()

    def read_head(self) -> StreamHead | None:
        """The stream's head.json, None when there is none; one that cannot be read or is
        malformed stops the start-up: the writer must not guess where the chain continues."""
        try:
            return read_head(self.dir)
        except HeadError as exc:
            raise HotLogError(f"{exc}: cannot tell where the chain continues") from exc

    def _newest_seal(self, segments: list[Path]) -> tuple[int, Anchor | None]:
        """The newest sealed segment on disk and the chain state right after its seal."""
        for i in range(len(segments) - 1, -1, -1):
            last = read_last_line(segments[i])
            if last is None:
                continue
            try:
                rec = parse_record(last)
            except RecordError:
                continue
            if rec.kind != Kind.SEAL.value:
                continue
            try:
                cr = merkle.CompactRange(int(rec.data["tree_size"]), [bytes.fromhex(h) for h in rec.data["frontier"]])
            except (KeyError, TypeError, ValueError) as exc:
                raise HotLogError(f"the seal of {segments[i]} is malformed ({exc}): refusing to continue the "
                                  "chain from it") from exc
            cr.append(merkle.leaf_hash(rec.leaf))
            with contextlib.suppress(OSError, attr.AppendOnlyError):
                if not attr.is_immutable(segments[i]):
                    self.files.make_immutable(segments[i])
            return i, Anchor(rec.seq + 1, rec.hash.encode(), cr.size, cr.stack)
        return -1, None

    @staticmethod
    def _head_anchor(head: StreamHead | None) -> Anchor | None:
        """Where head.json says the newest segment starts (docs/FORMAT.md §6)."""
        if head is None:
            return None
        seq, prev, size, frontier = head.anchor()
        return Anchor(seq, prev.encode(), size, list(frontier))
