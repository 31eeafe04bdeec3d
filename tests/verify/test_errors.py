"""One error base: every exception class under ``pipeline`` derives from ``PipelineError``,
and the CLI answers one of them once: exit 2, the message and what to do; with --debug, the
traceback and the diagnostics (issue 15, step 4)."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import pipeline
from pipeline.cli import EXIT_ERROR, main
from pipeline.errors import PipelineError

PKG = Path(pipeline.__file__).resolve().parent


def _modules() -> list[str]:
    names = ["pipeline"]
    for info in pkgutil.walk_packages([str(PKG)], prefix="pipeline."):
        if not info.name.endswith("__main__"):  # importing it runs the CLI
            names.append(info.name)
    return names


def test_every_exception_class_derives_from_pipeline_error() -> None:
    found: dict[str, type[BaseException]] = {}
    for name in _modules():
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == name:
                found[f"{name}.{attr}"] = value
    outside = sorted(n for n, cls in found.items() if not issubclass(cls, PipelineError))
    assert not outside, f"exception classes not derived from PipelineError: {outside}"
    assert len(found) >= 35, sorted(found)  # the scan saw them (today about forty)


def test_every_exception_class_in_the_source_is_seen() -> None:
    """The import scan above sees classes defined at module level; a class defined inside a
    function would escape it, so there must be none deriving from an exception."""
    nested = []
    for path in PKG.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and id(node) not in top and any(
                    isinstance(b, ast.Name) and b.id.endswith(("Error", "Exception")) for b in node.bases):
                nested.append(f"{path.name}:{node.lineno} {node.name}")
    assert not nested


def test_no_duck_typed_diagnostics() -> None:
    """``diagnostics()`` is part of the base: nothing asks whether an error has it."""
    offenders = [f"{p.relative_to(PKG)}" for p in PKG.rglob("*.py")
                 if 'hasattr(exc, "diagnostics")' in p.read_text() or "getattr(exc, \"diagnostics\"" in p.read_text()]
    assert offenders == []


def test_public_error_names_are_stable() -> None:
    for name in ("PipelineError", "ColdError", "HotLogError", "InvalidEvent", "ExportFailed", "RestoreFailed",
                 "ReadbackError", "VerifyError", "TierError"):
        cls = getattr(pipeline, name)
        assert name in pipeline.__all__ and issubclass(cls, PipelineError), name
    # the older bases stay, so `except ValueError` written against them still catches them
    from pipeline.format.attr import AppendOnlyError
    from pipeline.format.checkpoint import NoteError
    from pipeline.format.record import RecordError

    assert issubclass(RecordError, ValueError) and issubclass(NoteError, ValueError)
    assert issubclass(AppendOnlyError, OSError)


def test_one_line_and_diagnostics_carry_the_action() -> None:
    class Broken(PipelineError):
        action = "do the thing"

    err = Broken("it broke\nsecond line")
    assert err.one_line() == "it broke; do the thing"
    assert err.diagnostics() == "it broke\nsecond line\n  action: do the thing"
    assert PipelineError("plain").one_line() == "plain"


def test_cli_answers_a_pipeline_error_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A ColdConfigError (with its action) out of a verb: exit 2, one line, no traceback."""
    missing = tmp_path / "nowhere"
    assert main(["restore", "--cold", f"file://{missing}", "--to", str(tmp_path / "to")]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("pipeline: cold directory") and "check the --cold URL (nothing was created)" in err
    assert not (tmp_path / "to").exists()


def test_cli_debug_adds_traceback_and_diagnostics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "cold"
    empty.mkdir()
    assert main(["--debug", "restore", "--cold", f"file://{empty}", "--to", str(tmp_path / "to")]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "Traceback" in err and "ReadbackError: no streams found in the cold store" in err
    # without --debug: the message alone
    assert main(["restore", "--cold", f"file://{empty}", "--to", str(tmp_path / "to")]) == EXIT_ERROR
    assert capsys.readouterr().err == "pipeline: no streams found in the cold store\n"
