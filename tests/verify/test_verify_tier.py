"""verify-tier over moto's server (HTTP, real boto3): a clean shipped pipeline, then one fault per test.

Buckets are made WITHOUT Object Lock so the tests can tamper (the shipper runs with
allow_unlocked); the lock findings are produced separately (unlocked objects, and a locked
bucket whose retention moto lets us shorten).
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.cli import main
from tests.tierutil import (
    Pipeline,
    alter_record,
    rewrite_object,
    ship_pipeline,
)

REPO = Path(__file__).resolve().parents[2]
SEGMENTS = 5
EVENTS = 40  # per segment; + 1 seal = 41 records per segment


def name(key: str) -> str:
    return key.rsplit("/", 1)[1].removesuffix(".zst")


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = main([*args, "--json"])
    out = capsys.readouterr().out
    return code, orjson.loads(out)


def codes(doc: dict[str, Any], severity: str | None = "error") -> list[str]:
    return [f["code"] for f in doc["findings"] if severity is None or f["severity"] == severity]


def finding(doc: dict[str, Any], code: str) -> dict[str, Any]:
    return next(f for f in doc["findings"] if f["code"] == code)


@pytest.fixture
def pl(tmp_path: Path, moto_endpoint: str) -> Pipeline:
    return ship_pipeline(tmp_path, moto_endpoint, segments=SEGMENTS, events_per_segment=EVENTS)


def cold_only(pl: Pipeline) -> list[str]:
    return ["verify-tier", "--cold-only", "--cold", pl.url, "--vkey", str(pl.vkey), "--witness-dir",
            str(pl.witness), "--allow-unlocked", "--heartbeat-interval", "0"]


# ---------------------------------------------------------------------------- clean


def test_clean_pipeline_exit_0_with_matching_counts(pl: Pipeline, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = run(pl.base_args(), capsys)
    assert code == 0, doc["findings"]
    assert doc["schema"] == "worm-pipeline/verify-tier/v1" and doc["ok"] is True and doc["mode"] == "default"
    t = doc["totals"]
    assert (t["segments"], t["valid"], t["invalid"], t["missing"]) == (SEGMENTS, SEGMENTS, 0, 0)
    assert t["records"] == SEGMENTS * (EVENTS + 1) == sum(s["records"] for s in doc["streams"][0]["segments"])
    seg = doc["streams"][0]["segments"][0]
    assert seg["status"] == "valid" and seg["hot_state"] == "confirmed" and seg["compression"] == "zstd"
    # listing + exactly one HEAD per segment (checkpoint roots come from the local hot copies)
    r = doc["requests"]
    assert r["list"] == 1 and r["head"] == SEGMENTS and r["get"] == 0
    cps = doc["streams"][0]["checkpoints"]
    assert cps["signatures_verified"] == cps["notes"] > 0 and cps["recomputed"] == SEGMENTS
    assert codes(doc, None) == ["worm-not-enforced"]  # the unlocked test bucket is listed as a warning

    # text output: one line per segment, then totals
    assert main(pl.base_args()) == 0
    text = capsys.readouterr().out
    assert len(re.findall(r"^  valid +audit/app/seg-\d{20}\.jsonl\.zst  seq \d+\.\.\d+", text, re.M)) == SEGMENTS
    assert text.rstrip().splitlines()[-1].startswith(f"OK: {SEGMENTS} segments")

    code, deep = run([*pl.base_args(), "--deep"], capsys)
    assert code == 0, deep["findings"]
    assert deep["requests"]["get"] == SEGMENTS and deep["streams"][0]["checkpoints"]["not_recomputed"] == 0


def test_cold_only_with_only_the_verifier_key(pl: Pipeline, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = run(cold_only(pl), capsys)
    assert code == 0, doc["findings"]
    assert doc["cold_only"] and doc["hot"] is None
    assert doc["totals"]["valid"] == SEGMENTS
    cps = doc["streams"][0]["checkpoints"]
    assert cps["recomputed"] == 1  # the witness's newest, from one downloaded segment
    assert doc["requests"]["get"] == 1 and doc["requests"]["head"] <= SEGMENTS + 1
    # the auditor must bring the key
    assert main(["verify-tier", "--cold-only", "--cold", pl.url]) == 2
    # a wrong key: every checkpoint is rejected
    from pipeline.checkpoint import Signer

    other = pl.vkey.parent / "other.pub"
    other.write_text(Signer.generate("example.com/worm").verifier().to_string())
    code, doc = run([*cold_only(pl)[:5], str(other), *cold_only(pl)[6:]], capsys)
    assert code == 1 and "checkpoint-signature-invalid" in codes(doc)


def test_missing_bucket_exit_2(tmp_path: Path, moto_endpoint: str) -> None:
    hot = tmp_path / "hot"
    hot.mkdir()
    url = f"s3://no-such-bucket/p?endpoint_url={moto_endpoint}"
    assert main(["verify-tier", "--hot", str(hot), "--cold", url]) == 2


# ---------------------------------------------------------------------------- presence


def test_deleted_object_in_the_middle(pl: Pipeline, capsys: pytest.CaptureFixture[str]) -> None:
    keys = pl.object_keys()
    pl.client.delete_object(Bucket=pl.bucket, Key=keys[2])
    code, doc = run(pl.base_args(), capsys)
    assert code == 1
    assert set(codes(doc)) == {"missing-object", "missing-segment"}
    assert finding(doc, "missing-object")["segment"] == name(keys[2])
    gap = doc["streams"][0]["gaps"][0]
    assert (gap["from_seq"], gap["to_seq"]) == (2 * (EVENTS + 1), 3 * (EVENTS + 1) - 1)
    statuses = [s["status"] for s in doc["streams"][0]["segments"]]
    assert statuses == ["valid", "valid", "missing", "valid", "valid"]


def test_missing_segment_in_the_middle_cold_only(pl: Pipeline, capsys: pytest.CaptureFixture[str]) -> None:
    keys = pl.object_keys()
    pl.client.delete_object(Bucket=pl.bucket, Key=keys[1])
    code, doc = run(cold_only(pl), capsys)
    assert code == 1 and codes(doc) == ["missing-segment"]
    assert f"records {EVENTS + 1}..{2 * (EVENTS + 1) - 1}" in finding(doc, "missing-segment")["message"]


def test_two_consecutive_missing_segments_are_one_exact_gap(pl: Pipeline,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    # CloudTrail's digest chain loses track when two consecutive digests go; here each object
    # states its own seq range, so the gap is exact whatever its length
    keys = pl.object_keys()
    for k in keys[1:3]:
        pl.client.delete_object(Bucket=pl.bucket, Key=k)
    code, doc = run(cold_only(pl), capsys)
    assert code == 1 and codes(doc) == ["missing-segment"]
    gap = doc["streams"][0]["gaps"][0]
    assert (gap["from_seq"], gap["to_seq"]) == (EVENTS + 1, 3 * (EVENTS + 1) - 1)
    code, doc = run(pl.base_args(), capsys)
    assert sorted(codes(doc)) == ["missing-object", "missing-object", "missing-segment"]


def test_deleted_newest_objects_caught_by_the_witness(pl: Pipeline, capsys: pytest.CaptureFixture[str]) -> None:
    for k in pl.object_keys()[-2:]:
        pl.client.delete_object(Bucket=pl.bucket, Key=k)
    code, doc = run(cold_only(pl), capsys)
    assert code == 1 and "witness-ahead" in codes(doc)


def test_renamed_and_reordered_objects(pl: Pipeline, capsys: pytest.CaptureFixture[str]) -> None:
    keys = pl.object_keys()
    # renamed: copied under another segment name, original removed
    raw = pl.get(keys[4])
    meta = pl.head(keys[4])["Metadata"]
    renamed = keys[4].replace(keys[4].rsplit("/", 1)[1], "seg-00000000000000099999.jsonl.zst")
    pl.put(renamed, raw, meta)
    pl.client.delete_object(Bucket=pl.bucket, Key=keys[4])
    # reordered: the bodies (with their metadata) of segments 1 and 2 swapped
    a, b = pl.get(keys[1]), pl.get(keys[2])
    ma, mb = pl.head(keys[1])["Metadata"], pl.head(keys[2])["Metadata"]
    pl.put(keys[1], b, mb)
    pl.put(keys[2], a, ma)
    code, doc = run(pl.base_args(), capsys)
    assert code == 1
    bad = {f["segment"] for f in doc["findings"] if f["code"] == "renamed-object"}
    assert bad == {name(keys[1]), name(keys[2]), "seg-00000000000000099999.jsonl"}
    assert "missing-object" in codes(doc)  # the renamed one's ledger entry


# ---------------------------------------------------------------------------- bytes


def test_appended_bytes(pl: Pipeline, capsys: pytest.CaptureFixture[str]) -> None:
    key = pl.object_keys()[2]
    pl.put(key, pl.get(key) + b"appended after the seal\n", pl.head(key)["Metadata"])
    code, doc = run(cold_only(pl), capsys)
    assert code == 1 and "appended-bytes" in codes(doc)
    assert "+24 bytes" in finding(doc, "appended-bytes")["message"]


def test_truncated_object(pl: Pipeline, capsys: pytest.CaptureFixture[str]) -> None:
    key = pl.object_keys()[3]
    pl.put(key, pl.get(key)[:-100], pl.head(key)["Metadata"])
    code, doc = run(cold_only(pl), capsys)
    assert code == 1 and "truncated-object" in codes(doc)
    code, doc = run([*cold_only(pl), "--deep"], capsys)
    assert {"content-invalid", "content-mismatch"} & set(codes(doc))


def test_replaced_object(pl: Pipeline, capsys: pytest.CaptureFixture[str]) -> None:
    keys = pl.object_keys()
    # replaced by another valid segment of the same size class, metadata left as it was
    pl.put(keys[1], pl.get(keys[3]), pl.head(keys[1])["Metadata"])
    code, doc = run(pl.base_args(), capsys)
    assert code == 1 and "object-replaced" in codes(doc)


def test_altered_record_with_consistent_metadata_needs_deep_or_the_ledger(
        pl: Pipeline, capsys: pytest.CaptureFixture[str]) -> None:
    key = pl.object_keys()[2]
    seg = pl.segment_bytes(key)
    rewrite_object(pl, key, alter_record(seg, 5, b'"action":"read"', b'"action":"rm!!"'))
    # the attacker made the object's metadata consistent: HEAD alone cannot tell from the bucket...
    code, doc = run(cold_only(pl), capsys)
    assert code == 0, doc["findings"]
    # ...but the host's ledger remembers what was shipped,
    code, doc = run(pl.base_args(), capsys)
    assert code == 1 and {"object-replaced", "hot-cold-mismatch"} <= set(codes(doc))
    # and --deep re-verifies every record
    code, doc = run([*cold_only(pl), "--deep"], capsys)
    assert code == 1 and "hash-mismatch" in codes(doc)
    assert finding(doc, "hash-mismatch")["seq"] == 2 * (EVENTS + 1) + 5


# ---------------------------------------------------------------------------- locks


def test_object_without_lock(pl: Pipeline, capsys: pytest.CaptureFixture[str]) -> None:
    args = [a for a in pl.base_args() if a != "--allow-unlocked"]
    code, doc = run(args, capsys)
    assert code == 1
    assert codes(doc).count("not-locked") == SEGMENTS
    assert all(s["status"] == "INVALID" and s["lock"] is None for s in doc["streams"][0]["segments"])


def test_short_retention_and_expiry_warning(tmp_path: Path, moto_endpoint: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    pl = ship_pipeline(tmp_path, moto_endpoint, segments=3, events_per_segment=10, lock=True, retention_days=30)
    def args(retention: str = "30", warn: str = "7") -> list[str]:
        return ["verify-tier", "--hot", str(pl.hot), "--cold", pl.url, "--retention-days", retention,
                "--expiry-warning-days", warn, "--heartbeat-interval", "0"]

    code, doc = run(args(), capsys)
    assert code == 0, doc["findings"]
    assert all(s["lock"] == "COMPLIANCE" for s in doc["streams"][0]["segments"])
    key = pl.object_keys()[1]
    # moto accepts shortening COMPLIANCE retention (AWS refuses): the fault an auditor must see
    pl.client.put_object_retention(Bucket=pl.bucket, Key=key, Retention={
        "Mode": "COMPLIANCE", "RetainUntilDate": dt.datetime.now(dt.UTC) + dt.timedelta(days=2)})
    code, doc = run(args(), capsys)
    assert code == 1 and codes(doc) == ["retention-too-short"]
    assert finding(doc, "retention-too-short")["key"] == key
    # within the policy but inside the warning window: listed, not failed
    code, doc = run(args("1", "30"), capsys)
    assert code == 0 and codes(doc, "warning").count("expiring-soon") == 3


# ---------------------------------------------------------------------------- checkpoints


def test_chain_rebuilt_after_witnessed_checkpoint(tmp_path: Path, moto_endpoint: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    victim = ship_pipeline(tmp_path / "v", moto_endpoint, segments=4, events_per_segment=20)
    # the attacker writes a whole new, internally perfect chain (valid hashes, seals, frontiers,
    # consistent metadata) with one event changed and puts it over the victim's objects
    forged = ship_pipeline(tmp_path / "f", moto_endpoint, segments=4, events_per_segment=20, salt="forged",
                           bucket=victim.bucket, prefix="forged")
    for vk, fk in zip(victim.object_keys(), forged.object_keys(), strict=True):
        victim.put(vk, forged.get(fk), forged.head(fk)["Metadata"])
    victim.client.delete_objects(Bucket=victim.bucket, Delete={"Objects": [{"Key": k} for k in forged.object_keys()]})
    code, doc = run(cold_only(victim), capsys)
    assert code == 1
    assert codes(doc) == ["witness-root-mismatch"]
    assert "rebuilt" in finding(doc, "witness-root-mismatch")["message"]
    code, doc = run([*cold_only(victim), "--deep"], capsys)
    assert "witness-root-mismatch" in codes(doc)
    assert doc["streams"][0]["checkpoints"]["recomputed"] == 4


def test_stale_witness(tmp_path: Path, moto_endpoint: str,
                       capsys: pytest.CaptureFixture[str]) -> None:
    pl = ship_pipeline(tmp_path, moto_endpoint, segments=4, events_per_segment=20, witness_upto=1)
    code, doc = run([*cold_only(pl), "--witness-max-lag", "0"], capsys)
    assert code == 1 and codes(doc) == ["witness-stale"]
    assert "covers 21 of 84 records" in finding(doc, "witness-stale")["message"]
    # within the allowed lag it is fine
    code, doc = run(cold_only(pl), capsys)
    assert code == 0, doc["findings"]
    # an empty witness directory is stale too
    code, doc = run([*cold_only(pl)[:7], str(tmp_path / "empty"), *cold_only(pl)[8:]], capsys)
    assert codes(doc) == ["witness-stale"]


def test_evicted_segments_need_their_cold_copies(tmp_path: Path, moto_endpoint: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    pl = ship_pipeline(tmp_path, moto_endpoint, segments=3, events_per_segment=10, evict=True)
    code, doc = run(pl.base_args(), capsys)
    assert code == 0, doc["findings"]
    assert {s["hot_state"] for s in doc["streams"][0]["segments"]} == {"evicted"}
    pl.client.delete_object(Bucket=pl.bucket, Key=pl.object_keys()[0])
    code, doc = run(pl.base_args(), capsys)
    assert code == 1
    assert {"missing-object", "evicted-without-cold-copy", "missing-start"} <= set(codes(doc, None))


def test_time_gap_reported_as_possible_suppression(tmp_path: Path, moto_endpoint: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    pl = ship_pipeline(tmp_path, moto_endpoint, segments=3, events_per_segment=10, pause_after=0)
    base = [a if a != "0" else "0.3" for a in cold_only(pl)]  # heartbeat 0.3 s: silences over 0.6 s count
    # from the records (--deep): the 1 s pause after the first segment
    code, doc = run([*base, "--deep"], capsys)
    assert code == 1 and codes(doc) == ["time-gap"]
    gap = next(g for g in doc["streams"][0]["gaps"] if g["kind"] == "time")
    assert gap["after_segment"] == "seg-00000000000000000000.jsonl" and gap["seconds"] >= 1.0
    # from the metadata alone (default mode), when objects carry record times
    keys = pl.object_keys()
    for i, k in enumerate(keys):
        meta = dict(pl.head(k)["Metadata"])
        meta["worm_first_ts"] = f"2026-11-21T10:{i:02d}:00.000000Z"
        meta["worm_last_ts"] = f"2026-11-21T10:{i:02d}:00.100000Z" if i != 1 else "2026-11-21T10:01:00.200000Z"
        pl.put(k, pl.get(k), meta)
    code, doc = run(base, capsys)
    assert code == 1 and codes(doc) == ["time-gap", "time-gap"]
    code, doc = run([*base[:-1], "100"], capsys)  # a 100 s heartbeat: a minute between segments is fine
    assert code == 0, doc["findings"]


def test_s3_witness_and_time_window(tmp_path: Path, moto_endpoint: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    from tests.tierutil import new_bucket

    wbucket = new_bucket(moto_endpoint)
    pl = ship_pipeline(tmp_path, moto_endpoint, segments=4, events_per_segment=10,
                       s3_witness=(moto_endpoint, wbucket))
    args = ["verify-tier", "--cold-only", "--cold", pl.url, "--vkey", str(pl.vkey), "--allow-unlocked",
            "--heartbeat-interval", "0", "--witness-s3", f"s3://{wbucket}/witness?endpoint_url={moto_endpoint}"]
    code, doc = run(args, capsys)
    assert code == 0, doc["findings"]
    cps = doc["streams"][0]["checkpoints"]
    assert cps["recomputed"] == 1 and list(cps["witness_latest_size"].values()) == [44]
    # the window: objects whose metadata records times outside it are left out, and continuity is
    # checked inside it (the first segment in the window need not start at seq 0)
    for i, k in enumerate(pl.object_keys()):
        meta = dict(pl.head(k)["Metadata"])
        meta["worm_first_ts"] = f"2026-11-2{i}T10:00:00.000000Z"
        meta["worm_last_ts"] = f"2026-11-2{i}T10:00:30.000000Z"
        pl.put(k, pl.get(k), meta)
    code, doc = run([*args, "--since", "2026-11-21T00:00:00Z", "--until", "2026-11-22T23:00:00Z"], capsys)
    assert code == 0, doc["findings"]
    segs = doc["streams"][0]["segments"]
    assert [s["first_seq"] for s in segs] == [11, 22] and doc["totals"]["outside_window"] == 2
    assert doc["window"]["since"] == "2026-11-21T00:00:00Z"


# ---------------------------------------------------------------------------- memory of the in-process report


def test_heads_in_flight_are_bounded_by_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-process report submits HEADs in a bounded window (4 per worker), not the whole
    listing at once: every HEAD submitted and not yet judged holds its future and, once done,
    its ObjectStat (the ~5 KB per segment docs/SCALING.md measured).  Counted, not timed:
    ``Executor.map`` submits every item before it yields the first result, so without the
    bound all ``n`` are outstanding when the first is judged."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.verify import tier
    from tests.verify.test_streaming import _FakeStore

    n, workers = 200, 2
    lock = threading.Lock()
    counts = {"submitted": 0, "judged": 0, "peak": 0}

    class Counting(ThreadPoolExecutor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            with lock:
                counts["submitted"] += 1
                counts["peak"] = max(counts["peak"], counts["submitted"] - counts["judged"])
            return super().submit(fn, *args, **kwargs)

    judge = tier._judge_stat

    def judged(*a: Any, **k: Any) -> Any:
        with lock:
            counts["judged"] += 1
        return judge(*a, **k)

    monkeypatch.setattr(tier, "ThreadPoolExecutor", Counting)
    monkeypatch.setattr(tier, "_judge_stat", judged)
    store: Any = _FakeStore(n)
    report = tier.verify_tier(store, tier.TierOptions(cold_only=True, heartbeat_interval=0, workers=workers))
    assert counts["judged"] == counts["submitted"] == n
    assert counts["peak"] <= tier.WINDOW_PER_WORKER * workers, counts
    # the report is the whole listing's, every segment judged valid, in order, as before
    t = report.totals()
    assert report.ok and (t["segments"], t["valid"]) == (n, n), (t, report.findings)
    names = [s.segment for s in report.streams[0].segments]
    assert len(names) == n and names == sorted(names)
    assert report.requests["head"] == n
