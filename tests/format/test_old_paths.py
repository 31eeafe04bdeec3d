"""The old import paths stay for one release as re-exports of pipeline.format (issue 15):
every public name of the new module is reachable, as the very same object, from the old one."""

from __future__ import annotations

import importlib

import pytest

PAIRS = [
    ("pipeline.record", "pipeline.format.record"),
    ("pipeline.merkle", "pipeline.format.merkle"),
    ("pipeline.checkpoint", "pipeline.format.checkpoint"),
    ("pipeline.strictjson", "pipeline.format.strictjson"),
    ("pipeline.hot.segment", "pipeline.format.segment"),
    ("pipeline.hot.layout", "pipeline.format.layout"),
    ("pipeline.hot.attr", "pipeline.format.attr"),
]


def _public(module: object) -> dict[str, object]:
    names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
    return {n: getattr(module, n) for n in names}


@pytest.mark.parametrize(("old", "new"), PAIRS)
def test_the_old_path_re_exports_every_public_name(old: str, new: str) -> None:
    old_mod, new_mod = importlib.import_module(old), importlib.import_module(new)
    assert "Deprecated import path, kept for one release" in (old_mod.__doc__ or "")
    for name, obj in _public(new_mod).items():
        assert getattr(old_mod, name) is obj, f"{old}.{name}"


def test_names_that_moved_out_of_other_modules_are_still_there() -> None:
    from pipeline.cold import base
    from pipeline.format import layout, manifest, segment
    from pipeline.hot import checkpoints, writer
    from pipeline.ship import ledger

    for name in ("object_key", "stream_prefix", "segment_of_key", "encode_metadata", "decode_metadata",
                 "manifest_from_metadata", "META_PREFIX", "METADATA_FORMAT", "METADATA_KEYS", "S3_METADATA_LIMIT",
                 "COMPRESSION_SUFFIX"):
        assert getattr(base, name) is getattr(layout, name), name
    assert base.SegmentManifest is manifest.SegmentManifest is segment.SegmentManifest
    assert writer.HEAD_FILE == layout.HEAD_FILE == "head.json" and writer.LOCK_FILE == layout.LOCK_FILE == "LOCK"
    assert writer.read_first_record is segment.read_first_record
    assert ledger.LEDGER_DIR == layout.SHIP_DIR == ".ship" and ledger.LEDGER_FILE == layout.LEDGER_FILE
    from pipeline.format.checkpoint import CheckpointStore

    assert checkpoints.CheckpointStore is CheckpointStore
    assert checkpoints.CHECKPOINT_DIR == layout.CHECKPOINT_DIR == "checkpoints"
