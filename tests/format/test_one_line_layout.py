"""The record line is written in one place: pipeline/format/record.py (``LINE_PREFIX``,
``_HEADER``, ``encode_record``); the C encoder in pipeline/_native.c is its accelerated binding.
Any other Python literal that spells the start of a record line is a second definition."""

from __future__ import annotations

import ast
from pathlib import Path

PIPELINE = Path(__file__).resolve().parents[2] / "pipeline"
LINE_START = '{"v":1,"stream":'
# module -> why it still spells the line itself; the test fails once it no longer does
KNOWN: dict[str, str] = {}


def _spellers() -> set[str]:
    found = set()
    for path in PIPELINE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
                      and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and id(node) not in docstrings:
                value = node.value.decode("latin-1") if isinstance(node.value, bytes) else node.value
                if isinstance(value, str) and LINE_START in value:
                    found.add(str(path.relative_to(PIPELINE.parent)))
    return found


def test_only_the_format_layer_spells_the_record_line() -> None:
    assert _spellers() == {"pipeline/format/record.py", *KNOWN}
