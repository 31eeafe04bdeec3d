"""Every ``pipeline VERB --flag`` shown in README.md and docs/*.md is accepted by the parser.

Command lines are found in code blocks and inline code (a backslash continues a line); the
flags of each are checked against that verb's parser (``witness serve`` against its
sub-command).  Placeholders (DIR, <url>) are not parsed: the question is only whether a
flag the docs show still exists, so that docs cannot drift from the CLI unnoticed."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from pipeline.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
DOCS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
COMMAND = re.compile(r"(?<![\w/.-])pipeline ([a-z][a-z-]*)((?: [a-z][a-z-]*)?)")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
# where one command line ends: the end of inline code, a pipe, a list of commands, a redirection
END = re.compile(r"`|\||&&|;|\s>|\s<|\)")
# in a synopsis ([--flag X] ...), | and ( ) are alternatives, not shell
SYNOPSIS_END = re.compile(r"`|&&|;|\s>|\s<")
SYNOPSIS_MORE = re.compile(r"^\s+\[--")


def parsers() -> dict[str, argparse.ArgumentParser]:
    out: dict[str, argparse.ArgumentParser] = {}

    def walk(prefix: str, p: argparse.ArgumentParser) -> None:
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, child in a.choices.items():
                    out[f"{prefix}{name}"] = child
                    walk(f"{prefix}{name} ", child)

    walk("", build_parser())
    return out


def logical_lines(path: Path) -> list[tuple[int, str]]:
    """Lines with backslash continuations joined, numbered by their first line."""
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not pending:
            start = lineno
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        if out and not pending and SYNOPSIS_MORE.match(line) and "pipeline " in out[-1][1]:
            out[-1] = (out[-1][0], out[-1][1] + " " + line.strip())  # a synopsis wrapped over lines
            continue
        out.append((start, pending + line))
        pending = ""
    return out


def shown_commands(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, command, flags) for every pipeline command line in a document."""
    known = parsers()
    found = []
    for lineno, line in logical_lines(path):
        for m in COMMAND.finditer(line):
            verb = m.group(1)
            if verb not in known:
                continue
            sub = f"{verb}{m.group(2)}"
            command = sub if sub in known else verb
            rest = line[m.start(1) + len(command):]
            end = (SYNOPSIS_END if "[--" in rest else END).search(rest)
            rest = rest[: end.start()] if end else rest
            found.append((lineno, command, FLAG.findall(rest)))
    return found


def test_the_docs_show_commands() -> None:
    commands = [c for doc in DOCS for c in shown_commands(doc)]
    assert len(commands) > 30
    assert {"verify", "verify-tier", "ship", "export", "restore"} <= {c for _, c, _ in commands}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_flag_shown_exists(doc: Path) -> None:
    known = parsers()
    wrong = []
    for lineno, command, flags in shown_commands(doc):
        accepted = {s for a in known[command]._actions for s in a.option_strings}
        wrong += [f"{doc.name}:{lineno}: pipeline {command} {flag}" for flag in flags if flag not in accepted]
    assert not wrong, "flags shown in the docs that the parser does not accept:\n" + "\n".join(wrong)


def test_a_removed_flag_would_be_caught(tmp_path: Path) -> None:
    doc = tmp_path / "X.md"
    doc.write_text("Run `pipeline verify --hot DIR --no-such-flag` and\n"
                   "```\npipeline verify-tier --hot d \\\n  --cold s3://b --retry-max-seconds 5 | jq .ok\n```\n")
    flags = {f for _, _, fl in shown_commands(doc) for f in fl}
    assert flags == {"--hot", "--no-such-flag", "--cold", "--retry-max-seconds"}
    doc.write_text("```\npipeline export (--cold URL | --hot DIR) [--stream S]\n"
                   "                [--gone N]\n```\n")
    assert shown_commands(doc)[0][2] == ["--cold", "--hot", "--stream", "--gone"]
