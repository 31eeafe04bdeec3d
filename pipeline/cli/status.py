"""``pipeline status``: streams, segments, sizes and append-only state of the hot tier."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import orjson

from pipeline import _accel
from pipeline.cli import EXIT_OK
from pipeline.cli._common import add_hot_args, add_verb, refuse_wrong_hot, streams_of
from pipeline.format import attr
from pipeline.format.layout import read_head_or_none
from pipeline.format.segment import list_segments
from pipeline.ship.ledger import ACTIVE_STATES, open_ledger_readonly


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_verb(sub, "status", summary="show streams, segments, sizes and append-only state", description="""
        Show the hot tier: each stream's segments, sizes, which are sealed, and whether
        the append-only / immutable attributes are set on them.  Reads only; with --json,
        one JSON document for scripts and monitoring.""",
                 examples=[("every stream", "pipeline status --hot /var/lib/worm"),
                           ("one stream, as JSON", "pipeline status --hot /var/lib/worm --stream auth --json")])
    add_hot_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def stream_status(hot: Any, name: str) -> dict[str, Any]:
    d = hot / name
    segs = []
    for path in list_segments(d):
        try:
            flags = attr.get_flags(path)
        except OSError:
            flags = 0
        segs.append({
            "segment": path.name,
            "bytes": path.stat().st_size,
            "append_only": bool(flags & attr.FS_APPEND_FL),
            "immutable": bool(flags & attr.FS_IMMUTABLE_FL),
        })
    head = read_head_or_none(d)
    return {
        "stream": name,
        "segments": segs,
        "bytes": sum(s["bytes"] for s in segs),
        "sealed_segments": sum(1 for s in segs if s["immutable"]),
        "next_seq_at_last_seal": head.next_seq if head is not None else None,
    }


def shipping_status(hot: Any, stream: str | None, now: float | None = None) -> dict[str, Any] | None:
    """What the shipper ledger says (docs/LEDGER.md): confirmed, pending, in backoff,
    quarantined, and the cold lag (age of the oldest segment not yet confirmed).  None
    when the hot tier has no ledger (nothing was ever shipped from it)."""
    ledger = open_ledger_readonly(hot)
    if ledger is None:
        return None
    try:
        entries = ledger.entries(stream=stream)
    finally:
        ledger.close()
    now = time.time() if now is None else now
    active = [e for e in entries if e.state in ACTIVE_STATES]
    waiting = [e for e in active if e.attempts and e.next_attempt > now]
    unconfirmed = active + [e for e in entries if e.state == "quarantined"]
    return {
        "confirmed": sum(1 for e in entries if e.state in ("confirmed", "evicted")),
        "evicted": sum(1 for e in entries if e.state == "evicted"),
        "pending": len(active),
        "in_backoff": len(waiting),
        "quarantined": sum(1 for e in entries if e.state == "quarantined"),
        "cold_lag_seconds": round(max(0.0, now - min(e.discovered_at for e in unconfirmed)), 3) if unconfirmed else 0.0,
        "next_attempt_in_seconds": round(min(e.next_attempt for e in waiting) - now, 1) if waiting else None,
        "last_error": next((e.last_error for e in sorted(unconfirmed, key=lambda e: -e.updated_at) if e.last_error),
                           None),
    }


def run(args: argparse.Namespace) -> int:
    refused = refuse_wrong_hot(args.hot, args.stream)
    if refused is not None:
        return refused
    doc: dict[str, Any] = {"hot": str(args.hot), "platform": attr.platform_support_info(),
           "accelerator": _accel.describe(),
           "streams": [stream_status(args.hot, s) for s in streams_of(args.hot, args.stream)],
           "shipping": shipping_status(args.hot, args.stream)}
    if args.json:
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
        return EXIT_OK
    plat = doc["platform"]
    print(f"hot tier {args.hot}  platform {plat['platform']}  append-only supported={plat['supported']} "
          f"capability={plat['has_capability']} policy={plat['policy']}")
    for note in plat["notes"]:
        print(f"  note: {note}")
    print(f"  per-record work: {doc['accelerator']}")
    ship = doc["shipping"]
    if ship is None:
        print("  shipping: no shipper ledger (.ship/): nothing has been shipped from this hot tier")
    else:
        wait = f" (next attempt in {ship['next_attempt_in_seconds']:g} s)" if ship["in_backoff"] else ""
        print(f"  shipping: {ship['confirmed']} confirmed ({ship['evicted']} evicted), {ship['pending']} pending, "
              f"{ship['in_backoff']} in backoff{wait}, {ship['quarantined']} quarantined, "
              f"cold lag {ship['cold_lag_seconds']:g} s")
        if ship["last_error"]:
            print(f"    last error: {str(ship['last_error']).splitlines()[0][:300]}")
    for st in doc["streams"]:
        print(f"stream {st['stream']}: {len(st['segments'])} segments, {st['bytes']} bytes, "
              f"{st['sealed_segments']} sealed (immutable)")
        for s in st["segments"]:
            state = "immutable" if s["immutable"] else "append-only" if s["append_only"] else "UNPROTECTED"
            print(f"  {s['segment']}  {s['bytes']:>12} bytes  {state}")
    return EXIT_OK
