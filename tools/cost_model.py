"""Cold-storage cost model (issue 8): requests and bytes per segment, per day and per year,
and what they cost at list prices, kept for the retention period.

    .venv/bin/python tools/cost_model.py              # print docs/COSTS.md's tables
    .venv/bin/python tools/cost_model.py --write-doc  # regenerate the generated part of docs/COSTS.md

Every number in docs/COSTS.md between the ``cost-model`` markers comes from here, so the
tables can be regenerated when prices, the measured compression ratio or the defaults
change; tests/infra/test_cost_model.py checks cells of the document against this module.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "COSTS.md"
BEGIN, END = "<!-- cost-model:begin -->", "<!-- cost-model:end -->"

# Workload and defaults --------------------------------------------------------------------
EVENTS_PER_S = 1000  # per sidecar
RECORD_BYTES = 313  # a realistic chained record line (docs/BENCHMARKS.md "Compression")
# Stored/segment bytes at zstd level 1, the default: measured by bench/bench_compression.py
# on HotLog records of this size (docs/BENCHMARKS.md "Compression").
COMPRESSION_RATIO = 5.50
SEGMENT_MAX_BYTES = 64 << 20  # hot.segment_max_bytes default: a segment is cut at this size too
SIDECARS = (1, 100, 10_000)
WINDOWS_MIN = (1, 5, 15)
RETENTION_DAYS = 2555  # seven years, the cold.retention_days default
DAYS_PER_MONTH = 365 / 12
RETENTION_MONTHS = RETENTION_DAYS / DAYS_PER_MONTH  # 84.0 GB-months per GB stored
PRICE_GB = 1 << 30  # S3 and Azure price per GiB ("GB" on their pages is 2^30 bytes)


@dataclass(frozen=True)
class StorageClass:
    name: str
    gb_month: float  # $ per GB-month (first pricing tier)
    put: float  # $ per upload request (PUT / Put Blob)
    read: float  # $ per read-class request (HEAD / GET / Get Blob Properties)
    retrieval_gb: float  # $ per GB read back
    min_object: int  # bytes: smaller objects are billed as this size
    min_days: int  # minimum storage duration billed
    reads_per_segment: int  # copy-then-verify reads per segment
    readback: bool  # copy-then-verify downloads the whole object (pays retrieval)


# List prices, us-east-1 (AWS) and East US, LRS (Azure), as published on
# aws.amazon.com/s3/pricing and azure.microsoft.com/pricing/details/storage/blobs in 2025
# (unchanged since Glacier Instant Retrieval's launch in November 2021 for AWS).  Not
# fetched live: check them before budgeting; only this table needs editing.
CLASSES = (
    StorageClass("S3 Standard", 0.023, 0.005 / 1000, 0.0004 / 1000, 0.0, 0, 0, 1, False),
    StorageClass("S3 Standard-IA", 0.0125, 0.01 / 1000, 0.001 / 1000, 0.01, 128 * 1024, 30, 1, False),
    StorageClass("S3 Glacier Instant Retrieval", 0.004, 0.02 / 1000, 0.01 / 1000, 0.03, 128 * 1024, 90, 1,
                 False),
    # Azure keeps no SHA-256: copy-then-verify reads properties and downloads the blob
    # (docs/COLD.md), so every upload also pays one read-back at the Cool retrieval price.
    StorageClass("Azure Blob Cool (LRS)", 0.01, 0.10 / 10_000, 0.01 / 10_000, 0.01, 0, 30, 2, True),
)


@dataclass(frozen=True)
class Row:
    cls: StorageClass
    sidecars: int
    window_min: int
    compressed: bool
    segment_bytes: float  # uncompressed size of one segment
    object_bytes: float  # stored size of one object
    billed_object_bytes: float  # after the class's minimum object size
    segments_per_day: float  # fleet-wide
    stored_gb_per_day: float  # fleet-wide, billed GB
    requests_per_day: float  # fleet-wide, uploads + verification reads
    request_cost_year: float
    readback_cost_year: float
    storage_cost_first_year: float  # a year's data, billed for the months it exists that year
    retention_total_per_year: float  # one year of logs, requests + storage for the full retention

    @property
    def put_cost_year(self) -> float:
        return self.request_cost_year + self.readback_cost_year


def segment_shape(window_min: float, events_per_s: float = EVENTS_PER_S) -> tuple[int, float]:
    """(segments per window, uncompressed bytes per segment) for one sidecar: the hot log
    cuts a segment at the window boundary or at SEGMENT_MAX_BYTES, whichever comes first."""
    window_bytes = events_per_s * window_min * 60 * RECORD_BYTES
    n = max(1, math.ceil(window_bytes / SEGMENT_MAX_BYTES))
    return n, window_bytes / n


def row(cls: StorageClass, sidecars: int, window_min: float, compressed: bool,
        events_per_s: float = EVENTS_PER_S, ratio: float = COMPRESSION_RATIO) -> Row:
    n, seg = segment_shape(window_min, events_per_s)
    obj = seg / ratio if compressed else seg
    billed = max(obj, cls.min_object)
    segs_day = sidecars * n * (86400 / (window_min * 60))
    gb_day = segs_day * billed / PRICE_GB
    req_day = segs_day * (1 + cls.reads_per_segment)
    request_year = 365 * segs_day * (cls.put + cls.read * cls.reads_per_segment)
    readback_year = 365 * segs_day * obj / PRICE_GB * cls.retrieval_gb if cls.readback else 0.0
    # Data written evenly over the year is stored for 6 months of it on average.
    first_year = 365 * gb_day * cls.gb_month * 6
    retention = 365 * gb_day * cls.gb_month * max(RETENTION_MONTHS, cls.min_days / DAYS_PER_MONTH)
    return Row(cls, sidecars, int(window_min), compressed, seg, obj, billed, segs_day, gb_day, req_day,
               request_year, readback_year, first_year, request_year + readback_year + retention)


def break_even_window_min(cls: StorageClass, compressed: bool, events_per_s: float, months: float,
                          ratio: float = COMPRESSION_RATIO) -> float:
    """Shortest window (minutes) for which one segment's per-object overhead costs no more
    than storing its bytes for ``months``.  Overhead: upload + verification reads (+ Azure's
    read-back) + the storage billed for padding a small object up to the class minimum."""
    lo, hi = 1 / 60, 7 * 24 * 60.0
    if _overhead_ok(cls, compressed, events_per_s, months, ratio, lo):
        return lo
    for _ in range(60):  # bisection: the overhead share falls monotonically with the window
        mid = (lo + hi) / 2
        if _overhead_ok(cls, compressed, events_per_s, months, ratio, mid):
            hi = mid
        else:
            lo = mid
    return hi


def _overhead_ok(cls: StorageClass, compressed: bool, events_per_s: float, months: float, ratio: float,
                 window_min: float) -> bool:
    r = row(cls, 1, window_min, compressed, events_per_s, ratio)
    requests = r.put_cost_year / (365 * r.segments_per_day)
    padding = (r.billed_object_bytes - r.object_bytes) / PRICE_GB * cls.gb_month * months
    storage = r.object_bytes / PRICE_GB * cls.gb_month * months
    return requests + padding <= storage


# Lifecycle transitions ($ per object moved), us-east-1, same source as CLASSES.
TRANSITION_TO_IA = 0.01 / 1000
TRANSITION_TO_GIR = 0.02 / 1000
IA_AFTER_DAYS, GIR_AFTER_DAYS = 30, 90  # terraform/aws defaults


def lifecycle_total_per_year(sidecars: int, window_min: float, compressed: bool,
                             ratio: float = COMPRESSION_RATIO) -> tuple[float, float]:
    """(requests incl. transitions, total) for one year of logs kept 7 years under the
    Terraform lifecycle: Standard, Standard-IA from day 30, Glacier IR from day 90."""
    std, ia, gir = CLASSES[0], CLASSES[1], CLASSES[2]
    r = row(std, sidecars, window_min, compressed, ratio=ratio)
    objects_year = 365 * r.segments_per_day
    requests = r.request_cost_year + objects_year * (TRANSITION_TO_IA + TRANSITION_TO_GIR)
    billed = max(r.object_bytes, ia.min_object)  # IA and Glacier IR bill small objects as 128 KB
    gb_year = objects_year * billed / PRICE_GB
    months_std = IA_AFTER_DAYS / DAYS_PER_MONTH
    months_ia = (GIR_AFTER_DAYS - IA_AFTER_DAYS) / DAYS_PER_MONTH
    months_gir = RETENTION_MONTHS - GIR_AFTER_DAYS / DAYS_PER_MONTH
    storage = (objects_year * r.object_bytes / PRICE_GB * std.gb_month * months_std
               + gb_year * (ia.gb_month * months_ia + gir.gb_month * months_gir))
    return requests, requests + storage


def worked_example(ratio: float = COMPRESSION_RATIO) -> str:
    """The arithmetic behind one row, spelled out with the same numbers the tables use."""
    w, cls = 5, CLASSES[0]
    n, seg = segment_shape(w)
    r = row(cls, 1, w, True, ratio=ratio)
    per_year = 365 * r.segments_per_day
    window_bytes = EVENTS_PER_S * w * 60 * RECORD_BYTES
    lines = [
        f"One sidecar, {w}-minute window, zstd, {cls.name}:",
        "",
        f"- bytes per window: {EVENTS_PER_S:,} events/s x {w * 60} s x {RECORD_BYTES} B = {window_bytes:,} B "
        f"({size(window_bytes)}); the hot log also cuts segments at {size(SEGMENT_MAX_BYTES)}, so "
        f"{n} segment(s) of {size(seg)}",
        f"- stored object: {size(seg)} / {ratio:.2f} = {size(r.object_bytes)}",
        f"- segments per day: {n} x 86,400 s / {w * 60} s = {r.segments_per_day:,.0f}; requests per day: "
        f"{r.segments_per_day:,.0f} x (1 PUT + {cls.reads_per_segment} HEAD) = {r.requests_per_day:,.0f}",
        f"- requests per year: {per_year:,.0f} x ${cls.put * 1000:g}/1,000 + {per_year:,.0f} x "
        f"${cls.read * 1000:g}/1,000 = {money(r.request_cost_year)}",
        f"- bytes per day: {EVENTS_PER_S:,} x 86,400 x {RECORD_BYTES} B / {ratio:.2f} = "
        f"{r.stored_gb_per_day:.2f} GB (GiB, as billed); per year {r.stored_gb_per_day * 365:,.0f} GB",
        f"- storage in the first year (written evenly, so stored 6 months on average): "
        f"{r.stored_gb_per_day * 365:,.0f} GB x ${cls.gb_month:g} x 6 = {money(r.storage_cost_first_year)}",
        f"- one year of logs kept 7 years ({RETENTION_DAYS} days = {RETENTION_MONTHS:.2f} months): "
        f"{r.stored_gb_per_day * 365:,.0f} GB x ${cls.gb_month:g} x {RETENTION_MONTHS:.2f} + "
        f"{money(r.request_cost_year)} = {money(r.retention_total_per_year)}",
    ]
    return "\n".join(lines) + "\n"


def money(x: float) -> str:
    if x >= 100:
        return f"${x:,.0f}"
    if x >= 1:
        return f"${x:,.2f}"
    return f"${x:.4f}"


def size(b: float) -> str:
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if b >= div:
            return f"{b / div:.1f} {unit}"
    return f"{b:.0f} B"


def big(x: float) -> str:
    return f"{x:,.0f}"


def tables(ratio: float = COMPRESSION_RATIO) -> str:
    out: list[str] = ["### Worked example\n", worked_example(ratio)]
    out.append("### Per segment and per sidecar (1,000 events/s, "
               f"{RECORD_BYTES} bytes per record, zstd ratio {ratio:.2f}x)\n")
    out.append("| window | segments per window | segment (uncompressed) | object, none | object, zstd | "
               "segments per sidecar per day | bytes per sidecar per day, none | zstd |")
    out.append("|---|---|---|---|---|---|---|---|")
    for w in WINDOWS_MIN:
        n, seg = segment_shape(w)
        per_day = n * 86400 / (w * 60)
        day_bytes = EVENTS_PER_S * 86400 * RECORD_BYTES
        out.append(f"| {w} min | {n} | {size(seg)} | {size(seg)} | {size(seg / ratio)} | {per_day:g} | "
                   f"{size(day_bytes)} | {size(day_bytes / ratio)} |")
    out.append("")
    for cls in CLASSES:
        out.append(f"### {cls.name}\n")
        out.append(f"${cls.gb_month:g}/GB-month, ${cls.put * 1000:g} per 1,000 uploads, "
                   f"${cls.read * 1000:g} per 1,000 reads, {cls.reads_per_segment} verification read(s) per "
                   "segment" + (f", read-back retrieval ${cls.retrieval_gb:g}/GB" if cls.readback else "")
                   + (f"; objects under {cls.min_object // 1024} KB billed as {cls.min_object // 1024} KB"
                      if cls.min_object else "")
                   + (f"; {cls.min_days}-day minimum storage" if cls.min_days else "") + ".\n")
        out.append("| sidecars | window | body | requests per day | GB stored per day | GB per year | "
                   "requests per year | storage, first year | one year kept 7 years (total) |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for sc in SIDECARS:
            for w in WINDOWS_MIN:
                for comp in (False, True):
                    r = row(cls, sc, w, comp, ratio=ratio)
                    out.append(f"| {sc:,} | {w} min | {'zstd' if comp else 'none'} | {big(r.requests_per_day)} | "
                               f"{r.stored_gb_per_day:,.2f} | {r.stored_gb_per_day * 365:,.0f} | "
                               f"{money(r.put_cost_year)} | {money(r.storage_cost_first_year)} | "
                               f"{money(r.retention_total_per_year)} |")
        out.append("")
    out.append("### S3 with the Terraform lifecycle (Standard, Standard-IA from day 30, Glacier IR from day 90)\n")
    out.append(f"Transitions cost ${TRANSITION_TO_IA * 1000:g} (to IA) + ${TRANSITION_TO_GIR * 1000:g} (to Glacier "
               "IR) per 1,000 objects; storage is billed in each class for the time spent there.\n")
    out.append("| sidecars | window | body | requests + transitions per year | one year kept 7 years (total) |")
    out.append("|---|---|---|---|---|")
    for sc in SIDECARS:
        for w in WINDOWS_MIN:
            for comp in (False, True):
                req, tot = lifecycle_total_per_year(sc, w, comp, ratio)
                out.append(f"| {sc:,} | {w} min | {'zstd' if comp else 'none'} | {money(req)} | {money(tot)} |")
    out.append("")
    out.append("### Shortest window that keeps request cost below storage cost (one sidecar)\n")
    out.append("Per segment: its overhead -- upload and verification requests, Azure's read-back, and the "
               "storage billed for padding an object up to the class minimum -- against the storage of its "
               "bytes for their first 12 months / for the whole 7-year retention. Longer windows only lower "
               "the overhead's share.\n")
    rates = (1, 10, 100, 1000)
    out.append("| class | body | " + " | ".join(f"{r} ev/s: 12 months / 7 years" for r in rates) + " |")
    out.append("|---|---|" + "---|" * len(rates))
    for cls in CLASSES:
        for comp in (False, True):
            cells = []
            for rate in rates:
                a = break_even_window_min(cls, comp, rate, 12, ratio)
                b = break_even_window_min(cls, comp, rate, RETENTION_MONTHS, ratio)
                cells.append(f"{fmt_window(a)} / {fmt_window(b)}")
            out.append(f"| {cls.name} | {'zstd' if comp else 'none'} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def fmt_window(minutes: float) -> str:
    if minutes <= 1 / 60:
        return "≤ 1 s"
    if minutes < 1:
        return f"{minutes * 60:.0f} s"
    if minutes < 120:
        return f"{minutes:.0f} min"
    return f"{minutes / 60:.1f} h"


def write_doc(text: str) -> None:
    doc = DOC.read_text()
    start, end = doc.index(BEGIN) + len(BEGIN), doc.index(END)
    DOC.write_text(doc[:start] + "\n" + text + doc[end:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ratio", type=float, default=COMPRESSION_RATIO, help="measured zstd compression ratio")
    ap.add_argument("--write-doc", action="store_true", help="rewrite the generated part of docs/COSTS.md")
    args = ap.parse_args()
    text = tables(args.ratio)
    if args.write_doc:
        write_doc(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
