"""Watching cold storage and the shipper's ledger, read-only.

Per cycle: the ledger's in-flight rows (``sealed``..``verified``: cold lag), its quarantined
rows, the rows whose hot copy should still exist (a hot file gone without an eviction), and
ONE ``stat`` (HEAD) per object that landed since the last cycle, judged by verify-tier's
per-object rules (``verify.tier._judge_stat``: size, SHA-256, metadata against the ledger,
lock mode, retention).  Objects that landed earlier are re-checked in a rolling window of
``recheck_batch`` per cycle, so an object deleted, replaced, unlocked or whose retention was
shortened later is found within ``ceil(objects / recheck_batch)`` cycles, at a bounded
request rate.  The monitor never lists the bucket and never writes to it.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.cold.errors import ColdError, ObjectNotFoundError
from pipeline.format.segment import list_segments
from pipeline.monitor.config import ColdWatch
from pipeline.monitor.findings import MonitorFinding
from pipeline.ship.ledger import ACTIVE_STATES, Entry, LedgerView
from pipeline.verify.tier import SegmentLine, TierOptions, _judge_stat

log = logging.getLogger("pipeline.monitor")

NEW_PER_CYCLE = 1000  # newly landed objects stat'ed per cycle at most (the rest next cycle)


@dataclass
class ColdState:
    watermark: float = 0.0  # confirmed_at of the newest row whose object was checked
    evicted_watermark: float = 0.0  # evicted_at of the newest eviction checked
    cursor: tuple[str, int] = ("", -1)  # the rolling re-check's position (stream, first_seq)
    bad: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # "stream/segment" -> findings

    def to_dict(self) -> dict[str, Any]:
        return {"watermark": self.watermark, "evicted_watermark": self.evicted_watermark,
                "cursor": list(self.cursor), "bad": self.bad}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ColdState:
        c = d.get("cursor") or ("", -1)
        return cls(float(d.get("watermark", 0.0)), float(d.get("evicted_watermark", 0.0)), (str(c[0]), int(c[1])),
                   dict(d.get("bad") or {}))


@dataclass
class ColdResult:
    findings: list[MonitorFinding]
    checked: int
    in_flight: int


class ColdWatcher:
    def __init__(self, opts: ColdWatch, hot: Path | None, streams: tuple[str, ...], state: ColdState,
                 store: Any | None) -> None:
        self.opts = opts
        self.hot = hot
        self.streams = streams
        self.state = state
        self.store = store
        self._tier_opts = TierOptions(allow_unlocked=opts.allow_unlocked, retention_days=opts.retention_days)
        self._recheck_due = 0.0  # monotonic time of the next rolling re-check

    def _watched(self, stream: str) -> bool:
        return not self.streams or stream in self.streams

    def cycle(self, ledger: LedgerView | None) -> ColdResult:
        findings: list[MonitorFinding] = []
        if ledger is None:
            return ColdResult(self._sticky(), 0, 0)
        # the hot listing BEFORE the ledger read: the shipper records `evicted` before it
        # unlinks, so a file missing here has its eviction in the rows read after
        present = self._hot_files()
        now = time.time()
        in_flight = 0
        for e in ledger.entries(states=(*ACTIVE_STATES, "quarantined")):
            if not self._watched(e.stream):
                continue
            if e.state == "quarantined":
                findings.append(MonitorFinding("quarantined", e.stream, e.segment,
                                               f"the shipper quarantined {e.segment}: {e.last_error or 'see its log'}",
                                               e.first_seq, "ledger"))
                continue
            in_flight += 1
            age = now - e.discovered_at
            if age > self.opts.max_lag:
                findings.append(MonitorFinding(
                    "cold-lag", e.stream, e.segment,
                    f"{e.segment} (seq {e.first_seq}..{e.last_seq}) was sealed {age:.0f} s ago and is still "
                    f"{e.state} (cold.max_lag {self.opts.max_lag:g} s)"
                    + (f"; last error: {e.last_error}" if e.last_error else ""), e.first_seq, "ledger"))
        if present is not None:
            for e in ledger.not_evicted():
                if self._watched(e.stream) and (e.stream, e.segment) not in present:
                    findings.append(MonitorFinding(
                        "hot-segment-missing", e.stream, e.segment,
                        f"{e.segment} is gone from the hot tier but the ledger holds it as {e.state}, not evicted: "
                        "deleted or renamed outside eviction" + ("" if e.state == "confirmed" else
                                                                 ", and no confirmed cold copy exists"),
                        e.first_seq, "hot"))
        checked = self._check_objects(ledger, findings)
        return ColdResult(findings + self._sticky(), checked, in_flight)

    def _hot_files(self) -> set[tuple[str, str]] | None:
        if self.hot is None:
            return None
        # every stream directory, not the streams the ledger names: a stream whose first
        # segment is sealed between this listing and the ledger read below would otherwise
        # not be listed, and its segment reported missing
        try:
            streams = [d.name for d in self.hot.iterdir() if not d.name.startswith(".") and d.is_dir()]
        except FileNotFoundError:
            streams = []
        return {(s, p.name) for s in streams for p in list_segments(self.hot / s)}

    def _sticky(self) -> list[MonitorFinding]:
        return [MonitorFinding.from_dict(d) for fs in self.state.bad.values() for d in fs]

    def _unconfirmed_evictions(self, ledger: LedgerView) -> None:
        """Rows evicted without a confirmation (never in ``landed_since``): the hot copy is gone
        and nothing says a cold copy was proven."""
        st = self.state
        for e in ledger.evicted_since(st.evicted_watermark, NEW_PER_CYCLE):
            if self._watched(e.stream) and e.confirmed_at is None:
                if self.store is not None:
                    self._check(e)
                else:
                    st.bad[f"{e.stream}/{e.segment}"] = [_unconfirmed(e).to_dict()]
            st.evicted_watermark = max(st.evicted_watermark, e.evicted_at or 0.0)

    def _check_objects(self, ledger: LedgerView, findings: list[MonitorFinding]) -> int:
        try:
            self._unconfirmed_evictions(ledger)
        except ColdError as exc:
            findings.append(MonitorFinding("cold-unreachable", "", "", f"cannot read cold storage: {exc}", None,
                                           "cold"))
            return 0
        if self.store is None:
            return 0
        st = self.state
        new = [e for e in ledger.landed_since(st.watermark, NEW_PER_CYCLE) if self._watched(e.stream)]
        checked = 0
        try:
            for e in new:
                self._check(e)
                checked += 1
                st.watermark = max(st.watermark, e.confirmed_at or 0.0)
            if self.opts.recheck_batch and time.monotonic() >= self._recheck_due:
                self._recheck_due = time.monotonic() + self.opts.recheck_interval
                batch = [e for e in ledger.shipped_after(*st.cursor, self.opts.recheck_batch)
                         if self._watched(e.stream)]
                for e in batch:
                    self._check(e)
                    checked += 1
                    st.cursor = (e.stream, e.first_seq)
                if len(batch) < self.opts.recheck_batch:
                    st.cursor = ("", -1)  # wrap around: the next cycle starts from the oldest again
        except ColdError as exc:
            findings.append(MonitorFinding("cold-unreachable", "", "", f"cannot read cold storage: {exc}", None,
                                           "cold"))
        return checked

    def _check(self, e: Entry) -> None:
        """One HEAD, judged; the result replaces what was known of this object."""
        assert self.store is not None
        name = f"{e.stream}/{e.segment}"
        out: list[MonitorFinding] = []
        if not e.cold_key:
            out.append(MonitorFinding("missing-object", e.stream, e.segment, f"the ledger holds {e.segment} as "
                                      f"{e.state} but records no object key", e.first_seq, "cold"))
        else:
            try:
                stat = self.store.stat(e.cold_key)
            except ObjectNotFoundError:
                code = "evicted-without-cold-copy" if e.state == "evicted" else "missing-object"
                what = ("its hot copy was evicted, so its records survive nowhere" if e.state == "evicted" else
                        "the hot copy still exists")
                out.append(MonitorFinding(code, e.stream, e.segment, f"cold object {e.cold_key} is missing "
                                          f"(confirmed {_iso(e.confirmed_at)}): {what}", e.first_seq, "cold"))
            else:
                def add(code: str, message: str, seq: int | None) -> None:
                    out.append(MonitorFinding(code, e.stream, e.segment, f"{e.cold_key}: {message}",
                                              seq if seq is not None else e.first_seq, "cold"))

                _judge_stat(SegmentLine(e.segment, e.cold_key), stat, e.stream, e.segment, e, self._tier_opts,
                            self.opts.retention_days, None, dt.datetime.now(dt.UTC), add)
        if e.state == "evicted" and e.confirmed_at is None:
            out.append(_unconfirmed(e))
        # "expiring-soon" is a warning of verify-tier's audit, not a monitor alert
        out = [f for f in out if f.code != "expiring-soon"]
        if out:
            self.state.bad[name] = [f.to_dict() for f in out]
        else:
            self.state.bad.pop(name, None)


def _unconfirmed(e: Entry) -> MonitorFinding:
    return MonitorFinding("evicted-without-cold-copy", e.stream, e.segment, f"{e.segment} was evicted from the hot "
                          "tier but the ledger records no confirmed cold copy", e.first_seq, "ledger")


def _iso(t: float | None) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat() if t else "?"
