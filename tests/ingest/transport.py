"""Helpers for the transport tests: the sidecar's ingest in a child process, real rsyslog
and syslog-ng started with the configurations of docs/FORWARDERS.md, certificates."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.hotutil import records
from tests.ingest.certs import CA, Issued

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "FORWARDERS.md"
SIDECAR_NAME = "sidecar.example.net"


def doc_snippet(name: str) -> str:
    """The code block after ``<!-- snippet: NAME -->`` in docs/FORWARDERS.md."""
    text = DOC.read_text()
    m = re.search(r"<!-- snippet: " + re.escape(name) + r" -->\n```[a-z]*\n(.*?)```", text, re.S)
    assert m is not None, f"no snippet {name} in {DOC}"
    return m.group(1)


def localise(snippet: str, *, port: int, files: dict[str, Path]) -> str:
    """A documented configuration with this test's address, port and certificate files."""
    out = snippet.replace(f'target="{SIDECAR_NAME}"', 'target="127.0.0.1"')
    out = out.replace(f'network("{SIDECAR_NAME}"', 'network("127.0.0.1"')
    out = re.sub(r'port="\d+"', f'port="{port}"', out)
    out = re.sub(r"port\(\d+\)", f"port({port})", out)
    for doc_path, real in files.items():
        out = out.replace(doc_path, str(real))
    assert "/etc/" not in out, out
    return out


@dataclass
class Pki:
    ca: CA
    server: Issued
    client: Issued
    dir: Path

    @classmethod
    def make(cls, d: Path, client_name: str = "rsyslog.web-1.example.net") -> Pki:
        d.mkdir(parents=True, exist_ok=True)
        ca = CA(d)
        server = ca.issue("server", dns=(SIDECAR_NAME, "localhost"), ips=("127.0.0.1",), server=True)
        client = ca.issue("client", dns=(client_name,), cn=client_name)
        return cls(ca, server, client, d)

    def files(self, prefix: str) -> dict[str, Path]:
        return {f"{prefix}/ca.pem": self.ca.path, f"{prefix}/client.crt": self.client.cert,
                f"{prefix}/client.key": self.client.key}


@dataclass
class Sidecar:
    proc: subprocess.Popen[bytes]
    addresses: dict[str, Any]
    hot: Path
    stderr: list[bytes] = field(default_factory=list)
    reader: threading.Thread | None = None  # drains stderr into ``stderr`` while it runs

    def port(self, kind: str) -> int:
        return int(self.addresses[kind][1])

    def all_stderr(self, timeout: float = 30) -> bytes:
        """Everything the stopped process wrote on stderr: the reader has reached the pipe's
        end (lines are still being read for a moment after the process exits)."""
        assert self.proc.poll() is not None, "the sidecar is still running"
        if self.reader is not None:
            self.reader.join(timeout)
            assert not self.reader.is_alive(), "stderr still open"
        return b"".join(self.stderr)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def start_sidecar(hot: Path, **cfg: Any) -> Sidecar:
    cfg = {"hot": str(hot), **{k: str(v) if isinstance(v, Path) else v for k, v in cfg.items()}}
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "tests.ingest.transport_proc", json.dumps(cfg)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(10)
        raise RuntimeError("sidecar failed: " + proc.stderr.read().decode(errors="replace"))
    sc = Sidecar(proc, json.loads(line), hot)
    sc.reader = threading.Thread(target=lambda: sc.stderr.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
    sc.reader.start()
    return sc


def stop_sidecar(sc: Sidecar) -> None:
    if sc.proc.poll() is None:
        with contextlib.suppress(OSError):
            assert sc.proc.stdin is not None
            sc.proc.stdin.close()
        try:
            sc.proc.wait(20)
        except subprocess.TimeoutExpired:
            sc.proc.kill()
            sc.proc.wait(10)


@contextlib.contextmanager
def sidecar(hot: Path, **cfg: Any) -> Iterator[Sidecar]:
    sc = start_sidecar(hot, **cfg)
    try:
        yield sc
    finally:
        stop_sidecar(sc)


def stored_events(hot: Path) -> list[dict[str, Any]]:
    stream = hot / "app"
    if not stream.exists():
        return []
    return [r.data for r in records(stream) if r.kind == "event"]


def wait_for(cond: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Rsyslog:
    proc: subprocess.Popen[bytes]
    input_port: int
    workdir: Path

    def send(self, lines: list[str]) -> None:
        """Messages into rsyslog's local imtcp input (LF framing), as an application would."""
        with socket.create_connection(("127.0.0.1", self.input_port), timeout=10) as s:
            s.sendall("".join(line + "\n" for line in lines).encode())


@contextlib.contextmanager
def rsyslogd(workdir: Path, action: str) -> Iterator[Rsyslog]:
    """rsyslogd in the foreground with its own work directory, a local imtcp input (no
    imuxsock, no imklog: nothing of this host's logging is touched) and ``action``."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = workdir / "rsyslog.conf"
    # module() statements are global: they go before the ruleset that holds the action
    modules = "\n".join(ln for ln in action.splitlines() if ln.startswith("module("))
    action = "\n".join(ln for ln in action.splitlines() if not ln.startswith("module("))
    conf.write_text(f"""
global(workDirectory="{workdir}" maxMessageSize="64k")
module(load="imtcp")
{modules}
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="to_worm")
ruleset(name="to_worm") {{
{action}
}}
""")
    check = subprocess.run(["rsyslogd", "-N1", "-f", str(conf)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr + check.stdout
    proc = subprocess.Popen(["rsyslogd", "-n", "-f", str(conf), "-i", str(workdir / "rsyslogd.pid")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        wait_for(lambda: _connectable(port), 15, "rsyslogd's input")
        yield Rsyslog(proc, port, workdir)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _connectable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


SYSLOG_NG_ROOT = REPO / ".tools" / "syslog-ng"


def syslog_ng_available() -> bool:
    return (SYSLOG_NG_ROOT / "usr" / "sbin" / "syslog-ng").exists()


@contextlib.contextmanager
def syslog_ng(workdir: Path, destination: str, dest_name: str) -> Iterator[int]:
    """syslog-ng (unpacked by tools/install-syslog-ng.sh, not installed) in the foreground
    with a local network() input on a free port; yields that port."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = workdir / "syslog-ng.conf"
    conf.write_text(f"""@version: 3.38
options {{ stats_freq(0); }};
source s_local {{ network(ip("127.0.0.1") port({port}) transport(tcp)); }};
{destination}
log {{ source(s_local); destination({dest_name}); }};
""")
    root = SYSLOG_NG_ROOT
    libdir = root / "usr" / "lib" / "syslog-ng"
    env = dict(os.environ, LD_LIBRARY_PATH=str(libdir))
    cmd = [str(root / "usr" / "sbin" / "syslog-ng"), "-F", "-f", str(conf), "-R", str(workdir / "persist"),
           "-p", str(workdir / "pid"), "-c", str(workdir / "ctl"), f"--module-path={libdir / '3.38'}",
           "--no-caps"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    try:
        wait_for(lambda: _connectable(port) or proc.poll() is not None, 15, "syslog-ng's input")
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise AssertionError(f"syslog-ng exited: {out}")
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def which(name: str) -> str:
    path = shutil.which(name)
    assert path is not None, f"{name} is not installed (tools/install-test-deps.sh)"
    return path
