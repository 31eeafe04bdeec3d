"""One duration syntax on every flag: the configuration file's (30s, 5m, 1h, 7d, 250ms),
plus a bare number of seconds (documented in each flag's help and in `pipeline --help`).

The flags are found by walking the real parser, so a new time-span flag that takes bare
seconds (or its own syntax) fails here until it uses ``pipeline.cli._common.duration``."""

from __future__ import annotations

import argparse
import re

import pytest

from pipeline.cli import build_parser
from pipeline.cli._common import DURATION_HELP, duration
from pipeline.config import parse_duration

# what a flag's name says when its value is a span of time
TIME_SPAN = {"interval", "lag", "retention", "timeout", "grace", "window", "age", "delay", "epoch", "ttl", "wait",
             "expiry", "period", "duration"}
# a flag whose name states its unit takes a plain number in that unit (retention in whole
# days is what S3 Object Lock and the config's retention_days take)
UNIT_IN_NAME = re.compile(r"-(days|seconds)$")
EXPECTED = {("ship", "--hot-retention"), ("verify-tier", "--heartbeat-interval"), ("verify-tier", "--witness-max-lag"),
            ("pg verify", "--wait")}


def parsers() -> dict[str, argparse.ArgumentParser]:
    """Every (sub-)command's parser, by its command line: 'verify-tier', 'witness serve'."""
    out: dict[str, argparse.ArgumentParser] = {}

    def walk(prefix: str, p: argparse.ArgumentParser) -> None:
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, child in a.choices.items():
                    out[f"{prefix}{name}"] = child
                    walk(f"{prefix}{name} ", child)

    walk("", build_parser())
    return out


def flags() -> list[tuple[str, argparse.Action]]:
    return [(cmd, a) for cmd, p in parsers().items() for a in p._actions if a.option_strings]


def duration_flags() -> set[tuple[str, str]]:
    return {(cmd, a.option_strings[0]) for cmd, a in flags() if a.type is duration}


def test_the_duration_flags_are_the_expected_ones() -> None:
    assert duration_flags() == EXPECTED


def test_no_time_span_flag_bypasses_the_duration_type() -> None:
    for cmd, a in flags():
        name = a.option_strings[-1]
        if TIME_SPAN & set(name.lstrip("-").split("-")) and a.type is not duration and a.nargs != 0:
            assert UNIT_IN_NAME.search(name), (
                f"pipeline {cmd} {name} is a time span: use type=duration (pipeline/cli/_common.py), "
                "or name its unit (-days, -seconds)")


@pytest.mark.parametrize(("cmd", "flag"), sorted(EXPECTED))
def test_each_duration_flag_takes_the_config_syntax(cmd: str, flag: str) -> None:
    p = parsers()[cmd]
    action = next(a for a in p._actions if flag in a.option_strings)
    parse = action.type
    assert callable(parse), f"{cmd} {flag}: no duration type"
    assert DURATION_HELP in (action.help or ""), f"{cmd} {flag}: help does not show the syntax"
    for text, seconds in [("250ms", 0.25), ("90s", 90.0), ("5m", 300.0), ("1.5h", 5400.0), ("7d", 604800.0),
                          ("60", 60.0), ("0", 0.0)]:
        assert parse(text) == seconds == (float(text) if text[-1].isdigit() else parse_duration(text))
    for bad in ("5 minutes", "5x", "-5", "nan", "inf", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="expected"):
            parse(bad)


def test_a_bad_duration_is_a_usage_error_naming_the_syntax(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["ship", "--hot", "h", "--cold", "file:///c", "--hot-retention", "1 day"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--hot-retention" in err and "a duration like" in err


def test_parsed_values_reach_the_namespace_in_seconds() -> None:
    args = build_parser().parse_args(["verify-tier", "--hot", "h", "--cold", "file:///c",
                                      "--heartbeat-interval", "5m", "--witness-max-lag", "2h"])
    assert (args.heartbeat_interval, args.witness_max_lag) == (300.0, 7200.0)
    args = build_parser().parse_args(["verify-tier", "--hot", "h", "--cold", "file:///c"])
    assert (args.heartbeat_interval, args.witness_max_lag) == (60.0, 3600.0)
