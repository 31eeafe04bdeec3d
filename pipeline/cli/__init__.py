"""Command-line entry point.  One module per verb, each exposing ``register(subparsers)``.

A verb module registers its sub-command and sets ``func`` on its parser; ``func(args)``
returns the process exit code.  Exit codes mean one thing in every verb (README, "Exit
codes"): 0 done / everything checked is valid, 1 findings about the data, 2 could not run
(usage, a wrong path, credentials, network, permissions, work left pending).  A failure of
the environment is one line plus what to do; the traceback only with ``--debug``.  Every
``PipelineError`` a verb lets through is answered here, once (``_pipeline_error``).
Adding a verb means adding one module here: discovery is automatic.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import traceback
from collections.abc import Sequence

from pipeline.errors import PipelineError

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
    parser.add_argument("--debug", action="store_true",
                        help="show tracebacks and the cloud SDKs' own log lines when something fails")
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
    _quiet_sdks(args.debug)
    _install_retry_budget(args)
    try:
        code = int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except PipelineError as exc:
        return _pipeline_error(exc, debug=args.debug)
    except Exception as exc:
        if args.debug:
            raise
        return _could_not_run(args.verb, exc)
    finally:
        from pipeline.cold.retry import use_command_budget

        use_command_budget(None)  # main() may be called again in one process (tests, embedding)
    return code


def _quiet_sdks(debug: bool) -> None:
    """The cloud SDKs log their own retries and credential searches (dozens of lines for one
    missing credential); the CLI reports each failure once, itself."""
    import logging

    if not debug:
        for name in ("azure", "botocore", "boto3", "urllib3", "s3transfer"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def _install_retry_budget(args: argparse.Namespace) -> None:
    """A verb with ``--retry-max-seconds`` retries within that budget in total; a
    long-running verb (``ship`` without ``--once``) retries each operation afresh."""
    from pipeline.cold.retry import RetryBudget, use_command_budget

    if not hasattr(args, "retry_max_seconds") or (args.verb == "ship" and not args.once):
        return
    seconds = args.retry_max_seconds if args.retry_max_seconds is not None else DEFAULT_RETRY_MAX_SECONDS
    use_command_budget(RetryBudget(seconds))


DEFAULT_RETRY_MAX_SECONDS = 60.0


def _pipeline_error(exc: PipelineError, *, debug: bool) -> int:
    """The one place an error the library raised on purpose becomes the CLI's answer: exit 2
    with what failed and what to do (``one_line``: message and ``action``); with ``--debug``
    also the traceback and everything the error knows (``diagnostics``).  Verbs catch only
    what they render otherwise (a finding that stopped export or restore: exit 1)."""
    from pipeline.cold.errors import mask_credentials

    if debug:
        traceback.print_exception(exc, file=sys.stderr)
        print(mask_credentials(exc.diagnostics()), file=sys.stderr)
    else:
        # a message may quote a configured URL: never print its user-info or a SAS signature
        print(f"pipeline: {mask_credentials(exc.one_line())}", file=sys.stderr)
    return EXIT_ERROR


def _could_not_run(verb: str, exc: Exception) -> int:
    """Exit 2 with one line: the environment's problem and its fix when recognised, else the
    exception's first line and how to see more."""
    from pipeline.cold.errors import environment_failure

    line = environment_failure(exc)
    if line is None:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        line = (f"{verb} could not run: {type(exc).__name__}: {first}; rerun with `pipeline --debug {verb} ...` "
                "for the traceback")
    print(f"pipeline: {line}", file=sys.stderr)
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
