"""Client for a C2SP tlog-witness ``add-checkpoint`` endpoint (c2sp.org/tlog-witness)."""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from collections.abc import Sequence

from pipeline.cold.errors import mask_credentials
from pipeline.format.checkpoint import SIG_PREFIX, Checkpoint, NoteError, Verifier, add_signature_lines, open_note
from pipeline.witness import ConsistencyFn, WitnessError

MAX_PROOF_LINES = 63  # tlog-witness §add-checkpoint: clients MUST NOT send more


def request_body(old_size: int, proof: Sequence[bytes], note: bytes) -> bytes:
    """``old <size>\\n`` + one base64 hash per line + ``\\n`` + the signed checkpoint."""
    if len(proof) > MAX_PROOF_LINES:
        raise WitnessError(f"consistency proof has {len(proof)} hashes; at most {MAX_PROOF_LINES} may be sent")
    lines = [f"old {old_size}\n"] + [base64.b64encode(h).decode() + "\n" for h in proof] + ["\n"]
    return "".join(lines).encode() + note


class HttpWitness:
    """Posts checkpoints; learns the witness's size from a 409 and retries once with that size."""

    def __init__(
        self, url: str, *, verifiers: Sequence[Verifier] = (), timeout: float = 10.0, name: str | None = None
    ) -> None:
        self.url = url.rstrip("/") + "/add-checkpoint"
        self.verifiers = list(verifiers)
        self.timeout = timeout
        self.name = name or mask_credentials(url)  # the name is printed and logged
        self._known: dict[str, int] = {}

    def _post(self, body: bytes) -> tuple[int, str, bytes]:
        req = urllib.request.Request(self.url, data=body, method="POST",  # noqa: S310 - configured URL
                                     headers={"Content-Type": "text/plain; charset=utf-8"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                return resp.status, resp.headers.get("Content-Type", ""), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Content-Type", "") if exc.headers else "", exc.read()
        except (urllib.error.URLError, OSError) as exc:
            raise WitnessError(f"{self.name}: cannot reach witness: {exc}") from exc

    def add_checkpoint(self, note: bytes, checkpoint: Checkpoint, prove: ConsistencyFn) -> list[str]:
        old = self._known.get(checkpoint.origin, 0)
        for _attempt in range(2):
            if old > checkpoint.size:
                raise WitnessError(
                    f"{self.name}: witness has size {old}, larger than checkpoint {checkpoint.size}: "
                    "the log was rolled back", status=409, size=old)
            proof = prove(old, checkpoint.size) if 0 < old < checkpoint.size else []
            status, ctype, body = self._post(request_body(old, proof, note))
            text = body.decode("utf-8", "replace")
            if status == 200:
                self._known[checkpoint.origin] = checkpoint.size
                return self._cosignatures(note, text)
            if status == 409 and ctype.split(";")[0].strip() == "text/x.tlog.size":
                try:
                    witnessed = int(text.strip())
                except ValueError as exc:
                    raise WitnessError(f"{self.name}: 409 with a malformed size body", status=409) from exc
                if witnessed == old:
                    # same size, different root: the witness saw another tree at this size
                    raise WitnessError(f"{self.name}: FORK: witness holds a different root at size {old}",
                                       status=409, fork=True, size=old)
                self._known[checkpoint.origin] = witnessed
                old = witnessed
                continue
            reason = {403: "log key not trusted by the witness", 404: "origin unknown to the witness",
                      422: "consistency proof rejected (possible fork)", 400: "bad request"}.get(status, "refused")
            raise WitnessError(f"{self.name}: {status} {reason}: {text.strip()[:200]}", status=status,
                               fork=status == 422)
        raise WitnessError(f"{self.name}: witness size kept changing; giving up for now", status=409)

    def _cosignatures(self, note: bytes, text: str) -> list[str]:
        lines = [ln + "\n" for ln in text.split("\n") if ln.startswith(SIG_PREFIX)]
        if self.verifiers and lines:
            try:
                opened = open_note(add_signature_lines(note, lines), self.verifiers, require=False)
            except NoteError as exc:
                raise WitnessError(f"{self.name}: returned a cosignature that does not verify: {exc}") from exc
            return [s.line for s, _ts in opened.cosigned]
        return lines
