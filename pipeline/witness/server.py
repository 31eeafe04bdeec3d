"""A small C2SP tlog-witness server (c2sp.org/tlog-witness), stdlib ``http.server`` only.

State: ``<dir>/<escaped origin>.note``, the latest cosigned checkpoint per origin, replaced
atomically (temp file, fsync, rename, directory fsync) BEFORE the cosignature is returned,
and under one lock so that check-then-update is atomic (the spec's rollback race).
Refusals also go to ``<dir>/refused.log`` (append-only evidence of misbehaviour).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.format import merkle
from pipeline.format.checkpoint import Checkpoint, NoteError, Signer, Verifier, open_note, split_note
from pipeline.format.files import atomic_write
from pipeline.format.layout import witness_server_note

log = logging.getLogger(__name__)
MAX_BODY = 1 << 16
MAX_PROOF_LINES = 63


@dataclass(frozen=True)
class Trust:
    """A log key the witness trusts; ``origin=None`` trusts it for any origin it signs."""

    verifier: Verifier
    origin: str | None = None


class Reply(PipelineError):
    def __init__(self, status: int, body: str, content_type: str = "text/plain; charset=utf-8") -> None:
        super().__init__(body)
        self.status = status
        self.body = body
        self.content_type = content_type


def parse_request(body: bytes) -> tuple[int, list[bytes], bytes]:
    """Split an add-checkpoint body into (old size, proof hashes, checkpoint note)."""
    first, sep, rest = body.partition(b"\n")
    if not sep or not first.startswith(b"old "):
        raise Reply(400, "first line must be 'old <size>'\n")
    size_s = first[4:]
    if not size_s.isdigit() or (len(size_s) > 1 and size_s.startswith(b"0")):
        raise Reply(400, "old size must be a decimal without leading zeros\n")
    old = int(size_s)
    proof: list[bytes] = []
    while True:
        line, sep, rest = rest.partition(b"\n")
        if not sep:
            raise Reply(400, "missing blank line before the checkpoint\n")
        if line == b"":
            break
        if len(proof) >= MAX_PROOF_LINES:
            raise Reply(400, f"more than {MAX_PROOF_LINES} consistency proof lines\n")
        try:
            h = base64.b64decode(line, validate=True)
        except binascii.Error as exc:
            raise Reply(400, "consistency proof line is not base64\n") from exc
        if len(h) != 32:
            raise Reply(400, "consistency proof hash is not 32 bytes\n")
        proof.append(h)
    return old, proof, rest


class WitnessState:
    def __init__(self, directory: Path, signer: Signer, trust: Sequence[Trust]) -> None:
        if signer.alg != 0x04:
            raise ValueError("the witness key must be a cosigner key (pipeline keygen --witness)")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.signer = signer
        self.trust = list(trust)
        self.lock = threading.Lock()

    def _path(self, origin: str) -> Path:
        return witness_server_note(self.dir, origin)

    def stored(self, origin: str) -> Checkpoint | None:
        try:
            return Checkpoint.parse(split_note(self._path(origin).read_bytes())[0])
        except FileNotFoundError:
            return None

    def _refused(self, origin: str, status: int, why: str, note: bytes) -> None:
        entry = json.dumps({"time": int(time.time()), "origin": origin, "status": status, "why": why,
                            "note": note.decode("utf-8", "replace")})
        with open(self.dir / "refused.log", "a", encoding="utf-8") as f:
            f.write(entry + "\n")

    def add_checkpoint(self, body: bytes) -> str:
        old, proof, note = parse_request(body)
        try:
            text, _sigs = split_note(note)
            cp = Checkpoint.parse(text)
        except NoteError as exc:
            raise Reply(400, f"malformed checkpoint: {exc}\n") from exc
        verifiers = [t.verifier for t in self.trust if t.origin in (None, cp.origin)]
        if not verifiers:
            raise Reply(404, f"unknown origin {cp.origin!r}\n")
        try:
            open_note(note, verifiers)
        except NoteError as exc:
            raise Reply(403, f"checkpoint not signed by a trusted log key: {exc}\n") from exc
        if old > cp.size:
            raise Reply(400, f"old size {old} is larger than the checkpoint size {cp.size}\n")
        with self.lock:
            cur = self.stored(cp.origin)
            cur_size = cur.size if cur else 0
            if old != cur_size:
                raise Reply(409, f"{cur_size}\n", "text/x.tlog.size")
            if cur is not None and cp.size == cur.size:
                if cp.root != cur.root:
                    self._refused(cp.origin, 409, "same size, different root", note)
                    raise Reply(409, f"{cur_size}\n", "text/x.tlog.size")
            elif cur is None or old == 0:
                if proof:
                    raise Reply(422, "consistency proof must be empty from size 0\n")
            else:
                try:
                    merkle.verify_consistency(old, cp.size, cur.root, cp.root, proof)
                except merkle.ProofError as exc:
                    self._refused(cp.origin, 422, str(exc), note)
                    raise Reply(422, f"consistency proof does not verify: {exc}\n") from exc
            # persist before answering: a cosignature must never outlive a crash of our state
            atomic_write(self._path(cp.origin), note, mode=0o644)
        return self.signer.cosignature_line(cp.body())


def make_server(state: WitnessState, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        server_version = "worm-pipeline-witness/1"

        def _send(self, status: int, body: str, ctype: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            if not self.path.rstrip("/").endswith("/add-checkpoint"):
                self._send(404, "not found\n", "text/plain; charset=utf-8")
                return
            try:
                length = int(self.headers.get("Content-Length", "-1"))
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_BODY:
                self._send(400, "Content-Length missing or too large\n", "text/plain; charset=utf-8")
                return
            body = self.rfile.read(length)
            try:
                cosig = state.add_checkpoint(body)
            except Reply as r:
                self._send(r.status, r.body, r.content_type)
                return
            except Exception:
                log.exception("witness: internal error")
                self._send(500, "internal error\n", "text/plain; charset=utf-8")
                return
            self._send(200, cosig, "text/plain; charset=utf-8")

        def log_message(self, format: str, *args: object) -> None:
            log.info("%s %s", self.address_string(), format % args)

    srv = ThreadingHTTPServer((host, port), Handler)
    srv.daemon_threads = True
    return srv
