"""The dependency rule of docs/ARCHITECTURE.md, enforced on the source (parsed with ``ast``,
so imports inside functions and ``TYPE_CHECKING`` blocks count too):

1. ``pipeline/format/`` imports nothing from the rest of ``pipeline`` but the accelerator
   switch (``pipeline._accel``) and the error base (``pipeline.errors``, which imports
   nothing): every stage may read it, it reads no stage.
2. The stages that read the log's formats (cold, ship, verify, witness, ingest, cli) import
   them from ``pipeline.format``, never from ``pipeline.hot``; the exceptions are the CLI verbs
   that operate a hot log themselves, listed below with the reason.
3. Nothing in ``pipeline/`` imports the deprecated paths kept for old callers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PIPELINE = Path(__file__).resolve().parents[2] / "pipeline"
STAGES = ("cold", "ship", "verify", "witness", "ingest", "cli")
FORMAT_MAY_IMPORT = ("pipeline.format", "pipeline._accel", "pipeline._native", "pipeline.errors")
DEPRECATED = frozenset({
    "pipeline.record", "pipeline.merkle", "pipeline.checkpoint", "pipeline.strictjson",
    "pipeline.hot.segment", "pipeline.hot.layout", "pipeline.hot.attr",
})
# module -> the pipeline.hot modules it may import, and why
HOT_EXCEPTIONS: dict[str, tuple[frozenset[str], str]] = {
    "pipeline.cli.append": (frozenset({"pipeline.hot.writer", "pipeline.hot.factory"}),
                            "`pipeline append` opens the stream's HotLog and appends to it"),
    "pipeline.cli.seal": (frozenset({"pipeline.hot.factory"}),
                          "`pipeline seal` opens the stream's HotLog to seal its open segment"),
    "pipeline.cli.quickstart": (frozenset({"pipeline.hot.writer"}),
                                "`pipeline quickstart` writes a demonstration log with a HotLog"),
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PIPELINE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every pipeline module ``path`` imports (``from pipeline import x`` counts as pipeline.x
    when x is a module)."""
    tree = ast.parse(path.read_text(), str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            for a in node.names:
                candidate = f"{base}.{a.name}"
                if _is_module(candidate):
                    found.add(candidate)
    return {m for m in found if m == "pipeline" or m.startswith("pipeline.")}


def _is_module(name: str) -> bool:
    rel = PIPELINE.parent.joinpath(*name.split("."))
    return rel.with_suffix(".py").is_file() or (rel / "__init__.py").is_file()


def _sources(*subdirs: str) -> list[Path]:
    roots = [PIPELINE / d for d in subdirs] if subdirs else [PIPELINE]
    return sorted(p for r in roots for p in r.rglob("*.py"))


def test_the_import_parser_sees_every_kind_of_import() -> None:
    src = PIPELINE / "verify" / "chain.py"
    assert "pipeline.format.record" in _imports(src)
    assert "pipeline.format.merkle" in _imports(src)  # from pipeline.format import merkle


@pytest.mark.parametrize("path", _sources("format"), ids=lambda p: p.name)
def test_the_format_layer_imports_no_stage(path: Path) -> None:
    bad = sorted(m for m in _imports(path) if m != "pipeline" and not m.startswith(FORMAT_MAY_IMPORT))
    assert not bad, f"{_module_name(path)} imports {bad}: pipeline/format must not depend on any stage"


@pytest.mark.parametrize("path", _sources(*STAGES), ids=lambda p: str(p.relative_to(PIPELINE)))
def test_stages_read_formats_from_pipeline_format_not_hot(path: Path) -> None:
    name = _module_name(path)
    allowed, _why = HOT_EXCEPTIONS.get(name, (frozenset(), ""))
    bad = sorted(m for m in _imports(path) if (m == "pipeline.hot" or m.startswith("pipeline.hot."))
                 and m not in allowed)
    assert not bad, (f"{name} imports {bad}: formats, names and paths come from pipeline.format; a module "
                     "that really operates a hot log is listed in HOT_EXCEPTIONS with the reason")


def test_every_listed_exception_is_still_needed() -> None:
    for name, (allowed, why) in HOT_EXCEPTIONS.items():
        path = PIPELINE.parent.joinpath(*name.split(".")).with_suffix(".py")
        used = {m for m in _imports(path) if m.startswith("pipeline.hot")}
        assert allowed <= used, f"{name} no longer imports {sorted(allowed - used)}: drop it from HOT_EXCEPTIONS"
        assert why


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(PIPELINE)))
def test_nothing_in_pipeline_uses_a_deprecated_path(path: Path) -> None:
    name = _module_name(path)
    if name in DEPRECATED:
        return  # the shim itself
    bad = sorted(_imports(path) & DEPRECATED)
    assert not bad, f"{name} imports the deprecated {bad}: import from pipeline.format instead"


MOVED_FROM_COLD_BASE = frozenset({
    "object_key", "stream_prefix", "segment_of_key", "encode_metadata", "decode_metadata",
    "manifest_from_metadata", "META_PREFIX", "METADATA_FORMAT", "METADATA_KEYS", "S3_METADATA_LIMIT",
    "COMPRESSION_SUFFIX", "SegmentManifest",
})


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(PIPELINE)))
def test_cold_keys_and_metadata_are_imported_from_the_layout(path: Path) -> None:
    """pipeline.cold.base re-exports them for old callers only."""
    if _module_name(path) == "pipeline.cold.base":
        return
    bad = sorted(a.name for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.ImportFrom) and node.module == "pipeline.cold.base"
                 for a in node.names if a.name in MOVED_FROM_COLD_BASE)
    assert not bad, f"{_module_name(path)} imports {bad} from pipeline.cold.base: use pipeline.format"
