"""Every verb's --help has a description and examples, and every example parses.

The examples are read back from the rendered epilog (what a user sees), split like a shell
would, and given to the real parser: an example that names a removed or renamed flag, or
a value its type refuses, fails here."""

from __future__ import annotations

import argparse
import shlex

import pytest

from pipeline.cli import build_parser

SHELL_OPERATORS = {"<", ">", "|", "&&", ";"}


def verbs() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def summaries() -> dict[str, str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a.help or "" for a in sub._choices_actions}


def examples(p: argparse.ArgumentParser) -> list[list[str]]:
    """The command lines in the epilog, as argv after ``pipeline`` (shell redirections dropped)."""
    out = []
    for line in (p.epilog or "").splitlines():
        words = shlex.split(line.strip(), comments=True)
        if words[:1] != ["pipeline"]:
            continue
        cut = next((i for i, w in enumerate(words) if w in SHELL_OPERATORS), len(words))
        out.append(words[1:cut])
    return out


def test_there_are_verbs() -> None:
    assert {"verify", "verify-tier", "ship", "export", "restore", "append"} <= set(verbs())


@pytest.mark.parametrize("name", sorted(verbs()))
def test_verb_has_summary_description_and_examples(name: str) -> None:
    p = verbs()[name]
    assert summaries()[name].strip(), f"{name}: no one-line summary in `pipeline --help`"
    assert p.description and len(p.description.split()) >= 8, f"{name}: no description"
    assert isinstance(p.formatter_class, type) and issubclass(p.formatter_class, argparse.RawDescriptionHelpFormatter)
    assert (p.epilog or "").startswith("examples:"), f"{name}: no examples section"
    found = examples(p)
    assert found, f"{name}: no example command line"
    rendered = p.format_help()
    assert "examples:" in rendered and p.description.splitlines()[0] in rendered


@pytest.mark.parametrize("name", sorted(verbs()))
def test_every_example_parses(name: str) -> None:
    for argv in examples(verbs()[name]):
        assert argv[0] == name, f"an example of {name} runs another verb: {argv}"
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # argparse's way of refusing
            pytest.fail(f"example `pipeline {shlex.join(argv)}` does not parse (exit {exc.code})")
        assert args.verb == name and callable(args.func)


def test_top_level_help_lists_every_verb_with_its_summary(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps long summaries
    for name, summary in summaries().items():
        assert name in text
        assert " ".join(summary.split()) in text, name
    assert "pipeline VERB --help" in text


def test_examples_parse_check_can_fail() -> None:
    """The parse check above refuses a wrong flag (so it is not vacuous)."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["verify", "--hot", "/x", "--no-such-flag"])
