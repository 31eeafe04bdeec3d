"""``pipeline monitor --config monitor.toml``: continuous verification with independent alerting."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from types import FrameType

from pipeline.cli import EXIT_ERROR, EXIT_FINDINGS, EXIT_OK
from pipeline.cli._common import add_verb, err


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_verb(sub, "monitor", summary="verify the log continuously, trailing the writer, and send alerts",
                 description="""
        Run the monitor until SIGTERM: a separate process with read-only access that
        verifies new hot records and cold objects as they are written (trailing the head by
        monitor.trailing_delay), watches the shipper's ledger, the witnesses and the stream's
        heartbeats, and sends alerts to Alertmanager, a signed webhook and e-mail, plus an
        always-firing watchdog alert.  Its position is kept in monitor.state_dir, so a
        restart resumes.  --once runs one cycle and exits 0 (nothing found), 1 (findings) or
        2 (could not run, or an alert could not be delivered).  Configuration and alerts: docs/MONITOR.md.""",
                 examples=[("check a configuration file", "pipeline monitor --config /etc/worm/monitor.toml --check"),
                           ("run the monitor", "pipeline monitor --config /etc/worm/monitor.toml"),
                           ("one cycle, for a cron job or a test", "pipeline monitor --config monitor.toml --once")])
    p.add_argument("--config", type=Path, required=True, help="the monitor's TOML configuration file")
    p.add_argument("--check", action="store_true", help="validate the configuration and exit")
    p.add_argument("--once", action="store_true", help="run one cycle, send its alerts, and exit")
    p.add_argument("--log-format", choices=("json", "text"), default="json", help="log line format (default json)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.config import ConfigError
    from pipeline.logsetup import setup_logging
    from pipeline.monitor.config import load_monitor_config

    try:
        cfg = load_monitor_config(args.config)
    except ConfigError as exc:
        err(exc.diagnostics())
        return EXIT_ERROR
    if args.check:
        print(f"{args.config}: valid")
        return EXIT_OK
    setup_logging(args.log_format)
    from pipeline.errors import PipelineError
    from pipeline.monitor.runner import Monitor

    try:
        monitor = Monitor(cfg, serve_metrics=not args.once)
    except (PipelineError, OSError, ValueError) as exc:  # ValueError: an unreadable key (NoteError)
        err(f"monitor: cannot start: {exc}")
        return EXIT_ERROR
    try:
        if args.once:
            findings = monitor.cycle()
            for f in findings:
                print(f"{f.severity.upper()} {f.code} {f.stream}/{f.segment} seq={f.seq}: {f.message}")
            if monitor.failed_channels:
                err(f"monitor: could not deliver alerts to {', '.join(monitor.failed_channels)} (see the log)")
            # findings about the data come first; with none, an alert that could not be sent
            # (the watchdog) means the cycle did not do its job
            if findings:
                return EXIT_FINDINGS
            return EXIT_ERROR if monitor.failed_channels else EXIT_OK
        stopping = False

        def on_signal(signum: int, frame: FrameType | None) -> None:
            nonlocal stopping
            stopping = True  # a flag only (docs/ARCHITECTURE.md, "Signal handlers only set flags")

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        monitor.run(lambda: stopping)
        return EXIT_OK
    finally:
        monitor.close()
