"""Progress bars (pipeline/cli/_progress.py): on a terminal a bar with rate and ETA appears
on stderr; piped, or with --json, the output is exactly what it is without a bar.

The terminal is a real pseudo-terminal (the ``pty`` module) attached to the verb's stderr,
in a subprocess, so ``isatty`` is answered by the kernel, not by a patched function."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import orjson
import pytest

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "import sys; from pipeline.cli import main; sys.exit(main())"]
STREAM = "app"
SEGMENTS = 3


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    env["COLUMNS"] = "120"
    env.pop("TQDM_DISABLE", None)
    return env


def run_piped(args: list[str], stdin: bytes = b"") -> tuple[int, bytes, bytes]:
    p = subprocess.run([*CLI, *args], input=stdin, capture_output=True, env=_env(), timeout=60)
    return p.returncode, p.stdout, p.stderr


def run_on_terminal(args: list[str]) -> tuple[int, bytes, str]:
    """stderr on a pseudo-terminal, stdout piped: what an operator sees running
    ``pipeline VERB > out``.  Returns (exit code, stdout, everything written to the terminal)."""
    master, slave = pty.openpty()
    # a real terminal has a size (a fresh pty reports 0 x 0, where tqdm draws nothing)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    seen: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the last writer closed the terminal
                return
            if not chunk:
                return
            seen.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        p = subprocess.run([*CLI, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
                           env=_env(), timeout=60)
    finally:
        os.close(slave)
    reader.join(10)
    os.close(master)
    return p.returncode, p.stdout, b"".join(seen).decode(errors="replace")


def make_hot(hot: Path) -> None:
    """A hot tier with SEGMENTS sealed segments, written through the CLI."""
    for s in range(SEGMENTS):
        events = b"".join(orjson.dumps({"n": s * 40 + i, "user": f"u{i % 5}"}) + b"\n" for i in range(40))
        code, _, err = run_piped(["append", "--hot", str(hot), "--stream", STREAM, "--seal"], events)
        assert code == 0, err


def assert_bar(terminal: str, desc: str) -> None:
    assert desc in terminal, terminal
    assert "%|" in terminal, f"no bar with a total: {terminal!r}"  # tqdm's percentage and bar
    assert "/s" in terminal, f"no rate: {terminal!r}"
    assert "<" in terminal, f"no ETA: {terminal!r}"  # [elapsed<remaining, rate]


def assert_no_bar(terminal: str) -> None:
    assert "%|" not in terminal and "\r" not in terminal, terminal


@pytest.fixture
def shipped(tmp_path: Path) -> tuple[Path, str]:
    hot = tmp_path / "hot"
    make_hot(hot)
    url = f"file://{tmp_path / 'cold'}"
    code, _, err = run_piped(["ship", "--hot", str(hot), "--cold", url, "--allow-unlocked", "--once"])
    assert code == 0, err
    return hot, url


def test_verify_bar_on_terminal_only(shipped: tuple[Path, str]) -> None:
    hot, _ = shipped
    code, piped_out, piped_err = run_piped(["verify", "--hot", str(hot)])
    assert code == 0 and piped_err == b""
    code, tty_out, terminal = run_on_terminal(["verify", "--hot", str(hot)])
    assert code == 0
    assert_bar(terminal, "verify")
    assert tty_out == piped_out  # the report is the same, the bar went to the terminal only

    code, json_piped, _ = run_piped(["verify", "--hot", str(hot), "--json"])
    code2, json_tty, terminal = run_on_terminal(["verify", "--hot", str(hot), "--json"])
    assert code == code2 == 0
    assert_no_bar(terminal)
    assert terminal.strip() == ""
    assert json_tty == json_piped and orjson.loads(json_tty)["ok"] is True


def test_verify_tier_bar_and_json(shipped: tuple[Path, str]) -> None:
    hot, url = shipped
    args = ["verify-tier", "--hot", str(hot), "--cold", url, "--allow-unlocked", "--heartbeat-interval", "0", "--deep"]
    code, _, piped_err = run_piped(args)
    assert code == 0 and b"\r" not in piped_err
    code, _, terminal = run_on_terminal(args)
    assert code == 0
    assert_bar(terminal, "deep")
    code, out, terminal = run_on_terminal([*args, "--json"])
    assert code == 0
    assert_no_bar(terminal)
    assert orjson.loads(out)["ok"] is True


def test_export_bar_leaves_stdout_byte_for_byte(shipped: tuple[Path, str]) -> None:
    _, url = shipped
    code, piped_out, piped_err = run_piped(["export", "--cold", url])
    assert code == 0 and piped_err == b""
    assert len(piped_out.splitlines()) == SEGMENTS * 40
    code, tty_out, terminal = run_on_terminal(["export", "--cold", url])
    assert code == 0
    assert_bar(terminal, "export")
    assert tty_out == piped_out


def test_restore_bar(shipped: tuple[Path, str], tmp_path: Path) -> None:
    _, url = shipped
    code, piped_out, piped_err = run_piped(["restore", "--cold", url, "--to", str(tmp_path / "r1")])
    assert code == 0 and piped_err == b""
    code, tty_out, terminal = run_on_terminal(["restore", "--cold", url, "--to", str(tmp_path / "r2")])
    assert code == 0
    assert_bar(terminal, f"restore {STREAM}")
    assert tty_out == piped_out.replace(b"r1", b"r2")


@pytest.mark.slow
def test_ship_bar_replaces_per_segment_lines_on_terminal_only(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        make_hot(tmp_path / name)
    cold = f"file://{tmp_path / 'cold'}"

    def ship(name: str) -> list[str]:
        return ["ship", "--hot", str(tmp_path / name), "--cold", f"{cold}-{name}", "--allow-unlocked", "--once"]

    code, piped_out, piped_err = run_piped(ship("a"))
    assert code == 0 and piped_err == b""
    # piped: one line per segment as before, then the confirmations and the summary
    assert sum(ln.endswith(b".jsonl confirmed") for ln in piped_out.splitlines()) == SEGMENTS
    assert b"confirmed 3, failed 0" in piped_out
    code, tty_out, terminal = run_on_terminal(ship("b"))
    assert code == 0
    assert_bar(terminal, "ship")
    assert b"/seg-" not in tty_out.split(b"confirmed seg-")[0]  # the per-segment lines became the bar
    assert b"confirmed 3, failed 0" in tty_out
    code, out, terminal = run_on_terminal([*ship("c"), "--json"])
    assert code == 0
    assert_no_bar(terminal)
    assert orjson.loads(out)["confirmed"] == SEGMENTS
