"""verify-tier --inventory --index against a real shipped pipeline on moto's server (HTTP, boto3).

The index is written by the real Shipper into an Object Lock bucket; the S3 Inventory report
is generated from the bucket's own version listing (tests/verify/inventoryutil.py).  Every
tamper is first shown to direct mode (host mode: listing + HEADs), then to inventory mode,
and both must report the same finding code: the fleet path loses none of direct mode's
findings.  The rewritten index part is inventory mode's own.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.cold import ColdSettings, open_store
from pipeline.ship.shipper import Shipper
from tests.tierutil import ORIGIN_PREFIX, Pipeline, build_hot, new_bucket, s3_client, ship_pipeline
from tests.verify.inventoryutil import write_inventory

# each test ships a pipeline, builds an inventory and runs both modes: 10-25 s on 2 loaded cores
pytestmark = pytest.mark.slow

SEGMENTS = 4
EVENTS = 10


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = main([*args, "--json"])
    return code, orjson.loads(capsys.readouterr().out)


def codes(doc: dict[str, Any], severity: str | None = "error") -> set[str]:
    return {f["code"] for f in doc["findings"] if severity is None or f["severity"] == severity}


def direct(pl: Pipeline, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict[str, Any]]:
    return run(["verify-tier", "--hot", str(pl.hot), "--cold", pl.url, "--vkey", str(pl.vkey), "--witness-dir",
                str(pl.witness), "--heartbeat-interval", "0", "--retention-days", "1", *extra], capsys)


def inventory(pl: Pipeline, endpoint: str, capsys: pytest.CaptureFixture[str],
              *extra: str) -> tuple[int, dict[str, Any]]:
    dest = new_bucket(endpoint)
    manifest = write_inventory(pl.client, pl.bucket, dest, endpoint=endpoint)
    index = f"s3://{pl.bucket}/{pl.prefix}/_index/?endpoint_url={endpoint}&region=us-east-1"
    return run(["verify-tier", "--cold", pl.url, "--inventory", manifest, "--index", index, "--vkey", str(pl.vkey),
                "--witness-dir", str(pl.witness), "--heartbeat-interval", "0", "--retention-days", "1",
                "--sample", "0", *extra], capsys)


def both(pl: Pipeline, endpoint: str, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[set[str], set[str]]:
    dcode, d = direct(pl, capsys, *extra)
    icode, i = inventory(pl, endpoint, capsys, *extra)
    assert dcode == 1 and icode == 1, (d["findings"], i["findings"])
    return codes(d), codes(i)


def locked(tmp_path: Path, endpoint: str, **kw: Any) -> Pipeline:
    return ship_pipeline(tmp_path, endpoint, segments=SEGMENTS, events_per_segment=EVENTS, lock=True, **kw)


def seg_keys(pl: Pipeline) -> list[str]:
    return pl.object_keys()


def index_keys(pl: Pipeline) -> list[str]:
    return pl.object_keys(index=True)


def put_version(pl: Pipeline, key: str, body: bytes) -> None:
    """A plain PUT over a locked key: S3 keeps the locked version and adds a newer one."""
    meta = dict(pl.head(key)["Metadata"])
    pl.put(key, body, meta)


# ---------------------------------------------------------------------------- clean


def test_clean_locked_pipeline(tmp_path: Path, moto_endpoint: str, capsys: pytest.CaptureFixture[str]) -> None:
    pl = locked(tmp_path, moto_endpoint)
    assert len(index_keys(pl)) == 1  # one part: one stream, one day, one pass
    code, doc = inventory(pl, moto_endpoint, capsys, "--sample", "1")
    assert code == 0, doc["findings"]
    assert doc["schema"] == "worm-pipeline/verify-tier/v1" and doc["mode"] == "inventory" and doc["ok"]
    t = doc["totals"]
    assert (t["segments"], t["valid"], t["invalid"], t["missing"]) == (SEGMENTS, SEGMENTS, 0, 0)
    assert t["records"] == SEGMENTS * (EVENTS + 1) and t["sampled"] == SEGMENTS
    assert codes(doc, None) == {"expiring-soon"}  # 1-day retention in the test bucket
    cps = doc["streams"][0]["checkpoints"]
    assert cps["signatures_verified"] == cps["notes"] > 0 and cps["recomputed"] == 1
    # no listing of segments, no HEAD per segment: manifest + checksum + 1 data file + 1 index
    # list + 1 index part, then one HEAD + GET per sampled segment
    r = doc["requests"]
    assert (r["list"], r["get"] - r["head"], r["head"]) == (1, 4, SEGMENTS), r
    assert inventory(pl, moto_endpoint, capsys, "--stream", "app")[0] == 0
    assert main(["verify-tier", "--cold", pl.url, "--inventory", "x", "--index", "y", "--stream", "bad name"]) == 2
    capsys.readouterr()
    # direct mode ignores the index objects (not strays)
    dcode, d = direct(pl, capsys)
    assert dcode == 0 and codes(d, None) <= {"expiring-soon"}, d["findings"]
    # one JSON schema for both modes: every key direct mode writes, at every level, is there
    code, doc = inventory(pl, moto_endpoint, capsys)
    assert doc.keys() == d.keys() and doc["schema"] == d["schema"]
    s_inv, s_dir = doc["streams"][0], d["streams"][0]
    assert s_inv.keys() == s_dir.keys() and s_inv["checkpoints"].keys() == s_dir["checkpoints"].keys()
    assert set(s_dir["totals"]) <= set(s_inv["totals"]) and set(d["totals"]) <= set(doc["totals"])
    assert set(d["requests"]) <= set(doc["requests"])
    assert s_inv["segments"] and s_inv["segments"][0].keys() == s_dir["segments"][0].keys()
    assert {tuple(f) for f in doc["findings"]} == {tuple(f) for f in d["findings"]}  # the finding's keys


def test_index_rows_match_the_ledger(tmp_path: Path, moto_endpoint: str) -> None:
    from pipeline.ship.index import COLUMNS, read_part_meta
    from pipeline.ship.ledger import Ledger

    pl = locked(tmp_path, moto_endpoint)
    [key] = index_keys(pl)
    data = pl.get(key)
    meta, n = read_part_meta(data)
    assert (meta.stream, meta.part, meta.prev_sha256, n) == ("app", 0, "0" * 64, SEGMENTS)
    head = pl.head(key)
    assert head["ObjectLockMode"] == "COMPLIANCE" and head["Metadata"]["worm_index_part"] == "0"
    rows = pq.read_table(pa.BufferReader(data)).to_pylist()
    ledger = Ledger(pl.hot)
    entries = {e.segment: e for e in ledger.entries()}
    for r in rows:
        e = entries[r["segment"]]
        assert e.first_ts and e.last_ts and e.index_part == key  # record times recorded for every segment
        assert r["first_ts"].isoformat().replace("+00:00", "Z") == e.first_ts
        assert (r["first_seq"], r["last_seq"], r["sha256"], r["stored_sha256"], r["stored_size"], r["tree_size"]) == \
            (e.first_seq, e.last_seq, e.sha256, e.stored_sha256, e.stored_size, e.tree_size)
        assert r["key"] == e.cold_key and r["tree_root"] == e.tree_root and r["tree_size"] == e.last_seq
        # every other column docs/INDEX.md lists, against the ledger row at confirmation
        assert (r["stream"], r["dt"], r["records"], r["size"], r["merkle_root"], r["first_prev"], r["last_hash"],
                r["sealed"], r["stored_md5"], r["compression"]) == \
            (e.stream, e.first_ts[:10], e.records, e.size, e.merkle_root, e.first_prev, e.last_hash, e.sealed, None,
             "zstd")
        assert r["last_ts"].isoformat().replace("+00:00", "Z") == e.last_ts
        assert e.confirmed_at is not None and r["confirmed_at"].timestamp() == pytest.approx(e.confirmed_at, abs=1e-6)
    assert pq.read_schema(pa.BufferReader(data)).names == list(COLUMNS)  # every column, in the documented order
    [part] = ledger.index_parts("app")
    assert part.state == "stored" and part.sha256 == __import__("hashlib").sha256(data).hexdigest()
    ledger.close()


# ---------------------------------------------------------------------------- each finding, both modes


def test_missing_object(tmp_path: Path, moto_endpoint: str, capsys: pytest.CaptureFixture[str]) -> None:
    pl = locked(tmp_path, moto_endpoint)
    pl.client.delete_object(Bucket=pl.bucket, Key=seg_keys(pl)[1])  # a delete marker hides the locked version
    d, i = both(pl, moto_endpoint, capsys)
    assert {"missing-object", "delete-marker"} <= d & i


def test_replaced_object_second_version(tmp_path: Path, moto_endpoint: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    pl = locked(tmp_path, moto_endpoint)
    key = seg_keys(pl)[2]
    body = bytearray(pl.get(key))
    body[-1] ^= 1  # same length, other bytes
    put_version(pl, key, bytes(body))
    d, i = both(pl, moto_endpoint, capsys)
    assert {"object-replaced", "extra-version"} <= d & i


def test_appended_and_truncated_bytes(tmp_path: Path, moto_endpoint: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    pl = locked(tmp_path, moto_endpoint)
    keys = seg_keys(pl)
    put_version(pl, keys[0], pl.get(keys[0]) + b"appended")
    put_version(pl, keys[3], pl.get(keys[3])[:-7])
    d, i = both(pl, moto_endpoint, capsys)
    assert {"appended-bytes", "truncated-object", "extra-version"} <= d & i
    _code, doc = inventory(pl, moto_endpoint, capsys)
    by = {f["code"]: f for f in doc["findings"]}
    assert by["appended-bytes"]["key"] == keys[0] and "+8 bytes" in by["appended-bytes"]["message"]
    assert by["truncated-object"]["key"] == keys[3]


def test_not_locked(tmp_path: Path, moto_endpoint: str, capsys: pytest.CaptureFixture[str]) -> None:
    # a bucket without Object Lock, shipped in development mode (allow_unlocked)
    pl = ship_pipeline(tmp_path, moto_endpoint, segments=SEGMENTS, events_per_segment=EVENTS)
    d, i = both(pl, moto_endpoint, capsys)
    assert "not-locked" in d & i
    _code, doc = inventory(pl, moto_endpoint, capsys)
    locked_keys = {f["key"] for f in doc["findings"] if f["code"] == "not-locked"}
    assert locked_keys == set(seg_keys(pl)) | set(index_keys(pl))  # the index parts too
    # --allow-unlocked turns the lock checks off in both modes
    assert inventory(pl, moto_endpoint, capsys, "--allow-unlocked")[0] == 0


def test_retention_too_short(tmp_path: Path, moto_endpoint: str, capsys: pytest.CaptureFixture[str]) -> None:
    pl = locked(tmp_path, moto_endpoint, retention_days=30)
    key = seg_keys(pl)[1]
    # moto accepts shortening COMPLIANCE retention (AWS refuses): the fault an auditor must see
    import datetime as dt

    pl.client.put_object_retention(Bucket=pl.bucket, Key=key, Retention={
        "Mode": "COMPLIANCE", "RetainUntilDate": dt.datetime.now(dt.UTC) + dt.timedelta(days=2)})
    d, i = both(pl, moto_endpoint, capsys, "--retention-days", "30")
    assert "retention-too-short" in d & i
    _code, doc = inventory(pl, moto_endpoint, capsys, "--retention-days", "30")
    assert [f["key"] for f in doc["findings"] if f["code"] == "retention-too-short"] == [key]


def _ship(side: Any, url: str, *, max_rows: int | None = None, retention_days: int = 1, sign: bool = True,
          allow_unlocked: bool = False) -> None:
    store = open_store(url, ColdSettings(retention_days=retention_days, allow_unlocked=allow_unlocked))
    shipper = Shipper(side.hot, store, hot_retention=1e9, index_signer=side.signer if sign else None,
                      index_origin=f"{ORIGIN_PREFIX}/app")
    if max_rows is not None:
        assert shipper.index is not None
        shipper.index.max_rows = max_rows
    summary = shipper.run_once()
    assert summary.failed == summary.quarantined == 0, summary.errors
    shipper.ledger.close()
    store.close()


def _pipeline(tmp_path: Path, endpoint: str, side: Any, *, lock: bool = True, **kw: Any) -> Pipeline:
    bucket = new_bucket(endpoint, lock=lock)
    url = f"s3://{bucket}/audit?endpoint_url={endpoint}&region=us-east-1"
    _ship(side, url, allow_unlocked=not lock, **kw)
    return Pipeline(side.hot, url, bucket, "audit", s3_client(endpoint), side.signer, side.vkey, side.witness)


def test_missing_segment(tmp_path: Path, moto_endpoint: str, capsys: pytest.CaptureFixture[str]) -> None:
    side = build_hot(tmp_path, segments=SEGMENTS, events_per_segment=EVENTS)
    victim = sorted((side.hot / "app").glob("seg-*.jsonl"))[1]
    victim.unlink()  # lost before it was ever shipped: a seq gap in cold storage and in the index
    pl = _pipeline(tmp_path, moto_endpoint, side)
    d, i = both(pl, moto_endpoint, capsys)
    assert "missing-segment" in d & i
    _code, doc = inventory(pl, moto_endpoint, capsys)
    gap = next(f for f in doc["findings"] if f["code"] == "missing-segment")
    assert gap["seq"] == EVENTS + 1 and f"records {EVENTS + 1}..{2 * EVENTS + 1}" in gap["message"]


def test_broken_link(tmp_path: Path, moto_endpoint: str, capsys: pytest.CaptureFixture[str]) -> None:
    side = build_hot(tmp_path, segments=SEGMENTS, events_per_segment=EVENTS)
    other = build_hot(tmp_path / "other", segments=SEGMENTS, events_per_segment=EVENTS, salt="forged")
    name = sorted((side.hot / "app").glob("seg-*.jsonl"))[2].name
    (side.hot / "app" / name).unlink()
    (side.hot / "app" / name).write_bytes((other.hot / "app" / name).read_bytes())  # same seqs, other chain
    pl = _pipeline(tmp_path, moto_endpoint, side)
    d, i = both(pl, moto_endpoint, capsys)
    assert "broken-link" in d & i


def test_time_gap(tmp_path: Path, moto_endpoint: str, capsys: pytest.CaptureFixture[str]) -> None:
    side = build_hot(tmp_path, segments=3, events_per_segment=EVENTS, pause_after=0)
    pl = _pipeline(tmp_path, moto_endpoint, side)
    d, i = both(pl, moto_endpoint, capsys, "--heartbeat-interval", "300ms")
    assert "time-gap" in d & i


def test_rogue_keys(tmp_path: Path, moto_endpoint: str, capsys: pytest.CaptureFixture[str]) -> None:
    pl = locked(tmp_path, moto_endpoint)
    first = seg_keys(pl)[0]
    pl.put(first + ".orig", b"x", {})
    pl.put(f"{pl.prefix}/app/notes.txt", b"x", {})
    d, i = both(pl, moto_endpoint, capsys)
    assert "unexpected-segment-object" in d & i
    _code, doc = inventory(pl, moto_endpoint, capsys)
    assert {(f["code"], f["key"]) for f in doc["findings"] if f["code"].startswith("unexpected")} == {
        ("unexpected-segment-object", first + ".orig"), ("unexpected-object", f"{pl.prefix}/app/notes.txt")}


def test_forged_object_not_in_the_index(tmp_path: Path, moto_endpoint: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    pl = locked(tmp_path, moto_endpoint)
    keys = seg_keys(pl)
    forged = keys[0].replace("seg-00000000000000000000", "seg-00000000000000000001")
    pl.put(forged, pl.get(keys[0]), pl.head(keys[0])["Metadata"])
    d, i = both(pl, moto_endpoint, capsys)
    assert "unshipped-object" in d & i


# ---------------------------------------------------------------------------- the index itself


def rewrite_part(pl: Pipeline, key: str, drop_segment: int) -> None:
    """The attacker with the shipper's PUT right: a new version of an index part without one
    row (to hide a deleted segment), its footer made consistent with the rows left."""
    from pipeline.ship.index import FOOTER_KEY, PartMeta

    table = pq.read_table(pa.BufferReader(pl.get(key)))
    meta = PartMeta.from_json(table.schema.metadata[FOOTER_KEY])
    keep = table.take([i for i in range(table.num_rows) if i != drop_segment])
    meta = PartMeta(meta.format, meta.stream, meta.dt, meta.part, meta.prev_sha256, keep.num_rows,
                    min(keep.column("first_seq").to_pylist()), max(keep.column("last_seq").to_pylist()))
    buf = io.BytesIO()
    pq.write_table(keep.replace_schema_metadata({FOOTER_KEY: meta.to_json()}), buf, compression="zstd")
    pl.put(key, buf.getvalue(), pl.head(key)["Metadata"])


def test_rewritten_index_part(tmp_path: Path, moto_endpoint: str, capsys: pytest.CaptureFixture[str]) -> None:
    side = build_hot(tmp_path, segments=SEGMENTS, events_per_segment=EVENTS)
    pl = _pipeline(tmp_path, moto_endpoint, side, max_rows=2)  # two parts: the chain has a link
    parts = index_keys(pl)
    assert len(parts) == 2
    code, doc = inventory(pl, moto_endpoint, capsys)
    assert code == 0, doc["findings"]
    rewrite_part(pl, parts[0], drop_segment=1)
    code, doc = inventory(pl, moto_endpoint, capsys)
    assert code == 1
    found = codes(doc)
    # the second version is visible, the next part's link no longer matches, and the
    # row the attacker removed leaves a seq gap and an object the index does not explain
    assert {"index-part-replaced", "index-chain-broken", "missing-segment", "unshipped-object"} <= found, found
    chain = next(f for f in doc["findings"] if f["code"] == "index-chain-broken")
    assert chain["key"] == parts[1]


def forge_part(pl: Pipeline, key: str, original: bytes, *, signature: bytes | None) -> None:
    """The attacker with bucket write access but not the log's key, on a bucket that keeps no
    versions: the newest part replaced in place, one row (segment) dropped, chain link and
    footer kept consistent, and the footer's signature set to ``signature``."""
    from pipeline.ship.index import FOOTER_KEY, SIGNATURE_KEY, PartMeta

    table = pq.read_table(pa.BufferReader(original))
    meta = PartMeta.from_json(table.schema.metadata[FOOTER_KEY])
    keep = table.take(list(range(table.num_rows - 1)))
    meta = PartMeta(meta.format, meta.stream, meta.dt, meta.part, meta.prev_sha256, keep.num_rows,
                    min(keep.column("first_seq").to_pylist()), max(keep.column("last_seq").to_pylist()))
    footer = {FOOTER_KEY: meta.to_json()}
    if signature is not None:
        footer[SIGNATURE_KEY] = signature
    buf = io.BytesIO()
    pq.write_table(keep.replace_schema_metadata(footer), buf, compression="zstd")
    meta_obj = pl.head(key)["Metadata"]
    pl.client.delete_object(Bucket=pl.bucket, Key=key)
    pl.put(key, buf.getvalue(), meta_obj)


UNLOCKED = ("--allow-unlocked",)


def test_forged_newest_part_without_versioning_evidence(tmp_path: Path, moto_endpoint: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """No second version, no later part to break the chain: only the signature tells."""
    from pipeline.format.checkpoint import Signer, sign_note, split_note
    from pipeline.ship.index import SIGNATURE_KEY

    side = build_hot(tmp_path, segments=SEGMENTS, events_per_segment=EVENTS)
    pl = _pipeline(tmp_path, moto_endpoint, side, lock=False, max_rows=2)  # no Object Lock, no versioning
    parts = index_keys(pl)
    assert len(parts) == 2
    code, doc = inventory(pl, moto_endpoint, capsys, *UNLOCKED)
    assert code == 0 and not {f["code"] for f in doc["findings"] if f["code"].startswith("index-")}, doc["findings"]
    newest = pl.get(parts[-1])
    original = pq.read_schema(pa.BufferReader(newest)).metadata[SIGNATURE_KEY]
    outsider = Signer.generate(side.signer.name)  # the same name, another key
    for label, signature in (
            ("the original signature kept", original),
            ("the signature stripped", None),
            ("re-signed with another key", sign_note(split_note(original)[0], [outsider]))):
        forge_part(pl, parts[-1], newest, signature=signature)
        assert len(pl.client.list_object_versions(Bucket=pl.bucket, Prefix=parts[-1])["Versions"]) == 1
        code, doc = inventory(pl, moto_endpoint, capsys, *UNLOCKED)
        found = codes(doc)
        assert code == 1 and "index-signature-invalid" in found, (label, doc["findings"])
        assert not {"index-part-replaced", "index-chain-broken"} & found, (label, found)
        bad = [f for f in doc["findings"] if f["code"] == "index-signature-invalid"]
        assert [f["key"] for f in bad] == [parts[-1]], (label, bad)


def test_unsigned_index_is_a_warning_never_silently_ok(tmp_path: Path, moto_endpoint: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    side = build_hot(tmp_path, segments=SEGMENTS, events_per_segment=EVENTS)
    pl = _pipeline(tmp_path, moto_endpoint, side, sign=False, max_rows=2)  # a shipper without [signing]
    code, doc = inventory(pl, moto_endpoint, capsys)
    assert code == 0, doc["findings"]
    [warn] = [f for f in doc["findings"] if f["code"] == "index-part-unsigned"]
    assert warn["severity"] == "warning" and warn["stream"] == "app" and "2 of 2 index parts" in warn["message"]
    # an auditor who knows the shipper signs requires it
    code, doc = inventory(pl, moto_endpoint, capsys, "--require-signed-index")
    assert code == 1 and len([f for f in doc["findings"] if f["code"] == "index-signature-invalid"]) == 2


def test_signed_index_without_vkey_is_unchecked(tmp_path: Path, moto_endpoint: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    pl = locked(tmp_path, moto_endpoint)
    dest = new_bucket(moto_endpoint)
    manifest = write_inventory(pl.client, pl.bucket, dest, endpoint=moto_endpoint)
    index = f"s3://{pl.bucket}/{pl.prefix}/_index/?endpoint_url={moto_endpoint}&region=us-east-1"
    code, doc = run(["verify-tier", "--cold", pl.url, "--inventory", manifest, "--index", index,
                     "--heartbeat-interval", "0", "--retention-days", "1", "--sample", "0"], capsys)
    assert code == 0, doc["findings"]
    assert "index-signature-unchecked" in codes(doc, "warning")


def test_bad_arguments_exit_2(tmp_path: Path, moto_endpoint: str, capsys: pytest.CaptureFixture[str]) -> None:
    pl = locked(tmp_path, moto_endpoint)
    index = f"s3://{pl.bucket}/{pl.prefix}/_index/?endpoint_url={moto_endpoint}&region=us-east-1"
    assert main(["verify-tier", "--cold", pl.url, "--index", index]) == 2
    assert "go together" in capsys.readouterr().err
    missing = f"s3://{pl.bucket}/nothing/manifest.json?endpoint_url={moto_endpoint}&region=us-east-1"
    assert main(["verify-tier", "--cold", pl.url, "--inventory", missing, "--index", index]) == 2
    assert "cannot read the inventory manifest" in capsys.readouterr().err
    # an inventory of another bucket is not evidence about this one
    dest = new_bucket(moto_endpoint)
    other = locked(tmp_path / "o", moto_endpoint)
    manifest = write_inventory(pl.client, other.bucket, dest, endpoint=moto_endpoint)
    assert main(["verify-tier", "--cold", pl.url, "--inventory", manifest, "--index", index]) == 2
    assert "the inventory lists bucket" in capsys.readouterr().err
    # a damaged data file (size or MD5 disagree with manifest.json) stops the run
    manifest = write_inventory(pl.client, pl.bucket, dest, endpoint=moto_endpoint)
    # --engine athena submits to a workgroup: without one nothing is submitted
    assert main(["verify-tier", "--cold", pl.url, "--inventory", manifest, "--index", index, "--engine",
                 "athena"]) == 2
    assert "--engine athena needs --workgroup" in capsys.readouterr().err
    man = orjson.loads(pl.client.get_object(Bucket=dest, Key=manifest.split(dest + "/", 1)[1].split("?")[0])["Body"]
                       .read())
    pl.client.put_object(Bucket=dest, Key=man["files"][0]["key"], Body=b"PAR1 not the report")
    assert main(["verify-tier", "--cold", pl.url, "--inventory", manifest, "--index", index]) == 2
    assert "inventory data file" in capsys.readouterr().err


def test_local_copies_give_the_same_findings(tmp_path: Path, moto_endpoint: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """An auditor who synced the inventory and the index (``aws s3 sync``) verifies offline."""
    pl = locked(tmp_path, moto_endpoint)
    pl.client.delete_object(Bucket=pl.bucket, Key=seg_keys(pl)[1])
    dest = new_bucket(moto_endpoint)
    manifest = write_inventory(pl.client, pl.bucket, dest, endpoint=moto_endpoint)
    index = f"s3://{pl.bucket}/{pl.prefix}/_index/?endpoint_url={moto_endpoint}&region=us-east-1"
    args = ["verify-tier", "--cold", pl.url, "--vkey", str(pl.vkey), "--witness-dir", str(pl.witness),
            "--heartbeat-interval", "0", "--retention-days", "1", "--sample", "0"]
    code, remote = run([*args, "--inventory", manifest, "--index", index], capsys)
    assert code == 1

    def sync(bucket: str, prefix: str, to: Path) -> None:
        for page in pl.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                path = to / o["Key"]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(pl.client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read())

    sync(dest, "", tmp_path / "inv")
    sync(pl.bucket, f"{pl.prefix}/_index/", tmp_path / "idx")
    local_manifest = tmp_path / "inv" / manifest.split(dest + "/", 1)[1].split("?", 1)[0]
    code, local = run([*args, "--inventory", str(local_manifest), "--index", str(tmp_path / "idx")], capsys)
    assert code == 1
    assert sorted((f["code"], f["segment"]) for f in local["findings"]) == \
        sorted((f["code"], f["segment"]) for f in remote["findings"])
    # only the segment under the newest witnessed checkpoint is read (one HEAD + one GET)
    assert local["requests"]["get"] == local["requests"]["head"] == 1
    assert {"missing-object", "delete-marker"} <= codes(local)


# ---------------------------------------------------------------------------- sampled deep checks


def _same_size_rewrite(segment: bytes, stored_size: int) -> bytes:
    """``segment`` with one hex digit of an event's hash changed, compressed as the shipper
    compresses, such that the stored object stays exactly ``stored_size`` bytes: an in-place
    rewrite that neither the size nor (on a bucket without versions) a second version shows.
    (A hash digit is a zstd literal: another digit usually codes to the same length.)"""
    from pipeline.cold.codec import zstd_compressor

    lines = segment.splitlines(keepends=True)
    for i in range(1, len(lines) - 1):  # an event, not the first record or the seal
        start = lines[i].rfind(b'"hash":"') + len(b'"hash":"')
        for j in range(start, start + 64):
            for digit in b"0123456789abcdef":
                if lines[i][j] == digit:
                    continue
                candidate = b"".join([*lines[:i], lines[i][:j] + bytes([digit]) + lines[i][j + 1:], *lines[i + 1:]])
                body = zstd_compressor(ColdSettings(), len(candidate)).compress(candidate)
                if len(body) == stored_size:
                    return body
    raise AssertionError("no same-size rewrite found")


def test_sampling_reads_what_the_inventory_cannot_show(tmp_path: Path, moto_endpoint: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A bucket without versions (no Object Lock): an object rewritten in place with bytes of
    the same size leaves one version, its size and no MD5 to compare; only reading it does."""
    side = build_hot(tmp_path, segments=SEGMENTS, events_per_segment=EVENTS)
    pl = _pipeline(tmp_path, moto_endpoint, side, lock=False)
    key = seg_keys(pl)[1]  # not the segment under the newest witnessed checkpoint (the last)
    original = pl.get(key)
    body = _same_size_rewrite(pl.segment_bytes(key), len(original))
    assert body != original
    pl.put(key, body, pl.head(key)["Metadata"])
    assert len(pl.client.list_object_versions(Bucket=pl.bucket, Prefix=key)["Versions"]) == 1
    # not sampled: the inventory shows one version of the right size, nothing to tell
    code, doc = inventory(pl, moto_endpoint, capsys, *UNLOCKED)
    assert code == 0 and doc["totals"]["sampled"] == 1, doc["findings"]
    # every segment sampled (--sample 1): the read bytes disagree with the index's SHA-256
    code, doc = inventory(pl, moto_endpoint, capsys, *UNLOCKED, "--sample", "1")
    assert code == 1 and doc["totals"]["sampled"] == SEGMENTS
    bad = {(f["code"], f["key"]) for f in doc["findings"] if f["severity"] == "error"}
    assert ("object-replaced", key) in bad and ("content-mismatch", key) in bad, bad
    assert {k for _c, k in bad} == {key}, bad


def test_the_witnessed_segment_exposes_a_rebuilt_bucket_and_index(tmp_path: Path, moto_endpoint: str,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The attacker with write access to a bucket without versions replaces every segment
    AND the index with an internally perfect forgery (its own chain, an unsigned index whose
    rows match the new objects): the inventory, the index chain and the rows all agree.
    The segment under the newest witnessed checkpoint is read on every run and its root
    recomputed: the witness holds the real root."""
    victim = build_hot(tmp_path / "v", segments=SEGMENTS, events_per_segment=EVENTS)
    pl = _pipeline(tmp_path / "v", moto_endpoint, victim, lock=False)
    code, doc = inventory(pl, moto_endpoint, capsys, *UNLOCKED)
    assert code == 0, doc["findings"]
    forged_side = build_hot(tmp_path / "f", segments=SEGMENTS, events_per_segment=EVENTS, salt="forged")
    forged = _pipeline(tmp_path / "f", moto_endpoint, forged_side, lock=False, sign=False)
    keys = forged.object_keys() + forged.object_keys(index=True)
    assert sorted(keys) == sorted(pl.object_keys() + pl.object_keys(index=True))  # the same keys
    for k in keys:
        pl.put(k, forged.get(k), forged.head(k)["Metadata"])
    code, doc = inventory(pl, moto_endpoint, capsys, *UNLOCKED)
    assert code == 1
    assert codes(doc) == {"witness-root-mismatch"}, doc["findings"]
    assert "index-part-unsigned" in codes(doc, "warning")
    assert doc["totals"]["sampled"] == 1 and doc["streams"][0]["checkpoints"]["recomputed"] == 1


# ---------------------------------------------------------------------------- what the report cannot know yet


def test_segments_confirmed_after_the_report_are_not_missing(tmp_path: Path, moto_endpoint: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """S3 Inventory is daily: segments the index lists but the report predates are counted
    (``newer_than_inventory``), never reported missing, and still checked for continuity."""
    from pipeline.hot.tree import TreeStore
    from pipeline.hot.writer import HotLog

    side = build_hot(tmp_path, segments=2, events_per_segment=EVENTS)
    pl = _pipeline(tmp_path, moto_endpoint, side)
    manifest = write_inventory(pl.client, pl.bucket, new_bucket(moto_endpoint), endpoint=moto_endpoint)
    # the log goes on after the report was taken: two more segments, shipped and indexed
    log = HotLog(side.hot, "app", tree_store=TreeStore(side.hot / "app"), heartbeat_interval=0, segment_window=0,
                 immutable="off")
    for i in range(2 * EVENTS):
        log.append({"n": i, "after": "the report"})
        if i % EVENTS == EVENTS - 1:
            log.seal()
    log.close()
    _ship(side, pl.url)
    assert len(index_keys(pl)) == 2 and len(seg_keys(pl)) == 4
    index = f"s3://{pl.bucket}/{pl.prefix}/_index/?endpoint_url={moto_endpoint}&region=us-east-1"
    code, doc = run(["verify-tier", "--cold", pl.url, "--inventory", manifest, "--index", index, "--vkey",
                     str(pl.vkey), "--witness-dir", str(pl.witness), "--heartbeat-interval", "0",
                     "--retention-days", "1", "--sample", "0"], capsys)
    assert code == 0, doc["findings"]
    t = doc["totals"]
    assert (t["segments"], t["newer_than_inventory"], t["records"]) == (4, 2, 4 * (EVENTS + 1)), t


def test_a_deleted_newest_index_part_is_caught(tmp_path: Path, moto_endpoint: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The index truncated (its newest part deleted, no later part to break the chain): on a
    versioned bucket the delete marker shows; on any bucket the witnesses hold checkpoints
    past what the index still lists."""
    for lock in (True, False):
        side = build_hot(tmp_path / str(lock), segments=SEGMENTS, events_per_segment=EVENTS)
        pl = _pipeline(tmp_path / str(lock), moto_endpoint, side, lock=lock, max_rows=2)
        parts = index_keys(pl)
        assert len(parts) == 2
        pl.client.delete_object(Bucket=pl.bucket, Key=parts[-1])
        code, doc = inventory(pl, moto_endpoint, capsys, *(() if lock else UNLOCKED))
        assert code == 1
        found = codes(doc)
        assert "witness-ahead" in found, (lock, doc["findings"])
        assert ("index-part-replaced" in found) == lock, (lock, found)
