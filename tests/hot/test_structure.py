"""The writer's seams: collaborators never import the facade, and each lock is taken only
by the module that owns it (docs/ARCHITECTURE.md, "The writer is a facade")."""

from __future__ import annotations

import ast
from pathlib import Path

HOT = Path(__file__).resolve().parents[2] / "pipeline" / "hot"
COLLABORATORS = ["chain.py", "flusher.py", "recovery.py", "active.py", "errors.py"]


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_no_collaborator_imports_the_facade() -> None:
    for name in COLLABORATORS:
        mods = imported_modules(HOT / name)
        assert not any(m == "pipeline.hot.writer" or m.startswith("pipeline.hot.writer.") for m in mods), name
        assert "pipeline.hot.writer" not in mods and "pipeline.hot.writer.HotLog" not in mods


def test_the_merkle_lock_and_the_io_lock_stay_in_their_modules() -> None:
    for path in HOT.glob("*.py"):
        text = path.read_text()
        if path.name != "chain.py":
            assert "_merkle_lock" not in text, path.name
        if path.name != "flusher.py":  # the facade included: it never takes the flusher's lock
            assert "io_lock" not in text, path.name
