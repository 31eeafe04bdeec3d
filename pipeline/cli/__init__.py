"""Command-line entry point.  One module per verb, each exposing ``register(subparsers)``.

A verb module registers its sub-command and sets ``func`` on its parser; ``func(args)``
returns the process exit code.  Exit codes used across verbs: 0 success / all valid,
1 findings, 2 could not run (bad arguments, unreadable input, unreachable endpoint).
Adding a verb means adding one module here: discovery is automatic.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_ERROR = 2

TOP_EPILOG = """\
Run 'pipeline VERB --help' for what a verb does, its options and examples.
Durations are written like 90s, 5m, 1.5h, 7d (a bare number is seconds).
Exit codes: 0 clean, 1 findings about the data, 2 could not run."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline",
        description="worm-pipeline: tamper-evident audit logs from append-only disk to locked cloud storage",
        epilog=TOP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from pipeline import __version__

    parser.add_argument("--version", action="version", version=f"worm-pipeline {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    return code


if __name__ == "__main__":
    sys.exit(main())
