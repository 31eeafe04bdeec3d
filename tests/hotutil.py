"""Helpers shared by the hot-tier tests (writer, tamper, crash, ENOSPC)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline import _accel
from pipeline._accel import native
from pipeline.hot import attr
from pipeline.hot.segment import iter_lines, list_segments
from pipeline.record import Record, RecordError, parse_record
from pipeline.verify.chain import StreamReport, verify_stream

REPO = Path(__file__).resolve().parents[1]

# tests of the C accelerator itself (there is nothing to compare or call without it)
needs_native = pytest.mark.skipif(native is None, reason="C accelerator not built (see test_accelerator_is_built)")
PYTHON = sys.executable


def records(stream_dir: Path) -> list[Record]:
    """Every complete, valid record of every segment, in file order (torn tails skipped)."""
    out: list[Record] = []
    for path in list_segments(stream_dir):
        for _off, line in iter_lines(path):
            try:
                out.append(parse_record(line))
            except RecordError:
                break
    return out


def segment_records(path: Path) -> list[Record]:
    return [parse_record(line) for _off, line in iter_lines(path) if line.endswith(b"\n")]


def verify(stream_dir: Path) -> StreamReport:
    return verify_stream(stream_dir, workers=1)


def assert_clean(stream_dir: Path) -> StreamReport:
    rep = verify(stream_dir)
    assert rep.findings == [], [f.to_dict() for f in rep.findings]
    return rep


def snapshot_files(stream_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(stream_dir.iterdir()) if p.is_file() and p.name != "LOCK"}


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Bounded poll for an event driven by a background thread (rotation, heartbeat)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def unprotect(path: Path) -> None:
    attr.clear_protection(path)


def backdate(path: Path, seconds: float) -> None:
    """Make an active (append-only) segment look as if nothing had been written to it for
    ``seconds`` more: its mtime moved back.  The monitor's trailing delay judges a file's
    bytes by its mtime; moving it beats sleeping just past a short delay, which races the
    machine's speed (a write, its fsync and the next cycle must otherwise all fit inside it)."""
    st = path.stat()
    protected = False
    with contextlib.suppress(OSError):  # (no inode flags on this filesystem: nothing to lift)
        protected = attr.is_append_only(path)
    if protected:
        attr.clear_protection(path)  # an append-only file's times cannot be set
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))
    if protected:
        attr.protect_append_only(path)


def rewrite(path: Path, data: bytes) -> None:
    """Replace a segment's bytes (tampering): clear the attribute first."""
    attr.clear_protection(path)
    path.write_bytes(data)


def run_python(code: str, *args: str, env: dict[str, str] | None = None, timeout: float = 60,
               drop_immutable_cap: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (optionally without CAP_LINUX_IMMUTABLE)."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    if env:
        full_env.update(env)
    cmd = [PYTHON, "-c", code, *args]
    if drop_immutable_cap:
        quoted = " ".join("'" + c.replace("'", "'\\''") + "'" for c in cmd)
        cmd = ["capsh", "--drop=cap_linux_immutable", "--", "-c", f"exec {quoted}"]
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout, cwd=REPO)


def pipeline_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "pipeline", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)


class FsyncSpy:
    """Record, for every fsync of the writer, the file and its size at that moment (to
    prove that acknowledgements follow fsyncs).  Replaces os.fsync and the writer's own
    fsync (pipeline._accel.fsync, the C one when the accelerator is built)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, int]] = []
        self._real = os.fsync
        self._lock = threading.Lock()
        monkeypatch.setattr(os, "fsync", self)
        monkeypatch.setattr(_accel, "fsync", self)

    def __call__(self, fd: int, data_only: bool = False) -> None:
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
            size = os.fstat(fd).st_size
        except OSError:
            path, size = "?", -1
        self._real(fd)
        with self._lock:
            self.calls.append((path, size))

    def covered(self, path: Path, end: int) -> bool:
        with self._lock:
            return any(p == str(path) and s >= end for p, s in self.calls)


def without_sender(data: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    """An ingested event's payload without the sidecar's ``_sender`` field (docs/FORMAT.md
    §1.2), which must be there (unless not ``required``: events appended in-process have
    none), first, and name how the sender was authenticated."""
    if not required and "_sender" not in data:
        return data
    assert next(iter(data), None) == "_sender", data
    sender = data["_sender"]
    assert isinstance(sender, dict) and sender.get("auth") in ("x509", "token", "local", "none"), sender
    return {k: v for k, v in data.items() if k != "_sender"}


@contextlib.contextmanager
def read_only_view(src: Path, dst: Path) -> Iterator[Path]:
    """``dst``: a read-only bind mount of ``src`` (the monitor's view of the hot tier or a
    file:// cold store).  Writes through it fail with EROFS, even as root."""
    dst.mkdir(parents=True, exist_ok=True)
    for cmd in (["mount", "--bind", str(src), str(dst)], ["mount", "-o", "remount,bind,ro", str(dst)]):
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            subprocess.run(["umount", "-l", str(dst)], check=False)
            pytest.fail(f"cannot make a read-only bind mount (the suite runs as root): {res.stderr}")
    try:
        yield dst
    finally:
        subprocess.run(["umount", "-l", str(dst)], check=False)


def writable_first_segment(hot: Path, *, sealed: bool) -> Path:
    """A stream "app" of five events in ``hot``; its first segment, sealed or still active
    (closed without its seal, as a writer that died leaves it), with its protection lifted
    so that a test can append to it as a root attacker would."""
    from pipeline.hot.factory import open_hotlog

    log = open_hotlog(hot, "app", heartbeat_interval=0, immutable="off")
    log.append_many([{"n": i} for i in range(5)])
    if sealed:
        log.seal()
    log.close(seal=False)
    seg = list_segments(hot / "app")[0]
    attr.clear_protection(seg)
    return seg
